"""Mobile units in the rules (issue 13): a panic's nearest units, the dispatch command and
`arrive`'s default unit, and rule `coverage_gap` (timer-driven, with its own clock here).
The units are a plain list: in the worker they come from the units topic (units_view.py)."""

from __future__ import annotations

import dataclasses
from datetime import time

from pipeline.registry import Coordinates, Unit
from pipeline.rules import engine
from pipeline.rules.units import UnitState, haversine_m
from unit_helpers import SCHOOL, T0, Driver, command, registry_with, rules_ctx, school, window

SCHOOL_AT = Coordinates(30.6571, 104.0817)
H = 3600


def unit_at(unit_id: str, metres_north: float, at: float, status: str = "available", profile: str = "car") -> UnitState:
    """A unit `metres_north` of the school (1 degree of latitude ~ 111.2 km)."""
    return UnitState(
        unit_id=unit_id, profile=profile, lat=SCHOOL_AT.lat + metres_north / 111_195, lon=SCHOOL_AT.lon,
        position_at=at, position_event=f"p-{unit_id}-{at}", status=status, status_at=at, status_event=f"s-{unit_id}",
    )


class Fleet:
    """The units the rules see; tests move them."""

    def __init__(self, *units: UnitState):
        self.by_id = {u.unit_id: u for u in units}

    def __call__(self):
        return tuple(self.by_id.values())

    def put(self, u: UnitState) -> None:
        self.by_id[u.unit_id] = u


def driver(fleet: Fleet, windows=(), *rules: str, hours=(time(7, 30), time(17, 30)), **tuned) -> Driver:
    s = dataclasses.replace(school(SCHOOL, windows=windows, open_=hours[0], close=hours[1]), coordinates=SCHOOL_AT)
    reg = dataclasses.replace(registry_with(s), units={u: Unit(u, "car", (SCHOOL,)) for u in ("car-1", "car-2", "car-3", "car-4")})
    ctx = rules_ctx(*rules, registry=reg, **tuned)
    return Driver(dataclasses.replace(ctx, units=fleet))


def unit_command(d: Driver, at: float, name: str, incident_id: str, unit: str = "") -> engine.Outcome:
    cmd = dataclasses.replace(command(name, incident_id, at=at, command_id=f"{name}-{at}"), unit=unit)
    outcome = engine.on_command(d.state, cmd, at, d.ctx)
    d._take(outcome)
    return outcome


# car at 40 km/h, road factor 1.4: 1 km straight = 1.4 km road = 126 s
def test_the_opened_alert_lists_the_nearest_available_units_by_eta():
    fleet = Fleet(unit_at("car-1", 3000, T0), unit_at("car-2", 1000, T0), unit_at("car-3", 500, T0, status="dispatched"), unit_at("car-4", 2000, T0 - 600))
    d = driver(fleet)
    opened = d.press(T0)[0]
    assert opened.stage == "opened"
    assert [u["unit_id"] for u in opened.nearest_units] == ["car-2", "car-1"]  # car-3 busy, car-4 stale (10 min)
    near = opened.nearest_units[0]
    assert abs(near["distance_m"] - haversine_m(SCHOOL_AT.lat, SCHOOL_AT.lon, fleet.by_id["car-2"].lat, SCHOOL_AT.lon)) < 1
    assert abs(near["eta_s"] - 1000 * 1.4 / (40 / 3.6)) < 1
    assert driver(Fleet()).press(T0)[0].nearest_units is None  # no unit known: the field is absent


def test_dispatch_records_the_unit_and_arrive_defaults_to_it():
    d = driver(Fleet(unit_at("car-2", 1000, T0)))
    iid = d.press(T0)[0].incident_id
    d.command(T0 + 20, "ack", iid)
    sent = unit_command(d, T0 + 30, "dispatch", iid, "car-2").alerts[0]
    assert (sent.stage, sent.unit, sent.dispatched, sent.msgType) == ("dispatched-1", "car-2", ["car-2"], "Update")
    assert "car-2" in sent.headline
    d.tick(T0 + 200)
    assert "mobile_late" in d.stages(iid)  # dispatching settles nothing: only arrival does
    arrived = unit_command(d, T0 + 240, "arrive", iid).alerts[0]
    assert (arrived.stage, arrived.unit) == ("arrived", "car-2")
    d.tick(T0 + 400)
    assert "mobile_overdue" not in d.stages(iid)


