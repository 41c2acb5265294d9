"""Rule `post_staffing` (pipeline/rules/post_staffing.py): "one post, two officers" during
each school's drop-off / pick-up windows; timer-driven (the check fires with no other
traffic), closes when staffing is restored or the window ends."""

from __future__ import annotations

from datetime import time

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.records import iso_utc
from pipeline.registry import Window
from pipeline.rules import engine
from pipeline.rules.state import SchoolState
from unit_helpers import (
    OTHER_SCHOOL,
    SCHOOL,
    SCHOOL_NAME,
    T0,
    Driver,
    RestartingDriver,
    checkin,
    checkout,
    local_epoch,
    registry_with,
    round_trip,
    rules_ctx,
    school,
    window,
)

H = 3600
GRACE = 300
NORTH, SOUTH = "zx01-gate-n", "zx01-gate-s"  # 2 and 1 officers
# drop-off from T0+30 min for 50 min, pick-up from T0+9 h for 50 min (the school's own clock)
S1, E1 = T0 + 1800, T0 + 1800 + 3000
S2, E2 = T0 + 9 * H, T0 + 9 * H + 3000
CHECK1, CHECK2 = S1 + GRACE, S2 + GRACE
DAY = 24 * H


def gate_school(school_id: str = SCHOOL, tz: str = "Asia/Shanghai", **kw):
    kw.setdefault("windows", (window(S1 - T0, E1 - T0, tz), window(S2 - T0, E2 - T0, tz)))
    kw.setdefault("posts", {NORTH: 2, SOUTH: 1})
    return school(school_id, tz=tz, **kw)


REGISTRY = registry_with(gate_school())


def driver(registry=REGISTRY, **post_staffing) -> Driver:
    return Driver(rules_ctx(post_staffing=post_staffing, registry=registry))


def guard_in(d: Driver, now: float, post: str, officer: str, event_id: str | None = None, **kw) -> list:
    return d.event(checkin(post, officer, event_id or f"in-{officer}-{now}", ts=now, **kw), now)


def guard_out(d: Driver, now: float, post: str, officer: str, event_id: str | None = None, **kw) -> list:
    return d.event(checkout(post, officer, event_id or f"out-{officer}-{now}", ts=now, **kw), now)


def staff(d: Driver, now: float) -> None:
    """North gets its two officers, south its one."""
    assert guard_in(d, now, NORTH, "o-1") == []
    assert guard_in(d, now, NORTH, "o-2") == []
    assert guard_in(d, now, SOUTH, "o-3") == []


def mem(d: Driver) -> dict:
    return d.state.memory["post_staffing"]


def open_posts(d: Driver) -> list[str]:
    return sorted(i.key for i in d.state.incidents.values() if i.rule == "post_staffing")


# --- the check ----------------------------------------------------------------------------------


def test_the_check_fires_grace_seconds_into_the_window_with_no_other_traffic():
    d = driver()
    assert d.tick(T0) == []  # first sight of the school: the clock starts
    assert mem(d)["due"] == CHECK1
    assert d.tick(S1) == [] and d.tick(CHECK1 - 0.001) == []
    alerts = d.tick(CHECK1)
    assert sorted(a.zone for a in alerts) == [NORTH, SOUTH]
    n = next(a for a in alerts if a.zone == NORTH)
    assert (n.rule, n.stage, n.msgType, n.status) == ("post_staffing", "opened", "Alert", "Actual")
    assert (n.severity, n.urgency, n.certainty) == ("Moderate", "Expected", "Observed")
    assert n.notify == ["onsite", "command"]
    assert n.headline == f"Gate post {NORTH} at {SCHOOL_NAME}: 0 of 2 officers checked in"
    assert n.evidence == [{"event_id": f"check-{int(S1)}-{NORTH}", "type": "post.check", "post_id": NORTH, "ts": iso_utc(CHECK1)}]
    s = next(a for a in alerts if a.zone == SOUTH)
    assert s.headline.endswith(": 0 of 1 officers checked in")
    assert open_posts(d) == [NORTH, SOUTH]
    assert mem(d)["due"] == E1
    assert d.state.memory_due() == E1


