"""The 1-3-5 panic ladder through pipeline.rules.engine (pure: state, input, now)."""

from __future__ import annotations

import dataclasses
import re

import orjson
import pytest

from pipeline.config import EscalationConfig
from pipeline.records import Command, iso_utc
from pipeline.rules import engine, ladder, panic
from pipeline.rules.evidence import MAX_EVIDENCE
from pipeline.rules.state import SchoolState
from unit_helpers import ESC, SCHOOL, SCHOOL_NAME, T0, Driver, command, make_ctx, press

IID = "inc-20261129-zx-01-0001-0a1b2c"  # a well-formed id, for commands on no real incident
DEADLINE_STAGES = ["onsite_overdue", "mobile_late", "mobile_overdue"]


def opened(d: Driver | None = None, now: float = T0, **kw) -> tuple[Driver, str]:
    d = d or Driver()
    alerts = d.press(now, **kw)
    assert len(alerts) == 1 and alerts[0].stage == "opened"
    return d, alerts[0].incident_id


# --- opening ------------------------------------------------------------------------------------


def test_press_opens_an_incident():
    d = Driver()
    [a] = d.press(T0 + 0.05, event_id="b7c1-0001", device_id="zx01-btn-3", zone="office", ts=T0)
    assert re.fullmatch(r"inc-20261129-zx-01-0001-[0-9a-f]{6}", a.incident_id)
    assert a.identifier == f"{a.incident_id}/opened"
    assert a.msgType == "Alert"
    assert a.stage == "opened"
    assert a.status == "Actual"
    assert a.severity == "Extreme"
    assert a.urgency == "Immediate"
    assert a.rule == "panic"
    assert a.school_id == SCHOOL
    assert a.sender == "huxue"
    assert a.notify == ["onsite", "mobile", "command"]
    assert a.sent == iso_utc(T0 + 0.05)
    assert a.deadlines["ack_by"] == iso_utc(T0 + 60) == "2026-11-28T23:42:03.250Z"
    assert a.deadlines["arrive_by"] == iso_utc(T0 + 300) == "2026-11-28T23:46:03.250Z"
    assert a.deadlines["arrive_target_by"] == iso_utc(T0 + 180)
    assert a.evidence == [{"event_id": "b7c1-0001", "device_id": "zx01-btn-3", "type": "panic.pressed", "ts": iso_utc(T0), "zone": "office"}]
    assert SCHOOL_NAME in a.headline and "office" in a.headline
    assert "07:42:03" in a.headline  # on-site response due, in school-local time
    assert a.to_dict()["msgType"] == "Alert"
    inc = d.state.incidents[a.incident_id]
    assert inc.is_open and inc.opened_at == T0
    assert d.state.next_seq == 2


def test_opened_carries_media_in_evidence():
    d = Driver()
    [a] = d.press(T0, media={"snapshot_url": "https://nvr.local/s/1.jpg"})
    assert a.evidence[0]["media"] == {"snapshot_url": "https://nvr.local/s/1.jpg"}


def test_non_panic_events_do_nothing():
    d = Driver()
    before = d.state
    assert d.event(press("v1", etype="video.fight"), T0) == []
    assert d.event(press("h1", etype="device.heartbeat"), T0) == []
    assert d.state.incidents == {} and d.state.applied == before.applied


def test_configured_escalation_times_are_used():
    d = Driver(make_ctx(EscalationConfig(10, 20, 30)))
    [a] = d.press(T0)
    assert a.deadlines == {"ack_by": iso_utc(T0 + 10), "arrive_target_by": iso_utc(T0 + 20), "arrive_by": iso_utc(T0 + 30)}
    assert [x.stage for x in d.tick(T0 + 20)] == ["onsite_overdue", "mobile_late"]
    assert "after 10 s" in d.alerts[1].headline


# --- deadlines -------------------------------------------------------------------------------------


