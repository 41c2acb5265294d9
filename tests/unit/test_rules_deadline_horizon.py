"""engine `until`: deadlines wait for the commands that could settle them.

An ack produced before the on-site deadline but still queued when the deadline's time
comes (the worker restarted, commands are behind) must settle the deadline, not follow
its escalation. The worker passes `until` = the time up to which the school's commands
are processed; a command itself settles what it can at its own time.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.records import parse_ts
from pipeline.rules import engine
from pipeline.rules.state import SchoolState
from unit_helpers import SCHOOL, T0, command, make_ctx, press

CTX = make_ctx()  # ladder 60 / 180 / 300 s


def opened() -> tuple[SchoolState, str]:
    out = engine.on_event(SchoolState(SCHOOL), press(), T0, CTX)
    return out.state, out.alerts[0].incident_id


def stages(out: engine.Outcome) -> list[str]:
    return [a.stage for a in out.alerts]


def test_a_deadline_waits_while_commands_are_behind_and_a_queued_ack_settles_it():
    state, iid = opened()
    held = engine.on_tick(state, T0 + 65, CTX, until=T0 + 30)  # commands processed up to T0+30 only
    assert stages(held) == []
    ack = engine.on_command(held.state, command("ack", iid), T0 + 59, CTX)  # the queued ack, sent in time
    assert stages(ack) == ["acknowledged"]
    after = engine.on_tick(ack.state, T0 + 66, CTX)  # caught up
    assert "onsite_overdue" not in stages(after)


def test_without_a_queued_command_the_held_deadline_fires_once_caught_up():
    state, _ = opened()
    held = engine.on_event(state, press("e-2"), T0 + 65, CTX, until=T0 + 30)
    assert "onsite_overdue" not in stages(held)
    fired = engine.on_tick(held.state, T0 + 66, CTX)
    assert stages(fired) == ["onsite_overdue"]
    assert parse_ts(fired.alerts[0].sent) == parse_ts(fired.alerts[0].due) == T0 + 60  # sent as of its deadline


def test_a_stage_fired_by_another_input_after_a_hold_is_the_same_alert():
    """A crash between an alert and the state that records it re-emits the stage; after the
    restart the replayed tick may be held (commands queued) and a later input fire it: the
    copy must equal the first (a consumer de-duplicating by identifier sees one alert)."""
    state, _ = opened()
    first = engine.on_tick(state, T0 + 61, CTX)
    again = engine.on_tick(engine.on_tick(state, T0 + 61, CTX, until=T0 + 30).state, T0 + 61.25, CTX)
    by_event = engine.on_event(state, press("e-3"), T0 + 63, CTX)
    assert [a for a in first.alerts] == [a for a in again.alerts] == [a for a in by_event.alerts if a.stage == "onsite_overdue"]


def test_a_late_command_still_lets_the_escalation_it_came_too_late_for_out_first():
    state, iid = opened()
    late = engine.on_command(state, command("ack", iid), T0 + 61, CTX)
    assert stages(late) == ["onsite_overdue", "acknowledged"]


@given(until=st.floats(min_value=T0 - 10, max_value=T0 + 400), now=st.floats(min_value=T0, max_value=T0 + 400))
def test_nothing_fires_past_the_horizon(until, now):
    state, _ = opened()
    out = engine.on_tick(state, now, CTX, until=until)
    due = {"onsite_overdue": T0 + 60, "mobile_late": T0 + 180, "mobile_overdue": T0 + 300}
    assert set(stages(out)) == {s for s, d in due.items() if d <= min(now, until)}
