"""Lockdown (pipeline/rules/lockdown.py, held back in dispatch.py): while a school is locked
down its Minor and Moderate incidents are recorded but notify nobody; Severe and Extreme
still go out."""

from __future__ import annotations

from pipeline.rules.state import SchoolState
from unit_helpers import SCHOOL_NAME, T0, Driver, offline, online, rules_ctx, tamper

ALL = ["onsite", "mobile", "command"]


def driver() -> Driver:
    return Driver(rules_ctx(device_health={"heartbeat_kinds": ()}))


def locked(d: Driver, now: float = T0, reason: str = "armed intruder reported", by: str = "principal", **kw) -> str:
    out = d.school_command(now, "lockdown", reason=reason, by=by, **kw)
    assert out.rejected == [] and out.notices == []
    [a] = out.alerts
    return a.incident_id


def rejected(out) -> str:
    assert out.alerts == []
    [(_, why)] = out.rejected
    assert why.reason
    return why.reason_code


def test_lockdown_opens_a_severe_incident():
    d = driver()
    out = d.school_command(T0, "lockdown", reason="armed intruder reported", by="principal", command_id="c-1")
    [a] = out.alerts
    assert (a.rule, a.stage, a.msgType, a.status) == ("lockdown", "opened", "Alert", "Actual")
    assert (a.severity, a.urgency, a.certainty) == ("Severe", "Immediate", "Observed")
    assert a.notify == ALL and a.held == ""
    assert "LOCKDOWN" in a.headline and SCHOOL_NAME in a.headline
    assert "armed intruder reported" in a.headline and "principal" in a.headline
    assert a.evidence == [{"command": "lockdown", "by": "principal", "reason": "armed intruder reported", "command_id": "c-1"}]
    assert d.state.memory["lockdown"] == {"Actual": a.incident_id}
    assert d.state.incidents[a.incident_id].is_open


def test_minor_and_moderate_are_recorded_but_held_back():
    d = driver()
    locked(d)
    [minor] = d.event(offline("zx01-cam-7"), T0 + 1)
    assert (minor.rule, minor.severity, minor.stage) == ("device_health", "Minor", "opened")
    assert minor.notify == [] and minor.held == "lockdown"
    [moderate] = d.event(offline("zx01-btn-3"), T0 + 2)  # a panic button: Moderate
    assert (moderate.severity, moderate.notify, moderate.held) == ("Moderate", [], "lockdown")
    # still recorded: open incidents, marked as held
    assert d.state.incidents[minor.incident_id].held == "lockdown"
    assert d.state.incidents[moderate.incident_id].held == "lockdown"
    # the rest of a held incident's life is held back too
    [rec] = d.event(online("zx01-cam-7"), T0 + 3)
    assert (rec.incident_id, rec.stage, rec.msgType, rec.notify, rec.held) == (minor.incident_id, "recovered", "Cancel", [], "lockdown")


def test_severe_and_extreme_still_go_out():
    d = driver()
    locked(d)
    [severe] = d.event(tamper("zx01-cam-7"), T0 + 1)
    assert (severe.severity, severe.held) == ("Severe", "")
    assert severe.notify == ["onsite", "command"]
    [extreme] = d.press(T0 + 2)
    assert (extreme.rule, extreme.severity, extreme.held, extreme.notify) == ("panic", "Extreme", "", ALL)
    assert [a.held for a in d.tick(T0 + 62)] == [""]  # the ladder escalates normally


def test_lift_lockdown_closes_it_and_ends_the_hold():
    d = driver()
    iid = locked(d)
    out = d.school_command(T0 + 100, "lift_lockdown", by="police-liaison", note="all clear", command_id="c-2")
    [a] = out.alerts
    assert (a.incident_id, a.rule, a.stage, a.msgType) == (iid, "lockdown", "lifted", "Cancel")
    assert (a.by, a.note, a.command_id) == ("police-liaison", "all clear", "c-2")
    assert iid not in d.state.incidents and d.state.closed[iid] == ["lifted", T0 + 100]
    assert "lockdown" not in d.state.memory
    [minor] = d.event(offline("zx01-cam-7"), T0 + 101)
    assert minor.notify == ["onsite", "command"] and minor.held == ""