def test_ticks_at_due_times_emit_each_stage_once_in_order():
    d, iid = opened()
    assert d.tick(T0 + 59.999) == []
    [a] = d.tick(T0 + 60)
    assert (a.stage, a.msgType, a.identifier) == ("onsite_overdue", "Update", f"{iid}/onsite_overdue")
    assert a.due == iso_utc(T0 + 60) and a.sent == iso_utc(T0 + 60)
    assert "no on-site response after 60 s" in a.headline
    assert a.deadlines["ack_by"] == iso_utc(T0 + 60)
    assert d.tick(T0 + 60) == [] and d.tick(T0 + 61) == [] and d.tick(T0 + 179) == []
    [b] = d.tick(T0 + 180)
    assert (b.stage, b.identifier) == ("mobile_late", f"{iid}/mobile_late")
    assert d.tick(T0 + 180) == [] and d.tick(T0 + 250) == []
    [c] = d.tick(T0 + 300)
    assert (c.stage, c.identifier) == ("mobile_overdue", f"{iid}/mobile_overdue")
    for t in (300, 301, 1000, 86000):
        assert d.tick(T0 + t) == []
    assert d.stages(iid) == ["opened", *DEADLINE_STAGES]
    assert d.state.incidents[iid].is_open  # deadlines do not close the incident
    assert d.state.next_due() is None


def test_one_late_tick_emits_all_due_stages_in_due_order():
    d, iid = opened()
    alerts = d.tick(T0 + 1000)
    assert [a.stage for a in alerts] == DEADLINE_STAGES
    assert [a.identifier for a in alerts] == [f"{iid}/{stage}" for stage in DEADLINE_STAGES]
    assert [a.due for a in alerts] == [iso_utc(T0 + 60), iso_utc(T0 + 180), iso_utc(T0 + 300)]
    assert d.tick(T0 + 2000) == []


def test_ack_before_deadline_suppresses_onsite_overdue_only():
    d, iid = opened()
    out = d.command(T0 + 30, "ack", iid, by="guard-zx01-02", note="on my way", command_id="c-1")
    [a] = out.alerts
    assert (a.stage, a.msgType, a.by, a.command_id, a.note) == ("acknowledged", "Update", "guard-zx01-02", "c-1", "on my way")
    assert a.identifier == f"{iid}/acknowledged"
    assert a.deadlines["ack_by"] == iso_utc(T0 + 60)
    assert "acknowledged by guard-zx01-02" in a.headline
    assert d.tick(T0 + 60) == []
    assert [x.stage for x in d.tick(T0 + 180)] == ["mobile_late"]
    assert [x.stage for x in d.tick(T0 + 300)] == ["mobile_overdue"]
    assert d.stages(iid) == ["opened", "acknowledged", "mobile_late", "mobile_overdue"]
    inc = d.state.incidents[iid]
    assert inc.acked_at == T0 + 30 and inc.acked_by == "guard-zx01-02"


def test_arrive_suppresses_all_later_stages():
    d, iid = opened()
    d.tick(T0 + 60)
    [a] = d.command(T0 + 100, "arrive", iid, by="mobile-7").alerts
    assert a.stage == "arrived" and a.msgType == "Update"
    assert d.tick(T0 + 10_000) == []
    assert d.stages(iid) == ["opened", "onsite_overdue", "arrived"]
    assert d.state.incidents[iid].is_open


def test_arrive_before_ack_settles_the_onsite_deadline_too():
    d, iid = opened()
    d.command(T0 + 10, "arrive", iid)
    assert d.tick(T0 + 1000) == []
    # a later ack is still accepted
    assert [a.stage for a in d.command(T0 + 1001, "ack", iid).alerts] == ["acknowledged"]


def test_arrive_between_target_and_limit_suppresses_only_overdue():
    d, iid = opened()
    d.command(T0 + 30, "ack", iid)
    d.tick(T0 + 200)
    d.command(T0 + 250, "arrive", iid)
    d.tick(T0 + 400)
    assert d.stages(iid) == ["opened", "acknowledged", "mobile_late", "arrived"]


def test_command_after_a_deadline_gets_that_stage_first():
    d, iid = opened()
    out = d.command(T0 + 70, "ack", iid)
    assert [a.stage for a in out.alerts] == ["onsite_overdue", "acknowledged"]
    assert [a.identifier for a in out.alerts] == [f"{iid}/onsite_overdue", f"{iid}/acknowledged"]
    out = d.command(T0 + 400, "arrive", iid)
    assert [a.stage for a in out.alerts] == ["mobile_late", "mobile_overdue", "arrived"]


