"""Rule `video_behaviour` (pipeline/rules/video_behaviour.py): fights (Severe), crowds at a
gate during a drop-off / pick-up window (Moderate), falls and loitering (Minor, per zone)."""

from __future__ import annotations

from fnmatch import fnmatch

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.rules.state import SchoolState
from unit_helpers import (
    OTHER_SCHOOL,
    SCHOOL,
    SCHOOL_NAME,
    T0,
    Driver,
    RestartingDriver,
    camera,
    crowd,
    registry_with,
    rules_ctx,
    school,
    window,
)

LOCAL = ["onsite", "command"]
QUIET = 1800
# drop-off from 10 min before T0 to 10 min after, on the school's own clock
IN_WINDOW = registry_with(school(windows=(window(-600, 600),)))


def driver(registry=IN_WINDOW, **video_behaviour) -> Driver:
    return Driver(rules_ctx(video_behaviour=video_behaviour, registry=registry))


def seen(d: Driver, etype: str, now: float, event_id: str = "v-1", device_id: str = "zx01-cam-7", **kw) -> list:
    kw.setdefault("ts", now)
    return d.event(camera(etype, device_id, event_id, **kw), now)


def counted(d: Driver, count, now: float, event_id: str = "cr-1", device_id: str = "zx01-cam-7", **kw) -> list:
    kw.setdefault("ts", now)
    return d.event(crowd(count, event_id, device_id, **kw), now)


def of_rule(alerts) -> list:
    return [a for a in alerts if a.rule == "video_behaviour"]


# --- fights --------------------------------------------------------------------------------------


def test_a_fight_is_severe():
    d = driver()
    [a] = seen(d, "video.fight", T0)
    assert (a.rule, a.stage, a.msgType, a.status) == ("video_behaviour", "opened", "Alert", "Actual")
    assert (a.severity, a.urgency, a.certainty, a.zone) == ("Severe", "Immediate", "Likely", "gate-north")
    assert a.notify == LOCAL
    assert a.headline == f"Fight on camera at {SCHOOL_NAME} (gate-north)"
    assert [(e["device_id"], e["event_id"]) for e in a.evidence] == [("zx01-cam-7", "v-1")]
    inc = d.state.incidents[a.incident_id]
    assert inc.key == "fight/gate-north" and inc.deadlines == {"expired": T0 + QUIET}


def test_a_fight_is_severe_at_any_time_and_anywhere():
    d = driver(registry=None)  # no windows at all
    [a] = seen(d, "video.fight", T0 + 5 * 3600, device_id="zx01-cam-9")
    assert (a.severity, a.zone) == ("Severe", "field")


def test_fight_severity_is_configurable():
    d = driver(fight_severity="Extreme")
    [a] = seen(d, "video.fight", T0)
    assert (a.severity, a.urgency) == ("Extreme", "Immediate")


@pytest.mark.parametrize("etype", ["video.intrusion", "video.face", "video.object", "sound.scream", "video"])
def test_other_types_raise_nothing_here(etype):
    d = driver()
    assert seen(d, etype, T0) == []
    assert d.state.incidents == {}


def test_disabled_rule_raises_nothing():
    d = Driver(rules_ctx(registry=IN_WINDOW))
    assert seen(d, "video.fight", T0) == [] and counted(d, 100, T0) == []


# --- crowds --------------------------------------------------------------------------------------


def test_a_crowd_at_the_gate_during_a_window_is_moderate():
    d = driver()
    [a] = counted(d, 30, T0)
    assert (a.rule, a.stage, a.severity, a.urgency, a.zone) == ("video_behaviour", "opened", "Moderate", "Expected", "gate-north")
    assert a.notify == LOCAL
    assert a.headline == f"Crowd of 30 at the gate at {SCHOOL_NAME} (gate-north)"
    assert a.evidence[0]["attrs"] == {"count": 30}
    assert d.state.incidents[a.incident_id].key == "crowd/gate-north"