def test_the_check_fires_on_a_first_tick_late_in_the_window():
    d = driver()
    alerts = d.tick(CHECK1 + 600)
    assert sorted(a.zone for a in alerts) == [NORTH, SOUTH]
    assert {a.evidence[0]["event_id"] for a in alerts} == {f"check-{int(S1)}-{NORTH}", f"check-{int(S1)}-{SOUTH}"}


def test_the_check_fires_once_per_window_however_many_ticks():
    d = driver()
    d.tick(T0)
    assert len(d.tick(CHECK1)) == 2
    for t in (CHECK1, CHECK1 + 0.5, CHECK1 + 1, CHECK1 + 60, S1 + 1000, E1 - 0.001):
        assert d.tick(t) == []
    assert len(d.state.incidents) == 2
    assert [a.stage for a in d.alerts] == ["opened", "opened"]


def test_posts_with_enough_officers_raise_nothing():
    d = driver()
    d.tick(T0)
    staff(d, T0 + 60)  # checked in before the window: it counts
    assert d.tick(CHECK1) == []
    assert d.state.incidents == {} and mem(d)["due"] == E1
    assert mem(d)["roster"] == {NORTH: {"o-1": [True, T0 + 60], "o-2": [True, T0 + 60]}, SOUTH: {"o-3": [True, T0 + 60]}}


def test_check_ins_during_the_grace_period_count():
    d = driver()
    d.tick(T0)
    staff(d, S1 + 10)
    assert d.tick(CHECK1) == []


def test_only_the_short_post_raises():
    d = driver()
    guard_in(d, T0, NORTH, "o-1")
    guard_in(d, T0, SOUTH, "o-3")
    [a] = d.tick(CHECK1)
    assert (a.zone, a.headline.split(": ")[-1]) == (NORTH, "1 of 2 officers checked in")


def test_an_officer_checked_in_twice_counts_once_and_other_posts_do_not_count():
    d = driver()
    guard_in(d, T0, NORTH, "o-1", "in-1")
    guard_in(d, T0 + 1, NORTH, "o-1", "in-2")
    guard_in(d, T0 + 2, SOUTH, "o-2")
    guard_in(d, T0 + 3, SOUTH, "o-4")
    [a] = d.tick(CHECK1)
    assert a.zone == NORTH and "1 of 2" in a.headline


def test_required_officers_come_from_the_registry():
    d = driver(registry=registry_with(gate_school(posts={"zx01-gate-e": 3})))
    for i in (1, 2):
        guard_in(d, T0, "zx01-gate-e", f"o-{i}")
    [a] = d.tick(CHECK1)
    assert "2 of 3 officers" in a.headline
    [c] = guard_in(d, CHECK1 + 1, "zx01-gate-e", "o-3")
    assert (c.incident_id, c.stage) == (a.incident_id, "restored")


def test_a_check_out_before_the_check_is_only_counted_at_the_check():
    d = driver()
    staff(d, T0)
    assert guard_out(d, S1 + 100, NORTH, "o-2") == []
    [a] = d.tick(CHECK1)
    assert a.zone == NORTH and "1 of 2" in a.headline


# --- restored, short again, window end ------------------------------------------------------------


def test_check_ins_restore_the_post():
    d = driver()
    alerts = d.tick(CHECK1)
    north = next(a for a in alerts if a.zone == NORTH)
    assert guard_in(d, CHECK1 + 60, NORTH, "o-1") == []  # 1 of 2: still short, no news
    [c] = guard_in(d, CHECK1 + 120, NORTH, "o-2")
    assert (c.incident_id, c.rule, c.msgType, c.stage) == (north.incident_id, "post_staffing", "Cancel", "restored")
    assert c.headline.endswith("staffing restored")
    assert open_posts(d) == [SOUTH]
    assert d.state.closed[north.incident_id] == ["restored", CHECK1 + 120]


