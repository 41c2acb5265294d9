"""Rule `perimeter` (pipeline/rules/perimeter.py): fence breaches, intrusions and forced doors;
Severe outside the school's hours (its own timezone and calendar), Moderate during, nothing
of its own when a corroborated incident took the event up."""

from __future__ import annotations

from datetime import datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.registry import WEEKDAYS
from pipeline.rules.state import SchoolState
from unit_helpers import (
    OTHER_SCHOOL,
    SCHOOL,
    SCHOOL_NAME,
    T0,
    Driver,
    RestartingDriver,
    camera,
    door,
    event,
    fence,
    local_epoch,
    registry_with,
    rules_ctx,
    scream,
    school,
)

ALL = ["onsite", "mobile", "command"]
LOCAL = ["onsite", "command"]
SH = "Asia/Shanghai"
QUIET = 1800
# T0 is Sunday 2026-11-29 07:41 in Shanghai; the default zx-01 keeps Mon-Fri 07:30-17:30
MONDAY_10 = local_epoch("2026-11-30T10:00", SH)


def driver(registry=None, **perimeter) -> Driver:
    return Driver(rules_ctx(perimeter=perimeter, registry=registry))


def breach(d: Driver, now: float, event_id: str = "f-1", device_id: str = "zx01-fence-1", ts: float | None = None, **kw) -> list:
    return d.event(fence(device_id, event_id, ts=now if ts is None else ts, received=now, **kw), now)


def of_rule(alerts, rule: str = "perimeter") -> list:
    return [a for a in alerts if a.rule == rule]


def opened(alerts) -> list[str]:
    """Severities of the incidents opened (an earlier one may expire on the same input)."""
    return [a.severity for a in alerts if a.stage == "opened"]


# --- what raises, and what it emits -------------------------------------------------------------


def test_after_hours_breach_is_severe_and_tells_everyone():
    d = driver()
    [a] = breach(d, T0)
    assert (a.rule, a.stage, a.msgType, a.status) == ("perimeter", "opened", "Alert", "Actual")
    assert (a.severity, a.urgency, a.certainty, a.zone) == ("Severe", "Immediate", "Likely", "gate-north")
    assert a.notify == ALL
    assert a.headline == f"After hours: Fence breach at {SCHOOL_NAME} (gate-north)"
    assert [(e["device_id"], e["event_id"]) for e in a.evidence] == [("zx01-fence-1", "f-1")]
    inc = d.state.incidents[a.incident_id]
    assert inc.key == "gate-north" and inc.deadlines == {"expired": T0 + QUIET}


def test_breach_during_school_hours_is_moderate():
    d = driver()
    [a] = breach(d, MONDAY_10)
    assert (a.severity, a.urgency, a.notify) == ("Moderate", "Expected", LOCAL)
    assert a.headline == f"Fence breach at {SCHOOL_NAME} (gate-north)"


@pytest.mark.parametrize(
    "make, what, zone",
    [
        (lambda t: fence("zx01-fence-2", "x-1", ts=t), "Fence breach", "field"),
        (lambda t: camera("video.intrusion", "zx01-cam-9", "x-1", ts=t), "Intrusion on camera", "field"),
        (lambda t: door("zx01-door-1", "x-1", ts=t), "Door forced", "office"),
    ],
)
def test_each_perimeter_type(make, what, zone):
    [a] = driver().event(make(T0), T0)
    [b] = driver().event(make(MONDAY_10), MONDAY_10)
    assert (a.severity, a.zone, b.severity, b.zone) == ("Severe", zone, "Moderate", zone)
    assert a.headline == f"After hours: {what} at {SCHOOL_NAME} ({zone})"
    assert b.headline == f"{what} at {SCHOOL_NAME} ({zone})"


@pytest.mark.parametrize(
    "ev",
    [
        camera("video.fight", "zx01-cam-7", "x-1"),
        camera("video.loiter", "zx01-cam-7", "x-1"),
        scream("zx01-mic-1", "x-1"),
        event("device.tamper", "zx01-fence-1", "x-1"),
        event("device.heartbeat", "zx01-door-1", "x-1"),
    ],
)
def test_other_event_types_raise_nothing(ev):
    d = driver()
    assert d.event(ev, T0) == []
    assert d.state.incidents == {}


def test_disabled_rule_raises_nothing():
    d = Driver(rules_ctx())
    assert breach(d, T0) == []


def test_types_are_configurable():
    d = driver(types=("door.forced",))
    assert breach(d, T0) == []
    assert [a.severity for a in d.event(door(ts=T0), T0)] == ["Severe"]


