"""Mobile units (issue 13): positions, nearest units to a school, coverage gaps (pure).

Patrol cars, motorbike officers and foot patrols are registry `units:` (registry.Unit),
not school devices. They publish `unit.position` (lat, lon, speed_kmh, heading, optional
accuracy_m) and `unit.status` (available, dispatched, on_scene, off_duty) on their device
topic; `apply_event` folds those canonical events into one `UnitState` per unit. Nothing
here touches Faust or Kafka, and nothing reads a clock: times are epoch seconds passed in.

ETA. the profile's turnout (config `units.turnout_seconds`, default 0) + road metres / the
profile's speed (config `units.speeds_kmh`). Road metres are the
great-circle (haversine) metres x a road factor (the school's `road_factor` in the registry,
else `units.road_factor`), unless the unit is within `units.road_table_radius_m` of one of
the school's `road_table` places: then that place's road metres plus the road-factored
distance from the unit to the place (the shortest such, if several).

Which units count. A unit counts (nearest units, coverage) when its last `unit.status` is
`available`, its status channel is not `offline`, and its last position is at most
`units.stale_after_seconds` old and is a fix: not (0, 0), which receivers send when they
have none, and not less accurate than `units.max_accuracy_m`; a unit that never reported
either does not count. By
default any such unit counts for any school, its area only breaks ETA ties and is flagged
(`in_area`): in a panic the closest free unit is what matters, and a unit of the next
district two minutes away beats the school's own unit eight minutes away; a unit that is
available is by definition not busy with its own area. With `units.area_only: true` only
units whose area lists the school count (strict districting: then a school whose area units
are all busy is a gap even with a free unit next door).

Busy with an incident. A unit dispatched to an incident is busy until that incident closes,
whatever its terminal says: the command centre committed it (a terminal may repeat
"available" for minutes after the crew set off). The worker of the incident's school writes
an `Assignment` to the units topic at the dispatch (and at the arrival), and a tombstone for
each of the incident's units when it closes (`assignment_changes`); key
`<unit>/assignment/<incident>`, one per unit and incident, so closing one incident never frees
a unit that another still holds. A busy unit is not available: not listed with another panic,
not coverage.

Order. `apply_event` keeps, for the position, the status and the online flag, the report
with the latest (time, event_id): reports applied in any order, or applied twice, give the
same state (a replay of the topic, a redelivery, MQTT reordering).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pipeline.config import UnitsConfig
from pipeline.records import UNIT_KIND, Alert, CanonicalEvent, iso_utc, parse_ts
from pipeline.registry import School, Unit
from pipeline.rules import calendar

RULE = NAME = "coverage_gap"
SEVERITY = "Severe"
EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG)
REPORT_LIMITS = (180.0, 300.0)  # the 1-3-5 ladder's arrive target and limit, seconds


# --- distance and ETA ---------------------------------------------------------------------------


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two WGS84 points (spherical Earth)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def road_metres(lat: float, lon: float, school: School, cfg: UnitsConfig) -> float | None:
    """Estimated road metres from (lat, lon) to the school; None if it has no coordinates."""
    if school.coordinates is None:
        return None
    factor = school.road_factor if school.road_factor is not None else cfg.road_factor
    via_table = [
        place.metres + d * factor
        for place in school.road_table
        if (d := haversine_m(lat, lon, place.lat, place.lon)) <= cfg.road_table_radius_m
    ]
    if via_table:
        return min(via_table)
    return haversine_m(lat, lon, school.coordinates.lat, school.coordinates.lon) * factor


def travel_seconds(metres: float, profile: str, cfg: UnitsConfig) -> float:
    """ETA over `metres` of road: the profile's turnout, then its average speed."""
    return cfg.turnout(profile) + metres / (cfg.speed_kmh(profile) / 3.6)


