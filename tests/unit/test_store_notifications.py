"""Paging attempts of `huxue notifier` on the incident's timeline in the history store."""

from __future__ import annotations

from pipeline.config import Config
from pipeline.ops import recorder
from pipeline.ops.store import Record, Store


def test_paging_attempts_land_on_the_incident_timeline_once(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'h.sqlite3'}")
    topic = Config().topics.notifications
    assert recorder.kinds(Config())[topic] == "notification"
    iid = "inc-20261201-zx-01-0001-abcdef"
    attempt = {"identifier": f"{iid}/opened", "incident_id": iid, "school_id": "zx-01", "receiver": "ops-hook", "type": "webhook",
               "attempt": 1, "outcome": "retrying", "http_status": 500, "error": "server error", "at": "2026-12-01T01:02:04.000Z"}
    delivered = {**attempt, "attempt": 2, "outcome": "delivered", "http_status": 200, "error": "", "at": "2026-12-01T01:02:05.000Z"}
    skipped = {**attempt, "receiver": "", "outcome": "skipped", "error": "no_route"}  # no receiver: not on a timeline
    records = [Record("notification", topic, 0, n, "zx-01", v) for n, v in enumerate((attempt, delivered, skipped))]
    changes = store.apply(records)
    assert [(c.what, c.id) for c in changes] == [("incident", iid), ("incident", iid)]
    rows = store.timeline(iid)
    assert [(r["kind"], r["stage"], r["actor"], r["note"]) for r in rows] == [
        ("notification", "retrying", "ops-hook", "HTTP 500; server error"),
        ("notification", "delivered", "ops-hook", "HTTP 200"),
    ]
    assert "paging ops-hook (webhook): delivered, attempt 2" in rows[1]["headline"]
    assert store.apply(records) == []  # re-applied: nothing new