def test_a_school_missing_from_the_registry_is_always_after_hours():
    d = Driver(rules_ctx(perimeter={}), state=SchoolState(school_id="zz-99"))
    [a] = breach(d, MONDAY_10, school_id="zz-99")
    assert (a.severity, a.school_id) == ("Severe", "zz-99")
    assert "zz-99" in a.headline


# --- hours: the school's own calendar -------------------------------------------------------------


@pytest.mark.parametrize(
    "local, severity",
    [
        ("2026-11-30T07:29:59", "Severe"),
        ("2026-11-30T07:30", "Moderate"),
        ("2026-11-30T17:29:59", "Moderate"),
        ("2026-11-30T17:30", "Severe"),
        ("2026-11-30T03:00", "Severe"),
        ("2026-11-28T10:00", "Severe"),  # Saturday
        ("2026-12-04T10:00", "Moderate"),  # Friday
    ],
)
def test_hours_are_half_open_and_on_school_days_only(local, severity):
    d = driver()
    t = local_epoch(local, SH)
    assert [a.severity for a in breach(d, t)] == [severity]


def test_closed_dates_have_no_hours():
    reg = registry_with(school(days=("mon", "tue", "wed", "thu", "fri"), closed_dates=("2026-11-30",)))
    d = driver(registry=reg)
    assert [a.severity for a in breach(d, MONDAY_10)] == ["Severe"]
    assert opened(breach(d, MONDAY_10 + 86400, "f-2", "zx01-fence-2")) == ["Moderate"]


@pytest.mark.parametrize(
    "local, severity",
    [
        ("2026-11-30T21:59", "Severe"),  # Monday before the night session
        ("2026-11-30T22:00", "Moderate"),
        ("2026-12-01T00:30", "Moderate"),  # past midnight: Monday's session
        ("2026-12-01T05:59:59", "Moderate"),
        ("2026-12-01T06:00", "Severe"),
        ("2026-12-05T03:00", "Moderate"),  # Saturday small hours: Friday's session
        ("2026-12-06T03:00", "Severe"),  # Sunday small hours: no Saturday session
        ("2026-11-30T03:00", "Severe"),  # Monday small hours: no Sunday session
    ],
)
def test_hours_past_midnight_belong_to_the_day_they_start(local, severity):
    night = school(days=("mon", "tue", "wed", "thu", "fri"), open_=time(22, 0), close=time(6, 0))
    d = driver(registry=registry_with(night))
    assert [a.severity for a in breach(d, local_epoch(local, SH))] == [severity]


def test_the_same_instant_is_after_hours_in_one_timezone_only():
    t = local_epoch("2026-11-30T10:00", SH)  # Mon 10:00 Shanghai = Mon 02:00 London
    reg = registry_with(school(OTHER_SCHOOL, tz="Europe/London", days=("mon", "tue", "wed", "thu", "fri")))
    here, there = Driver(rules_ctx(perimeter={}, registry=reg)), Driver(rules_ctx(perimeter={}, registry=reg), state=SchoolState(school_id=OTHER_SCHOOL))
    assert [a.severity for a in breach(here, t)] == ["Moderate"]
    assert [a.severity for a in breach(there, t, school_id=OTHER_SCHOOL)] == ["Severe"]
    t2 = local_epoch("2026-11-30T10:00", "Europe/London")  # 18:00 in Shanghai
    assert opened(breach(here, t2, "f-2", "zx01-fence-2")) == ["Severe"]
    assert opened(breach(there, t2, "f-2", "zx01-fence-2", school_id=OTHER_SCHOOL)) == ["Moderate"]


def test_hours_are_judged_on_the_event_time_not_its_arrival():
    d = driver()
    closing = local_epoch("2026-11-30T17:30", SH)
    # happened at 17:29:30, arrived at 17:31 (a slow uplink): during hours
    [a] = breach(d, closing + 60, ts=closing - 30)
    assert a.severity == "Moderate"
    # a device clock far behind (beyond max_clock_skew 600) is re-timed to arrival - 600
    [b] = breach(d, closing + 700, "f-2", "zx01-fence-2", ts=closing - 5000)
    assert b.severity == "Severe"


def _expected_in_hours(sch, t: float) -> bool:
    """An independent reading of the calendar: local wall clock, weekday and date."""
    local = datetime.fromtimestamp(t, tz=sch.tz)
    tod, day = local.time(), local.date()

    def school_day(d) -> bool:
        return WEEKDAYS[d.weekday()] in sch.days and d not in sch.closed_dates

    if sch.open < sch.close:
        return school_day(day) and sch.open <= tod < sch.close
    return (school_day(day) and tod >= sch.open) or (school_day(day - timedelta(days=1)) and tod < sch.close)