# --- one unit's state -----------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitState:
    """What is known of one unit: its last position, last status and online flag, each with
    the (time, event_id) of the report it came from. profile, area and callsign are copied
    from the registry at every report (so a stored state is self-contained)."""

    unit_id: str
    profile: str = "car"
    area: tuple[str, ...] = ()
    callsign: str = ""
    lat: float | None = None
    lon: float | None = None
    speed_kmh: float = 0.0
    heading: float = 0.0
    accuracy_m: float | None = None
    position_at: float | None = None
    position_event: str = ""
    status: str = ""  # "" = never reported: unknown, not available
    status_at: float | None = None
    status_event: str = ""
    online: bool = True
    online_at: float | None = None
    online_event: str = ""
    assigned_to: tuple[str, ...] = ()  # open incidents it was dispatched to (or arrived at)

    def position_age(self, now: float) -> float | None:
        """Seconds since the last position (0 for a report timed after `now`); None: none yet."""
        if self.position_at is None:
            return None
        return max(0.0, now - self.position_at)

    @property
    def located(self) -> bool:
        """A position was reported and it is not (0, 0), a GPS receiver's "no fix"."""
        return self.lat is not None and self.lon is not None and (self.lat, self.lon) != (0.0, 0.0)

    def has_fix(self, cfg: UnitsConfig) -> bool:
        """Located, and no less accurate than units.max_accuracy_m."""
        return self.located and (self.accuracy_m is None or self.accuracy_m <= cfg.max_accuracy_m)

    def fresh(self, now: float, cfg: UnitsConfig) -> bool:
        age = self.position_age(now)
        return age is not None and age <= cfg.stale_after_seconds and self.has_fix(cfg)

    def available(self, now: float, cfg: UnitsConfig) -> bool:
        """Free to send, and where it is is known."""
        return self.online and self.status == "available" and not self.assigned_to and self.fresh(now, cfg)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["area"] = list(self.area)
        d["assigned_to"] = list(self.assigned_to)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UnitState:
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in d.items() if k in names}
        fields["area"] = tuple(fields.get("area") or ())
        fields["assigned_to"] = tuple(fields.get("assigned_to") or ())
        return cls(**fields)


def _newer(at: float, event_id: str, seen_at: float | None, seen_event: str) -> bool:
    return seen_at is None or (at, event_id) > (seen_at, seen_event)


def apply_event(state: UnitState | None, event: CanonicalEvent, unit: Unit, at: float) -> UnitState:
    """The unit's state after one of its canonical events, reported at `at` (epoch seconds;
    the worker passes `event.credible_ts(max_clock_skew_seconds)`).

    Uses `unit.position`, `unit.status` and `device.online` / `device.offline`; other types
    (heartbeat, tamper) leave it as it was. An older report than the one applied (by time,
    then event id) changes nothing."""
    if event.device_id != unit.id:
        raise ValueError(f"event of {event.device_id!r} applied to unit {unit.id!r}")
    s = state if state is not None else UnitState(unit_id=unit.id)
    s = replace(s, profile=unit.profile, area=unit.area, callsign=unit.callsign or unit.name)
    a = event.attrs
    if event.type == "unit.position" and _newer(at, event.event_id, s.position_at, s.position_event):
        accuracy = a.get("accuracy_m")
        return replace(
            s,
            lat=float(a["lat"]),
            lon=float(a["lon"]),
            speed_kmh=float(a.get("speed_kmh", 0.0)),
            heading=float(a.get("heading", 0.0)),
            accuracy_m=None if accuracy is None else float(accuracy),
            position_at=at,
            position_event=event.event_id,
        )
    if event.type == "unit.status" and _newer(at, event.event_id, s.status_at, s.status_event):
        return replace(s, status=str(a["status"]), status_at=at, status_event=event.event_id)
    if event.type in ("device.online", "device.offline") and _newer(at, event.event_id, s.online_at, s.online_event):
        return replace(s, online=event.type == "device.online", online_at=at, online_event=event.event_id)
    return s


def is_unit_event(event: CanonicalEvent) -> bool:
    return event.kind == UNIT_KIND


# --- busy with an incident --------------------------------------------------------------------------