def test_command_read_after_a_stage_it_could_have_settled_is_dated_after_that_stage():
    # The chaos run's case: an arrive created 67 ms before mobile_late was due reached the
    # worker after the tick had sent mobile_late. It still counts, dated after the stage.
    d, iid = opened()
    d.command(T0 + 30, "ack", iid)
    [late] = d.tick(T0 + 200)
    assert late.stage == "mobile_late"
    [a] = d.command(T0 + 179.9, "arrive", iid, by="mobile-7").alerts
    assert a.stage == "arrived" and a.sent == late.sent == iso_utc(T0 + 180)
    assert d.state.incidents[iid].arrived_at == T0 + 180
    assert d.tick(T0 + 10_000) == []  # mobile_overdue settled all the same
    assert d.stages(iid) == ["opened", "acknowledged", "mobile_late", "arrived"]


def test_command_on_another_incident_still_fires_due_deadlines():
    d, iid = opened()
    out = d.command(T0 + 61, "ack", IID)
    assert [a.stage for a in out.alerts] == ["onsite_overdue"]
    assert out.rejected[0][1].reason_code == "unknown_incident"


def test_event_after_a_deadline_gets_that_stage_first():
    d, iid = opened()
    alerts = d.press(T0 + 61, event_id="e-2", device_id="zx01-btn-3")
    assert [a.stage for a in alerts] == ["onsite_overdue", "joined-2"]


@pytest.mark.parametrize("name, stage", [("resolve", "resolved"), ("false_alarm", "false_alarm")])
def test_close_commands_cancel(name, stage):
    d, iid = opened()
    [a] = d.command(T0 + 20, name, iid, by="command-centre").alerts
    assert (a.stage, a.msgType, a.by) == (stage, "Cancel", "command-centre")
    assert iid not in d.state.incidents  # open incidents only
    assert d.state.closed[iid] == [stage, T0 + 20]
    assert d.tick(T0 + 10_000) == []
    assert d.stages(iid) == ["opened", stage]


@pytest.mark.parametrize("name", ["ack", "arrive", "resolve", "false_alarm"])
def test_commands_on_closed_incidents_are_rejected(name):
    d, iid = opened()
    d.command(T0 + 20, "resolve", iid)
    out = d.command(T0 + 30, name, iid, by="someone-else")
    assert out.alerts == []
    [(cmd, why)] = out.rejected
    assert cmd.command == name
    assert why.reason_code == "incident_closed" and iid in why.reason and "resolved" in why.reason
    assert out.state.closed[iid] == ["resolved", T0 + 20]
    assert iid not in out.state.incidents
    assert d.stages(iid) == ["opened", "resolved"]


@pytest.mark.parametrize("name", ["ack", "arrive", "resolve", "false_alarm"])
def test_commands_on_unknown_incidents_are_rejected(name):
    d = Driver()
    out = d.command(T0, name, "inc-20261129-zx-01-0042")
    assert out.alerts == []
    [(cmd, why)] = out.rejected
    assert cmd.incident_id == "inc-20261129-zx-01-0042"
    assert why.reason_code == "unknown_incident" and "inc-20261129-zx-01-0042" in why.reason
    assert out.state is d.state


def test_duplicate_ack_is_rejected_already_acknowledged():
    d, iid = opened()
    d.command(T0 + 10, "ack", iid, by="guard-1", command_id="c-1")
    out = d.command(T0 + 20, "ack", iid, by="guard-2", command_id="c-2")
    assert out.alerts == []
    assert out.rejected[0][1].reason_code == "already_acknowledged"
    assert "guard-1" in out.rejected[0][1].reason
    assert d.state.incidents[iid].acked_by == "guard-1"


def test_duplicate_arrive_is_rejected_already_arrived():
    d, iid = opened()
    d.command(T0 + 10, "arrive", iid, command_id="c-1")
    out = d.command(T0 + 20, "arrive", iid, command_id="c-2")
    assert out.rejected[0][1].reason_code == "already_arrived"


