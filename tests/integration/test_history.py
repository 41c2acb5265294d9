"""The incident history store and the 1-3-5 report on a recorded week of traffic,
against SQLite and a real PostgreSQL (Debian's server, started by the test session)."""

from __future__ import annotations

import statistics
import time

import pytest

from pipeline.ops import report
from pipeline.ops.store import Store
from pipeline.records import iso_utc, parse_ts
from streams import DAY, registry, week

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.sqlite3'}"
    return request.getfixturevalue("postgres").create_database()


@pytest.fixture
def start() -> float:
    return time.time() - 4 * DAY


def test_migrations_apply_once(store_url):
    store = Store(store_url)  # migrates on open
    assert store.migrate() == []
    assert [r["version"] for r in store._rows("SELECT version FROM schema_migrations ORDER BY version")] == [1, 2]


def test_mobile_unit_columns_and_reports(store_url):
    """Migration 0002 on both databases: what a card shows of the units, and the units' reports."""
    from pipeline.ops.store import Record
    from pipeline.records import CanonicalEvent

    store = Store(store_url, max_clock_skew_seconds=60)
    t0 = 1_790_000_000.0
    base = {"incident_id": "inc-20260921-s1-0001-abcdef", "school_id": "s1", "rule": "panic", "status": "Actual", "severity": "Extreme", "msgType": "Alert"}
    near = [{"unit_id": "car-07", "profile": "car", "callsign": "", "distance_m": 1000.0, "road_m": 1400.0, "eta_s": 126.0, "position_age_s": 1.0,
             "in_area": True, "lat": 30.66, "lon": 104.08}]
    alerts = [
        {**base, "identifier": f"{base['incident_id']}/opened", "stage": "opened", "sent": iso_utc(t0), "nearest_units": near},
        {**base, "identifier": f"{base['incident_id']}/dispatched-1", "stage": "dispatched-1", "msgType": "Update", "sent": iso_utc(t0 + 10), "unit": "car-07",
         "dispatched": ["car-07"], "nearest_units": near, "by": "duty"},
        {**base, "identifier": f"{base['incident_id']}/arrived", "stage": "arrived", "msgType": "Update", "sent": iso_utc(t0 + 100), "unit": "car-07",
         "dispatched": ["car-07"], "nearest_units": near, "by": "duty"},
    ]

    def ev(etype: str, at: float, n: int, **attrs) -> dict:
        return CanonicalEvent(event_id=f"car-{n}", type=etype, ts=iso_utc(at), device_id="car-07", school_id="", kind="mobile_unit", zone="", source="native",
                              mqtt_topic="huxue/v1/devices/car-07/events", received_at=iso_utc(at), attrs=attrs).to_dict()

    reports = [ev("unit.status", t0 - 60, 0, status="available")] + [ev("unit.position", t0 + 10 * i, i + 1, lat=30.66, lon=104.08, speed_kmh=0, heading=0) for i in range(7)]
    records = [Record("alert", "huxue.alerts", 0, i, "s1", a) for i, a in enumerate(alerts)] + [Record("unit", "huxue.units", 0, i, "car-07/x", v) for i, v in enumerate(reports)]
    store.apply(records)
    store.apply(records)
    inc = store.incident(base["incident_id"])
    assert (inc["dispatched"], inc["arrived_unit"], inc["dispatched_at"], inc["nearest_units"]) == (["car-07"], "car-07", iso_utc(t0 + 10), near)
    assert [t["unit"] for t in store.timeline(base["incident_id"])] == ["", "car-07", "car-07"]
    rows = store.unit_reports(iso_utc(t0 + 5), iso_utc(t0 + 100))
    assert [(r["aspect"], r["event_id"]) for r in rows] == [("status", "car-0"), ("position", "car-1"), ("position", "car-4"), ("position", "car-7")]  # one position per 30 s
    assert store.first_unit_report_at() == t0 - 60


