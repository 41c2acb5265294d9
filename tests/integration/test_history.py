"""The incident history store and the 1-3-5 report on a recorded week of traffic,
against SQLite and a real PostgreSQL (Debian's server, started by the test session)."""

from __future__ import annotations

import statistics
import time

import pytest

from pipeline.ops import report
from pipeline.ops.store import Store
from pipeline.records import parse_ts
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
    assert [r["version"] for r in store._rows("SELECT version FROM schema_migrations")] == [1]


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