def test_a_check_out_after_the_check_raises_again_and_once():
    d = driver()
    staff(d, T0)
    assert d.tick(CHECK1) == []
    [a] = guard_out(d, CHECK1 + 60, NORTH, "o-1", "out-1")
    assert (a.stage, a.zone, a.severity) == ("opened", NORTH, "Moderate")
    assert "1 of 2" in a.headline
    assert a.evidence[0]["event_id"] == "out-1" and a.evidence[0]["type"] == "guard.checkout"
    assert guard_out(d, CHECK1 + 70, NORTH, "o-2") == []  # already open
    assert guard_in(d, CHECK1 + 80, NORTH, "o-1") == []
    [c] = guard_in(d, CHECK1 + 90, NORTH, "o-5")
    assert (c.incident_id, c.stage) == (a.incident_id, "restored")
    # and short again: a new incident
    [b] = guard_out(d, CHECK1 + 100, NORTH, "o-5")
    assert b.stage == "opened" and b.incident_id != a.incident_id


def test_the_window_end_closes_and_clears_the_roster():
    d = driver()
    guard_in(d, T0, NORTH, "o-1")
    guard_in(d, T0, SOUTH, "o-3")
    [a] = d.tick(CHECK1)
    assert d.tick(E1 - 0.001) == []
    [c] = d.tick(E1)
    assert (c.incident_id, c.msgType, c.stage) == (a.incident_id, "Cancel", "window_ended")
    assert c.headline.endswith("window ended")
    assert d.state.incidents == {}
    assert mem(d)["roster"] == {} and mem(d)["window"] is None
    assert mem(d)["due"] == CHECK2
    # the next window starts with an empty roster: nobody carried over
    alerts = d.tick(CHECK2)
    assert sorted(a.zone for a in alerts) == [NORTH, SOUTH]
    assert mem(d)["due"] == E2
    assert [a.stage for a in d.tick(E2)] == ["window_ended", "window_ended"]
    assert mem(d)["due"] == CHECK1 + DAY  # tomorrow's drop-off


def test_the_window_end_closes_incidents_even_when_the_first_input_after_it_is_a_guard_event():
    d = driver()
    [a] = [x for x in d.tick(CHECK1) if x.zone == SOUTH]
    alerts = guard_in(d, E1 + 10, NORTH, "o-1")
    assert sorted((x.stage, x.zone) for x in alerts) == [("window_ended", NORTH), ("window_ended", SOUTH)]
    assert mem(d)["roster"] == {NORTH: {"o-1": [True, E1 + 10]}}  # counted for the next window
    later = d.tick(CHECK2)
    assert sorted((x.zone, x.headline.split(": ")[-1]) for x in later) == [(NORTH, "1 of 2 officers checked in"), (SOUTH, "0 of 1 officers checked in")]


def test_memory_due_is_always_the_next_check_or_end():
    d = driver()
    d.tick(T0)
    expected = [(T0 + 10, CHECK1), (S1 + 1, CHECK1), (CHECK1, E1), (E1 - 1, E1), (E1, CHECK2), (CHECK2 + 5, E2), (E2 + 1, CHECK1 + DAY)]
    for now, due in expected:
        d.tick(now)
        assert mem(d)["due"] == due, (now - T0, mem(d)["due"] - T0)
        assert d.state.next_due() == min(due, d.state.incidents_due() or due)


def test_unknown_posts_are_ignored():
    d = driver()
    d.tick(T0)
    before = d.state
    assert guard_in(d, T0 + 10, "zx01-gate-x", "o-1") == []
    assert guard_out(d, T0 + 11, "", "o-1") == []
    assert d.state == before
    d.tick(CHECK1)
    assert guard_out(d, CHECK1 + 10, "zx01-gate-x", "o-1") == []
    assert "zx01-gate-x" not in mem(d)["roster"]


def test_a_school_without_posts_is_never_checked():
    d = driver(registry=registry_with(gate_school(posts={})))
    assert d.tick(T0) == [] and d.tick(CHECK1) == [] and d.tick(E1) == []
    assert mem(d)["due"] is None
    other = Driver(rules_ctx(post_staffing={}, registry=REGISTRY), state=SchoolState(school_id=OTHER_SCHOOL))
    assert other.tick(CHECK1) == []


def test_disabled_rule_does_nothing():
    d = Driver(rules_ctx(registry=REGISTRY))
    assert d.tick(T0) == [] and d.tick(CHECK1) == []
    assert guard_out(d, CHECK1 + 1, NORTH, "o-1") == []
    assert "post_staffing" not in d.state.memory