@pytest.mark.parametrize(
    "count, offset, device, zone",
    [
        (29, 0, "zx01-cam-7", None),  # below the threshold
        (0, 0, "zx01-cam-7", None),
        (500, 0, "zx01-cam-9", None),  # not a gate zone (field)
        (500, 0, "zx01-cam-7", "playground"),
        (500, 0, "zx01-cam-7", "north-gate"),  # gate* matches from the start only
        (500, 600, "zx01-cam-7", None),  # the window has ended (half-open)
        (500, -601, "zx01-cam-7", None),  # not begun yet
        (500, 6 * 3600, "zx01-cam-7", None),
        (None, 0, "zx01-cam-7", None),  # no count
        ("45", 0, "zx01-cam-7", None),
        (45.0, 0, "zx01-cam-7", None),
    ],
)
def test_crowd_near_misses_raise_nothing(count, offset, device, zone):
    d = driver()
    assert counted(d, count, T0 + offset, device_id=device, zone=zone) == []
    assert d.state.incidents == {}


def test_window_bounds():
    d = driver()
    assert [a.stage for a in counted(d, 30, T0 - 600, "cr-1")] == ["opened"]
    d2 = driver()
    assert [a.stage for a in counted(d2, 30, T0 + 599.999, "cr-1")] == ["opened"]


def test_a_crowd_without_any_school_window_raises_nothing():
    d = driver(registry=None)  # zx-01 of the default registry has no windows
    assert counted(d, 300, T0) == []


def test_crowd_windows_are_in_the_schools_own_timezone():
    reg = registry_with(
        school(OTHER_SCHOOL, tz="America/New_York", windows=(window(-600, 600, tz="America/New_York"),)),
        school(tz="Asia/Shanghai", windows=(window(-600, 600, tz="America/New_York"),)),  # New York wall clock in Shanghai
    )
    there = Driver(rules_ctx(video_behaviour={}, registry=reg), state=SchoolState(school_id=OTHER_SCHOOL))
    here = Driver(rules_ctx(video_behaviour={}, registry=reg))
    assert [a.severity for a in counted(there, 40, T0, school_id=OTHER_SCHOOL)] == ["Moderate"]
    assert counted(here, 40, T0) == []


@pytest.mark.parametrize(
    "patterns, zone, raises",
    [
        (("gate*",), "gate", True),
        (("gate*",), "gatehouse", True),
        (("gate*",), "Gate-north", False),
        (("gate-?",), "gate-n", True),
        (("gate-?",), "gate-north", False),
        (("entrance", "gate-*"), "entrance", True),
        (("entrance", "gate-*"), "gate-south", True),
        ((), "gate-north", False),
    ],
)
def test_crowd_zones_are_fnmatch_patterns(patterns, zone, raises):
    d = driver(crowd_zones=patterns)
    assert len(counted(d, 31, T0, zone=zone)) == (1 if raises else 0)


def test_crowd_threshold_and_severity_per_school():
    reg = registry_with(school(windows=(window(-600, 600),)), school(OTHER_SCHOOL, tz="Asia/Shanghai", windows=(window(-600, 600),)))
    ctx = rules_ctx(video_behaviour={"schools": {SCHOOL: {"crowd_threshold": 10, "crowd_severity": "Severe"}}}, registry=reg)
    here, there = Driver(ctx), Driver(ctx, state=SchoolState(school_id=OTHER_SCHOOL))
    [a] = counted(here, 10, T0)
    assert (a.severity, a.urgency) == ("Severe", "Immediate")
    assert counted(there, 29, T0, school_id=OTHER_SCHOOL) == []
    assert [a.severity for a in counted(there, 30, T0 + 1, "cr-2", school_id=OTHER_SCHOOL)] == ["Moderate"]


@settings(max_examples=150, deadline=None)
@example(count=30, zone="gate-north", offset=-600)
@example(count=30, zone="gate-north", offset=600)
@given(st.integers(0, 60), st.sampled_from(["gate-north", "gate", "field", "office", "north-gate", "gate-south"]), st.floats(-1800, 1800))
def test_a_crowd_raises_iff_at_a_gate_during_a_window_and_at_least_the_threshold(count, zone, offset):
    d = driver()
    alerts = counted(d, count, T0 + offset, zone=zone)
    expected = count >= 30 and fnmatch(zone, "gate*") and -600 <= offset < 600
    assert [a.severity for a in alerts] == (["Moderate"] if expected else [])


# --- falls and loitering ------------------------------------------------------------------------


