"""pipeline/rules/calendar.py: school hours and drop-off / pick-up windows in the school's
own timezone, across DST, past midnight, weekends and closed dates."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.registry import WEEKDAYS, School, Window
from pipeline.rules.calendar import in_hours, next_window, window_at

H = 3600
DROP_OFF = Window(time(7, 0), time(7, 50))
PICK_UP = Window(time(16, 50), time(17, 40))
WEEK = ("mon", "tue", "wed", "thu", "fri")


def school(tz: str = "Asia/Shanghai", *, days=WEEK, open_="07:30", close="17:30", windows=(DROP_OFF, PICK_UP), closed=()) -> School:
    return School(
        id="s",
        name="S",
        timezone=tz,
        days=tuple(days),
        open=time.fromisoformat(open_),
        close=time.fromisoformat(close),
        windows=tuple(windows),
        closed_dates=frozenset(date.fromisoformat(d) for d in closed),
    )


def at(tz: str, text: str) -> float:
    """Epoch seconds of a wall-clock time in `tz` (first occurrence when ambiguous)."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


def utc(text: str) -> float:
    return at("UTC", text)


# --- school hours ------------------------------------------------------------------------------


def test_hours_in_shanghai_are_half_open_and_local():
    s = school()
    # Monday 2026-11-30 07:30 in Shanghai is Sunday 23:30 UTC
    assert at("Asia/Shanghai", "2026-11-30T07:30") == utc("2026-11-29T23:30")
    assert in_hours(s, utc("2026-11-29T23:30"))
    assert not in_hours(s, utc("2026-11-29T23:29:59"))
    assert in_hours(s, at("Asia/Shanghai", "2026-11-30T17:29:59"))
    assert not in_hours(s, at("Asia/Shanghai", "2026-11-30T17:30"))
    assert not in_hours(s, at("Asia/Shanghai", "2026-11-30T03:00"))


def test_no_hours_on_weekends_or_closed_dates():
    s = school(closed=["2026-12-01"])
    assert not in_hours(s, at("Asia/Shanghai", "2026-11-28T10:00"))  # Saturday
    assert not in_hours(s, at("Asia/Shanghai", "2026-11-29T10:00"))  # Sunday
    assert in_hours(s, at("Asia/Shanghai", "2026-11-30T10:00"))  # Monday
    assert not in_hours(s, at("Asia/Shanghai", "2026-12-01T10:00"))  # Tuesday, closed
    assert in_hours(s, at("Asia/Shanghai", "2026-12-02T10:00"))
    weekend_school = school(days=("sat", "sun"))
    assert in_hours(weekend_school, at("Asia/Shanghai", "2026-11-28T10:00"))
    assert not in_hours(weekend_school, at("Asia/Shanghai", "2026-11-30T10:00"))


def test_the_same_instant_is_in_hours_in_one_timezone_only():
    t = utc("2026-11-30T02:00")  # Mon 10:00 Shanghai, Mon 02:00 London, Sun 21:00 New York
    assert in_hours(school("Asia/Shanghai"), t)
    assert not in_hours(school("Europe/London"), t)
    assert not in_hours(school("America/New_York"), t)
    t2 = utc("2026-11-30T15:00")  # Mon 23:00 Shanghai, 15:00 London, 10:00 New York
    assert [in_hours(school(tz), t2) for tz in ("Asia/Shanghai", "Europe/London", "America/New_York")] == [False, True, True]


def test_london_hours_follow_summer_time():
    s = school("Europe/London", open_="08:00", close="16:00")
    # Monday before the change (GMT, UTC+0) and Monday after it (BST, UTC+1)
    assert not in_hours(s, utc("2026-03-23T07:30"))  # 07:30 GMT
    assert in_hours(s, utc("2026-03-30T07:30"))  # 08:30 BST
    assert in_hours(s, utc("2026-03-30T07:00"))  # 08:00 BST
    assert not in_hours(s, utc("2026-03-30T06:59:59"))
    assert not in_hours(s, utc("2026-03-30T15:00"))  # 16:00 BST
    # and back in autumn
    assert in_hours(s, utc("2026-10-23T14:30"))  # Friday 15:30 BST
    assert not in_hours(s, utc("2026-10-26T07:30"))  # Monday 07:30 GMT
    assert in_hours(s, utc("2026-10-26T08:00"))


