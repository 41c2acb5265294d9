"""pipeline/rules/engine.py and rule.py: one interface for rules, and one rule's failure
never stops the others (panic and the ladder above all) nor corrupts the school's state."""

from __future__ import annotations

import pytest

from pipeline.rules import engine, ladder, lockdown, silences
from pipeline.rules.rule import MAX_ERROR, CommandRejected, Rule, RuleFailure, RuleOutcome
from unit_helpers import BUTTONS, SCHOOL, T0, Driver, heartbeat, make_ctx, rules_ctx


class Boom(Rule):
    """A rule with a bug: it writes its memory, then raises, on events and on time."""

    name = "boom"
    memory = "boom"

    def on_event(self, state, event, now, ctx, claimed):
        state.remember("boom", {"seen": event.event_id})
        raise RuntimeError("boom on event")

    def on_time(self, state, now, ctx):
        state.remember("boom", {"due": now})
        raise KeyError("boom on time")


@pytest.fixture
def boom(monkeypatch):
    """The engine's rules with Boom first (before panic) and before the timed rules."""
    rules = engine.RULES
    monkeypatch.setattr(engine, "RULES", (Boom(), *rules))


def test_every_rule_implements_the_one_interface():
    names = [r.name for r in engine.RULES]
    assert len(names) == len(set(names))
    for r in engine.RULES:
        assert isinstance(r, Rule)
        assert r.memory is None or isinstance(r.memory, str)
        assert r.settings is None or hasattr(make_ctx().rules, r.settings)
    assert names[:2] == ["panic", "corroborated"]  # panic first; corroboration before those it claims for


def test_memory_keys_are_derived_from_the_rules():
    assert len(set(engine.MEMORY_KEYS)) == len(engine.MEMORY_KEYS)
    parts = {f"vehicle_loitering.{n}" for n in range(16)}
    assert set(engine.MEMORY_KEYS) == {"corroboration", "device_health", "post_staffing", "coverage_gap", "silence", "lockdown", "flood"} | parts


def test_command_rejected_keeps_its_old_import_path():
    assert ladder.CommandRejected is CommandRejected
    assert engine.command_key is not None


def test_rule_failure_is_the_exception_type_and_message_bounded():
    f = RuleFailure.of("boom", ValueError("x" * 1000))
    assert f.rule == "boom" and f.error.startswith("ValueError: xxx") and len(f.error) == MAX_ERROR


def test_a_failing_rule_leaves_the_state_and_panic_still_opens(boom):
    d = Driver()
    [a] = d.press(T0)
    assert a.rule == "panic" and a.stage == "opened"
    assert "boom" not in d.state.memory  # what it wrote before raising is discarded
    out = engine.on_event(d.state, heartbeat("zx01-btn-1"), T0 + 1, d.ctx)
    assert RuleFailure("boom", "RuntimeError: boom on event") in out.failures
    assert RuleFailure("boom", "KeyError: 'boom on time'") in out.failures


def test_a_failing_rule_changes_nothing_of_what_the_others_did(boom, monkeypatch):
    """The same inputs give the same alerts and state with and without the failing rule."""
    ctx = rules_ctx("corroboration", "device_health", "perimeter")
    with_boom = Driver(ctx)
    for i, button in enumerate(BUTTONS):
        with_boom.press(T0 + i, event_id=f"e-{i}", device_id=button)
    with_boom.tick(T0 + 400)
    monkeypatch.setattr(engine, "RULES", engine.RULES[1:])
    without = Driver(ctx)
    for i, button in enumerate(BUTTONS):
        without.press(T0 + i, event_id=f"e-{i}", device_id=button)
    without.tick(T0 + 400)
    assert [a.to_dict() for a in with_boom.alerts] == [a.to_dict() for a in without.alerts]
    assert with_boom.state == without.state


def test_a_failing_timed_rule_does_not_stop_the_ladder(boom):
    d = Driver()
    d.press(T0)
    out = engine.on_tick(d.state, T0 + 60, d.ctx)
    assert [a.stage for a in out.alerts] == ["onsite_overdue"]
    assert [f.rule for f in out.failures] == ["boom"]
    assert out.state.incidents[out.alerts[0].incident_id].stages == ("opened", "onsite_overdue")


def test_a_failing_timed_rule_does_not_stop_the_other_timed_rules(boom):
    d = Driver(rules_ctx("device_health"))
    d.tick(T0)
    out = engine.on_tick(d.state, T0 + 180, d.ctx)  # every panic button silent for the timeout
    assert sorted(a.rule for a in out.alerts) == ["device_health"] * len(BUTTONS)
    assert [f.rule for f in out.failures] == ["boom"]


def test_a_failing_deadline_stage_is_reported_and_the_other_incidents_still_fire(monkeypatch):
    d = Driver()
    [drill] = d.press(T0, event_id="drill", exercise=True)
    [real] = d.press(T0, event_id="real")
    fire_due = ladder.fire_due

    def broken_for_drills(inc, *args):
        if inc.status == "Exercise":
            raise ZeroDivisionError("division by zero")
        return fire_due(inc, *args)

    monkeypatch.setattr(ladder, "fire_due", broken_for_drills)
    out = engine.on_tick(d.state, T0 + 60, d.ctx)
    assert [(a.incident_id, a.stage) for a in out.alerts] == [(real.incident_id, "onsite_overdue")]
    assert out.failures == [RuleFailure(engine.LADDER, "ZeroDivisionError: division by zero")]
    assert out.state.incidents[drill.incident_id] == d.state.incidents[drill.incident_id]  # still due: retried


def test_a_failing_command_is_reported_and_changes_nothing(monkeypatch):
    d = Driver()
    [a] = d.press(T0)
    monkeypatch.setattr(ladder, "apply_command", lambda *args: 1 / 0)
    out = d.command(T0 + 61, "ack", a.incident_id)
    assert [x.stage for x in out.alerts] == ["onsite_overdue"]  # what was due still goes out
    assert out.rejected == [] and [f.rule for f in out.failures] == [engine.LADDER]
    assert d.state.incidents[a.incident_id].acked_at is None
    monkeypatch.undo()
    out = d.command(T0 + 62, "ack", a.incident_id)  # not marked applied: the same command works later
    assert [x.stage for x in out.alerts] == ["acknowledged"]


@pytest.mark.parametrize(("module", "name", "kw"), [(silences, "silence", {"reason": "r", "duration_seconds": 60}), (lockdown, "lockdown", {"reason": "r"})])
def test_failing_school_commands_are_reported_under_their_rule(monkeypatch, module, name, kw):
    d = Driver()
    before = d.state
    monkeypatch.setattr(module, "on_command", lambda *args: {}["missing"])
    out = d.school_command(T0, name, **kw)
    assert out.failures == [RuleFailure(module.NAME, "KeyError: 'missing'")]
    assert out.state == before and out.notices == [] and out.alerts == []


def test_rule_outcome_defaults():
    d = Driver()
    out = RuleOutcome(d.state)
    assert (out.alerts, out.notices, out.claimed) == ([], [], False)
    assert engine.Outcome(d.state).failures == []
    assert d.state.school_id == SCHOOL
