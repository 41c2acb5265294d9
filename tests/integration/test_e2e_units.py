"""Mobile units end to end (issue 13), on the real stack: units publish positions and status
over MQTT, the bridge puts them on the units topic, the worker reads them whole; a press
gets its nearest units in ETA order, a dispatch and an arrival close the loop, and a unit
driving away during a school's window opens a coverage gap that its return closes."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from harness import QUIET_RULES, Pipeline
from pipeline.records import dumps, iso_utc

pytestmark = pytest.mark.integration

TZ = "Asia/Shanghai"
U1 = (30.6571, 104.0817)  # school u1
U2 = (30.6571, 104.3000)  # school u2, about 21 km east: u1's units do not cover it


def north_of(at: tuple[float, float], metres: float) -> tuple[float, float]:
    return at[0] + metres / 111_195, at[1]


def registry() -> dict:
    """Two schools whose drop-off window and school hours span the test, every day."""
    now = datetime.now(ZoneInfo(TZ))
    start, end = (now - timedelta(hours=1)).strftime("%H:%M"), (now + timedelta(hours=1)).strftime("%H:%M")
    days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    schools = [
        {"id": sid, "name": f"Units School {sid}", "timezone": TZ, "coordinates": {"lat": at[0], "lon": at[1]},
         "hours": {"days": days, "open": start, "close": end}, "windows": [{"start": start, "end": end}]}
        for sid, at in (("u1", U1), ("u2", U2))
    ]
    devices = [{"id": f"{sid}-btn-1", "school": sid, "kind": "panic_button", "zone": "gate"} for sid in ("u1", "u2")]
    devices.append({"id": "u1-cam-1", "school": "u1", "kind": "video_analytics", "zone": "gate"})  # the pipeline's probe
    units = [
        {"id": "car-a", "profile": "car", "area": ["u1"], "callsign": "Patrol A"},
        {"id": "moto-b", "profile": "motorbike", "area": ["u1"]},
        {"id": "car-c", "profile": "car", "area": ["u1"]},
        {"id": "car-d", "profile": "car", "area": ["u2"]},
    ]
    return {"schools": schools, "devices": devices, "units": units}


def report(p: Pipeline, unit: str, etype: str, **attrs) -> None:
    body = {"event_id": p.event_id(), "type": etype, "ts": iso_utc(time.time()), "attrs": attrs}
    p.publisher.publish(f"huxue/v1/devices/{unit}/events", dumps(body)).wait_for_publish(10)


def position(p: Pipeline, unit: str, at: tuple[float, float]) -> None:
    report(p, unit, "unit.position", lat=at[0], lon=at[1], speed_kmh=30, heading=90)


def nearest(alert: dict) -> list[str]:
    return [u["unit_id"] for u in alert.get("nearest_units") or []]


def listed(alerts: list[dict], school: str) -> list[str] | None:
    """The nearest units last sent for the school's real panic (opened, then units-<n>)."""
    lists = [a for a in alerts if a["school_id"] == school and a["rule"] == "panic" and a["status"] == "Actual" and (a["stage"] == "opened" or a["stage"].startswith("units-"))]
    return nearest(lists[-1]) if lists else None


def test_a_press_gets_its_nearest_units_a_dispatch_and_an_arrival_close_the_loop_and_coverage_follows_the_units(stack, workdir):
    rules = {**QUIET_RULES, "coverage_gap": {"check_seconds": 1, "confirm_seconds": 2}}
    p = Pipeline(stack, workdir, escalation=(60, 180, 300), registry=registry(), rules=rules, probe_device="u1-cam-1", config={"units": {"stale_after_seconds": 600}})
    try:
        p.start()
        for unit in ("car-a", "moto-b", "car-c", "car-d"):
            report(p, unit, "unit.status", status="available")
        position(p, "car-c", north_of(U1, 3000))  # ~378 s by car
        position(p, "moto-b", north_of(U1, 2000))  # ~288 s by motorbike
        position(p, "car-a", north_of(U1, 1000))  # ~126 s
        position(p, "car-d", north_of(U2, 1000))  # covers u2

        # A drill press first: its nearest units follow the worker's view of the units
        # topic (Updates units-<n>) until it has all three.
        p.press("u1-btn-1", exercise=True)
        p.alerts.wait(lambda rs: [a for a in rs if a["status"] == "Exercise" and nearest(a)[:3] == ["car-a", "moto-b", "car-c"]], 30, "the drill's nearest units")

        p.press("u1-btn-1")
        opened = p.alerts.wait(lambda rs: [a for a in rs if a["status"] == "Actual" and a["school_id"] == "u1" and a["stage"] == "opened"], 20, "the real press")[0]
        assert nearest(opened)[:3] == ["car-a", "moto-b", "car-c"]  # by ETA: car-d is 21 km away
        first = opened["nearest_units"][0]
        assert first["callsign"] == "Patrol A" and first["in_area"] and 900 < first["distance_m"] < 1100 and 100 < first["eta_s"] < 150
        iid = opened["incident_id"]

        p.command("dispatch", iid, unit="car-a")
        sent = p.wait_stage("u1", "dispatched-1")
        assert (sent["unit"], sent["dispatched"]) == ("car-a", ["car-a"])
        # car-a is busy now, whatever its terminal says: a panic at u2 (21 km east) lists
        # car-d, then not car-a (2,634 s) but car-c (2,658 s) and moto-b (3,020 s)
        p.press("u2-btn-1")
        p.alerts.wait(lambda rs: [1] if listed(rs, "u2") == ["car-d", "car-c", "moto-b"] else [], 30, "u2's units without the busy car-a")
        report(p, "car-a", "unit.status", status="available")  # a terminal repeating itself frees nothing
        p.command("arrive", iid)  # no unit named: the one dispatched
        arrived = p.wait_stage("u1", "arrived")
        assert arrived["unit"] == "car-a"
        p.command("dispatch", iid, unit="car-zz")
        rejected = p.rejected.wait(lambda rs: [r for r in rs if r.get("command", {}).get("unit") == "car-zz"], 20, "the unknown unit rejected")
        assert rejected[0]["reason_code"] == "unknown_unit"
        assert listed(p.alerts.records, "u2") == ["car-d", "car-c", "moto-b"]
        # the u1 incident closes: car-a is free again, and u2's list takes it back
        p.command("resolve", iid)
        p.wait_stage("u1", "resolved")
        p.alerts.wait(lambda rs: [1] if listed(rs, "u2") == ["car-d", "car-a", "car-c"] else [], 30, "u2's units with car-a back")

        # coverage: u2 is covered by car-d; car-d drives 10 km away (21 min) and comes back
        assert not [a for a in p.alerts.records if a["rule"] == "coverage_gap" and a["school_id"] == "u2"]
        position(p, "car-d", north_of(U2, 10_000))
        gap = p.wait_stage("u2", "opened", rule="coverage_gap", timeout=30)
        assert gap["severity"] == "Severe" and "car-d" in gap["headline"]
        position(p, "car-d", north_of(U2, 500))
        p.wait_stage("u2", "restored", rule="coverage_gap", timeout=30)
        # u1 stayed covered throughout (moto-b and car-c are still available near it)
        assert not [a for a in p.alerts.records if a["rule"] == "coverage_gap" and a["school_id"] == "u1"]
    finally:
        p.close()
