"""Time-driven work survives a worker crash (kill -9): the 1-3-5 ladder, heartbeat absence, post checks."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from harness import QUIET_RULES, Pipeline
from pipeline.records import parse_ts

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_worker_killed_mid_ladder_emits_remaining_stages_exactly_once(stack, workdir, store):
    # memory://: the state is rebuilt from the changelog at start; rocksdb:// (rocksdict):
    # kept on disk, only the changelog written since is read back
    p = Pipeline(stack, workdir, escalation=(3, 8, 12), worker={"store": store})
    try:
        p.start()
        p.press("t20-btn-1")
        p.wait_stage("t20", "opened")
        p.wait_stage("t20", "onsite_overdue")
        p.worker.kill()
        p.press("t21-btn-1")  # pressed while no worker runs: must still open and escalate
        p.start_worker()
        last = p.wait_stage("t20", "mobile_overdue", timeout=60)
        p.wait_stage("t21", "mobile_overdue", timeout=60)
        for school in ("t20", "t21"):
            alerts = p.alerts_of(school)
            # At-least-once: a kill between an alert and the state that records it re-sends
            # that alert with the same identifier (consumers de-duplicate on it). What must
            # hold: every stage is emitted, under one identifier, in ladder order.
            ids_by_stage: dict[str, set[str]] = {}
            for a in alerts:
                ids_by_stage.setdefault(a["stage"], set()).add(a["identifier"])
            assert {s: len(i) for s, i in ids_by_stage.items()} == {"opened": 1, "onsite_overdue": 1, "mobile_late": 1, "mobile_overdue": 1}, (school, alerts)
            distinct = list(dict.fromkeys((a["identifier"], a["stage"]) for a in alerts))
            assert [stage for _, stage in distinct] == ["opened", "onsite_overdue", "mobile_late", "mobile_overdue"]
            resent = len(alerts) - len(distinct)
            assert resent <= 1, f"{school}: {resent} copies re-sent after the crash"
        # a stage is sent as of its deadline, whichever input fired it (the copy after the crash too)
        assert parse_ts(last["sent"]) == parse_ts(last["due"])
        if store == "rocksdb://":  # the tables really were RocksDB databases on disk
            assert list(p.cfg.worker_datadir.rglob("CURRENT")), sorted(p.cfg.worker_datadir.rglob("*"))
    finally:
        p.close()


def test_command_after_restart_still_moves_the_incident(stack, workdir):
    p = Pipeline(stack, workdir, escalation=(30, 60, 90))
    try:
        p.start()
        p.press("t22-btn-1")
        opened = p.wait_stage("t22", "opened")
        p.worker.kill()
        p.start_worker()
        p.command("ack", opened["incident_id"], by="guard-after-restart")
        p.wait_stage("t22", "acknowledged")
        p.command("ack", opened["incident_id"], by="guard-twice")
        rej = p.rejected.wait(lambda rs: [r for r in rs if r.get("command", {}).get("by") == "guard-twice"], 20, "the duplicate ack rejected")
        assert rej[0]["reason_code"] == "already_acknowledged"
        assert [a["stage"] for a in p.alerts_of("t22")] == ["opened", "acknowledged"]
    finally:
        p.close()


def _school(sid: str, extra: dict | None = None) -> dict:
    return {"id": sid, "name": f"Restart School {sid}", "timezone": "Asia/Shanghai", **(extra or {})}


def test_heartbeat_absence_fires_after_a_worker_restart_exactly_once(stack, workdir):
    registry = {
        "schools": [_school("h01")],
        "devices": [
            {"id": "h01-btn-1", "school": "h01", "kind": "panic_button", "zone": "gate"},
            {"id": "h01-btn-2", "school": "h01", "kind": "panic_button", "zone": "office"},
            {"id": "h01-cam-1", "school": "h01", "kind": "video_analytics", "zone": "gate"},
        ],
    }
    rules = {**QUIET_RULES, "device_health": {"heartbeat_timeout_seconds": 8}}
    p = Pipeline(stack, workdir, registry=registry, rules=rules, probe_device="h01-cam-1")
    try:
        p.start()
        beats = [p.emit(b, "device.heartbeat", battery=90) for b in ("h01-btn-1", "h01-btn-2")]
        p.sentinel("h01", "h01-btn-1")  # the worker has seen the heartbeats (and the drill press)
        last = max(parse_ts(b["ts"]) for b in beats)
        p.worker.kill()  # the absence deadline now lives only in the changelog
        p.start_worker()
        absent = p.alerts.wait(
            lambda rs: (m := [a for a in rs if a["rule"] == "device_health" and a["stage"] == "opened"]) and len(m) >= 2 and m, 60, "both buttons absent"
        )
        assert {a["evidence"][0]["device_id"] for a in absent} == {"h01-btn-1", "h01-btn-2"}
        assert all(parse_ts(a["sent"]) >= last + 8 for a in absent)  # not before it was due
        p.emit("h01-btn-2", "device.heartbeat", battery=90)
        p.wait_stage("h01", "recovered", rule="device_health")
        opened = [a for a in p.alerts_of("h01") if a["rule"] == "device_health" and a["stage"] == "opened"]
        assert len(opened) == 2, opened  # exactly once each, across the restart
    finally:
        p.close()


def test_post_staffing_check_fires_after_a_worker_restart(stack, workdir):
    tz = ZoneInfo("Asia/Shanghai")
    start = (datetime.now(tz) + timedelta(seconds=20)).replace(microsecond=0)  # windows have whole seconds
    end = start + timedelta(seconds=25)
    registry = {
        "schools": [
            _school(
                sid,
                {
                    "windows": [{"start": start.strftime("%H:%M:%S"), "end": end.strftime("%H:%M:%S")}],
                    "posts": [{"id": f"{sid}-gate-n", "required_officers": 2}],
                    "hours": {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "open": "00:00", "close": "00:00"},
                },
            )
            for sid in ("g01", "g02")  # g02: fully staffed, the near miss
        ],
        "devices": [
            {"id": f"{sid}-{suffix}", "school": sid, "kind": kind, "zone": "gate"}
            for sid in ("g01", "g02")
            for suffix, kind in (("post-1", "guard_terminal"), ("btn-1", "panic_button"))
        ],
    }
    rules = {**QUIET_RULES, "post_staffing": {"grace_seconds": 3}}
    p = Pipeline(stack, workdir, registry=registry, rules=rules, probe_device="g01-post-1")
    try:
        p.start()
        p.emit("g01-post-1", "guard.checkin", post_id="g01-gate-n", officer_id="officer-wang")
        p.emit("g02-post-1", "guard.checkin", post_id="g02-gate-n", officer_id="officer-zhao")
        p.emit("g02-post-1", "guard.checkin", post_id="g02-gate-n", officer_id="officer-qian")
        p.sentinel("g01", "g01-btn-1")
        assert time.time() < start.timestamp(), "the window must start after the pipeline is up"
        p.worker.kill()
        p.start_worker()  # the check (window start + 3 s) is due after the restart
        short = p.wait_stage("g01", "opened", rule="post_staffing", timeout=60)
        assert parse_ts(short["sent"]) >= start.timestamp() + 3
        assert short["severity"] == "Moderate" and "1 of 2" in short["headline"]
        p.emit("g01-post-1", "guard.checkin", post_id="g01-gate-n", officer_id="officer-li")
        restored = p.wait_stage("g01", "restored", rule="post_staffing")
        assert restored["incident_id"] == short["incident_id"] and restored["msgType"] == "Cancel"
        p.emit("g01-post-1", "guard.checkout", post_id="g01-gate-n", officer_id="officer-li")
        again = p.alerts.wait(lambda rs: [a for a in rs if a["rule"] == "post_staffing" and a["stage"] == "opened" and a["incident_id"] != short["incident_id"]], 20, "short again")[0]
        ended = p.wait_stage("g01", "window_ended", rule="post_staffing", timeout=60)
        assert ended["incident_id"] == again["incident_id"] and parse_ts(ended["sent"]) >= end.timestamp()
        p.sentinel("g02", "g02-btn-1")  # after g02's check and window end too
        assert not [a for a in p.alerts_of("g02") if a["rule"] == "post_staffing"]
        stages = [(a["incident_id"], a["stage"]) for a in p.alerts_of("g01") if a["rule"] == "post_staffing"]
        assert stages == [(short["incident_id"], "opened"), (short["incident_id"], "restored"), (again["incident_id"], "opened"), (again["incident_id"], "window_ended")]
    finally:
        p.close()