def test_store_keeps_incidents_timelines_silences_devices_and_posts(store_url, start):
    w = week(start)
    store = Store(store_url)
    store.apply(w.records)
    incidents = store.incidents(limit=100)
    real_panic = [i for i in incidents if i["rule"] == "panic" and i["status"] == "Actual"]
    assert len(real_panic) == 5 and len([i for i in incidents if i["status"] == "Exercise"]) == 1
    first = min((i for i in real_panic if i["school_id"] == "s1"), key=lambda i: i["opened_at"])
    assert (first["acked_by"], first["arrived_by"], first["closed_by"], first["closed_stage"], first["state"]) == ("guard-s1", "patrol-s1", "duty-s1", "resolved", "closed")
    assert parse_ts(first["acked_at"]) - parse_ts(first["opened_at"]) == pytest.approx(30, abs=0.01)
    never = [i for i in real_panic if i["state"] == "open"]
    assert len(never) == 1 and never[0]["stage"] == "mobile_overdue" and never[0]["acked_at"] is None
    timeline = store.timeline(first["incident_id"])
    # acknowledged at 30 s and on scene at 150 s: no deadline stage was due
    assert [(e["kind"], e["stage"]) for e in timeline] == [
        ("alert", "opened"), ("command", "ack"), ("alert", "acknowledged"), ("command", "arrive"), ("alert", "arrived"), ("command", "resolve"), ("alert", "resolved"),
    ]
    assert all(e["actor"] for e in timeline if e["kind"] == "command")
    health = [i for i in incidents if i["rule"] == "device_health"]
    assert len(health) == 1 and health[0]["closed_stage"] == "recovered" and health[0]["evidence"][0]["device_id"] == "s1-btn-2"
    assert [o["officer_id"] for o in store.rosters("s2")["s2-gate"]] == ["o-2"]  # o-1 checked out
    assert store.device_states("s2")["s2-cam-1"]["state"] == "offline"
    assert store.silences("s2", "1970-01-01T00:00:00.000Z") == []  # it ended
    ended = store._rows("SELECT state, ended_by, reason FROM silences")
    assert ended == [{"state": "ended", "ended_by": "expiry", "reason": "gate works"}]


def test_reapplying_in_other_batches_and_rebuilding_give_the_same_store(store_url, start, tmp_path):
    w = week(start)
    live = Store(store_url)
    for i in range(0, len(w.records), 7):  # as the recorder would, batch by batch
        live.apply(w.records[i : i + 7])
    live.apply(w.records)  # a replay of everything: a no-op
    rebuilt = Store(f"sqlite:///{tmp_path / 'rebuilt.sqlite3'}")
    rebuilt.apply(w.records)
    assert live.dump() == rebuilt.dump()
    assert live.positions() == rebuilt.positions()


def test_report_numbers_follow_the_recorded_week(store_url, start):
    w = week(start)
    store = Store(store_url)
    store.apply(w.records)
    r = report.compute(store, registry(), start - 3600, start + 4 * DAY)
    s1 = r["actual"]["panic"]["schools"]["s1"]
    assert s1["ack"]["median_s"] == pytest.approx(statistics.median(w.acks["s1"]), abs=0.01)
    assert s1["ack"]["p90_s"] == pytest.approx(max(w.acks["s1"]), abs=0.01)
    assert s1["ack"]["within"]["60"] == round(2 / 3, 3)
    assert s1["arrive"]["within"]["180"] == round(1 / 3, 3) and s1["arrive"]["within"]["300"] == round(2 / 3, 3)
    overall = r["actual"]["panic"]["overall"]
    assert overall["ack"]["incidents"] == 5 and overall["ack"]["never"] == 0 and overall["ack"]["still_open"] == 1  # open, not failed-and-closed
    assert r["drills"]["panic"]["overall"]["ack"]["incidents"] == 1  # drills apart, never mixed in
    assert r["actual"]["by_rule"] == {"panic": 5, "device_health": 1}
    assert sum(r["actual"]["by_hour"].values()) == 6
    observed = 4 * DAY - 8 * 3600  # from the store's first record (the first press; heartbeats are not stored)
    assert report.observed_since(store) == pytest.approx(start + 8 * 3600, abs=0.01)
    assert r["availability"]["s1"]["observed_seconds"] == round(observed) and r["availability"]["s1"]["period_seconds"] == 4 * DAY + 3600
    assert r["availability"]["s1"]["availability"] == round(1 - w.down["s1"] / (2 * observed), 4)
    assert r["availability"]["s2"]["availability"] == 1.0
    page = report.render_html(r, report.charts(store, r, start - 3600, start + 4 * DAY))
    assert page.count("data:image/png;base64,") == 6 and 'School S1 <small class="id">s1</small>' in page and "Drills" in page
