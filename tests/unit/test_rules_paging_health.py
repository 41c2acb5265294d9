"""Rule `paging_health` (pipeline/rules/paging_health.py): huxue notifier's verdict that a
receiver is failing becomes an incident of the school, closed when it delivers again."""

from __future__ import annotations

import orjson
import pytest

from pipeline.notify import routing
from pipeline.records import Notification, iso_utc
from pipeline.rules import engine, paging_health
from unit_helpers import SCHOOL, SCHOOL_NAME, T0, Driver, rules_ctx


def note(outcome: str, receiver: str = "ops-hook", at: float = T0, rule: str = "perimeter", n: int = 1, **kw) -> Notification:
    fields = {
        "identifier": f"inc-{n}/opened", "incident_id": f"inc-{n}", "school_id": SCHOOL, "receiver": receiver, "type": "webhook",
        "attempt": 0 if outcome.startswith("receiver_") else 1, "outcome": outcome, "at": iso_utc(at), "rule": rule,
        "error": "HTTP 500" if outcome != "delivered" else "", **kw,
    }
    return Notification.from_dict(fields)


class Pager(Driver):
    def note(self, n: Notification, now: float):
        return self._take(engine.on_notification(self.state, n, now, self.ctx))


def pager(**settings) -> Pager:
    return Pager(rules_ctx("paging_health", **({"paging_health": settings} if settings else {})))


def test_failing_opens_an_incident_that_recovers_on_the_next_delivery():
    d = pager()
    [a] = d.note(note("receiver_failing"), T0)
    assert (a.rule, a.stage, a.msgType, a.status, a.severity, a.urgency, a.certainty) == ("paging_health", "opened", "Alert", "Actual", "Moderate", "Expected", "Observed")
    assert a.headline == f"Paging to ops-hook failing at {SCHOOL_NAME}" and a.notify == ["onsite", "command"]
    assert a.evidence[0]["receiver"] == "ops-hook" and a.evidence[0]["incident_id"] == "inc-1" and a.evidence[0]["error"] == "HTTP 500"
    assert d.state.incidents[a.incident_id].key == "ops-hook"
    # still failing: more failures and another verdict open nothing new
    assert d.note(note("failed", at=T0 + 1, n=2), T0 + 1) == []
    assert d.note(note("receiver_failing", at=T0 + 2, n=3), T0 + 2) == []
    # another receiver's delivery is no recovery of this one
    assert d.note(note("delivered", receiver="duty-room", at=T0 + 3), T0 + 3) == []
    [c] = d.note(note("delivered", at=T0 + 4, n=4), T0 + 4)
    assert (c.incident_id, c.stage, c.msgType) == (a.incident_id, "recovered", "Cancel")
    assert d.state.incidents == {} and d.state.closed[a.incident_id] == ["recovered", T0 + 4]
    # failing again later: a new incident
    [b] = d.note(note("receiver_failing", at=T0 + 60, n=5), T0 + 60)
    assert b.stage == "opened" and b.incident_id != a.incident_id


def test_the_notifiers_recovery_record_closes_it_too():
    d = pager()
    [a] = d.note(note("receiver_failing"), T0)
    [c] = d.note(note("receiver_recovered", identifier="", incident_id="", at=T0 + 5), T0 + 5)
    assert (c.incident_id, c.stage) == (a.incident_id, "recovered")


def test_each_receiver_has_its_own_incident():
    d = pager()
    [a] = d.note(note("receiver_failing", receiver="ops-hook"), T0)
    [b] = d.note(note("receiver_failing", receiver="duty-room"), T0 + 1)
    assert a.incident_id != b.incident_id and "duty-room" in b.headline
    [c] = d.note(note("delivered", receiver="duty-room", at=T0 + 2), T0 + 2)
    assert c.incident_id == b.incident_id and list(d.state.incidents) == [a.incident_id]


def test_a_failing_panic_page_is_severe_and_raises_an_open_incident_once():
    d = pager()
    [a] = d.note(note("receiver_failing", rule="panic"), T0)
    assert (a.severity, a.urgency) == ("Severe", "Immediate")
    d = pager()
    [a] = d.note(note("receiver_failing"), T0)
    assert d.note(note("retrying", rule="perimeter", at=T0 + 1), T0 + 1) == []
    [up] = d.note(note("retrying", rule="panic", n=2, at=T0 + 2), T0 + 2)
    assert (up.incident_id, up.stage, up.msgType, up.severity) == (a.incident_id, "joined-2", "Update", "Severe")
    assert d.note(note("failed", rule="panic", n=3, at=T0 + 3), T0 + 3) == []  # Severe already: nothing more