def test_redelivered_command_is_a_silent_no_op():
    d, iid = opened()
    cmd = command("ack", iid, at=T0 + 10, command_id="c-1")
    first = engine.on_command(d.state, cmd, T0 + 10, d.ctx)
    again = engine.on_command(first.state, cmd, T0 + 11, d.ctx)
    assert [a.stage for a in first.alerts] == ["acknowledged"]
    assert again.alerts == [] and again.rejected == []
    assert again.state == first.state
    assert again.state.incidents is first.state.incidents and again.state.applied is first.state.applied
    # without a command_id the content identifies it
    cmd2 = command("arrive", iid, at=T0 + 12)
    s1 = engine.on_command(first.state, cmd2, T0 + 12, d.ctx)
    s2 = engine.on_command(s1.state, cmd2, T0 + 13, d.ctx)
    assert [a.stage for a in s1.alerts] == ["arrived"] and s2.alerts == [] and s2.rejected == []


def test_command_key_distinguishes_content():
    a = command("ack", IID, at=T0)
    assert engine.command_key(a) == engine.command_key(command("ack", IID, at=T0))
    assert engine.command_key(a) != engine.command_key(command("arrive", IID, at=T0))
    assert engine.command_key(a) != engine.command_key(command("ack", IID, at=T0 + 1))
    assert engine.command_key(a) != engine.command_key(command("ack", IID, at=T0, by="other"))
    assert engine.command_key(command("ack", IID, command_id="x")) == "cmd/x"


# --- joining, duplicates, drills -----------------------------------------------------------------------


def test_second_press_at_the_same_school_joins():
    d, iid = opened()
    [j] = d.press(T0 + 5, event_id="e-2", device_id="zx01-btn-3", zone="office")
    assert j.incident_id == iid
    assert (j.msgType, j.stage, j.identifier) == ("Update", "joined-2", f"{iid}/joined-2")
    assert [e["event_id"] for e in j.evidence] == ["e-1", "e-2"]
    assert "2 presses" in j.headline
    assert j.deadlines["ack_by"] == iso_utc(T0 + 60)  # the ladder keeps the first press's clock
    [k] = d.press(T0 + 6, event_id="e-3")
    assert k.stage == "joined-3" and len(k.evidence) == 3
    assert len(d.state.incidents) == 1 and d.state.next_seq == 2
    # joining does not restart or duplicate the deadlines
    assert [a.stage for a in d.tick(T0 + 60)] == ["onsite_overdue"]


def test_press_at_another_school_state_is_independent():
    from unit_helpers import OTHER_SCHOOL

    d, iid = opened()
    other = Driver(state=SchoolState(school_id=OTHER_SCHOOL))
    [a] = other.event(press("e-1", device_id="bh02-btn-1", school_id=OTHER_SCHOOL, zone=""), T0)
    assert a.stage == "opened" and a.school_id == OTHER_SCHOOL
    assert a.incident_id.startswith("inc-20261128-bh-02-0001-")  # the school's local (London) date
    assert a.incident_id != iid


def test_press_after_close_opens_a_new_incident():
    d, iid = opened()
    d.command(T0 + 10, "resolve", iid)
    [a] = d.press(T0 + 20, event_id="e-2")
    assert a.stage == "opened" and a.msgType == "Alert"
    assert a.incident_id.startswith("inc-20261129-zx-01-0002-") and a.incident_id != iid
    assert a.identifier == f"{a.incident_id}/opened"


def test_duplicate_press_is_a_no_op():
    d, iid = opened()
    before = d.state
    assert d.press(T0 + 1, event_id="e-1") == []
    assert d.state == before
    assert d.state.incidents is before.incidents and d.state.applied is before.applied
    # still a no-op after other presses joined, and after the incident closed
    d.press(T0 + 2, event_id="e-2")
    d.command(T0 + 3, "resolve", iid)
    assert d.press(T0 + 4, event_id="e-1") == []
    assert d.press(T0 + 4, event_id="e-2") == []
    assert d.state.incidents == {} and list(d.state.closed) == [iid]
    assert d.stages() == ["opened", "joined-2", "resolved"]


