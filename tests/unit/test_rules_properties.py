"""Property tests of the rules engine over random input interleavings."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.records import INCIDENT_COMMANDS, parse_ts
from pipeline.registry import Unit
from pipeline.rules import engine
from pipeline.rules.state import SchoolState
from unit_helpers import ESC, SCHOOL, T0, build_registry, command, make_ctx, press

BUTTONS = ("zx01-btn-1", "zx01-btn-3", "zx01-sos-2")
DEADLINE_AFTER = {"onsite_overdue": ESC.ack_seconds, "mobile_late": ESC.arrive_target_seconds, "mobile_overdue": ESC.arrive_limit_seconds}
SETTLED_BY_STAGE = {"onsite_overdue": {"acknowledged", "arrived"}, "mobile_late": {"arrived"}, "mobile_overdue": {"arrived"}}
CLOSE_STAGES = {"resolved", "false_alarm"}
COMMAND_STAGE = {"ack": "acknowledged", "dispatch": "dispatched", "arrive": "arrived", "resolve": "resolved", "false_alarm": "false_alarm"}
UNITS = ("car-1", "car-2")

press_action = st.tuples(
    st.just("press"),
    st.sampled_from(BUTTONS),
    st.integers(min_value=0, max_value=6),  # event id pool: redeliveries happen
    st.booleans(),  # exercise
    st.sampled_from([0, 0, 0, -5, -30, -700, 40]),  # device clock offset (s)
)
command_action = st.tuples(st.just("command"), st.sampled_from(INCIDENT_COMMANDS), st.integers(min_value=-1, max_value=3), st.sampled_from(UNITS))
action = st.one_of(press_action, command_action, st.tuples(st.just("tick")), st.tuples(st.just("redeliver")))
# (seconds since the previous input, action); time never goes backwards
steps = st.lists(st.tuples(st.sampled_from([0, 0.001, 0.5, 1, 10, 30, 59, 60, 61, 90, 120, 179, 240, 299, 301]), action), max_size=40)


def run(script, reload_state: bool = False):
    """Feed `script` through the engine. Returns (emitted, commands) where emitted is a list
    of (now, alert) and commands a list of (now, cmd, outcome, redelivered)."""
    ctx = make_ctx(registry=dataclasses.replace(build_registry(), units={u: Unit(u, "car", (SCHOOL,)) for u in UNITS}))
    state = SchoolState(school_id=SCHOOL)
    emitted = []
    commands = []
    incidents: list[str] = []
    last_cmd = None
    cmd_no = 0
    now = T0
    for dt, act in script:
        now += dt
        redelivered = False
        if act[0] == "press":
            _, device, n, exercise, skew = act
            out = engine.on_event(state, press(f"e-{n}", device_id=device, ts=now + skew, received=now, exercise=exercise), now, ctx)
        elif act[0] == "tick":
            out = engine.on_tick(state, now, ctx)
        else:
            if act[0] == "redeliver":
                if last_cmd is None:
                    continue
                cmd, redelivered = last_cmd, True
            else:
                _, name, ref, unit = act
                iid = incidents[ref % len(incidents)] if incidents and ref >= 0 else "inc-20261129-zx-01-9999-0a1b2c"
                cmd_no += 1
                cmd = dataclasses.replace(command(name, iid, by=f"op-{cmd_no}", at=now, command_id=f"c-{cmd_no}"), unit=unit if name == "dispatch" else "")
            out = engine.on_command(state, cmd, now, ctx)
            commands.append((now, cmd, out, redelivered))
            last_cmd = cmd
        for a in out.alerts:
            emitted.append((now, a))
            if a.stage == "opened":
                incidents.append(a.incident_id)
        state = out.state
        if reload_state:
            core, memory = orjson.loads(orjson.dumps(state.core_dict())), orjson.loads(orjson.dumps(state.memory))
            state = SchoolState.from_dicts(core, memory)
    final = engine.on_tick(state, now + 10_000, ctx)
    emitted.extend((now + 10_000, a) for a in final.alerts)
    return emitted, commands, final.state


@settings(max_examples=250, deadline=None)
@given(steps)
def test_ladder_invariants(script):
    emitted, commands, final = run(script)
    opened_at = {a.incident_id: parse_ts(a.deadlines["ack_by"]) - ESC.ack_seconds for _, a in emitted if a.stage == "opened"}

    by_incident = defaultdict(list)
    for now, a in emitted:
        by_incident[a.incident_id].append((now, a))

    # no (incident_id, stage) pair twice; identifiers unique, each `<incident_id>/<stage>`
    pairs = [(a.incident_id, a.stage) for _, a in emitted]
    assert len(pairs) == len(set(pairs))
    ids = [a.identifier for _, a in emitted]
    assert len(ids) == len(set(ids))
    for iid, items in by_incident.items():
        assert [a.identifier for _, a in items] == [f"{iid}/{a.stage}" for _, a in items]
        first = items[0][1]
        assert (first.stage, first.msgType) == ("opened", "Alert")
        assert all(a.msgType != "Alert" for _, a in items[1:])
        assert len({a.status for _, a in items}) == 1
        # a Cancel is the last word
        cancels = [k for k, (_, a) in enumerate(items) if a.msgType == "Cancel"]
        assert cancels in ([], [len(items) - 1])
        assert all(a.stage in CLOSE_STAGES for _, a in items if a.msgType == "Cancel")

        stages = [a.stage for _, a in items]
        # deadline stages keep their ladder order
        ladder_seen = [s for s in stages if s in DEADLINE_AFTER]
        assert ladder_seen == sorted(ladder_seen, key=list(DEADLINE_AFTER).index)
        # no deadline stage after its settling command, and none before it was due
        for k, (now, a) in enumerate(items):
            if a.stage in DEADLINE_AFTER:
                assert not (SETTLED_BY_STAGE[a.stage] & set(stages[:k])), stages
                assert a.due and now >= opened_at[iid] + DEADLINE_AFTER[a.stage] - 1e-6
        # liveness: after the final tick, every rung either fired or was settled/closed first
        for stage, after in DEADLINE_AFTER.items():
            if stage in stages:
                continue
            settle_times = [now for now, a in items if a.stage in SETTLED_BY_STAGE[stage] | CLOSE_STAGES]
            assert settle_times and min(settle_times) < opened_at[iid] + after, (stage, stages)

    # every command is answered: its stage, a rejection with a reason code, or (redelivery) nothing
    for now, cmd, out, redelivered in commands:
        produced = [a for a in out.alerts if a.incident_id == cmd.incident_id and a.stage.split("-")[0] == COMMAND_STAGE[cmd.command] and a.command_id == cmd.command_id]
        if redelivered and not out.rejected and not produced:
            continue
        assert bool(produced) != bool(out.rejected), (cmd, out)
        for rejected_cmd, why in out.rejected:
            assert rejected_cmd is cmd
            assert why.reason_code in {"unknown_incident", "incident_closed", "already_acknowledged", "already_arrived", "already_dispatched"}
            assert why.reason

    # closed incidents leave only tombstones, with the stage of their Cancel
    cancelled = {a.incident_id: (a.stage, now) for now, a in emitted if a.msgType == "Cancel"}
    assert {iid: tuple(v) for iid, v in final.closed.items()} == cancelled
    assert not set(final.closed) & set(final.incidents)
    # one Actual and at most one Exercise incident open at a time
    open_now = list(final.incidents.values())
    assert all(i.is_open for i in open_now)
    assert len([i for i in open_now if i.status == "Actual"]) <= 1
    assert len([i for i in open_now if i.status == "Exercise"]) <= 1
    assert all(not i.deadlines for i in open_now)


@settings(max_examples=100, deadline=None)
@given(steps)
def test_deterministic_and_state_round_trip_does_not_change_behaviour(script):
    first, _, s1 = run(script)
    again, _, s2 = run(script)
    reloaded, _, s3 = run(script, reload_state=True)
    as_dicts = lambda em: [(now, a.to_dict()) for now, a in em]  # noqa: E731
    assert as_dicts(first) == as_dicts(again) == as_dicts(reloaded)
    assert s1 == s2 == s3


@settings(max_examples=100, deadline=None)
@given(steps)
def test_redelivered_press_never_changes_anything(script):
    """Replaying every press a second time right after itself adds no alert and changes no
    incident. (The replay is an input at that time, so it may fire due deadlines earlier
    than the next input would have: compare everything but `sent`.)"""
    doubled = []
    for dt, act in script:
        doubled.append((dt, act))
        if act[0] == "press":
            doubled.append((0, act))
    once, _, s1 = run(script)
    twice, _, s2 = run(doubled)

    def content(emitted):
        return sorted(({k: v for k, v in a.to_dict().items() if k != "sent"} for _, a in emitted), key=lambda d: d["identifier"])

    assert content(once) == content(twice)
    assert s1.incidents == s2.incidents
    assert s1.applied.keys() == s2.applied.keys()
