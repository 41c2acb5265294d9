"""Units busy with an incident: what the worker writes at a dispatch, an arrival and a close
(rules/units.py `assignment_changes`), and how the units view folds it (units_view.py)."""

from __future__ import annotations

import dataclasses

from pipeline.config import Config
from pipeline.records import CanonicalEvent, Command, dumps, iso_utc
from pipeline.registry import Unit
from pipeline.rules import engine
from pipeline.rules import units as U
from pipeline.units_view import UnitsView
from unit_helpers import SCHOOL, T0, Driver, build_registry, make_ctx

REG = dataclasses.replace(build_registry(), units={
    "car-07": Unit("car-07", "car", (SCHOOL,)),
    "moto-3": Unit("moto-3", "motorbike", (SCHOOL,)),
})


def opened() -> tuple[Driver, str]:
    d = Driver(make_ctx(registry=REG))
    [a] = d.press(T0)
    return d, a.incident_id


def cmd(d: Driver, now: float, name: str, iid: str, unit: str = "") -> list[tuple[str, U.Assignment | None]]:
    before = d.state
    out = engine.on_command(before, Command(name, by="duty", incident_id=iid, school_id=SCHOOL, unit=unit, command_id=f"c-{now}", at=iso_utc(now)), now, d.ctx)
    d._take(out)  # noqa: SLF001 - the Driver's bookkeeping
    return changes(before, out)


def changes(before, out: engine.Outcome) -> list[tuple[str, U.Assignment | None]]:
    return U.assignment_changes(out.alerts, before.incidents, out.state.incidents)


def test_dispatch_and_arrival_hold_a_unit_and_the_close_releases_it():
    d, iid = opened()
    assert (cmd(d, T0 + 10, "dispatch", iid, "car-07")) == [
        (f"car-07/assignment/{iid}", U.Assignment("car-07", iid, SCHOOL, "dispatched", T0 + 10))]
    assert (cmd(d, T0 + 100, "arrive", iid)) == [
        (f"car-07/assignment/{iid}", U.Assignment("car-07", iid, SCHOOL, "arrived", T0 + 100))]
    assert (cmd(d, T0 + 200, "resolve", iid)) == [(f"car-07/assignment/{iid}", None)]


def test_a_close_releases_every_unit_dispatched_and_the_one_that_arrived_undispatched():
    d, iid = opened()
    cmd(d, T0 + 10, "dispatch", iid, "car-07")
    cmd(d, T0 + 100, "arrive", iid, "moto-3")  # another unit got there first
    assert (cmd(d, T0 + 200, "false_alarm", iid)) == [(f"car-07/assignment/{iid}", None), (f"moto-3/assignment/{iid}", None)]


def test_alerts_without_units_change_nothing():
    d, iid = opened()
    assert (cmd(d, T0 + 10, "ack", iid)) == []
    assert changes(d.state, engine.on_tick(d.state, T0 + 1000, d.ctx)) == []  # ladder stages
    assert (cmd(d, T0 + 1100, "resolve", iid)) == []  # nobody was sent


def test_assignment_keys_and_records_round_trip():
    a = U.Assignment("car-07", "inc-1", SCHOOL, "dispatched", T0)
    assert U.assignment_of_key(a.key) == ("car-07", "inc-1")
    assert U.assignment_of_key("car-07/position") is None and U.assignment_of_key("car-07/assignment/") is None
    assert U.Assignment.from_dict(a.to_dict()) == a


def report(etype: str, event_id: str, at: float, **attrs) -> bytes:
    return dumps(CanonicalEvent(event_id=event_id, type=etype, ts=iso_utc(at), device_id="car-07", school_id="", kind="mobile_unit",
                                zone="", source="native", mqtt_topic="t", received_at=iso_utc(at), attrs=attrs).to_dict())


def test_the_view_holds_a_busy_unit_until_every_incident_released_it():
    view = UnitsView(Config(), REG, "worker")
    cfg = Config().units
    view.fold(b"car-07/status", report("unit.status", "s1", T0, status="available"))
    view.fold(b"car-07/position", report("unit.position", "p1", T0, lat=30.6571, lon=104.0817, speed_kmh=0, heading=0))
    view.publish()
    assert view.get("car-07").available(T0 + 1, cfg)

    one, two = U.Assignment("car-07", "inc-1", SCHOOL, "dispatched", T0 + 5), U.Assignment("car-07", "inc-2", "bh-02", "dispatched", T0 + 6)
    view.fold(one.key.encode(), dumps(one.to_dict()))
    view.fold(two.key.encode(), dumps(two.to_dict()))
    view.fold(b"car-07/status", report("unit.status", "s2", T0 + 7, status="available"))  # its terminal repeats itself
    view.publish()
    car = view.get("car-07")
    assert car.assigned_to == ("inc-1", "inc-2") and car.status == "available" and not car.available(T0 + 8, cfg)

    view.fold(one.key.encode(), None)  # inc-1 closed: inc-2 still holds it
    view.publish()
    assert view.get("car-07").assigned_to == ("inc-2",)
    view.fold(two.key.encode(), None)
    view.publish()
    assert view.get("car-07").assigned_to == () and view.get("car-07").available(T0 + 9, cfg)


def test_the_view_skips_foreign_assignment_records_and_units_not_in_the_registry():
    view = UnitsView(Config(), REG, "worker")
    view.fold(b"car-07/assignment/inc-1", b'{"not": "an assignment"}')
    view.fold(b"car-99/assignment/inc-1", dumps(U.Assignment("car-99", "inc-1", SCHOOL, "dispatched", T0).to_dict()))
    view.fold(b"car-07/assignment/inc-9", None)  # a release of nothing held
    view.publish()
    assert view.units() == ()
    held = U.Assignment("moto-3", "inc-1", SCHOOL, "arrived", T0)
    view.fold(held.key.encode(), dumps(held.to_dict()))
    view.publish()
    [moto] = view.units()  # held but never reported: listed, not available
    assert (moto.unit_id, moto.assigned_to, moto.available(T0, Config().units)) == ("moto-3", ("inc-1",), False)