def test_same_event_id_from_another_device_is_not_a_duplicate():
    d, iid = opened()
    [a] = d.press(T0 + 1, event_id="e-1", device_id="zx01-btn-3")
    assert a.stage == "joined-2"


def test_duplicate_press_still_fires_due_deadlines():
    d, iid = opened()
    alerts = d.press(T0 + 61, event_id="e-1")
    assert [a.stage for a in alerts] == ["onsite_overdue"]


def test_exercise_press_is_its_own_exercise_incident():
    d, actual = opened()
    [x] = d.press(T0 + 5, event_id="drill-1", device_id="zx01-btn-3", exercise=True)
    assert x.stage == "opened" and x.msgType == "Alert"
    assert x.status == "Exercise"
    assert x.incident_id != actual
    assert x.headline.startswith("[DRILL] ")
    # further drill presses join the drill, real presses join the real incident
    [y] = d.press(T0 + 6, event_id="drill-2", exercise=True)
    assert (y.incident_id, y.stage, y.status) == (x.incident_id, "joined-2", "Exercise")
    [z] = d.press(T0 + 7, event_id="e-2")
    assert (z.incident_id, z.stage, z.status) == (actual, "joined-2", "Actual")
    # the drill escalates and closes as a drill
    ladder_alerts = d.tick(T0 + 65)
    assert {(a.incident_id, a.status) for a in ladder_alerts} == {(actual, "Actual"), (x.incident_id, "Exercise")}
    [c] = d.command(T0 + 70, "resolve", x.incident_id).alerts
    assert (c.msgType, c.status) == ("Cancel", "Exercise")
    assert d.state.incidents[actual].is_open


def test_exercise_first_then_actual_opens_actual():
    d = Driver()
    [x] = d.press(T0, event_id="drill", exercise=True)
    [a] = d.press(T0 + 1, event_id="real")
    assert a.stage == "opened" and a.status == "Actual" and a.incident_id != x.incident_id
    assert all(e["event_id"] == "real" for e in a.evidence)


def test_identifiers_are_incident_and_stage_across_all_alert_kinds():
    d, iid = opened()
    d.press(T0 + 1, event_id="e-2")
    d.command(T0 + 70, "ack", iid)
    d.tick(T0 + 200)
    d.command(T0 + 210, "arrive", iid)
    d.command(T0 + 220, "false_alarm", iid)
    assert [a.identifier for a in d.alerts] == [f"{iid}/{a.stage}" for a in d.alerts]
    assert d.stages() == ["opened", "joined-2", "onsite_overdue", "acknowledged", "mobile_late", "arrived", "false_alarm"]
    assert [a.msgType for a in d.alerts] == ["Alert"] + ["Update"] * 5 + ["Cancel"]


def test_lost_state_never_gives_a_different_incident_the_same_identifiers():
    """State lost or split: the sequence number starts again, but the id also digests the
    incident's cause, so a different press never reuses an identifier; a replay of the same
    press (the same input from the same state) does, and consumers de-duplicate on it."""
    [a] = Driver().press(T0, event_id="e-1")
    [b] = Driver().press(T0 + 5, event_id="e-2")
    assert a.incident_id[:-7] == b.incident_id[:-7] == "inc-20261129-zx-01-0001"
    assert a.incident_id != b.incident_id and a.identifier != b.identifier
    [c] = Driver().press(T0, event_id="e-1")
    assert c.identifier == a.identifier
    [x] = Driver().press(T0, event_id="e-1", exercise=True)  # the status is part of the cause
    assert x.incident_id != a.incident_id


def test_an_incident_never_emits_a_stage_twice():
    d, iid = opened()
    inc = d.state.incidents[iid]
    with pytest.raises(ValueError, match="already emitted stage 'opened'"):
        inc.emit("opened", "Update", T0, "again")


