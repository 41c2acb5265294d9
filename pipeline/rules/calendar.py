"""A school's calendar in its own timezone: school hours and drop-off / pick-up windows.

Pure functions of (school, epoch seconds). A period whose end is not after its start
runs past midnight (a 22:00-02:00 window belongs to the day it starts on). Days not in
`hours.days` and `closed_dates` have no school hours and no windows.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from pipeline.registry import WEEKDAYS, School


def _local(school: School, t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=school.tz)


def _is_school_day(school: School, day: date) -> bool:
    return WEEKDAYS[day.weekday()] in school.days and day not in school.closed_dates


def _span(school: School, day: date, start: time, end: time) -> tuple[float, float]:
    """Epoch bounds of [start, end) on `day`, past midnight when end <= start."""
    tz = school.tz
    t0 = datetime.combine(day, start, tzinfo=tz)
    end_day = day + timedelta(days=1) if end <= start else day
    t1 = datetime.combine(end_day, end, tzinfo=tz)
    return t0.timestamp(), t1.timestamp()


def _periods(school: School, t: float, start: time, end: time) -> list[tuple[float, float]]:
    """[start, end) periods of the school days around t (yesterday's may run past midnight)."""
    today = _local(school, t).date()
    return [
        _span(school, day, start, end)
        for day in (today - timedelta(days=1), today)
        if _is_school_day(school, day)
    ]


def in_hours(school: School, t: float) -> bool:
    return any(a <= t < b for a, b in _periods(school, t, school.open, school.close))


def window_at(school: School, t: float) -> tuple[float, float] | None:
    """The drop-off / pick-up window that contains t, as epoch bounds."""
    for w in school.windows:
        for a, b in _periods(school, t, w.start, w.end):
            if a <= t < b:
                return a, b
    return None


def next_window(school: School, t: float, horizon_days: int = 14) -> tuple[float, float] | None:
    """The window containing t, or else the next one to start (within the horizon)."""
    current = window_at(school, t)
    if current:
        return current
    today = _local(school, t).date()
    spans = [
        _span(school, today + timedelta(days=d), w.start, w.end)
        for d in range(horizon_days + 1)
        if _is_school_day(school, today + timedelta(days=d))
        for w in school.windows
    ]
    upcoming = [s for s in spans if s[0] > t]
    return min(upcoming) if upcoming else None