# --- calendars ---------------------------------------------------------------------------------


def test_no_check_on_a_day_off_or_a_closed_date():
    # T0 is Sunday 2026-11-29 in Shanghai
    for sch in (gate_school(days=("mon", "tue", "wed", "thu", "fri")), gate_school(closed_dates=("2026-11-29",))):
        d = driver(registry=registry_with(sch))
        assert d.tick(T0) == []
        assert mem(d)["due"] == CHECK1 + DAY
        assert d.tick(CHECK1) == [] and d.tick(CHECK2) == []
        assert len(d.tick(CHECK1 + DAY)) == 2


def test_windows_are_in_the_schools_own_timezone():
    london = gate_school(OTHER_SCHOOL, tz="Europe/London")
    # the Shanghai wall-clock times at a London school: 8 hours later (UTC+0 in November)
    london_on_shanghai_clock = gate_school(OTHER_SCHOOL, tz="Europe/London", windows=(window(S1 - T0, E1 - T0, "Asia/Shanghai"),))
    d = Driver(rules_ctx(post_staffing={}, registry=registry_with(london)), state=SchoolState(school_id=OTHER_SCHOOL))
    d.tick(T0)
    assert mem(d)["due"] == CHECK1
    assert len(d.tick(CHECK1)) == 2
    d2 = Driver(rules_ctx(post_staffing={}, registry=registry_with(london_on_shanghai_clock)), state=SchoolState(school_id=OTHER_SCHOOL))
    d2.tick(T0)
    assert mem(d2)["due"] == CHECK1 + 8 * H
    assert d2.tick(CHECK1) == []
    [a, b] = d2.tick(CHECK1 + 8 * H)
    assert a.school_id == OTHER_SCHOOL and "Gate post" in a.headline


def test_a_window_past_midnight():
    ny = "America/New_York"
    sch = gate_school(tz=ny, windows=(Window(time(23, 40), time(0, 30)),))
    d = driver(registry=registry_with(sch))
    start = local_epoch("2026-11-30T23:40", ny)
    end = local_epoch("2026-12-01T00:30", ny)
    d.tick(start - H)
    assert mem(d)["due"] == start + GRACE
    guard_in(d, start - 60, NORTH, "o-1")
    guard_in(d, start - 50, SOUTH, "o-3")
    [a] = d.tick(start + GRACE)
    assert a.zone == NORTH
    assert mem(d)["due"] == end
    # after midnight, still the same window
    assert d.tick(local_epoch("2026-12-01T00:10", ny)) == []
    [c] = guard_in(d, local_epoch("2026-12-01T00:15", ny), NORTH, "o-2")
    assert (c.incident_id, c.stage) == (a.incident_id, "restored")
    [b] = guard_out(d, local_epoch("2026-12-01T00:20", ny), NORTH, "o-2")
    assert b.stage == "opened"
    assert d.tick(end - 1) == []
    [e] = d.tick(end)
    assert (e.incident_id, e.stage) == (b.incident_id, "window_ended")
    assert mem(d)["due"] == local_epoch("2026-12-01T23:40", ny) + GRACE


def test_a_window_past_midnight_belongs_to_the_day_it_starts():
    ny = "America/New_York"
    sch = gate_school(tz=ny, windows=(Window(time(23, 40), time(0, 30)),), days=("mon", "tue", "wed", "thu", "fri"))
    d = driver(registry=registry_with(sch))
    # Friday night's window runs into Saturday; Saturday and Sunday nights have none
    d.tick(local_epoch("2026-12-04T23:00", ny))
    assert len(d.tick(local_epoch("2026-12-05T00:10", ny))) == 2
    d.tick(local_epoch("2026-12-05T00:30", ny))
    assert mem(d)["due"] == local_epoch("2026-12-07T23:45", ny)  # Monday night
    assert d.tick(local_epoch("2026-12-06T00:10", ny)) == []