HOURS = [(time(7, 30), time(17, 30)), (time(22, 0), time(6, 0)), (time(0, 0), time(23, 59)), (time(12, 15), time(12, 45))]


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["Asia/Shanghai", "Europe/London", "America/New_York", "Pacific/Auckland"]),
    st.sampled_from(HOURS),
    st.sets(st.sampled_from(WEEKDAYS), min_size=1),
    st.sets(st.sampled_from(["2026-11-27", "2026-11-30", "2026-12-01", "2026-12-04"]), max_size=2),
    st.floats(-10 * 86400, 10 * 86400),
)
def test_severity_follows_the_schools_calendar(tz, hours, days, closed, offset):
    sch = school(tz=tz, open_=hours[0], close=hours[1], days=tuple(d for d in WEEKDAYS if d in days), closed_dates=tuple(sorted(closed)))
    d = driver(registry=registry_with(sch))
    t = T0 + offset
    [a] = breach(d, t)
    after = not _expected_in_hours(sch, t)
    assert a.severity == ("Severe" if after else "Moderate")
    assert a.urgency == ("Immediate" if after else "Expected")
    assert a.headline.startswith("After hours: ") == after


# --- joining and closing ------------------------------------------------------------------------


def test_events_in_one_zone_join_and_it_closes_when_quiet():
    d = driver()
    [a] = breach(d, T0)
    [j] = d.event(camera("video.intrusion", "zx01-cam-7", "v-1", ts=T0 + 60), T0 + 60)
    assert (j.incident_id, j.msgType, j.stage, j.severity) == (a.incident_id, "Update", "joined-2", "Severe")
    [other] = breach(d, T0 + 70, "f-2", "zx01-fence-2")
    assert other.stage == "opened" and other.zone == "field" and other.incident_id != a.incident_id
    assert d.tick(T0 + 60 + QUIET - 1) == []
    [c] = d.tick(T0 + 60 + QUIET)
    assert (c.incident_id, c.msgType, c.stage) == (a.incident_id, "Cancel", "expired")
    [c2] = d.tick(T0 + 70 + QUIET)
    assert c2.incident_id == other.incident_id
    [b] = breach(d, T0 + 5000, "f-3")
    assert b.stage == "opened" and b.incident_id not in (a.incident_id, other.incident_id)


def test_quiet_close_is_configurable():
    d = driver(quiet_close_seconds=300)
    [a] = breach(d, T0)
    assert d.state.incidents[a.incident_id].deadlines == {"expired": T0 + 300}


# --- corroborated events raise nothing here ------------------------------------------------------


def both() -> Driver:
    return Driver(rules_ctx(corroboration={}, perimeter={}))


def test_an_event_that_confirms_an_intrusion_raises_no_perimeter_incident_of_its_own():
    d = both()
    [p] = d.event(camera("video.intrusion", "zx01-cam-7", "v-1", ts=T0), T0)
    assert (p.rule, p.severity) == ("perimeter", "Severe")  # one sensor: not corroborated yet
    alerts = d.event(fence("zx01-fence-1", "f-1", ts=T0 + 30), T0 + 30)
    assert [(a.rule, a.stage) for a in alerts] == [("corroborated", "opened"), ("perimeter", "superseded")]
    c, s = alerts
    assert (s.incident_id, s.msgType, s.superseded_by) == (p.incident_id, "Cancel", c.incident_id)
    # later reports in the zone go to the corroborated incident only
    [j] = d.event(camera("video.intrusion", "zx01-cam-8", "v-2", ts=T0 + 40), T0 + 40)
    assert (j.rule, j.incident_id, j.stage) == ("corroborated", c.incident_id, "joined-3")
    assert [i.rule for i in d.state.incidents.values()] == ["corroborated"]


def test_a_forced_door_near_a_press_corroborates_the_press_and_raises_nothing_here():
    d = both()
    [p] = d.press(T0)
    alerts = d.event(door("zx01-door-1", "d-1", ts=T0 + 20), T0 + 20)
    assert [(a.rule, a.stage, a.incident_id) for a in alerts] == [("panic", "corroborated", p.incident_id)]
    assert of_rule(d.alerts) == []


def test_a_forced_door_without_a_press_or_a_second_sensor_is_a_perimeter_incident():
    d = both()
    [a] = d.event(door("zx01-door-1", "d-1", ts=T0), T0)
    assert (a.rule, a.severity, a.zone) == ("perimeter", "Severe", "office")
    # a press long after the window does not corroborate it
    d.press(T0 + 500)
    assert d.state.incidents[a.incident_id].is_open