# Contract §4: "One incident emits each stage at most once." The join stage is named
# after the number of presses, which is counted from the evidence list; evidence is
# capped at MAX_EVIDENCE entries.
def test_many_presses_never_repeat_a_join_stage():
    d, iid = opened()
    for i in range(2, MAX_EVIDENCE + 6):
        d.press(T0 + i * 0.1, event_id=f"e-{i}", device_id="zx01-btn-3")
    stages = d.stages(iid)
    assert len(stages) == MAX_EVIDENCE + 5
    assert len(set(stages)) == len(stages), [s for s in stages if stages.count(s) > 1][:3]


def test_evidence_is_capped_keeping_first_and_latest():
    d, iid = opened()
    for i in range(2, MAX_EVIDENCE + 11):
        d.press(T0 + i * 0.1, event_id=f"e-{i}", device_id="zx01-btn-3")
    ev = d.alerts[-1].evidence
    assert len(ev) == MAX_EVIDENCE
    assert ev[0]["event_id"] == "e-1"
    assert ev[-1]["event_id"] == f"e-{MAX_EVIDENCE + 10}"
    assert d.alerts[-1].evidence_omitted == 10  # operators see that some were left out
    assert d.alerts[0].evidence_omitted is None and "evidence_omitted" not in d.alerts[0].to_dict()


# --- device clocks ----------------------------------------------------------------------------------


def test_started_at_uses_a_credible_press_time():
    received = T0 + 30
    ev = press("e", ts=T0, received=received)
    assert ev.credible_ts(600) == T0
    d = Driver()
    [a] = d.event(ev, received)
    assert a.deadlines["ack_by"] == iso_utc(T0 + 60)


def test_started_at_clamps_a_clock_far_in_the_past():
    received = T0
    ev = press("e", ts=T0 - 86_400 * 365, received=received)
    assert ev.credible_ts(600) == T0 - 600
    d = Driver()
    [a] = d.event(ev, received)
    assert a.deadlines["ack_by"] == iso_utc(T0 - 540)
    assert a.incident_id.startswith("inc-20261129-zx-01-0001-")  # dated by the clamped time, not the device's year-old clock
    # opened 600 s ago, so every rung (60/180/300 s) is already due: the next input fires them
    assert [x.stage for x in d.tick(T0 + 0.5)] == DEADLINE_STAGES


def test_started_at_clamps_a_clock_in_the_future():
    ev = press("e", ts=T0 + 3600, received=T0)
    assert ev.credible_ts(600) == T0
    d = Driver()
    [a] = d.event(ev, T0)
    assert a.deadlines["ack_by"] == iso_utc(T0 + 60)
    assert d.tick(T0 + 59) == []
    assert [x.stage for x in d.tick(T0 + 60)] == ["onsite_overdue"]


def test_max_skew_comes_from_the_context():
    ev = press("e", ts=T0 - 100, received=T0)
    d = Driver(make_ctx(max_skew=30))
    [a] = d.event(ev, T0)
    assert a.deadlines["ack_by"] == iso_utc(T0 - 30 + 60)


# --- determinism and state round trip ---------------------------------------------------------------


def scenario(d: Driver) -> None:
    d.press(T0, event_id="e-1")
    d.press(T0 + 3, event_id="e-2", device_id="zx01-btn-3", zone="office")
    d.press(T0 + 4, event_id="x-1", exercise=True)
    iid = d.alerts[0].incident_id
    xid = d.alerts[2].incident_id
    d.tick(T0 + 60.5)
    d.command(T0 + 90, "ack", iid, by="g1")
    d.command(T0 + 91, "ack", iid, by="g2")
    d.tick(T0 + 181)
    d.command(T0 + 200, "arrive", xid, by="m1")
    d.press(T0 + 201, event_id="e-1")
    d.command(T0 + 250, "arrive", iid, by="m2")
    d.command(T0 + 260, "resolve", iid, by="cc")
    d.command(T0 + 261, "ack", iid, by="late")
    d.tick(T0 + 400)
    d.command(T0 + 401, "false_alarm", xid, by="cc")


def test_same_inputs_give_identical_alerts():
    a, b = Driver(), Driver()
    scenario(a)
    scenario(b)
    assert [x.to_dict() for x in a.alerts] == [x.to_dict() for x in b.alerts]
    assert a.state == b.state
    assert [(c.command, r.reason_code) for c, r in a.rejected] == [("ack", "already_acknowledged"), ("ack", "incident_closed")]
    assert len(a.alerts) > 10