@pytest.mark.parametrize("etype, what", [("video.fall", "Person down"), ("video.loiter", "Loitering")])
def test_falls_and_loitering_are_minor(etype, what):
    d = driver()
    [a] = seen(d, etype, T0 + 7200)  # at any time
    assert (a.severity, a.urgency, a.notify, a.zone) == ("Minor", "Expected", LOCAL, "gate-north")
    assert a.headline == f"{what} at {SCHOOL_NAME} (gate-north)"
    assert d.state.incidents[a.incident_id].key == "minor/gate-north"


def test_minor_events_are_grouped_per_zone():
    d = driver()
    [a] = seen(d, "video.fall", T0, "v-1")
    [j] = seen(d, "video.loiter", T0 + 10, "v-2", device_id="zx01-cam-8")  # same zone, other kind, other camera
    assert (j.incident_id, j.msgType, j.stage, j.severity) == (a.incident_id, "Update", "joined-2", "Minor")
    [b] = seen(d, "video.loiter", T0 + 20, "v-3", device_id="zx01-cam-9")
    assert b.stage == "opened" and b.zone == "field" and b.incident_id != a.incident_id
    # a fight in the same zone is not a minor event: its own incident
    [f] = seen(d, "video.fight", T0 + 30, "v-4")
    assert (f.stage, f.severity) == ("opened", "Severe") and f.incident_id != a.incident_id
    assert sorted(i.key for i in d.state.incidents.values()) == ["fight/gate-north", "minor/field", "minor/gate-north"]


def test_minor_types_are_configurable():
    d = driver(minor_types=("video.loiter",))
    assert seen(d, "video.fall", T0) == []
    assert [a.severity for a in seen(d, "video.loiter", T0 + 1, "v-2")] == ["Minor"]


# --- joining and closing ------------------------------------------------------------------------


def test_repeated_fights_join_and_it_closes_when_quiet():
    d = driver()
    [a] = seen(d, "video.fight", T0, "v-1")
    [j] = seen(d, "video.fight", T0 + 100, "v-2", device_id="zx01-cam-8")
    assert (j.incident_id, j.stage) == (a.incident_id, "joined-2")
    [c1] = counted(d, 50, T0 + 110)
    [c2] = counted(d, 60, T0 + 120, "cr-2")
    assert c2.incident_id == c1.incident_id and c2.stage == "joined-2" and c1.incident_id != a.incident_id
    assert d.tick(T0 + 100 + QUIET - 1) == []
    [x] = d.tick(T0 + 100 + QUIET)
    assert (x.incident_id, x.msgType, x.stage) == (a.incident_id, "Cancel", "expired")
    [y] = d.tick(T0 + 120 + QUIET)
    assert y.incident_id == c1.incident_id
    [b] = seen(d, "video.fight", T0 + 5000, "v-3")
    assert b.stage == "opened" and b.incident_id != a.incident_id


def test_a_crowd_that_joins_after_the_window_has_ended_is_not_a_crowd_incident():
    """The window decides each report: a count after the window neither opens nor joins."""
    d = driver()
    [a] = counted(d, 40, T0 + 500)
    assert counted(d, 80, T0 + 700, "cr-2") == []
    assert d.state.incidents[a.incident_id].evidence_total == 1


# --- corroborated events raise nothing here ------------------------------------------------------


def both() -> Driver:
    return Driver(rules_ctx(corroboration={}, video_behaviour={}, registry=IN_WINDOW))


def test_a_fight_near_a_press_only_corroborates_the_press():
    d = both()
    [p] = d.press(T0)
    alerts = seen(d, "video.fight", T0 + 30)
    assert [(a.rule, a.stage, a.incident_id) for a in alerts] == [("panic", "corroborated", p.incident_id)]
    assert of_rule(d.alerts) == []


def test_a_fight_before_a_press_is_superseded_by_the_corroborated_press():
    d = both()
    [f] = seen(d, "video.fight", T0)
    assert f.rule == "video_behaviour"
    alerts = d.press(T0 + 60)
    assert [(a.rule, a.stage) for a in alerts] == [("panic", "opened"), ("panic", "corroborated"), ("video_behaviour", "superseded")]
    assert (alerts[2].incident_id, alerts[2].msgType, alerts[2].superseded_by) == (f.incident_id, "Cancel", alerts[0].incident_id)