@dataclass(frozen=True)
class Assignment:
    """A unit committed to an open incident (dispatched to it, or arrived there)."""

    unit_id: str
    incident_id: str
    school_id: str
    stage: str  # dispatched | arrived
    at: float

    @property
    def key(self) -> str:
        return assignment_key(self.unit_id, self.incident_id)

    def to_dict(self) -> dict[str, Any]:
        return {"assignment": {"unit_id": self.unit_id, "incident_id": self.incident_id, "school_id": self.school_id, "stage": self.stage, "at": iso_utc(self.at)}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Assignment:
        a = d["assignment"]
        return cls(str(a["unit_id"]), str(a["incident_id"]), str(a["school_id"]), str(a["stage"]), parse_ts(a["at"]))


ASSIGNMENT_ASPECT = "assignment"


def assignment_key(unit_id: str, incident_id: str) -> str:
    return f"{unit_id}/{ASSIGNMENT_ASPECT}/{incident_id}"


def assignment_of_key(key: str) -> tuple[str, str] | None:
    """(unit, incident) of an assignment key; None for a unit's own report keys."""
    unit, sep, rest = key.partition(f"/{ASSIGNMENT_ASPECT}/")
    return (unit, rest) if sep and unit and rest else None


def assignment_changes(alerts: Sequence[Alert], before: Mapping[str, Any], after: Mapping[str, Any]) -> list[tuple[str, Assignment | None]]:
    """What one input's alerts change in which units are busy, in order: (key, assignment)
    to record, (key, None) to release. `before` / `after`: the school's open incidents
    (id -> rules.incident.Incident) before and after the input; a closed incident is only in
    `before`, and its `arrived_unit` (which may never have been dispatched) is released too."""

    def arrived_unit(incident_id: str) -> str:
        inc = after.get(incident_id) or before.get(incident_id)
        return inc.arrived_unit if inc is not None else ""

    out: list[tuple[str, Assignment | None]] = []
    for a in alerts:
        if a.unit and (a.stage.startswith("dispatched-") or a.stage == "arrived"):
            stage = "arrived" if a.stage == "arrived" else "dispatched"
            assignment = Assignment(a.unit, a.incident_id, a.school_id, stage, parse_ts(a.sent))
            out.append((assignment.key, assignment))
        elif a.msgType == "Cancel":
            held = [*(a.dispatched or ()), arrived_unit(a.incident_id)]
            out += [(assignment_key(u, a.incident_id), None) for u in dict.fromkeys(held) if u]
    return out


def with_assignments(units: Iterable[UnitState], held: dict[str, dict[str, Assignment]]) -> tuple[UnitState, ...]:
    """The units with `assigned_to` set from `held` (unit -> incident -> assignment); a unit
    that is held but never reported is included, unavailable."""
    states = {u.unit_id: u for u in units}
    for unit_id in held:
        states.setdefault(unit_id, UnitState(unit_id=unit_id))
    return tuple(replace(s, assigned_to=tuple(sorted(held.get(s.unit_id, ())))) for s in states.values())


# --- nearest units ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NearestUnit:
    """One unit that could go to a school, as listed with a panic."""

    unit_id: str
    profile: str
    callsign: str
    distance_m: float  # great-circle
    road_m: float  # estimated road metres (road factor or the school's road table)
    eta_s: float
    position_age_s: float
    in_area: bool  # the unit's registry area lists the school
    lat: float
    lon: float
    accuracy_m: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("distance_m", "road_m", "eta_s", "position_age_s"):
            d[k] = round(d[k], 1)
        if d["accuracy_m"] is None:
            del d["accuracy_m"]
        return d


def eta_seconds(unit: UnitState, school: School, cfg: UnitsConfig) -> float | None:
    """Seconds for the unit to reach the school from its last position; None when either
    has no coordinates (or the unit reported "no fix"). Says nothing about freshness, accuracy
    or status (see nearest_units)."""
    if not unit.located:
        return None
    metres = road_metres(unit.lat, unit.lon, school, cfg)
    return None if metres is None else travel_seconds(metres, unit.profile, cfg)


def _candidates(school: School, units: Iterable[UnitState], now: float, cfg: UnitsConfig) -> list[NearestUnit]:
    out = []
    if school.coordinates is None:
        return out
    for u in units:
        if not u.available(now, cfg) or (cfg.area_only and school.id not in u.area):
            continue
        assert u.lat is not None and u.lon is not None
        road = road_metres(u.lat, u.lon, school, cfg)
        assert road is not None
        out.append(
            NearestUnit(
                unit_id=u.unit_id,
                profile=u.profile,
                callsign=u.callsign,
                distance_m=haversine_m(u.lat, u.lon, school.coordinates.lat, school.coordinates.lon),
                road_m=road,
                eta_s=travel_seconds(road, u.profile, cfg),
                position_age_s=u.position_age(now) or 0.0,
                in_area=school.id in u.area,
                lat=u.lat,
                lon=u.lon,
                accuracy_m=u.accuracy_m,
            )
        )
    return out


def _rank(n: NearestUnit) -> tuple[float, bool, str]:
    return (n.eta_s, not n.in_area, n.unit_id)


def nearest_units(school: School, units: Iterable[UnitState], now: float, cfg: UnitsConfig, limit: int | None = None) -> list[NearestUnit]:
    """Up to `limit` (default units.max_nearest) available, fresh units by ETA to the school;
    ties go to units whose area lists the school, then by id. Empty if the school has no
    coordinates."""
    ranked = sorted(_candidates(school, units, now, cfg), key=_rank)
    return ranked[: cfg.max_nearest if limit is None else limit]


def best_eta(school: School, units: Iterable[UnitState], now: float, cfg: UnitsConfig) -> NearestUnit | None:
    """The unit that would reach the school first, or None (no coordinates, no unit)."""
    return min(_candidates(school, units, now, cfg), key=_rank, default=None)


def next_expiry(units: Iterable[UnitState], now: float, cfg: UnitsConfig) -> float | None:
    """When the first currently available unit's position goes stale (a school's coverage
    may change then without any new input): for the worker's `due`."""
    times = [u.position_at + cfg.stale_after_seconds for u in units if u.available(now, cfg) and u.position_at is not None]
    return min(times, default=None)


# --- coverage ------------------------------------------------------------------------------------------


def window_kind(school: School, t: float) -> str | None:
    """The school period at t that needs coverage: "window" (drop-off / pick-up, as
    registry `windows`), "hours" (school hours), or None (outside both, a holiday)."""
    if calendar.window_at(school, t) is not None:
        return "window"
    if calendar.in_hours(school, t):
        return "hours"
    return None


def in_window(school: School, t: float) -> bool:
    return window_kind(school, t) is not None


@dataclass(frozen=True)
class Coverage:
    """Can an available unit reach the school within `limit_s`, at `at`?"""

    school_id: str
    at: float
    window: str | None  # window_kind: None = no coverage needed now
    limit_s: float
    located: bool  # the school has coordinates (without them coverage is unknown, never a gap)
    best: NearestUnit | None = None

    @property
    def covered(self) -> bool:
        return self.best is not None and self.best.eta_s <= self.limit_s

    @property
    def gap(self) -> bool:
        """A `coverage_gap` incident should be open."""
        return self.window is not None and self.located and not self.covered


def coverage(school: School, units: Iterable[UnitState], now: float, cfg: UnitsConfig, limit_s: float) -> Coverage:
    """The school's coverage at `now` within `limit_s` (the rule: escalation.arrive_limit_seconds)."""
    return Coverage(
        school_id=school.id,
        at=now,
        window=window_kind(school, now),
        limit_s=limit_s,
        located=school.coordinates is not None,
        best=best_eta(school, units, now, cfg),
    )


def gap_change(incident_open: bool, cov: Coverage) -> str | None:
    """What the coverage_gap incident of the school should do: "open", close with stage
    "restored" (a unit can reach it in time again) or "window_ended" (no coverage needed
    now), or nothing (None)."""
    if cov.gap:
        return None if incident_open else "open"
    if not incident_open:
        return None
    return "window_ended" if cov.window is None or not cov.located else "restored"


# --- the report: share of window minutes covered ------------------------------------------------------


@dataclass(frozen=True)
class CoverageReport:
    school_id: str
    start: float
    end: float
    window_minutes: int = 0
    covered_minutes: dict[float, int] = field(default_factory=dict)  # limit_s -> minutes

    def share(self, limit_s: float) -> float | None:
        """Covered minutes / window minutes within `limit_s`; None without window minutes."""
        if not self.window_minutes:
            return None
        return self.covered_minutes.get(float(limit_s), 0) / self.window_minutes


def coverage_report(
    school: School,
    timeline: Iterable[tuple[float, UnitState]],
    start: float,
    end: float,
    cfg: UnitsConfig,
    limits: Sequence[float] = REPORT_LIMITS,
) -> CoverageReport:
    """Share of the school's window minutes (drop-off, pick-up and school hours) in
    [start, end) covered within each limit (default 180 s and 300 s).

    `timeline` is (t, state) pairs: the unit's state from t on (e.g. each state apply_event
    returned, at its event's time); pairs before `start` give the starting states. Each minute
    (on whole UTC minutes) is judged at its first second: it is a window minute if the school
    is in a window then, and covered within a limit if the best ETA then is at most the limit.
    """
    limits = tuple(float(x) for x in limits)
    updates = sorted(timeline, key=lambda p: p[0])
    states: dict[str, UnitState] = {}
    i = 0
    window = 0
    covered = dict.fromkeys(limits, 0)
    m = math.ceil(start / 60) * 60
    while m < end:
        while i < len(updates) and updates[i][0] <= m:
            states[updates[i][1].unit_id] = updates[i][1]
            i += 1
        if in_window(school, m):
            window += 1
            best = best_eta(school, states.values(), m, cfg)
            for limit in limits:
                if best is not None and best.eta_s <= limit:
                    covered[limit] += 1
        m += 60
    return CoverageReport(school_id=school.id, start=start, end=end, window_minutes=window, covered_minutes=covered)
