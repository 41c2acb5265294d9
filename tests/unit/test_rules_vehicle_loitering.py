"""Rule `vehicle_loitering` (pipeline/rules/vehicle_loitering.py): the same plate read
`min_reads` times within `window_seconds` around one school; Severe in a drop-off /
pick-up window of the school's own calendar, Moderate outside."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.records import iso_utc
from pipeline.rules import vehicle_loitering
from pipeline.rules.state import SchoolState
from unit_helpers import (
    OTHER_SCHOOL,
    SCHOOL,
    SCHOOL_NAME,
    T0,
    Driver,
    RestartingDriver,
    plate,
    registry_with,
    round_trip,
    rules_ctx,
    school,
    window,
)

W = 1800
N = 4
CAR = "京A88888"


def driver(registry=None, **vehicle_loitering) -> Driver:
    return Driver(rules_ctx(vehicle_loitering=vehicle_loitering, registry=registry))


def read(d: Driver, now: float, event_id: str, number: str = CAR, ts: float | None = None, **kw) -> list:
    return d.event(plate(number, event_id, ts=now if ts is None else ts, received=now, **kw), now)


def reads(d: Driver, times, number: str = CAR, prefix: str = "pl", **kw) -> list:
    out = []
    for i, t in enumerate(times):
        out += read(d, t, f"{prefix}-{i}", number, **kw)
    return out


def of_rule(alerts, stage: str | None = None) -> list:
    return [a for a in alerts if a.rule == "vehicle_loitering" and (stage is None or a.stage == stage)]


# a school whose drop-off window runs from 10 min before T0 to 10 min after (its own clock)
IN_WINDOW = registry_with(school(windows=(window(-600, 600),)))


# --- what raises, and what it emits -------------------------------------------------------------


def test_four_reads_within_half_an_hour_raise_a_moderate_incident():
    d = driver()
    assert reads(d, [T0, T0 + 300, T0 + 900]) == []
    [a] = read(d, T0 + 1500, "pl-3")
    assert (a.rule, a.stage, a.msgType, a.status) == ("vehicle_loitering", "opened", "Alert", "Actual")
    assert (a.severity, a.urgency, a.certainty, a.zone) == ("Moderate", "Expected", "Likely", "gate-south")
    assert a.notify == ["onsite", "command"]
    assert a.headline == f"Vehicle {CAR} loitering at {SCHOOL_NAME}: 4 reads in 30 min"
    # the trigger in full first, then the earlier reads as memory kept them
    assert [e["event_id"] for e in a.evidence] == ["pl-3", "pl-0", "pl-1", "pl-2"]
    assert a.evidence[0]["attrs"] == {"plate": CAR, "direction": "in"}
    assert a.evidence[1] == {"event_id": "pl-0", "device_id": "zx01-lpr-1", "type": "plate.read", "ts": iso_utc(T0), "attrs": {"plate": CAR}}
    inc = d.state.incidents[a.incident_id]
    assert inc.key == CAR and inc.deadlines == {"expired": T0 + 1500 + 1800}


@pytest.mark.parametrize("last, raises", [(W - 1, True), (W, True), (W + 0.001, False), (W + 60, False)])
def test_exactly_min_reads_within_the_window_raise(last, raises):
    d = driver()
    assert reads(d, [T0, T0 + 1, T0 + 2]) == []
    assert len(read(d, T0 + last, "pl-3")) == (1 if raises else 0)


def test_fewer_reads_or_reads_spread_out_raise_nothing():
    d = driver()
    assert reads(d, [T0 + i * 601 for i in range(12)]) == []  # every 10 min: never 4 in 30 min
    assert reads(d, [T0 + 10_000, T0 + 10_001, T0 + 10_002], number="京B11111") == []
    assert d.state.incidents == {}


def test_different_plates_never_combine_but_spellings_of_one_plate_do():
    d = driver()
    out = []
    for i, number in enumerate(["京A88888", "京A88889", "京B88888", "京A8888"]):
        out += read(d, T0 + i, f"pl-{i}", number)
    assert out == []
    a, j = reads(d, [T0 + 10, T0 + 11, T0 + 12, T0 + 13], number="京a 888·88", prefix="x")
    assert d.state.incidents[a.incident_id].key == "京A88888"
    # the first 京A88888 read counted: the fourth read of this plate is the one at T0 + 12
    assert (a.stage, a.evidence[0]["event_id"]) == ("opened", "x-2")
    assert sorted(e["event_id"] for e in a.evidence) == ["pl-0", "x-0", "x-1", "x-2"]
    assert (j.incident_id, j.stage) == (a.incident_id, "joined-5")


def test_reads_without_a_plate_are_ignored():
    d = driver(min_reads=2)
    for i in range(4):
        assert d.event(plate("", f"e-{i}", ts=T0 + i), T0 + i) == []
        assert d.event(plate("·-", f"s-{i}", ts=T0 + i), T0 + i) == []
    assert d.state.incidents == {}


def test_disabled_rule_raises_nothing():
    d = Driver(rules_ctx())
    assert reads(d, [T0 + i for i in range(6)]) == []
    assert not [k for k in d.state.memory if k.startswith("vehicle_loitering")]


def test_the_window_is_measured_on_read_times_not_arrival():
    d = driver()
    reads(d, [T0, T0 + 10, T0 + 20])
    # read 30 min after the first, delivered 5 min late: still 4 reads in 1800 s
    [a] = read(d, T0 + 2100, "pl-3", ts=T0 + 1800)
    assert a.stage == "opened"


# --- severity from the school's calendar ---------------------------------------------------------


def test_severe_when_the_last_read_falls_in_a_school_window():
    d = driver(registry=IN_WINDOW)
    [a] = reads(d, [T0 - 900, T0 - 800, T0 - 700, T0 - 600])
    assert (a.severity, a.urgency) == ("Severe", "Expected")
    assert a.headline.endswith("4 reads in 30 min during drop-off/pick-up")


@pytest.mark.parametrize("last, severity", [(-601, "Moderate"), (-600, "Severe"), (599.9, "Severe"), (600, "Moderate"), (3000, "Moderate")])
def test_window_bounds_are_half_open(last, severity):
    d = driver(registry=IN_WINDOW)
    times = [T0 + last - 3, T0 + last - 2, T0 + last - 1, T0 + last]
    [a] = reads(d, times)
    assert a.severity == severity


def test_the_window_is_judged_on_the_read_time_not_its_arrival():
    d = driver(registry=IN_WINDOW)
    reads(d, [T0 + 500, T0 + 550, T0 + 580])
    # read at T0+590 (in the window), delivered at T0+700 (after it)
    [a] = read(d, T0 + 700, "pl-3", ts=T0 + 590)
    assert a.severity == "Severe"
    d2 = driver(registry=IN_WINDOW)
    reads(d2, [T0 - 900, T0 - 800, T0 - 700])
    # read at T0-620 (before the window), delivered at T0-590 (in it)
    [b] = read(d2, T0 - 590, "pl-3", ts=T0 - 620)
    assert b.severity == "Moderate"


def test_the_window_is_in_the_schools_own_timezone():
    london = school(OTHER_SCHOOL, tz="Europe/London", windows=(window(-600, 600, tz="Europe/London"),))
    # the same wall-clock times as a Shanghai window, but in London: 8 hours off
    london_on_shanghai_clock = school(OTHER_SCHOOL, tz="Europe/London", windows=(window(-600, 600, tz="Asia/Shanghai"),))
    severities = []
    for sch in (london, london_on_shanghai_clock):
        d = Driver(rules_ctx(vehicle_loitering={}, registry=registry_with(sch)), state=SchoolState(school_id=OTHER_SCHOOL))
        [a] = reads(d, [T0 - 3, T0 - 2, T0 - 1, T0], school_id=OTHER_SCHOOL)
        severities.append(a.severity)
    assert severities == ["Severe", "Moderate"]


def test_no_window_on_a_closed_date_or_a_day_off():
    for sch in (
        school(windows=(window(-600, 600),), closed_dates=("2026-11-29",)),  # T0 is Sunday 2026-11-29 in Shanghai
        school(windows=(window(-600, 600),), days=("mon", "tue", "wed", "thu", "fri")),
    ):
        d = driver(registry=registry_with(sch))
        [a] = reads(d, [T0 - 3, T0 - 2, T0 - 1, T0])
        assert a.severity == "Moderate"


def test_severities_are_configurable_per_school():
    ctx = rules_ctx(
        vehicle_loitering={"schools": {SCHOOL: {"severity": "Minor", "severity_in_windows": "Extreme", "min_reads": 2, "window_seconds": 60}}},
        registry=registry_with(school(windows=(window(-600, 600),)), school(OTHER_SCHOOL, tz="Europe/London")),
    )
    here = Driver(ctx)
    [a] = reads(here, [T0 - 30, T0])
    assert a.severity == "Extreme"
    [b] = reads(here, [T0 + 1000, T0 + 1060], number="京B12345", prefix="b")
    assert b.severity == "Minor"
    there = Driver(ctx, state=SchoolState(school_id=OTHER_SCHOOL))
    assert reads(there, [T0, T0 + 1, T0 + 2], school_id=OTHER_SCHOOL) == []  # 4 reads needed there
    [c] = read(there, T0 + 3, "pl-3", school_id=OTHER_SCHOOL)
    assert (c.severity, c.school_id) == ("Moderate", OTHER_SCHOOL)


# --- joining and closing ------------------------------------------------------------------------


def test_later_reads_join_and_it_closes_when_quiet():
    d = driver()
    [a] = reads(d, [T0, T0 + 60, T0 + 120, T0 + 180])
    [j] = read(d, T0 + 240, "pl-4")
    assert (j.incident_id, j.msgType, j.stage) == (a.incident_id, "Update", "joined-5")
    assert j.evidence[-1]["event_id"] == "pl-4"
    assert d.tick(T0 + 240 + 1799) == []
    [c] = d.tick(T0 + 240 + 1800)
    assert (c.incident_id, c.msgType, c.stage) == (a.incident_id, "Cancel", "expired")
    # a read long after: the count starts over
    assert read(d, T0 + 5000, "pl-5") == []


def test_quiet_close_is_configurable():
    d = driver(quiet_close_seconds=60)
    [a] = reads(d, [T0, T0 + 1, T0 + 2, T0 + 3])
    assert d.state.incidents[a.incident_id].deadlines == {"expired": T0 + 63}
    [c] = d.tick(T0 + 63)
    assert c.stage == "expired"


def test_a_read_outside_the_window_of_the_last_reads_does_not_join():
    d = driver(quiet_close_seconds=7200)
    [a] = reads(d, [T0, T0 + 1, T0 + 2, T0 + 3])
    # 40 min later: the incident is still open but this read is alone in its 30 min
    assert read(d, T0 + 2400, "pl-9") == []
    assert d.state.incidents[a.incident_id].evidence_total == 4


# --- drills, redelivery, restarts ----------------------------------------------------------------


def test_drill_reads_open_exercise_incidents():
    d = driver()
    [x] = reads(d, [T0, T0 + 1, T0 + 2, T0 + 3], exercise=True)
    assert (x.status, x.severity) == ("Exercise", "Moderate") and x.headline.startswith("[DRILL] Vehicle")


def test_drill_reads_do_not_count_towards_a_real_incident():
    """Issue 3: drills never mix with Actual incidents. Three drill reads and one real read
    of the same plate are not four real reads."""
    d = driver()
    assert reads(d, [T0, T0 + 1, T0 + 2], exercise=True, prefix="x") == []
    assert read(d, T0 + 3, "pl-1") == []
    assert d.state.incidents == {}


def test_real_reads_do_not_count_towards_a_drill_incident():
    d = driver()
    assert reads(d, [T0, T0 + 1, T0 + 2]) == []
    assert read(d, T0 + 3, "x-1", exercise=True) == []
    assert d.state.incidents == {}


def test_a_redelivered_read_is_not_counted_twice_before_the_incident():
    d = driver()
    first = plate(CAR, "pl-0", ts=T0)
    for i in range(5):
        assert d.event(first, T0 + i) == []
    assert reads(d, [T0 + 10, T0 + 11], prefix="b") == []
    [a] = read(d, T0 + 12, "b-2")
    assert sorted(e["event_id"] for e in a.evidence) == ["b-0", "b-1", "b-2", "pl-0"]


def test_a_redelivered_early_read_is_not_counted_again_after_the_incident_opened():
    """The reads that opened the incident are evidence already; a copy of the first of
    them, delivered again after a fifth read (a bridge reconnect redelivers unacknowledged
    messages), must not join the incident a second time."""
    d = driver()
    [a] = reads(d, [T0, T0 + 1, T0 + 2, T0 + 3])
    [j] = read(d, T0 + 4, "pl-4")
    assert j.stage == "joined-5"
    assert d.event(plate(CAR, "pl-0", ts=T0, received=T0 + 5), T0 + 5) == []
    inc = d.state.incidents[a.incident_id]
    assert inc.evidence_total == 5
    assert [e["event_id"] for e in inc.evidence].count("pl-0") == 1


def test_reads_far_apart_are_not_within_a_short_window_whichever_arrives_first():
    """window_seconds 300: a read at T0+500 and one that happened at T0+50 but arrives 550 s
    late (within max_clock_skew 600, so its own time is believed) are 450 s apart."""
    d = driver(min_reads=2, window_seconds=300)
    assert read(d, T0 + 500, "pl-1") == []
    assert read(d, T0 + 600, "pl-2", ts=T0 + 50) == []
    assert d.state.incidents == {}


def test_a_late_read_completes_a_set_of_earlier_reads():
    """Defaults (4 reads in 1800 s): reads at T0, +50, +100, then one at +1950; a read that
    happened at +1400 arrives with the +1950 one (550 s late). T0, +50, +100, +1400 are four
    reads within 1400 s: loitering."""
    d = driver()
    assert reads(d, [T0, T0 + 50, T0 + 100, T0 + 1950]) == []
    alerts = read(d, T0 + 1950, "pl-late", ts=T0 + 1400)
    assert [a.stage for a in alerts] == ["opened"]


def test_state_round_trip_mid_way_behaves_the_same():
    def script(d: Driver) -> None:
        reads(d, [T0 - 900, T0 - 800], prefix="a")
        reads(d, [T0 - 850, T0 - 750], number="京B12345", prefix="b")
        d.event(plate(CAR, "a-0", ts=T0 - 900), T0 - 700)
        reads(d, [T0 - 650, T0 - 600], prefix="a2")
        reads(d, [T0 - 500, T0 - 499, T0 - 498, T0 - 497], number="粤Z00001", prefix="x", exercise=True)
        reads(d, [T0 - 400, T0 - 300], number="京B12345", prefix="b2")
        read(d, T0 + 100, "a3")
        d.tick(T0 - 300 + W)
        d.tick(T0 + 100 + W)
        reads(d, [T0 + 5000 + i for i in range(4)], prefix="c")

    ctx = rules_ctx(vehicle_loitering={}, registry=IN_WINDOW)
    plain, restarted = Driver(ctx), RestartingDriver(ctx)
    script(plain)
    script(restarted)
    assert [a.to_dict() for a in restarted.alerts] == [a.to_dict() for a in plain.alerts]
    assert restarted.state == plain.state
    assert [(a.stage, a.severity, a.status) for a in plain.alerts] == [
        ("opened", "Severe", "Actual"),  # 京A88888 at T0-600: the window has just begun
        ("opened", "Severe", "Exercise"),
        ("opened", "Severe", "Actual"),  # 京B12345
        ("joined-5", "Severe", "Actual"),
        ("expired", "Severe", "Exercise"),
        ("expired", "Severe", "Actual"),
        ("expired", "Severe", "Actual"),
        ("opened", "Moderate", "Actual"),  # long after the window
    ]


def test_memory_of_reads_survives_a_restart():
    d = driver()
    reads(d, [T0, T0 + 1, T0 + 2])
    d.state = round_trip(d.state)
    [a] = read(d, T0 + 3, "pl-3")
    assert a.stage == "opened" and len(a.evidence) == 4


# --- property: the count over random read times ------------------------------------------------


def _qualifies(times: list[float], n: int, w: float) -> bool:
    """Are the last n reads of `times` (in time order) within w seconds?"""
    return len(times) >= n and times[-1] - times[-n] <= w


steps = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from([0, 1, 30, 59, 60, 61, 120, 299, 300, 301, 600, 1799, 1800, 1801])),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@example(n=4, w=1800, script=[(0, 0), (0, 600), (0, 600), (0, 600)])
@example(n=2, w=60, script=[(0, 0), (1, 30), (0, 31)])
@given(st.sampled_from([2, 3, 4]), st.sampled_from([60, 300, 1800]), steps)
def test_raises_iff_min_reads_of_one_plate_fall_within_the_window(n, w, script):
    """Reads arriving in time order: a plate's read raises (opens or joins) exactly when it
    and the n-1 reads of the same plate before it lie within w seconds; other plates never
    count; it opens when nothing is open for the plate, else joins."""
    plates = ["京A00001", "京A00002", "沪C12345"]
    d = driver(min_reads=n, window_seconds=w, quiet_close_seconds=900)
    now = T0
    seen: dict[str, list[float]] = {p: [] for p in plates}
    open_until: dict[str, float] = {}
    ever_raised: set[str] = set()
    for i, (idx, dt) in enumerate(script):
        now += dt
        number = plates[idx]
        alerts = read(d, now, f"pl-{i}", number)
        seen[number].append(now)
        mine = [a for a in of_rule(alerts) if a.stage != "expired"]
        expected = _qualifies(seen[number], n, w)
        assert len(mine) == (1 if expected else 0), (number, seen[number])
        for a in mine:
            assert d.state.incidents[a.incident_id].key == number
            was_open = open_until.get(number, 0) > now
            assert a.stage.startswith("joined-") if was_open else a.stage == "opened", (a.stage, was_open)
            open_until[number] = now + 900
            ever_raised.add(number)
        keys = [inc.key for inc in d.state.incidents.values()]
        assert len(keys) == len(set(keys))
    # a plate never read n times within w never raised
    for p in plates:
        times = seen[p]
        ever = any(times[k] - times[k - n + 1] <= w for k in range(n - 1, len(times)))
        assert (p in ever_raised) == ever


late_steps = st.lists(
    st.tuples(st.integers(0, 1), st.sampled_from([0, 1, 50, 100, 300, 550, 1000, 1800]), st.sampled_from([0, 0, 0, 100, 300, 550])),
    max_size=16,
)


@settings(max_examples=200, deadline=None)
@example(script=[(0, 0, 0), (0, 50, 0), (0, 50, 0), (0, 1850, 0), (0, 0, 550)])
@given(late_steps)
def test_late_reads_raise_iff_min_reads_fall_within_the_window(script):
    """Reads may arrive late (up to 550 s, within max_clock_skew 600): the incident opens
    the first time the reads of one plate received so far contain 4 within 1800 s."""
    plates = ["京A00001", "京A00002"]
    d = driver(quiet_close_seconds=10 * 24 * 3600)
    now = T0
    seen: dict[str, list[float]] = {p: [] for p in plates}
    opened: set[str] = set()
    for i, (idx, dt, lag) in enumerate(script):
        now += dt
        number = plates[idx]
        alerts = read(d, now, f"pl-{i}", number, ts=now - lag)
        seen[number].append(now - lag)
        times = sorted(seen[number])
        within = any(times[k] - times[k - N + 1] <= W for k in range(N - 1, len(times)))
        stages = [a.stage for a in of_rule(alerts)]
        if number not in opened:
            assert stages == (["opened"] if within else []), (number, times)
            if within:
                opened.add(number)


def test_a_read_rewrites_only_its_part_of_the_memory():
    """Memory grows with the plates seen in the window; a read must not rewrite all of them."""
    d = driver()
    for n in range(64):
        read(d, T0 + n, f"p-{n}", f"京A{n:05d}")
    parts = [k for k in d.state.memory if k.startswith("vehicle_loitering.")]
    assert len(parts) > 8, "the plates are spread over the parts"
    before = dict(d.state.memory)
    read(d, T0 + 100, "p-x", "京A00007")
    changed = [k for k in d.state.memory if d.state.memory[k] is not before.get(k)]
    assert changed == [vehicle_loitering.part_of("Actual/京A00007")]
    assert "京A00007" in str(d.state.memory[changed[0]])
