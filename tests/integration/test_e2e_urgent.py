"""The urgent lane: a press reaches the worker on its own topic, ahead of telemetry.

The bridge writes a panic press to `huxue.urgent` first and to `huxue.events`; the
worker's `urgent` agent (urgent topic, commands, ticks) applies it, the `process` agent
sees the copy later and applies nothing twice. Whichever of a press and a camera event
comes first, the press is corroborated.
"""

from __future__ import annotations

import pytest

from harness import QUIET_RULES, Collector, Pipeline

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipe(stack, tmp_path_factory):
    rules = {**QUIET_RULES, "corroboration": {"enabled": True}, "video_behaviour": {"enabled": True}}
    p = Pipeline(stack, tmp_path_factory.mktemp("urgent"), rules=rules, escalation=(30, 60, 90))
    try:
        yield p.start()
    finally:
        p.close()


def test_a_press_goes_through_the_urgent_topic_and_opens_its_incident_once(pipe):
    urgent = Collector(pipe.cfg.kafka.bootstrap, pipe.cfg.topics.urgent)
    try:
        press = pipe.press("t20-btn-1")
        urgent.wait(lambda rs: [r for r in rs if r["event_id"] == press["event_id"]], 20, "the press on the urgent topic")
        pipe.events.wait(lambda rs: [r for r in rs if r["event_id"] == press["event_id"]], 20, "the press on the events topic")
        pipe.wait_stage("t20", "opened")
        pipe.wait_processed()  # the events copy has been processed too
        mine = pipe.alerts_of("t20")
        assert [a["stage"] for a in mine] == ["opened"], "the copy on the events topic applied nothing"
        heartbeat = pipe.emit("t20-cam-1", "device.heartbeat")
        pipe.wait_processed()
        assert not [r for r in urgent.records if r["event_id"] == heartbeat["event_id"]], "telemetry stays off the urgent topic"
    finally:
        urgent.close()


@pytest.mark.parametrize("camera_first", [True, False])
def test_a_press_and_a_fight_corroborate_in_either_order(pipe, camera_first):
    school = "t21" if camera_first else "t22"
    if camera_first:
        pipe.emit(f"{school}-cam-1", "video.fight", zone="gate")
        pipe.wait_processed()
        pipe.press(f"{school}-btn-1")
    else:
        pipe.press(f"{school}-btn-1")
        pipe.wait_stage(school, "opened", rule="panic")
        pipe.emit(f"{school}-cam-1", "video.fight", zone="gate")
    up = pipe.wait_stage(school, "corroborated", rule="panic")
    assert up["certainty"] == "Observed"