def test_dispatch_names_a_known_unit_once_and_before_arrival():
    d = driver(Fleet())
    iid = d.press(T0)[0].incident_id
    assert unit_command(d, T0 + 1, "dispatch", iid, "car-99").rejected[0][1].reason_code == "unknown_unit"
    unit_command(d, T0 + 2, "dispatch", iid, "car-1")
    assert unit_command(d, T0 + 3, "dispatch", iid, "car-1").rejected[0][1].reason_code == "already_dispatched"
    second = unit_command(d, T0 + 4, "dispatch", iid, "car-2").alerts[0]
    assert (second.stage, second.dispatched) == ("dispatched-2", ["car-1", "car-2"])
    arrived = unit_command(d, T0 + 5, "arrive", iid, "car-1").alerts[0]
    assert arrived.unit == "car-1"  # the unit named wins over the last dispatched
    assert unit_command(d, T0 + 6, "dispatch", iid, "car-3").rejected[0][1].reason_code == "already_arrived"


def test_a_nearer_unit_becoming_available_updates_an_open_panic():
    fleet = Fleet(unit_at("car-1", 3000, T0))
    d = driver(fleet, (), "coverage_gap")
    iid = d.press(T0)[0].incident_id
    d.tick(T0 + 15)
    assert not [s for s in d.stages(iid) if s.startswith("units-")]  # nothing changed
    fleet.put(unit_at("car-2", 400, T0 + 20))
    d.tick(T0 + 30)
    update = [a for a in d.alerts if a.stage.startswith("units-")]
    assert [a.stage for a in update] == ["units-1"]
    assert [u["unit_id"] for u in update[0].nearest_units] == ["car-2", "car-1"]


def test_coverage_gap_opens_after_confirmation_and_closes_when_a_unit_returns():
    # a window from T0 for two hours; car-1 starts 1 km away (126 s: covered within 300 s)
    fleet = Fleet(unit_at("car-1", 1000, T0))
    d = driver(fleet, (window(0, 2 * H),), "coverage_gap")
    d.tick(T0 + 1)
    assert d.of_rule("coverage_gap") == []
    fleet.put(unit_at("car-1", 5000, T0 + 20))  # drives away: 630 s
    d.tick(T0 + 30)
    assert d.of_rule("coverage_gap") == []  # uncovered, not yet for confirm_seconds
    for t in range(45, 120, 15):
        fleet.put(unit_at("car-1", 5000, T0 + t))
        d.tick(T0 + t)
    opened = d.of_rule("coverage_gap")
    assert [a.stage for a in opened] == ["opened"]
    assert (opened[0].severity, opened[0].notify) == ("Severe", ["mobile", "command"])
    assert "car-1" in opened[0].headline and "5.0 min" in opened[0].headline
    fleet.put(unit_at("car-1", 800, T0 + 130))
    d.tick(T0 + 135)
    assert [a.stage for a in d.of_rule("coverage_gap")] == ["opened", "restored"]


def test_no_coverage_gap_outside_windows_and_the_window_end_closes_one():
    # school hours 03:00-03:01 (T0 is 07:41 local): only the 10-minute window needs coverage
    d = driver(Fleet(), (window(0, 600),), "coverage_gap", hours=(time(3, 0), time(3, 1)))
    d.tick(T0 - 900)
    assert d.of_rule("coverage_gap") == []  # no unit at all, but no window either
    for t in range(0, 600, 15):
        d.tick(T0 + t)
    assert [a.stage for a in d.of_rule("coverage_gap")] == ["opened"]
    assert "no available unit" in d.of_rule("coverage_gap")[0].headline
    for t in range(600, 1200, 15):
        d.tick(T0 + t)
    assert [a.stage for a in d.of_rule("coverage_gap")] == ["opened", "window_ended"]


def test_no_coverage_is_decided_before_the_units_view_has_read_the_topic():
    d = driver(Fleet(), (window(0, 600),), "coverage_gap")
    ready = {"yes": False}
    d.ctx = dataclasses.replace(d.ctx, units_ready=lambda: ready["yes"])
    for t in range(0, 120, 15):
        d.tick(T0 + t)
    assert d.of_rule("coverage_gap") == []  # no unit seen, but the view is not there yet
    ready["yes"] = True
    for t in range(120, 240, 15):
        d.tick(T0 + t)
    assert [a.stage for a in d.of_rule("coverage_gap")] == ["opened"]


def test_a_registry_without_units_costs_one_look_an_hour():
    d = driver(Fleet(), (window(0, 600),), "coverage_gap")
    d.ctx = dataclasses.replace(d.ctx, registry=dataclasses.replace(d.ctx.registry, units={}))
    d.tick(T0)
    assert d.state.memory["coverage_gap"]["due"] == T0 + 3600
    assert d.of_rule("coverage_gap") == []
