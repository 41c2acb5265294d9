"""Records placed by other partitioners still reach their school's one writer.

kcat, confluent-kafka and other librdkafka clients place keys with CRC32
(`consistent_random`), huxue with murmur2. Commands and events sent with kcat's
defaults, with no key at all, or with a wrong key, must act exactly as if huxue's own
producer had sent them: the worker forwards them to the school's partition first.
"""

from __future__ import annotations

import base64
import time
import uuid

import pytest

from harness import Pipeline, kcat_command, kcat_partition
from pipeline import kafka_client
from pipeline.kafka_client import partition_for
from pipeline.records import dumps, iso_utc

pytestmark = pytest.mark.integration

PARTITIONS = 3


# schools of the test registry whose CRC32 (kcat) and murmur2 (huxue) partitions differ
MISPLACED = [s for s in (f"t{i:02d}" for i in range(1, 60)) if kcat_partition(s, PARTITIONS) != partition_for(s, PARTITIONS)]


@pytest.fixture(scope="module")
def pipe(stack, tmp_path_factory):
    p = Pipeline(stack, tmp_path_factory.mktemp("partitioner"), partitions=PARTITIONS, escalation=(30, 60, 90))
    try:
        yield p.start()
    finally:
        p.close()


def test_kcat_commands_with_the_default_partitioner_move_the_incident(pipe):
    school = MISPLACED[0]
    pipe.press(f"{school}-btn-1")
    opened = pipe.wait_stage(school, "opened")
    iid = opened["incident_id"]
    bootstrap, topic = pipe.cfg.kafka.bootstrap, pipe.cfg.topics.commands
    for verb, stage in (("ack", "acknowledged"), ("arrive", "arrived"), ("resolve", "resolved")):
        cmd = {"command": verb, "incident_id": iid, "school_id": school, "by": "kcat-user", "command_id": uuid.uuid4().hex}
        kcat_command(bootstrap, topic, school, dumps(cmd))
        alert = pipe.wait_stage(school, stage)
        assert alert["command_id"] == cmd["command_id"] and alert["by"] == "kcat-user"
    mine = [a for a in pipe.alerts_of(school) if a["incident_id"] == iid]
    assert [a["stage"] for a in mine] == ["opened", "acknowledged", "arrived", "resolved"]
    assert len({a["identifier"] for a in mine}) == 4, "each stage under its own identifier"
    assert not [r for r in pipe.rejected.records if r.get("command", {}).get("incident_id") == iid]
    # the kcat records really landed elsewhere, and were forwarded to the school's partition
    placed = {r.partition for r in _commands_raw(pipe) if b"kcat-user" in r.value and r.key == school.encode()}
    assert placed == {kcat_partition(school, PARTITIONS), partition_for(school, PARTITIONS)}


def test_commands_without_a_key_or_with_a_wrong_key_work(pipe):
    school = MISPLACED[1]
    pipe.press(f"{school}-btn-1")
    iid = pipe.wait_stage(school, "opened")["incident_id"]
    bootstrap, topic = pipe.cfg.kafka.bootstrap, pipe.cfg.topics.commands
    kcat_command(bootstrap, topic, None, dumps({"command": "ack", "incident_id": iid, "by": "no-key"}))
    pipe.wait_stage(school, "acknowledged")
    kcat_command(bootstrap, topic, "some-device-id", dumps({"command": "arrive", "incident_id": iid, "by": "wrong-key"}))
    assert pipe.wait_stage(school, "arrived")["by"] == "wrong-key"


def test_events_placed_by_a_foreign_producer_open_and_join_at_the_school(pipe):
    """A foreign bridge writing canonical events with kcat: keyed by device, CRC32."""
    school = MISPLACED[2]
    now = iso_utc(time.time())
    for n, device in enumerate((f"{school}-btn-1", f"{school}-btn-2")):
        event = {
            "event_id": f"foreign-{uuid.uuid4().hex[:8]}",
            "type": "panic.pressed",
            "ts": now,
            "device_id": device,
            "school_id": school,
            "kind": "panic_button",
            "zone": "gate",
            "source": "native",
            "mqtt_topic": f"huxue/v1/devices/{device}/events",
            "received_at": now,
        }
        kcat_command(pipe.cfg.kafka.bootstrap, pipe.cfg.topics.events, device, dumps(event))
        pipe.wait_stage(school, "opened" if n == 0 else "joined-2")
    incidents = {a["incident_id"] for a in pipe.alerts_of(school)}
    assert len(incidents) == 1, "both presses belong to one incident: one writer for the school"


def _commands_raw(pipe: Pipeline) -> list:
    from kafka import TopicPartition

    consumer = kafka_client.consumer(pipe.cfg, "admin", group_id=None, enable_auto_commit=False, consumer_timeout_ms=3000)
    try:
        parts = [TopicPartition(pipe.cfg.topics.commands, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        return list(consumer)
    finally:
        consumer.close()


def test_a_foreign_record_that_is_not_an_event_is_dead_lettered_byte_faithful(pipe):
    """Not UTF-8, not JSON: the worker's dead letter keeps the bytes (payload_b64)."""
    junk = b"\xff\xfe not an event \x00\x81"
    kcat_command(pipe.cfg.kafka.bootstrap, pipe.cfg.topics.events, "t05", junk)
    entry = pipe.dlq.wait(lambda rs: [r for r in rs if r.get("reason_code") == "worker_rejected" and "payload_b64" in r], 30, "the junk dead-lettered")[0]
    assert base64.b64decode(entry["payload_b64"]) == junk
    pipe.press("t05-btn-1")
    pipe.wait_stage("t05", "opened")