def test_grace_and_severity_per_school():
    reg = registry_with(gate_school(), gate_school(OTHER_SCHOOL, tz="Asia/Shanghai"))
    ctx = rules_ctx(post_staffing={"schools": {SCHOOL: {"grace_seconds": 60, "severity": "Severe"}}}, registry=reg)
    here, there = Driver(ctx), Driver(ctx, state=SchoolState(school_id=OTHER_SCHOOL))
    here.tick(T0)
    there.tick(T0)
    assert mem(here)["due"] == S1 + 60 and mem(there)["due"] == CHECK1
    assert {a.severity for a in here.tick(S1 + 60)} == {"Severe"}
    assert there.tick(S1 + 60) == []
    assert {a.severity for a in there.tick(CHECK1)} == {"Moderate"}


# --- redelivery, drills, restarts -----------------------------------------------------------------


def test_a_redelivered_check_in_does_not_count_twice():
    d = driver()
    d.tick(T0)
    first = checkin(NORTH, "o-1", "in-1", ts=CHECK1 + 10)
    d.tick(CHECK1)
    assert d.event(first, CHECK1 + 10) == []
    assert d.event(first, CHECK1 + 11) == []
    assert open_posts(d) == [NORTH, SOUTH]
    [c] = guard_in(d, CHECK1 + 20, NORTH, "o-2")
    assert c.stage == "restored"


def test_a_redelivered_check_in_does_not_undo_a_later_check_out():
    """CONTRACT: redelivery of the same (device_id, event_id) is a no-op. o-2 checked in
    (no alert, so the engine did not mark it applied), checked out after the check (the
    post is short: an incident); a copy of the check-in delivered again must not put o-2
    back on the roster and close the incident as `restored`."""
    d = driver()
    d.tick(T0)
    guard_in(d, T0 + 10, SOUTH, "o-3")
    guard_in(d, T0 + 10, NORTH, "o-1")
    first = checkin(NORTH, "o-2", "in-o2", ts=T0 + 20)
    assert d.event(first, T0 + 20) == []
    assert d.tick(CHECK1) == []
    [a] = guard_out(d, CHECK1 + 60, NORTH, "o-2", "out-o2")
    assert a.stage == "opened"
    assert d.event(first, CHECK1 + 70) == []
    assert open_posts(d) == [NORTH]
    assert sorted(o for o, (on, _) in mem(d)["roster"][NORTH].items() if on) == ["o-1"]


def test_a_drill_check_out_raises_no_real_incident():
    """Issue 3: drills (exercise) never produce Actual alerts. A drill check-out after the
    check leaves the real roster as it was."""
    d = driver()
    staff(d, T0)
    assert d.tick(CHECK1) == []
    alerts = guard_out(d, CHECK1 + 60, NORTH, "o-1", exercise=True)
    assert [a for a in alerts if a.status == "Actual"] == []
    assert [i for i in d.state.incidents.values() if i.status == "Actual"] == []


def test_the_check_survives_a_restart():
    d = driver()
    d.tick(T0)
    guard_in(d, T0 + 5, NORTH, "o-1")
    assert d.state.memory_due() == CHECK1
    back = round_trip(d.state)
    assert engine.on_tick(back, CHECK1 - 1, d.ctx).alerts == []
    alerts = engine.on_tick(back, CHECK1, d.ctx).alerts
    assert sorted((a.zone, a.headline.split(": ")[-1]) for a in alerts) == [(NORTH, "1 of 2 officers checked in"), (SOUTH, "0 of 1 officers checked in")]