def test_replay_from_a_saved_state_reproduces_the_same_alerts():
    d, iid = opened()
    saved = d.state
    first = engine.on_command(saved, command("ack", iid, at=T0 + 70), T0 + 70, d.ctx)
    again = engine.on_command(saved, command("ack", iid, at=T0 + 70), T0 + 70, d.ctx)
    assert [a.to_dict() for a in first.alerts] == [a.to_dict() for a in again.alerts]
    assert [a.identifier for a in first.alerts] == [f"{iid}/onsite_overdue", f"{iid}/acknowledged"]


def roundtrip(state: SchoolState) -> SchoolState:
    core, memory = orjson.loads(orjson.dumps(state.core_dict())), orjson.loads(orjson.dumps(state.memory))
    return SchoolState.from_dicts(core, memory)


def test_state_round_trips_through_dict_and_orjson():
    d = Driver()
    scenario(d)
    assert SchoolState.from_dicts(d.state.core_dict(), d.state.memory) == d.state
    assert roundtrip(d.state) == d.state
    assert d.state.closed  # the scenario closes both incidents: tombstones survive too
    due = [x for x in (d.state.core_dict()["next_due"], d.state.memory_due()) if x is not None]
    assert (min(due) if due else None) == d.state.next_due()


def test_round_tripped_state_behaves_the_same_at_every_step():
    plain = Driver()

    class Reloading(Driver):
        def _take(self, outcome):
            alerts = super()._take(outcome)
            self.state = roundtrip(self.state)
            return alerts

    stored = Reloading()
    scenario(plain)
    scenario(stored)
    assert [a.to_dict() for a in stored.alerts] == [a.to_dict() for a in plain.alerts]
    assert stored.state == plain.state


def test_round_trip_preserves_pending_deadlines_and_media():
    d, iid = opened(media={"snapshot_url": "u"})
    d.command(T0 + 5, "ack", iid)
    back = roundtrip(d.state)
    inc = back.incidents[iid]
    assert inc.deadlines == {"mobile_late": T0 + 180, "mobile_overdue": T0 + 300}
    assert inc.evidence[0]["media"] == {"snapshot_url": "u"}
    assert isinstance(inc.evidence, tuple) and isinstance(inc.stages, tuple)
    out = engine.on_tick(back, T0 + 300, d.ctx)
    assert [a.stage for a in out.alerts] == ["mobile_late", "mobile_overdue"]
    assert [a.identifier for a in out.alerts] == [f"{iid}/mobile_late", f"{iid}/mobile_overdue"]


# --- ladder module directly ----------------------------------------------------------------------------


def test_schedule_and_deadlines_view():
    assert ladder.schedule(100.0, ESC) == {"onsite_overdue": 160.0, "mobile_late": 280.0, "mobile_overdue": 400.0}
    d, iid = opened()
    assert ladder.next_due(d.state.incidents[iid]) == T0 + 60


def test_ladder_fire_due_never_emits_a_stage_twice():
    d, iid = opened()
    inc = d.state.incidents[iid]
    # a corrupted state that still lists an emitted stage as pending
    inc = dataclasses.replace(inc, stages=inc.stages + ("onsite_overdue",))
    inc2, alerts = ladder.fire_due(inc, T0 + 61, ESC, panic.describer(ESC))
    assert alerts == [] and "onsite_overdue" not in inc2.deadlines


def test_apply_command_unknown_close_after_close():
    d, iid = opened()
    inc = d.state.incidents[iid]
    describe = panic.describer(ESC)
    closed, [alert] = ladder.apply_command(inc, Command("false_alarm", iid, "cc", ""), T0 + 1, ESC, describe)
    assert alert.msgType == "Cancel" and closed.deadlines == {}
    r = ladder.apply_command(closed, Command("resolve", iid, "cc", ""), T0 + 2, ESC, describe)
    assert isinstance(r, ladder.CommandRejected) and r.reason_code == "incident_closed"