def test_a_fight_long_after_a_press_is_its_own_incident():
    d = both()
    d.press(T0)
    [f] = of_rule(seen(d, "video.fight", T0 + 121))
    assert (f.stage, f.severity) == ("opened", "Severe")


def test_falls_are_not_taken_up_by_a_press():
    d = both()
    d.press(T0)
    [f] = of_rule(seen(d, "video.fall", T0 + 5))
    assert (f.stage, f.severity) == ("opened", "Minor")


# --- drills, redelivery, restarts ----------------------------------------------------------------


def test_drills_are_kept_apart_from_real_events():
    d = driver()
    [x] = seen(d, "video.fight", T0, "v-1", exercise=True)
    assert (x.status, x.severity) == ("Exercise", "Severe") and x.headline.startswith("[DRILL] Fight on camera")
    [a] = seen(d, "video.fight", T0 + 1, "v-2")
    assert (a.status, a.stage) == ("Actual", "opened") and a.incident_id != x.incident_id
    [cx] = counted(d, 40, T0 + 2, exercise=True)
    [ca] = counted(d, 40, T0 + 3, "cr-2")
    assert (cx.status, ca.status, ca.stage) == ("Exercise", "Actual", "opened")
    [xj] = seen(d, "video.fight", T0 + 4, "v-3", exercise=True)
    assert (xj.incident_id, xj.stage) == (x.incident_id, "joined-2")
    assert d.state.incidents[a.incident_id].evidence_total == 1


def test_a_redelivered_event_is_not_counted_twice():
    d = driver()
    ev = camera("video.fall", "zx01-cam-7", "v-1", ts=T0)
    [a] = d.event(ev, T0)
    assert d.event(ev, T0 + 1) == []
    [j] = seen(d, "video.loiter", T0 + 2, "v-2")
    assert j.stage == "joined-2"
    assert d.event(ev, T0 + 3) == []
    assert d.state.incidents[a.incident_id].evidence_total == 2
    d.tick(T0 + 2 + QUIET)
    assert d.event(ev, T0 + 2 + QUIET + 1) == [] and d.state.incidents == {}


def test_state_round_trip_mid_way_behaves_the_same():
    def script(d: Driver) -> None:
        seen(d, "video.fight", T0 - 700, "v-1")
        counted(d, 20, T0 - 650, "cr-0")
        counted(d, 35, T0 - 500, "cr-1")
        seen(d, "video.fall", T0 - 400, "v-2", device_id="zx01-cam-9")
        d.press(T0 - 390)
        seen(d, "video.fight", T0 - 380, "v-3", device_id="zx01-cam-8")
        seen(d, "video.loiter", T0 - 300, "v-4", device_id="zx01-cam-9", exercise=True)
        counted(d, 36, T0 - 200, "cr-2")
        d.event(camera("video.fall", "zx01-cam-9", "v-2", ts=T0 - 400), T0 - 100)
        d.tick(T0 - 400 + QUIET)
        counted(d, 90, T0 + 2000, "cr-3")

    ctx = rules_ctx(corroboration={}, video_behaviour={}, registry=IN_WINDOW)
    plain, restarted = Driver(ctx), RestartingDriver(ctx)
    script(plain)
    script(restarted)
    assert [a.to_dict() for a in restarted.alerts] == [a.to_dict() for a in plain.alerts]
    assert restarted.state == plain.state
    assert [(a.stage, a.severity, a.zone, a.status) for a in of_rule(plain.alerts)] == [
        ("opened", "Severe", "gate-north", "Actual"),  # v-1
        ("opened", "Moderate", "gate-north", "Actual"),  # cr-1 (cr-0 is below the threshold)
        ("opened", "Minor", "field", "Actual"),  # v-2; then v-3 goes to the press only
        ("opened", "Minor", "field", "Exercise"),  # v-4
        ("joined-2", "Moderate", "gate-north", "Actual"),  # cr-2
        ("expired", "Severe", "gate-north", "Actual"),
        ("expired", "Minor", "field", "Actual"),
        ("expired", "Minor", "field", "Exercise"),  # on cr-3, which raises nothing (after the window)
        ("expired", "Moderate", "gate-north", "Actual"),
    ]
    press_alerts = [a for a in plain.alerts if a.rule == "panic" and a.stage == "corroborated"]
    assert [[e["event_id"] for e in a.evidence] for a in press_alerts] == [["e-1", "v-3"]]
