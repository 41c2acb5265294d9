"""The urgent lane: a press reaches the worker on its own topic, ahead of telemetry.

The bridge writes a panic press to `huxue.urgent` first and to `huxue.events`; the
worker's `urgent` agent (urgent topic, commands, ticks) applies it, the `process` agent
sees the copy later and applies nothing twice. Whichever of a press and a camera event
comes first, the press is corroborated.
"""

from __future__ import annotations

import time

import pytest

from harness import QUIET_RULES, Collector, Pipeline, wait_for
from pipeline.records import dumps, iso_utc

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
    urgent = Collector(pipe.cfg, pipe.cfg.topics.urgent)
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


BACKLOG = 20_000  # canonical heartbeats queued for the worker before the press


def _canonical(device: str, school: str, etype: str, event_id: str, **attrs) -> bytes:
    now = iso_utc(time.time())
    return dumps(
        {"event_id": event_id, "type": etype, "ts": now, "device_id": device, "school_id": school, "kind": "video_analytics",
         "zone": "gate", "source": "native", "mqtt_topic": f"huxue/v1/devices/{device}/events", "received_at": now, "attrs": attrs}
    )


def test_a_press_overtakes_a_backlog_of_telemetry_in_the_worker(stack, tmp_path):
    """20,000 camera events wait on the events topic, ending with a fight at t31 (it raises an
    alert when processed); the worker starts on them, then a press at t30 arrives the way the
    bridge writes it (urgent topic first, then its copy on the events topic, behind the
    backlog). Its incident opens before the backlog's last event is processed, once."""
    rules = {**QUIET_RULES, "video_behaviour": {"enabled": True}}
    p = Pipeline(stack, tmp_path, rules=rules, escalation=(30, 60, 90))
    try:
        t = p.cfg.topics
        schools = [f"t{i:02d}" for i in range(40, 60)]
        for n in range(BACKLOG):
            school = schools[n % len(schools)]
            p.producer.send(t.events, key=school, value=_canonical(f"{school}-cam-1", school, "device.heartbeat", f"bl-{n}"))
        p.producer.send(t.events, key="t31", value=_canonical("t31-cam-1", "t31", "video.fight", "bl-marker"))
        p.producer.flush(60)
        p.start_worker()
        wait_for(lambda: sum(p.committed(t.events).values()) > 0, 60, "the worker to work on the backlog")
        press = _canonical("t30-btn-1", "t30", "panic.pressed", "urgent-press").replace(b'"kind":"video_analytics"', b'"kind":"panic_button"')
        p.producer.send(t.urgent, key="t30", value=press).get(30)
        p.producer.send(t.events, key="t30", value=press).get(30)
        p.wait_stage("t30", "opened", timeout=60)
        assert not p.alerts_of("t31"), "the press was applied only after the whole backlog"
        p.wait_stage("t31", "opened", timeout=180)  # the backlog's last event
        p.wait_processed(timeout=120)
        assert [a["stage"] for a in p.alerts_of("t30")] == ["opened"], "the press's copy behind the backlog applied nothing"
    finally:
        p.close()