def test_new_york_hours_follow_daylight_time():
    s = school("America/New_York", open_="08:00", close="15:00")
    assert in_hours(s, utc("2026-03-06T13:00"))  # Friday 08:00 EST
    assert not in_hours(s, utc("2026-03-09T11:59"))  # Monday 07:59 EDT
    assert in_hours(s, utc("2026-03-09T12:00"))  # Monday 08:00 EDT
    assert not in_hours(s, utc("2026-03-09T19:00"))  # Monday 15:00 EDT


def test_hours_past_midnight_belong_to_the_day_they_start():
    night = school("Europe/London", days=("fri",), open_="22:00", close="02:00")
    assert in_hours(night, at("Europe/London", "2026-11-27T22:00"))  # Friday
    assert in_hours(night, at("Europe/London", "2026-11-27T23:59"))
    assert in_hours(night, at("Europe/London", "2026-11-28T01:59:59"))  # Saturday: still Friday's
    assert not in_hours(night, at("Europe/London", "2026-11-28T02:00"))
    assert not in_hours(night, at("Europe/London", "2026-11-28T23:00"))  # Saturday's own night: not a school day
    assert not in_hours(night, at("Europe/London", "2026-11-27T01:00"))  # Thursday's night
    assert not in_hours(night, at("Europe/London", "2026-11-27T21:59"))
    closed = school("Europe/London", days=("fri",), open_="22:00", close="02:00", closed=["2026-11-27"])
    assert not in_hours(closed, at("Europe/London", "2026-11-28T01:00"))  # its Friday is closed


def test_equal_open_and_close_is_a_whole_day():
    s = school(days=("mon",), open_="06:00", close="06:00")
    assert in_hours(s, at("Asia/Shanghai", "2026-11-30T06:00"))
    assert in_hours(s, at("Asia/Shanghai", "2026-12-01T05:59"))
    assert not in_hours(s, at("Asia/Shanghai", "2026-12-01T06:00"))


# --- windows -----------------------------------------------------------------------------------


def test_window_at_gives_the_window_bounds():
    s = school()
    t = at("Asia/Shanghai", "2026-11-30T07:10")
    assert window_at(s, t) == (at("Asia/Shanghai", "2026-11-30T07:00"), at("Asia/Shanghai", "2026-11-30T07:50"))
    assert window_at(s, at("Asia/Shanghai", "2026-11-30T07:00")) is not None
    assert window_at(s, at("Asia/Shanghai", "2026-11-30T07:50")) is None  # half-open
    assert window_at(s, at("Asia/Shanghai", "2026-11-30T12:00")) is None
    assert window_at(s, at("Asia/Shanghai", "2026-11-30T17:00")) == (at("Asia/Shanghai", "2026-11-30T16:50"), at("Asia/Shanghai", "2026-11-30T17:40"))
    assert window_at(s, at("Asia/Shanghai", "2026-11-29T07:10")) is None  # Sunday
    assert window_at(school(windows=()), t) is None


def test_windows_on_closed_dates_do_not_exist():
    s = school(closed=["2026-11-30"])
    assert window_at(s, at("Asia/Shanghai", "2026-11-30T07:10")) is None
    assert window_at(s, at("Asia/Shanghai", "2026-12-01T07:10")) is not None


def test_window_past_midnight_across_the_spring_change_is_two_hours():
    # Saturday 23:00 GMT -> Sunday 02:00 BST: only two real hours
    s = school("Europe/London", days=("sat",), windows=[Window(time(23, 0), time(2, 0))])
    w = window_at(s, utc("2026-03-28T23:30"))
    assert w == (utc("2026-03-28T23:00"), utc("2026-03-29T01:00"))
    assert window_at(s, utc("2026-03-29T00:59")) == w
    assert window_at(s, utc("2026-03-29T01:00")) is None


