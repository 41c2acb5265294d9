"""A record Kafka refuses for good dead-letters its input; it never wedges the worker.

The alerts topic of this test's pipeline accepts records of at most 3,000 bytes, so an
alert carrying a camera's bulky evidence is refused with MessageSizeTooLarge (retrying
cannot help). Before, the worker retried it forever and no other school's panic was
processed; now the input goes to the dead-letter topic with the error and the next one
is handled, with the school's state as it was before that input.
"""

from __future__ import annotations

import pytest
from kafka.admin import ConfigResource, ConfigResourceType

from harness import QUIET_RULES, Pipeline
from pipeline import kafka_client

pytestmark = pytest.mark.integration

LIMIT = 3000


@pytest.fixture(scope="module")
def pipe(stack, tmp_path_factory):
    rules = {**QUIET_RULES, "video_behaviour": {"enabled": True}}
    p = Pipeline(stack, tmp_path_factory.mktemp("unsendable"), rules=rules, escalation=(30, 60, 90))
    admin = kafka_client.admin(p.cfg, "admin")
    try:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, p.cfg.topics.alerts, configs={"max.message.bytes": str(LIMIT)})])
    finally:
        admin.close()
    try:
        yield p.start()
    finally:
        p.close()


def test_an_alert_kafka_refuses_dead_letters_its_input_and_the_worker_goes_on(pipe):
    bulky = {f"note_{i}": "x" * 250 for i in range(16)}  # within every input limit, too big for this topic's alerts
    fight = pipe.emit("t40-cam-1", "video.fight", zone="gate", **bulky)
    entry = pipe.dlq.wait(
        lambda rs: [r for r in rs if r.get("reason_code") == "unsendable" and fight["event_id"] in r.get("payload", "")], 60, "the fight event dead-lettered"
    )[0]
    assert "MessageSizeTooLarge" in entry["reason"] and entry["topic"] == pipe.cfg.topics.events
    # another school's press is processed; so is the same school's, on the state as before
    pipe.press("t41-btn-1")
    pipe.wait_stage("t41", "opened")
    pipe.press("t40-btn-1")
    pipe.wait_stage("t40", "opened", rule="panic")
    assert not [a for a in pipe.alerts_of("t40") if a["rule"] == "video_behaviour"], "nothing was sent for the refused input"
    assert pipe.worker.proc.poll() is None
    print(f"dead-lettered: {entry['reason'][:120]}")