def test_a_school_is_locked_down_once():
    d = driver()
    iid = locked(d)
    out = d.school_command(T0 + 1, "lockdown", reason="again", by="someone-else")
    assert rejected(out) == "already_locked_down"
    assert iid in out.rejected[0][1].reason
    assert list(d.state.incidents) == [iid]


def test_lift_without_a_lockdown_is_rejected():
    d = driver()
    assert rejected(d.school_command(T0, "lift_lockdown")) == "not_locked_down"
    iid = locked(d, T0 + 1)
    d.school_command(T0 + 2, "lift_lockdown")
    assert rejected(d.school_command(T0 + 3, "lift_lockdown", command_id="c-x")) == "not_locked_down"
    assert d.state.closed[iid][0] == "lifted"


def test_lockdown_needs_a_reason():
    d = driver()
    assert rejected(d.school_command(T0, "lockdown", reason="")) == "missing_reason"
    assert d.state.incidents == {}


def test_resolving_the_lockdown_incident_also_ends_the_hold():
    d = driver()
    iid = locked(d)
    [a] = d.command(T0 + 50, "resolve", iid, by="cc").alerts
    assert (a.incident_id, a.stage, a.msgType) == (iid, "resolved", "Cancel")
    [minor] = d.event(offline("zx01-cam-7"), T0 + 51)
    assert minor.held == "" and minor.notify == ["onsite", "command"]
    assert rejected(d.school_command(T0 + 52, "lift_lockdown")) == "not_locked_down"
    iid2 = locked(d, T0 + 53)  # and a new lockdown can be ordered
    assert iid2 != iid
    [held] = d.event(offline("zx01-cam-8"), T0 + 54)
    assert held.held == "lockdown"


def test_a_redelivered_lockdown_command_is_a_no_op():
    d = driver()
    locked(d, command_id="c-1")
    out = d.school_command(T0 + 1, "lockdown", reason="armed intruder reported", by="principal", command_id="c-1")
    assert out.alerts == [] and out.rejected == []


def test_lockdown_survives_a_state_round_trip():
    d = driver()
    locked(d)
    d.state = SchoolState.from_dicts(d.state.core_dict(), d.state.memory)
    [minor] = d.event(offline("zx01-cam-7"), T0 + 1)
    assert minor.held == "lockdown"


def test_a_lockdown_drill_is_an_exercise():
    d = driver()
    out = d.school_command(T0, "lockdown", reason="termly drill", exercise=True)
    [a] = out.alerts
    assert a.status == "Exercise" and a.headline.startswith("[DRILL] ")


def test_a_lockdown_drill_does_not_hold_back_real_incidents():
    """Drills never mix with Actual incidents: during a lockdown *drill* a real Moderate
    incident (a dead panic button) must still notify people."""
    d = driver()
    d.school_command(T0, "lockdown", reason="termly drill", exercise=True)
    [real] = d.event(offline("zx01-btn-3"), T0 + 1)
    assert real.status == "Actual" and real.severity == "Moderate"
    assert real.held == "" and real.notify == ["onsite", "command"]


def test_a_real_lockdown_can_be_ordered_during_a_drill():
    d = driver()
    d.school_command(T0, "lockdown", reason="termly drill", exercise=True)
    out = d.school_command(T0 + 60, "lockdown", reason="armed intruder reported", by="principal")
    assert out.rejected == []
    assert [(a.rule, a.status, a.stage) for a in out.alerts] == [("lockdown", "Actual", "opened")]


def test_lockdowns_from_lost_state_get_different_ids():
    """A lockdown is opened by a command: the command's key goes into its id's digest, so two
    lockdowns numbered alike (state lost in between) still have different ids."""
    a = locked(driver(), command_id="c-1")
    b = locked(driver(), command_id="c-2")
    assert a[:-7] == b[:-7] and a != b
    assert locked(driver(), command_id="c-1") == a  # the same command replayed: the same id