def test_window_past_midnight_across_the_autumn_change_is_four_hours():
    # Saturday 23:00 BST -> Sunday 02:00 GMT: four real hours
    s = school("Europe/London", days=("sat",), windows=[Window(time(23, 0), time(2, 0))])
    w = window_at(s, utc("2026-10-24T22:00"))
    assert w == (utc("2026-10-24T22:00"), utc("2026-10-25T02:00"))
    assert w[1] - w[0] == 4 * H
    assert window_at(s, utc("2026-10-25T01:30")) == w  # the repeated hour, second time round


def test_next_window_is_the_current_one_or_the_next_to_start():
    s = school("America/New_York")
    monday_drop_off = (at("America/New_York", "2026-11-30T07:00"), at("America/New_York", "2026-11-30T07:50"))
    assert monday_drop_off[0] == utc("2026-11-30T12:00")  # EST
    assert next_window(s, at("America/New_York", "2026-11-27T18:00")) == monday_drop_off  # Friday evening
    assert next_window(s, at("America/New_York", "2026-11-30T07:20")) == monday_drop_off  # inside it
    assert next_window(s, at("America/New_York", "2026-11-30T07:50")) == (
        at("America/New_York", "2026-11-30T16:50"),
        at("America/New_York", "2026-11-30T17:40"),
    )


def test_next_window_skips_closed_dates_and_weekends():
    s = school("America/New_York", closed=["2026-11-30", "2026-12-01"])
    assert next_window(s, at("America/New_York", "2026-11-27T18:00")) == (
        at("America/New_York", "2026-12-02T07:00"),
        at("America/New_York", "2026-12-02T07:50"),
    )


def test_next_window_across_the_new_york_autumn_change():
    s = school("America/New_York")
    # Friday 2026-10-30 (EDT) -> Monday 2026-11-02 (EST): 07:00 local moves from 11:00Z to 12:00Z
    assert next_window(s, at("America/New_York", "2026-10-30T06:00"))[0] == utc("2026-10-30T11:00")
    assert next_window(s, at("America/New_York", "2026-10-30T18:00"))[0] == utc("2026-11-02T12:00")


def test_next_window_gives_up_beyond_the_horizon():
    s = school(days=("mon",), closed=["2026-12-07", "2026-12-14"])
    tuesday = at("Asia/Shanghai", "2026-12-01T12:00")
    assert next_window(s, tuesday) is None  # the next two Mondays (within 14 days) are closed
    assert next_window(s, tuesday, horizon_days=21)[0] == at("Asia/Shanghai", "2026-12-21T07:00")
    assert next_window(school(windows=()), tuesday) is None


# --- properties --------------------------------------------------------------------------------

ZONES = ("Asia/Shanghai", "Europe/London", "America/New_York")
# 2026-2027, with extra weight around each DST change of London and New York
TRANSITIONS = [utc(x) for x in ("2026-03-08T07:00", "2026-03-29T01:00", "2026-10-25T01:00", "2026-11-01T06:00", "2027-03-14T07:00", "2027-03-28T01:00")]
instants = st.one_of(
    st.integers(int(utc("2026-01-01T00:00")), int(utc("2027-12-31T00:00"))),
    st.sampled_from(TRANSITIONS).flatmap(lambda x: st.integers(int(x) - 3 * 86400, int(x) + 3 * 86400)),
).map(float)
any_time = st.builds(time, st.integers(0, 23), st.sampled_from([0, 1, 15, 30, 45, 59]))
# Wall-clock times no DST change of these zones touches (they all happen between 01:00 and 03:00)
safe_time = st.one_of(st.builds(time, st.integers(4, 23), st.integers(0, 59)), st.builds(time, st.just(0), st.integers(0, 59)))


@st.composite
def schools(draw, times=any_time):
    tz = draw(st.sampled_from(ZONES))
    days = draw(st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=7, unique=True))
    windows = draw(st.lists(st.builds(Window, times, times), max_size=3))
    closed = draw(st.frozensets(st.dates(date(2025, 12, 25), date(2028, 1, 10)), max_size=40))
    return School(id="s", name="S", timezone=tz, days=tuple(days), open=draw(times), close=draw(times), windows=tuple(windows), closed_dates=closed)


def school_day(s: School, d: date) -> bool:
    return WEEKDAYS[d.weekday()] in s.days and d not in s.closed_dates