def test_severities_are_configurable_and_the_rule_can_be_switched_off():
    assert pager(severity="Minor", severity_panic="Extreme").note(note("receiver_failing"), T0)[0].severity == "Minor"
    assert pager(severity="Minor", severity_panic="Extreme").note(note("receiver_failing", rule="panic"), T0)[0].severity == "Extreme"
    assert pager(enabled=False).note(note("receiver_failing"), T0) == []


def test_operators_close_it_like_any_incident_and_it_stays_closed_while_failing():
    d = pager()
    [a] = d.note(note("receiver_failing"), T0)
    d.command(T0 + 5, "ack", a.incident_id)
    d.command(T0 + 6, "resolve", a.incident_id)
    assert d.stages(a.incident_id) == ["opened", "acknowledged", "resolved"]
    assert d.note(note("failed", at=T0 + 7, n=2), T0 + 7) == []  # the notifier reports a spell once
    assert d.note(note("delivered", at=T0 + 8, n=3), T0 + 8) == []  # nothing open to close


def test_redelivered_records_change_nothing():
    d = pager()
    failing = note("receiver_failing")
    [a] = d.note(failing, T0)
    d.note(note("delivered", at=T0 + 1), T0 + 1)
    # a crash replays the verdict after the recovery: no second incident
    assert d.note(failing, T0 + 2) == [] and d.state.incidents == {}


def test_not_silenced_nor_folded_by_flood_control():
    d = Pager(rules_ctx("paging_health", flood={"max_incidents": 0}))
    d.school_command(T0, "silence", reason="maintenance", duration_seconds=3600)
    [a] = d.note(note("receiver_failing"), T0 + 1)
    assert a.rule == "paging_health" and a.stage == "opened"


def test_relevant_records_only():
    assert paging_health.relevant(note("receiver_failing")) and paging_health.relevant(note("delivered"))
    assert paging_health.relevant(note("receiver_recovered")) and paging_health.relevant(note("retrying", rule="panic"))
    assert not paging_health.relevant(note("retrying")) and not paging_health.relevant(note("failed", rule="paging_health"))
    assert not paging_health.relevant(note("skipped", receiver="")) and not paging_health.relevant(note("receiver_failing", school_id=""))


def test_notification_records_are_validated():
    n = note("delivered", latency_ms=12, http_status=200)
    assert Notification.from_dict(orjson.loads(orjson.dumps(n.to_dict()))) == n
    assert Notification.from_dict({**n.to_dict(), "unknown": 1, "identifier": None}).identifier == ""
    for bad in ([], {"school_id": 1, "receiver": "", "outcome": "x", "at": ""}, {"receiver": "r"}):
        with pytest.raises(ValueError):
            Notification.from_dict(bad)


def test_the_incident_is_never_paged_to_the_failing_receiver(tmp_path):
    """Routing: its own receiver is left out; when that leaves nobody, every role's people."""
    import yaml

    from pipeline.config import load_config

    hooks = [{"name": n, "type": "webhook", "url": f"https://hooks.example/{n}"} for n in ("ops-hook", "duty-room", "guards")]
    (tmp_path / "huxue.yaml").write_text(yaml.safe_dump({
        "notify": {"receivers": hooks, "roles": {"command": ["duty-room"], "mobile": ["guards"]}, "routes": [{"receivers": ["ops-hook"]}]},
    }))
    cfg = load_config(tmp_path / "huxue.yaml", env={})
    d = pager()
    [a] = d.note(note("receiver_failing", receiver="ops-hook"), T0)
    assert paging_health.receiver_of(a.to_dict()) == "ops-hook"
    assert routing.route(a.to_dict(), cfg.notify).receivers == ("duty-room",)
    [b] = d.note(note("receiver_failing", receiver="duty-room"), T0)
    assert routing.route(b.to_dict(), cfg.notify).receivers == ("ops-hook",)
    # only the failing one would be paged: the people of every role instead (not it)
    only = cfg.notify.__class__(receivers=cfg.notify.receivers, roles={"command": ("duty-room",), "mobile": ("guards",)}, routes=())
    assert routing.route(b.to_dict(), only).receivers == ("guards",)
    assert paging_health.receiver_of({"rule": "panic", "evidence": [{"receiver": "x"}]}) == ""