def test_drills_are_kept_apart_from_real_events():
    d = driver()
    [x] = breach(d, T0, "f-1", exercise=True)
    assert (x.status, x.severity) == ("Exercise", "Severe") and x.headline.startswith("[DRILL] After hours:")
    [a] = breach(d, T0 + 1, "f-2")
    assert (a.status, a.stage) == ("Actual", "opened") and a.incident_id != x.incident_id
    [xj] = breach(d, T0 + 2, "f-3", exercise=True)
    assert (xj.incident_id, xj.stage) == (x.incident_id, "joined-2")
    assert d.state.incidents[a.incident_id].evidence_total == 1


def test_a_drill_press_does_not_swallow_a_real_breach():
    d = both()
    d.press(T0, exercise=True)
    [a] = of_rule(d.event(door("zx01-door-1", "d-1", ts=T0 + 5), T0 + 5))
    assert (a.status, a.stage) == ("Actual", "opened")


# --- schools, redelivery, restarts -----------------------------------------------------------------


def test_per_school_overrides_apply_to_that_school_only():
    reg = registry_with(school(OTHER_SCHOOL, tz="Europe/London", days=()))
    ctx = rules_ctx(perimeter={"schools": {SCHOOL: {"severity_after_hours": "Extreme", "severity_in_hours": "Minor"}}}, registry=reg)
    here = Driver(ctx)
    there = Driver(ctx, state=SchoolState(school_id=OTHER_SCHOOL))
    assert [a.severity for a in breach(here, T0)] == ["Extreme"]
    assert opened(breach(here, MONDAY_10, "f-2", "zx01-fence-2")) == ["Minor"]
    assert [a.severity for a in breach(there, T0, school_id=OTHER_SCHOOL)] == ["Severe"]


def test_a_redelivered_event_is_not_counted_twice():
    d = driver()
    ev = fence("zx01-fence-1", "f-1", ts=T0)
    [a] = d.event(ev, T0)
    assert d.event(ev, T0 + 1) == []
    [j] = breach(d, T0 + 2, "f-2")
    assert j.stage == "joined-2"
    assert d.event(ev, T0 + 3) == []
    assert d.state.incidents[a.incident_id].evidence_total == 2
    d.tick(T0 + 2 + QUIET)
    assert d.event(ev, T0 + 2 + QUIET + 1) == [] and d.state.incidents == {}


def test_state_round_trip_mid_way_behaves_the_same():
    def script(d: Driver) -> None:
        d.event(camera("video.intrusion", "zx01-cam-9", "v-9", ts=T0), T0)
        breach(d, T0 + 10, "f-x", exercise=True)
        d.event(door("zx01-door-1", "d-1", ts=T0 + 20), T0 + 20)
        d.event(fence("zx01-fence-1", "f-1", ts=T0 + 30), T0 + 30)
        d.event(fence("zx01-fence-2", "f-2", ts=T0 + 40), T0 + 40)  # confirms v-9 in the field
        d.press(T0 + 50)
        d.event(door("zx01-door-1", "d-2", ts=T0 + 60), T0 + 60)
        d.tick(T0 + 10 + QUIET)
        d.tick(T0 + 60 + QUIET)
        breach(d, MONDAY_10, "f-3")

    ctx = rules_ctx(corroboration={}, perimeter={})
    plain, restarted = Driver(ctx), RestartingDriver(ctx)
    script(plain)
    script(restarted)
    assert [a.to_dict() for a in restarted.alerts] == [a.to_dict() for a in plain.alerts]
    assert restarted.state == plain.state
    assert [(a.rule, a.stage, a.zone) for a in plain.alerts if a.stage in ("opened", "corroborated", "superseded", "expired", "joined-6")] == [
        ("perimeter", "opened", "field"),  # v-9
        ("perimeter", "opened", "gate-north"),  # the drill
        ("perimeter", "opened", "office"),  # d-1
        ("perimeter", "opened", "gate-north"),  # f-1
        ("corroborated", "opened", "field"),  # f-2 confirms v-9
        ("perimeter", "superseded", "field"),
        ("panic", "opened", "gate-north"),
        ("panic", "corroborated", "gate-north"),  # v-9, d-1, f-1, f-2 within 120 s of the press
        ("perimeter", "superseded", "office"),
        ("perimeter", "superseded", "gate-north"),
        ("panic", "joined-6", "gate-north"),  # d-2: taken up by the press, no perimeter incident
        ("perimeter", "expired", "gate-north"),  # the drill
        ("corroborated", "expired", "field"),
        ("perimeter", "opened", "gate-north"),  # Monday 10:00
    ]
    assert plain.alerts[-1].severity == "Moderate"