def all_windows(s: School, t: float, days: int = 16) -> list[tuple[float, float]]:
    """Every window of the school days around t, computed from the wall clock directly."""
    tz = ZoneInfo(s.timezone)
    today = datetime.fromtimestamp(t, tz).date()
    out = []
    for k in range(-2, days):
        d = today + timedelta(days=k)
        if not school_day(s, d):
            continue
        for w in s.windows:
            end_day = d + timedelta(days=1) if w.end <= w.start else d
            out.append((datetime.combine(d, w.start, tz).timestamp(), datetime.combine(end_day, w.end, tz).timestamp()))
    return out


@settings(max_examples=200, deadline=None)
@given(schools(), instants)
def test_window_at_contains_t_and_is_a_real_window(s, t):
    w = window_at(s, t)
    containing = [x for x in all_windows(s, t) if x[0] <= t < x[1]]
    if w is None:
        assert containing == []
    else:
        assert w[0] <= t < w[1]
        assert w in containing


@settings(max_examples=200, deadline=None)
@given(schools(), instants)
def test_next_window_contains_t_or_is_the_first_to_start_after_it(s, t):
    nw = next_window(s, t)
    current = window_at(s, t)
    if current is not None:
        assert nw == current
        return
    upcoming = sorted(x for x in all_windows(s, t) if x[0] > t and x[0] <= t + 14 * 86400)
    if nw is None:
        assert upcoming == []
        return
    assert nw[0] > t
    assert nw == upcoming[0]
    # a window that starts later opens on a school day: never a weekend day or a closed date
    start_day = datetime.fromtimestamp(nw[0], ZoneInfo(s.timezone)).date()
    assert school_day(s, start_day), start_day


@settings(max_examples=200, deadline=None)
@given(schools(times=safe_time), instants, st.booleans())
def test_no_window_and_no_hours_on_a_closed_date_or_a_day_off(s, t, as_weekday):
    tz = ZoneInfo(s.timezone)
    day = datetime.fromtimestamp(t, tz).date()
    if as_weekday:  # make t's weekday a day off
        s = dataclasses.replace(s, days=tuple(d for d in s.days if d != WEEKDAYS[day.weekday()]) or (WEEKDAYS[(day.weekday() + 1) % 7],))
    else:  # make t's date a closed date
        s = dataclasses.replace(s, closed_dates=s.closed_dates | {day})
    assert not school_day(s, day)
    overnight = [w for w in s.windows if w.end <= w.start]
    # nothing of today's; only yesterday's periods that run past midnight can still cover t
    if not school_day(s, day - timedelta(days=1)) or not overnight:
        assert window_at(s, t) is None
    if not school_day(s, day - timedelta(days=1)) or s.open < s.close:
        assert not in_hours(s, t)
    w = window_at(s, t)
    if w is not None:  # yesterday's, running past midnight
        assert datetime.fromtimestamp(w[0], tz).date() == day - timedelta(days=1)


@settings(max_examples=250, deadline=None)
@given(schools(times=safe_time), instants)
def test_in_hours_agrees_with_the_local_wall_clock(s, t):
    local = datetime.fromtimestamp(t, ZoneInfo(s.timezone))
    now, today, yesterday = local.time().replace(tzinfo=None), local.date(), local.date() - timedelta(days=1)
    if s.open < s.close:
        expected = school_day(s, today) and s.open <= now < s.close
    else:  # runs past midnight (or all day when equal)
        expected = (school_day(s, today) and now >= s.open) or (school_day(s, yesterday) and now < s.close)
    assert in_hours(s, t) == expected


@pytest.mark.parametrize("tz", ZONES)
def test_every_instant_of_a_school_week_is_classified_consistently(tz):
    """Walk one week minute by minute: in_hours flips only at open/close, window_at only at
    window bounds, and the totals are what the timetable says."""
    s = school(tz)
    start = at(tz, "2026-11-29T00:00")  # Sunday
    minutes_in_hours = minutes_in_windows = 0
    for m in range(7 * 24 * 60):
        t = start + 60 * m
        minutes_in_hours += in_hours(s, t)
        minutes_in_windows += window_at(s, t) is not None
    assert minutes_in_hours == 5 * 10 * 60  # Mon-Fri, 07:30-17:30
    assert minutes_in_windows == 5 * (50 + 50)