def test_state_round_trip_mid_way_behaves_the_same():
    def script(d: Driver) -> None:
        d.tick(T0)
        guard_in(d, T0 + 100, NORTH, "o-1")
        guard_in(d, T0 + 100, SOUTH, "o-3")
        guard_in(d, T0 + 200, "zx01-gate-x", "o-9")
        d.tick(CHECK1)
        d.tick(CHECK1 + 1)
        guard_in(d, CHECK1 + 50, NORTH, "o-2")
        guard_out(d, CHECK1 + 60, SOUTH, "o-3")
        guard_in(d, CHECK1 + 70, SOUTH, "o-4")
        guard_out(d, CHECK1 + 80, NORTH, "o-1")
        d.tick(E1)
        d.tick(CHECK2)
        guard_in(d, CHECK2 + 10, SOUTH, "o-3")
        d.tick(E2 + 100)

    plain, restarted = driver(), RestartingDriver(rules_ctx(post_staffing={}, registry=REGISTRY))
    script(plain)
    script(restarted)
    assert [a.to_dict() for a in restarted.alerts] == [a.to_dict() for a in plain.alerts]
    assert restarted.state == plain.state
    assert [(a.stage, a.zone) for a in plain.alerts] == [
        ("opened", NORTH),  # 1 of 2 at the check
        ("restored", NORTH),
        ("opened", SOUTH),
        ("restored", SOUTH),
        ("opened", NORTH),
        ("window_ended", NORTH),
        ("opened", NORTH),
        ("opened", SOUTH),
        ("restored", SOUTH),
        ("window_ended", NORTH),
    ]


# --- property: random check-ins, check-outs and ticks ----------------------------------------------

NY = "America/New_York"
LONDON = "Europe/London"
# (timezone, window start and end as offsets from T0 on that school's clock); T0 is 18:41
# on Saturday in New York, so the second window runs from 23:41 past midnight to 00:41
SCHOOLS = [("Asia/Shanghai", 1800, 4800), (NY, 5 * H, 6 * H), (LONDON, 600, 1200)]
REQUIRED = {NORTH: 2, SOUTH: 1, "zx01-gate-w": 3}
OFFICERS = ["o-1", "o-2", "o-3", "o-4"]

action = st.one_of(
    st.tuples(st.sampled_from(["in", "out"]), st.sampled_from([*REQUIRED, "zx01-gate-x"]), st.sampled_from(OFFICERS)),
    st.tuples(st.just("tick"), st.just(""), st.just("")),
)
script_steps = st.lists(
    st.tuples(st.sampled_from([0, 1, 30, 60, 120, 299, 300, 301, 600, 900]), action, st.booleans()),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(SCHOOLS), script_steps)
def test_staffing_properties(where, script):
    """For random check-ins, check-outs and ticks around one window: nothing before the
    check; from the check to the window's end a post has an open incident exactly when it
    is short (so at most one, and never while fully staffed); nothing after the end; the
    memory's due is the check, then the end, then tomorrow's check. Half the steps restart
    the worker (state round trip) on the way."""
    tz, a, b = where
    sch = gate_school(tz=tz, windows=(window(a, b, tz),), posts=REQUIRED)
    d = driver(registry=registry_with(sch))
    start, end = T0 + a, T0 + b
    check = start + GRACE
    now = start - 1200
    roster: dict[str, set[str]] = {p: set() for p in REQUIRED}
    for i, (dt, (kind, post, officer), restart) in enumerate(script):
        now += dt
        before = {p: len(o) for p, o in roster.items()}
        if kind == "tick":
            alerts = d.tick(now)
        elif kind == "in":
            alerts = guard_in(d, now, post, officer, f"e-{i}")
            roster.get(post, set()).add(officer)
        else:
            alerts = guard_out(d, now, post, officer, f"e-{i}")
            roster.get(post, set()).discard(officer)
        if restart:
            d.state = round_trip(d.state)
        keys = [inc.key for inc in d.state.incidents.values()]
        assert len(keys) == len(set(keys))
        assert all(inc.status == "Actual" and inc.rule == "post_staffing" for inc in d.state.incidents.values())
        for al in alerts:
            if al.stage == "opened":
                assert check <= now < end
                # the check runs before the input that woke it; a check-out raises after
                on_duty = before[al.zone] if al.evidence[0]["type"] == "post.check" else len(roster[al.zone])
                assert on_duty < REQUIRED[al.zone]
                assert al.headline.endswith(f": {on_duty} of {REQUIRED[al.zone]} officers checked in")
        if now < check:
            assert keys == []
            assert mem(d)["due"] == check
        elif now < end:
            assert sorted(keys) == sorted(p for p, n in REQUIRED.items() if len(roster[p]) < n), (now - start, roster)
            assert mem(d)["due"] == end
        else:
            assert keys == []
            assert mem(d)["due"] == check + DAY
