"""Deadlines survive a worker crash: kill -9 mid-ladder, restart, remaining stages exactly once."""

from __future__ import annotations

from collections import Counter

import pytest

from harness import Pipeline
from pipeline.records import parse_ts

pytestmark = pytest.mark.integration


def test_worker_killed_mid_ladder_emits_remaining_stages_exactly_once(stack, workdir):
    p = Pipeline(stack, workdir, escalation=(3, 8, 12))
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
            by_stage = Counter(a["stage"] for a in alerts)
            assert by_stage == Counter({"opened": 1, "onsite_overdue": 1, "mobile_late": 1, "mobile_overdue": 1}), (school, alerts)
            ids = [a["identifier"] for a in alerts]
            assert len(ids) == len(set(ids))
            assert [a["stage"] for a in alerts] == ["opened", "onsite_overdue", "mobile_late", "mobile_overdue"]
        assert parse_ts(last["sent"]) >= parse_ts(last["due"])
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
