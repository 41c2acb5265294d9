"""Mobile units (issue 13): registry `units:`, config `units:`, `unit.position` / `unit.status`
ingest, and pipeline/rules/units.py (distances, ETAs, nearest units, coverage)."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from datetime import datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import ConfigError, UnitsConfig, UnitSpeeds, load_config
from pipeline.ingest.native import parse_message
from pipeline.records import UNIT_PROFILES, UNIT_STATUSES, CanonicalEvent, Rejection, iso_utc, parse_ts
from pipeline.registry import Coordinates, RoadPlace, School, Unit, Window, load_registry
from pipeline.rules import units as U
from unit_helpers import REGISTRY_YAML, build_registry

TZ = ZoneInfo("Asia/Shanghai")
CFG = UnitsConfig()
HERE = Coordinates(30.6571, 104.0817)  # a school in the sample city (Chengdu)
M_PER_DEG_LAT = math.pi * U.EARTH_RADIUS_M / 180  # ~111,195 m


def local(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=TZ).timestamp()


MON_0710 = local("2026-11-30T07:10:00")  # a Monday, drop-off window
MON_1000 = local("2026-11-30T10:00:00")  # school hours
MON_2200 = local("2026-11-30T22:00:00")  # night
SAT_1000 = local("2026-12-05T10:00:00")  # weekend


def school(sid="s1", coords: Coordinates | None = HERE, **kw) -> School:
    return School(
        id=sid,
        name=sid.upper(),
        timezone="Asia/Shanghai",
        windows=(Window(time(7, 0), time(7, 50)), Window(time(16, 50), time(17, 40))),
        coordinates=coords,
        **kw,
    )


def north(metres: float, of: Coordinates = HERE) -> tuple[float, float]:
    """A point `metres` due north of `of` (great-circle metres)."""
    return of.lat + metres / M_PER_DEG_LAT, of.lon


def unit(uid="car-1", metres=1000.0, *, profile="car", status="available", at=MON_1000, area=("s1",), online=True) -> U.UnitState:
    lat, lon = north(metres)
    return U.UnitState(
        unit_id=uid, profile=profile, area=tuple(area), lat=lat, lon=lon, position_at=at, position_event="p",
        status=status, status_at=at if status else None, status_event="s" if status else "", online=online,
    )


def write(tmp_path: Path, text: str, name: str = "registry.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- registry --------------------------------------------------------------------------------------

UNITS_YAML = REGISTRY_YAML + """\
units:
  - {id: car-07, kind: mobile_unit, profile: car, area: [zx-01, bh-02], callsign: "巡逻7号", name: Patrol car 7}
  - {id: moto-3, profile: motorbike, area: [zx-01]}
  - {id: foot-1, profile: foot}
"""


def test_units_load_from_the_registry(tmp_path):
    reg = load_registry(write(tmp_path, UNITS_YAML))
    assert reg.unit("car-07") == Unit(id="car-07", profile="car", area=("zx-01", "bh-02"), name="Patrol car 7", callsign="巡逻7号")
    assert reg.unit("moto-3").kind == "mobile_unit" and reg.unit("foot-1").area == ()
    assert [u.id for u in reg.units_of("zx-01")] == ["car-07", "moto-3"]
    assert [u.id for u in reg.units_of("bh-02")] == ["car-07"]
    # a unit is not a school's device
    assert reg.device("car-07") is None and all(d.id != "car-07" for d in reg.devices_of("zx-01"))


def test_registries_without_units_load_unchanged(registry_file):
    reg = load_registry(registry_file)
    assert reg.units == {} and reg.unit("car-07") is None
    assert all(s.road_factor is None and s.road_table == () for s in reg.schools.values())
    assert build_registry().units == {}  # Registry(schools, devices, external) still constructs


def test_units_from_json_equal_yaml(tmp_path):
    import yaml

    yaml_reg = load_registry(write(tmp_path, UNITS_YAML))
    data = yaml.safe_load(UNITS_YAML)
    json_reg = load_registry(write(tmp_path, json.dumps(data, ensure_ascii=False, default=str), "registry.json"))
    assert json_reg.units == yaml_reg.units


ONE_SCHOOL = "schools: [{id: s1, timezone: UTC}]\ndevices: [{id: d1, school: s1, kind: fence}]\n"


@pytest.mark.parametrize(
    "units, match",
    [
        ("[{id: car-1, profile: car, area: [s2]}]", r"units\[0\] \(car-1\): unknown school\(s\) in area: 's2'"),
        ("[{id: car-1, profile: tank, area: [s1]}]", r"\(car-1\): unknown profile 'tank'; known: car, motorbike, foot"),
        ("[{id: car-1, area: [s1]}]", r"\(car-1\): unknown profile None"),
        ("[{id: d1, profile: car}]", r"units\[0\] \(d1\): id is also a device's"),
        ("[{id: car-1, profile: car}, {id: car-1, profile: foot}]", "duplicate unit id 'car-1'"),
        ("[{id: 'car 1', profile: car}]", "unit id 'car 1' must be"),
        ("[{profile: car}]", "unit id '' must be"),
        ("[{id: car-1, profile: car, kind: panic_button}]", r"\(car-1\): a unit's kind is mobile_unit"),
        ("[{id: car-1, profile: car, area: s1}]", r"\(car-1\): area must be a list"),
        ("[{id: car-1, profile: car, school: s1}]", r"\(car-1\): unknown key\(s\) school"),
        ("[car-1]", r"units\[0\]: expected a mapping"),
    ],
)
def test_unit_errors_name_the_unit(tmp_path, units, match):
    with pytest.raises(ConfigError, match=match):
        load_registry(write(tmp_path, ONE_SCHOOL + f"units: {units}\n"))


def test_a_mobile_unit_under_devices_is_pointed_to_units(tmp_path):
    with pytest.raises(ConfigError, match=r"devices\[1\] \(car-1\): a mobile_unit is not a school's device: list it under units:"):
        load_registry(write(tmp_path, ONE_SCHOOL.rstrip("]\n") + ", {id: car-1, school: s1, kind: mobile_unit}]\n"))


def test_school_road_factor_and_table(tmp_path):
    text = """\
schools:
  - id: s1
    coordinates: {lat: 30.6571, lon: 104.0817}
    road_factor: 1.8
    road_table:
      - {name: station-north, lat: 30.67, lon: 104.08, metres: 2100}
      - {lat: 30.65, lon: 104.09, metres: 900}
"""
    s = load_registry(write(tmp_path, text)).school("s1")
    assert s.road_factor == 1.8
    assert s.road_table == (RoadPlace("station-north", 30.67, 104.08, 2100.0), RoadPlace("place-1", 30.65, 104.09, 900.0))


@pytest.mark.parametrize(
    "extra, match",
    [
        ("road_factor: 0.9", r"\(s1\): road_factor must be a number in \[1, 5\]"),
        ("road_factor: fast", "road_factor must be a number"),
        ("road_table: {a: 1}", r"\(s1\): road_table must be a list"),
        ("road_table: [{lat: 30.6, lon: 104.0}]", r"road_table\[0\]: expected \{name, lat"),
        ("road_table: [{lat: 91, lon: 104.0, metres: 5}]", r"road_table\[0\]: coordinates out of range"),
        ("road_table: [{lat: 30.6, lon: 104.0, metres: -5}]", r"road_table\[0\]: metres must not be negative"),
        ("road_table: [{lat: 30.6, lon: 104.0, metres: 5, via: bridge}]", r"road_table\[0\]: expected"),
    ],
)
def test_school_road_errors(tmp_path, extra, match):
    with pytest.raises(ConfigError, match=match):
        load_registry(write(tmp_path, f"schools:\n  - id: s1\n    {extra}\n"))


def test_sample_registry_still_loads():
    from pipeline.config import packaged_config_path

    reg = load_registry(packaged_config_path().parent / "registry.yaml")
    assert len(reg.schools) == 20 and len(reg.units) == 8
    # every sample school is in some unit's area, and has coordinates (ETAs)
    assert {s for u in reg.units.values() for s in u.area} == set(reg.schools)
    assert all(s.coordinates for s in reg.schools.values())
    assert {u.profile for u in reg.units.values()} == {"car", "motorbike", "foot"}


# --- config ------------------------------------------------------------------------------------------


def test_units_config_defaults(tmp_path):
    cfg = load_config(write(tmp_path, "", "huxue.yaml"), env={})
    assert cfg.units == UnitsConfig()
    assert (cfg.units.road_factor, cfg.units.stale_after_seconds, cfg.units.max_nearest, cfg.units.area_only) == (1.4, 120, 3, False)
    assert {p: cfg.units.speed_kmh(p) for p in UNIT_PROFILES} == {"car": 40.0, "motorbike": 35.0, "foot": 5.0}


def test_unit_profiles_are_the_speed_profiles():
    assert tuple(f.name for f in dataclasses.fields(UnitSpeeds)) == UNIT_PROFILES


def test_units_config_from_yaml(tmp_path):
    text = "units:\n  road_factor: 1.3\n  speeds_kmh: {car: 30, foot: 4.5}\n  stale_after_seconds: 60\n  max_nearest: 5\n  area_only: true\n"
    u = load_config(write(tmp_path, text, "huxue.yaml"), env={}).units
    assert u == UnitsConfig(road_factor=1.3, speeds_kmh=UnitSpeeds(car=30.0, motorbike=35, foot=4.5), stale_after_seconds=60.0, max_nearest=5, area_only=True)


@pytest.mark.parametrize(
    "text, match",
    [
        ("units: {road_factor: 0.8}", r"units.road_factor must be in \[1, 5\]"),
        ("units: {speeds_kmh: {car: 0}}", r"units.speeds_kmh.car must be in \(0, 200\]"),
        ("units: {speeds_kmh: {bicycle: 15}}", r"units.speeds_kmh: unknown key\(s\) bicycle; known: car, foot, motorbike"),
        ("units: {stale_after_seconds: 0}", "units.stale_after_seconds must be > 0"),
        ("units: {turnout_seconds: {car: -1}}", "units.turnout_seconds.car: must not be negative"),
        ("units: {turnout_seconds: {foot: 900}}", r"units.turnout_seconds.foot must be in \[0, 600\] s, got 900"),
        ("units: {turnout_seconds: {car: 30s}}", "expected a number"),
        ("units: {max_accuracy_m: 0}", "units.max_accuracy_m must be > 0 metres"),
        ("units: {max_nearest: 0}", "units.max_nearest must be >= 1"),
        ("units: {max_nearest: 2.5}", "expected an integer"),
        ("units: {area_only: 1}", "expected true or false"),
        ("units: {speed: 3}", r"units: unknown key\(s\) speed"),
    ],
)
def test_units_config_errors(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, text + "\n", "huxue.yaml"), env={})


# --- native ingest -----------------------------------------------------------------------------------

RECEIVED = parse_ts("2026-11-30T02:10:00.500Z")
UREG = dataclasses.replace(build_registry(), units={"car-07": Unit("car-07", "car", ("zx-01",))})
POSITION = {"lat": 30.6571, "lon": 104.0817, "speed_kmh": 32.5, "heading": 271, "accuracy_m": 8}


def parse(body, device_id="car-07", channel="events"):
    payload = body if isinstance(body, bytes) else orjson.dumps(body)
    return parse_message(f"huxue/v1/devices/{device_id}/{channel}", payload, retained=False, received_at=RECEIVED, registry=UREG)


def unit_event(etype="unit.position", attrs=None, **kw):
    return {"event_id": "u-1", "type": etype, "ts": "2026-11-30T10:10:00+08:00", "attrs": POSITION if attrs is None else attrs, **kw}


def test_unit_position_becomes_a_canonical_event_without_a_school():
    ev = parse(unit_event())
    assert ev == CanonicalEvent(
        event_id="u-1", type="unit.position", ts="2026-11-30T02:10:00.000Z", device_id="car-07", school_id="", kind="mobile_unit",
        zone="", source="native", mqtt_topic="huxue/v1/devices/car-07/events", received_at=iso_utc(RECEIVED), attrs=POSITION,
    )


@pytest.mark.parametrize("status", UNIT_STATUSES)
def test_unit_status_values(status):
    ev = parse(unit_event("unit.status", {"status": status}))
    assert isinstance(ev, CanonicalEvent) and ev.attrs == {"status": status} and ev.kind == "mobile_unit"


def test_unit_status_channel_and_heartbeat():
    ev = parse(b"offline", channel="status")
    assert isinstance(ev, CanonicalEvent) and (ev.type, ev.school_id, ev.kind) == ("device.offline", "", "mobile_unit")
    assert isinstance(parse(unit_event("device.heartbeat", {"battery": 80})), CanonicalEvent)


@pytest.mark.parametrize(
    "attrs, code, what",
    [
        ({k: v for k, v in POSITION.items() if k != "lat"}, "missing_field", "unit.position needs attrs.lat"),
        ({k: v for k, v in POSITION.items() if k != "lon"}, "missing_field", "attrs.lon"),
        ({k: v for k, v in POSITION.items() if k != "speed_kmh"}, "missing_field", "attrs.speed_kmh"),
        ({k: v for k, v in POSITION.items() if k != "heading"}, "missing_field", "attrs.heading"),
        ({**POSITION, "lat": 90.5}, "invalid_field", r"attrs.lat must be a number in [-90, 90]"),
        ({**POSITION, "lat": "30.6"}, "invalid_field", "attrs.lat"),
        ({**POSITION, "lat": True}, "invalid_field", "attrs.lat"),
        ({**POSITION, "lon": -180.01}, "invalid_field", r"attrs.lon must be a number in [-180, 180]"),
        ({**POSITION, "speed_kmh": -1}, "invalid_field", "attrs.speed_kmh must be a non-negative number"),
        ({**POSITION, "heading": 360.5}, "invalid_field", r"attrs.heading must be a number in [0, 360]"),
        ({**POSITION, "heading": -1}, "invalid_field", "attrs.heading"),
        ({**POSITION, "accuracy_m": -3}, "invalid_field", "attrs.accuracy_m must be a non-negative number"),
        ({**POSITION, "accuracy_m": None}, "invalid_field", "attrs.accuracy_m"),
    ],
)
def test_unit_position_rejections(attrs, code, what):
    r = parse(unit_event(attrs=attrs))
    assert isinstance(r, Rejection) and r.reason_code == code and r.device_id == "car-07", r
    assert what in r.reason


@pytest.mark.parametrize("heading", [0, 360, 0.0, 359.9])
def test_heading_bounds_are_inclusive(heading):
    assert isinstance(parse(unit_event(attrs={**POSITION, "heading": heading})), CanonicalEvent)


def test_accuracy_is_optional():
    assert isinstance(parse(unit_event(attrs={k: v for k, v in POSITION.items() if k != "accuracy_m"})), CanonicalEvent)


@pytest.mark.parametrize("attrs, code", [({}, "missing_field"), ({"status": "busy"}, "invalid_field"), ({"status": ["available"]}, "invalid_field"), ({"status": "AVAILABLE"}, "invalid_field")])
def test_unit_status_rejections(attrs, code):
    r = parse(unit_event("unit.status", attrs))
    assert isinstance(r, Rejection) and r.reason_code == code, r
    assert "status" in r.reason


def test_types_are_kept_to_their_kinds():
    r = parse(unit_event(), device_id="zx01-btn-1")
    assert isinstance(r, Rejection) and r.reason_code == "type_not_allowed"
    r = parse({"event_id": "x", "type": "panic.pressed", "ts": 0})
    assert isinstance(r, Rejection) and r.reason_code == "type_not_allowed" and "mobile_unit" in r.reason


# --- distances and ETAs ------------------------------------------------------------------------------


def test_haversine_known_distances():
    assert U.haversine_m(0, 0, 1, 0) == pytest.approx(111_195, rel=1e-4)
    assert U.haversine_m(0, 0, 0, 1) == pytest.approx(111_195, rel=1e-4)  # on the equator
    assert U.haversine_m(30, 104, 30, 105) == pytest.approx(111_195 * math.cos(math.radians(30)), rel=1e-3)
    assert U.haversine_m(0, 0, 0, 180) == pytest.approx(math.pi * U.EARTH_RADIUS_M)
    assert U.haversine_m(*north(1234.5), HERE.lat, HERE.lon) == pytest.approx(1234.5, abs=0.01)


def test_eta_is_road_factored_distance_over_profile_speed():
    s = school()
    assert U.eta_seconds(unit(metres=1000), s, CFG) == pytest.approx(1000 * 1.4 / (40 / 3.6))  # 126 s
    assert U.eta_seconds(unit(metres=1000, profile="motorbike"), s, CFG) == pytest.approx(1400 / (35 / 3.6))
    assert U.eta_seconds(unit(metres=100, profile="foot"), s, CFG) == pytest.approx(140 / (5 / 3.6))  # ~101 s
    assert U.eta_seconds(unit(metres=1000), school(road_factor=2.0), CFG) == pytest.approx(2000 / (40 / 3.6))
    assert U.eta_seconds(unit(metres=1000), school(coords=None), CFG) is None
    assert U.eta_seconds(dataclasses.replace(unit(), lat=None, lon=None), s, CFG) is None


def test_turnout_is_added_to_every_eta_of_its_profile(tmp_path):
    u = load_config(write(tmp_path, "units:\n  turnout_seconds: {car: 30, motorbike: 15}\n", "huxue.yaml"), env={}).units
    assert (u.turnout("car"), u.turnout("motorbike"), u.turnout("foot")) == (30.0, 15.0, 0.0)
    assert U.eta_seconds(unit(metres=1000), school(), u) == pytest.approx(30 + 1400 / (40 / 3.6))
    assert U.eta_seconds(unit(metres=100, profile="foot"), school(), u) == pytest.approx(140 / (5 / 3.6))
    # the car 30 s away by road now loses to the motorbike 40 s away
    near, far = unit("car-1", metres=30 * 40 / 3.6 / 1.4), unit("moto-1", metres=40 * 35 / 3.6 / 1.4, profile="motorbike")
    assert [n.unit_id for n in U.nearest_units(school(), [near, far], MON_1000, CFG)] == ["car-1", "moto-1"]
    assert [n.unit_id for n in U.nearest_units(school(), [near, far], MON_1000, u)] == ["moto-1", "car-1"]


def test_road_table_is_used_near_its_places_only():
    station_lat, station_lon = north(2000)
    s = school(road_table=(RoadPlace("station", station_lat, station_lon, 4000.0),))  # a river: 4 km by road
    at_station = unit(metres=2000)
    near_station = unit(metres=2100)  # 100 m further, within 300 m
    far = unit(metres=2500)
    assert U.road_metres(at_station.lat, at_station.lon, s, CFG) == pytest.approx(4000)
    assert U.road_metres(near_station.lat, near_station.lon, s, CFG) == pytest.approx(4000 + 100 * 1.4)
    assert U.road_metres(far.lat, far.lon, s, CFG) == pytest.approx(2500 * 1.4)
    assert U.eta_seconds(at_station, s, CFG) == pytest.approx(4000 / (40 / 3.6))


# --- unit state ----------------------------------------------------------------------------------------

CAR = Unit("car-07", "car", ("s1",), callsign="巡逻7号")


def ev(etype, event_id, ts, attrs=None, device_id="car-07"):
    return CanonicalEvent(event_id=event_id, type=etype, ts=iso_utc(ts), device_id=device_id, school_id="", kind="mobile_unit",
                          zone="", source="native", mqtt_topic="t", received_at=iso_utc(ts), attrs=attrs or {})


def pos(event_id, ts, metres=1000.0, **extra):
    lat, lon = north(metres)
    return ev("unit.position", event_id, ts, {"lat": lat, "lon": lon, "speed_kmh": 20, "heading": 90, **extra})


def status(event_id, ts, value="available"):
    return ev("unit.status", event_id, ts, {"status": value})


def fold(events, state=None):
    for e in events:
        state = U.apply_event(state, e, CAR, parse_ts(e.ts))
    return state


def test_apply_event_keeps_the_latest_report():
    s = fold([status("s1", MON_1000), pos("p1", MON_1000 + 10, 500, accuracy_m=12), pos("p0", MON_1000 + 5, 9000)])
    assert (s.unit_id, s.profile, s.area, s.callsign) == ("car-07", "car", ("s1",), "巡逻7号")
    assert s.status == "available" and s.position_at == MON_1000 + 10 and s.accuracy_m == 12.0
    assert s.lat == pytest.approx(north(500)[0])
    assert s.available(MON_1000 + 60, CFG)
    s = fold([status("s2", MON_1000 + 20, "dispatched")], s)
    assert not s.available(MON_1000 + 60, CFG)
    s = fold([status("s0", MON_1000 + 15, "available")], s)  # older: ignored
    assert s.status == "dispatched"


def test_position_goes_stale_and_offline_units_do_not_count():
    s = fold([status("s1", MON_1000), pos("p1", MON_1000)])
    assert s.available(MON_1000 + 120, CFG) and not s.available(MON_1000 + 120.5, CFG)
    assert s.position_age(MON_1000 - 5) == 0  # a report timed after `now`: fresh
    off = fold([ev("device.offline", "status-offline-1", MON_1000 + 1)], s)
    assert not off.online and not off.available(MON_1000 + 2, CFG)
    on = fold([ev("device.online", "status-online-2", MON_1000 + 3)], off)
    assert on.available(MON_1000 + 4, CFG)


def test_no_fix_and_coarse_fixes_do_not_count():
    # GPS receivers send (0, 0) before their first fix; a cell-tower fallback is kilometres off
    s = fold([status("s1", MON_1000), pos("p1", MON_1000, accuracy_m=12)])
    assert s.available(MON_1000 + 1, CFG)
    zero = fold([ev("unit.position", "p2", MON_1000 + 5, {"lat": 0, "lon": 0, "speed_kmh": 0, "heading": 0})], s)
    assert (zero.lat, zero.lon, zero.position_at) == (0.0, 0.0, MON_1000 + 5)  # the report is kept: the older fix is gone
    assert not zero.located and not zero.fresh(MON_1000 + 6, CFG) and not zero.available(MON_1000 + 6, CFG)
    assert U.eta_seconds(zero, school(), CFG) is None and U.nearest_units(school(), [zero], MON_1000 + 6, CFG) == []
    coarse = fold([pos("p3", MON_1000 + 10, accuracy_m=2500)], zero)
    assert coarse.located and not coarse.has_fix(CFG) and not coarse.available(MON_1000 + 11, CFG)
    assert coarse.available(MON_1000 + 11, dataclasses.replace(CFG, max_accuracy_m=5000))
    assert fold([pos("p4", MON_1000 + 15, accuracy_m=500)], coarse).available(MON_1000 + 16, CFG)  # the limit itself counts


def test_unknown_status_is_not_available():
    s = fold([pos("p1", MON_1000)])
    assert s.status == "" and not s.available(MON_1000, CFG)


def test_other_types_change_nothing_and_other_units_are_refused():
    s = fold([status("s1", MON_1000), pos("p1", MON_1000)])
    assert fold([ev("device.heartbeat", "h", MON_1000 + 1, {"battery": 50})], s) == s
    with pytest.raises(ValueError):
        U.apply_event(s, ev("unit.status", "s2", MON_1000, {"status": "available"}, device_id="moto-3"), CAR, MON_1000)


def test_unit_state_round_trips_through_json():
    s = fold([status("s1", MON_1000), pos("p1", MON_1000, accuracy_m=5)])
    assert U.UnitState.from_dict(orjson.loads(orjson.dumps(s.to_dict()))) == s
    assert U.UnitState.from_dict({**s.to_dict(), "future_field": 1}) == s


# --- nearest units ------------------------------------------------------------------------------------


def test_nearest_units_lists_available_fresh_units_by_eta():
    units = [
        unit("car-far", 5000),
        unit("foot-near", 300, profile="foot"),  # 300 m on foot: 302 s
        unit("moto-mid", 2000, profile="motorbike"),  # 288 s
        unit("car-near", 1000),  # 126 s
        unit("car-busy", 100, status="dispatched"),
        unit("car-scene", 100, status="on_scene"),
        unit("car-off", 100, status="off_duty"),
        unit("car-unknown", 100, status=""),
        unit("car-stale", 100, at=MON_1000 - 121),
        unit("car-offline", 100, online=False),
    ]
    got = U.nearest_units(school(), units, MON_1000, CFG)
    assert [n.unit_id for n in got] == ["car-near", "moto-mid", "foot-near"]
    first = got[0]
    assert (first.profile, first.in_area, first.position_age_s) == ("car", True, 0)
    assert first.distance_m == pytest.approx(1000, abs=0.01) and first.road_m == pytest.approx(1400, abs=0.01)
    assert first.eta_s == pytest.approx(126, abs=0.01)
    assert first.to_dict()["eta_s"] == 126.0 and "accuracy_m" not in first.to_dict()
    assert U.best_eta(school(), units, MON_1000, CFG) == first
    assert len(U.nearest_units(school(), units, MON_1000, CFG, limit=10)) == 4


def test_area_breaks_ties_and_area_only_filters():
    outsider, insider = unit("a-outsider", 1000, area=("s9",)), unit("b-insider", 1000)
    assert [n.unit_id for n in U.nearest_units(school(), [outsider, insider], MON_1000, CFG)] == ["b-insider", "a-outsider"]
    closer_outsider = unit("a-outsider", 500, area=())
    got = U.nearest_units(school(), [closer_outsider, insider], MON_1000, CFG)
    assert [(n.unit_id, n.in_area) for n in got] == [("a-outsider", False), ("b-insider", True)]
    strict = dataclasses.replace(CFG, area_only=True)
    assert [n.unit_id for n in U.nearest_units(school(), [closer_outsider, insider], MON_1000, strict)] == ["b-insider"]


def test_school_without_coordinates_has_no_nearest_units_and_no_gap():
    s = school(coords=None)
    assert U.nearest_units(s, [unit()], MON_1000, CFG) == [] and U.best_eta(s, [unit()], MON_1000, CFG) is None
    cov = U.coverage(s, [], MON_0710, CFG, 300)
    assert cov.window == "window" and not cov.located and not cov.covered and not cov.gap


def test_next_expiry():
    units = [unit("a", at=MON_1000 - 30), unit("b", at=MON_1000 - 60), unit("c", status="dispatched", at=MON_1000 - 100)]
    assert U.next_expiry(units, MON_1000, CFG) == MON_1000 - 60 + 120
    assert U.next_expiry([], MON_1000, CFG) is None


# --- coverage -------------------------------------------------------------------------------------------


def test_window_kinds():
    s = school()
    assert U.window_kind(s, MON_0710) == "window"  # drop-off, before school opens
    assert U.window_kind(s, MON_1000) == "hours"
    assert U.window_kind(s, local("2026-11-30T17:35:00")) == "window"  # pick-up, after closing
    assert U.window_kind(s, MON_2200) is None and U.window_kind(s, SAT_1000) is None
    assert U.window_kind(dataclasses.replace(s, closed_dates=frozenset({datetime(2026, 11, 30).date()})), MON_1000) is None


def test_coverage_and_gap_changes():
    s = school()
    near = unit("car-1", 1000, at=MON_0710)  # 126 s
    far = unit("car-2", 3000, at=MON_0710)  # 378 s
    cov = U.coverage(s, [near, far], MON_0710, CFG, 300)
    assert cov.covered and not cov.gap and cov.best.unit_id == "car-1"
    assert U.gap_change(False, cov) is None and U.gap_change(True, cov) == "restored"
    cov = U.coverage(s, [far], MON_0710, CFG, 300)
    assert not cov.covered and cov.gap and cov.best.unit_id == "car-2"
    assert U.gap_change(False, cov) == "open" and U.gap_change(True, cov) is None
    night = U.coverage(s, [], MON_2200, CFG, 300)
    assert night.window is None and not night.gap
    assert U.gap_change(True, night) == "window_ended" and U.gap_change(False, night) is None
    # the limit is inclusive
    assert U.coverage(s, [near], MON_0710, CFG, near_eta := U.eta_seconds(near, s, CFG)).covered and near_eta == pytest.approx(126)


def test_coverage_report_counts_window_minutes_covered_within_3_and_5_minutes():
    s = school()
    start, end = local("2026-11-30T06:50:00"), local("2026-11-30T07:10:00")  # 10 minutes before the window, 10 in it
    t0 = local("2026-11-30T07:00:00")

    def metres(t):  # reports every 30 s: 3 km away (378 s) until 07:02, 2 km (252 s) until 07:05, then 1 km (126 s)
        return 3000 if t < t0 + 120 else 2000 if t < t0 + 300 else 1000

    timeline = [(t, unit("car-1", metres(t), at=t)) for t in range(int(start) - 600, int(end), 30)]
    r = U.coverage_report(s, timeline, start, end, CFG)
    assert r.window_minutes == 10
    assert r.covered_minutes == {180.0: 5, 300.0: 8}  # 07:05-07:09 within 3; 07:02-07:09 within 5
    assert r.share(180) == 0.5 and r.share(300) == 0.8
    # reports stop at 07:05: the position is unknown (stale) from 07:07 on
    r = U.coverage_report(s, [(t, u) for t, u in timeline if t <= t0 + 300], start, end, CFG)
    assert r.covered_minutes == {180.0: 3, 300.0: 6}
    assert U.coverage_report(s, timeline, MON_2200, MON_2200 + 3600, CFG).share(300) is None


# --- properties ------------------------------------------------------------------------------------------

lats = st.floats(min_value=-89.9, max_value=89.9, allow_nan=False)
lons = st.floats(min_value=-180, max_value=180, allow_nan=False)
points = st.tuples(lats, lons)
# units within ~20 km of the school, in the sample city
offsets = st.tuples(st.floats(min_value=-0.2, max_value=0.2), st.floats(min_value=-0.2, max_value=0.2))


@settings(max_examples=300, deadline=None)
@given(a=points, b=points, c=points)
def test_haversine_is_a_metric(a, b, c):
    ab, ba = U.haversine_m(*a, *b), U.haversine_m(*b, *a)
    assert ab >= 0 and ab == pytest.approx(ba, abs=1e-6)
    assert ab <= math.pi * U.EARTH_RADIUS_M + 1e-6
    assert U.haversine_m(*a, *a) == pytest.approx(0, abs=1e-6)
    assert ab <= U.haversine_m(*a, *c) + U.haversine_m(*c, *b) + 1e-3  # triangle inequality (mm tolerance)


@settings(max_examples=200, deadline=None)
@given(d1=st.floats(min_value=0, max_value=50_000), d2=st.floats(min_value=0, max_value=50_000), profile=st.sampled_from(UNIT_PROFILES), factor=st.floats(min_value=1, max_value=5))
def test_eta_is_monotone_in_distance(d1, d2, profile, factor):
    cfg = dataclasses.replace(CFG, road_factor=factor)
    e1, e2 = (U.eta_seconds(unit(metres=d, profile=profile), school(), cfg) for d in (d1, d2))
    assert e1 >= 0 and e2 >= 0
    if d1 <= d2:
        assert e1 <= e2 + 1e-6


@settings(max_examples=200, deadline=None)
@given(offset=offsets, profile=st.sampled_from(UNIT_PROFILES))
def test_slower_profiles_never_arrive_sooner(offset, profile):
    u = dataclasses.replace(unit(profile=profile), lat=HERE.lat + offset[0], lon=HERE.lon + offset[1])
    etas = {p: U.eta_seconds(dataclasses.replace(u, profile=p), school(), CFG) for p in UNIT_PROFILES}
    assert etas["car"] <= etas["motorbike"] <= etas["foot"]


fleet = st.lists(
    st.builds(
        lambda i, off, profile, status, age, online, in_area: dataclasses.replace(
            unit(f"u{i}", profile=profile, status=status, at=MON_1000 - age, online=online, area=("s1",) if in_area else ()),
            lat=HERE.lat + off[0], lon=HERE.lon + off[1],
        ),
        st.integers(0, 10_000), offsets, st.sampled_from(UNIT_PROFILES), st.sampled_from((*UNIT_STATUSES, "")),
        st.floats(min_value=-30, max_value=600), st.booleans(), st.booleans(),
    ),
    max_size=12,
    unique_by=lambda u: u.unit_id,
)


@settings(max_examples=300, deadline=None)
@given(units=fleet, max_nearest=st.integers(1, 5), area_only=st.booleans())
def test_nearest_units_are_sorted_bounded_and_only_available(units, max_nearest, area_only):
    cfg = dataclasses.replace(CFG, max_nearest=max_nearest, area_only=area_only)
    got = U.nearest_units(school(), units, MON_1000, cfg)
    by_id = {u.unit_id: u for u in units}
    eligible = [u for u in units if u.available(MON_1000, cfg) and (not area_only or "s1" in u.area)]
    assert len(got) == min(max_nearest, len(eligible))
    assert [n.eta_s for n in got] == sorted(n.eta_s for n in got)
    for n in got:
        u = by_id[n.unit_id]
        assert u.status == "available" and u.online and n.position_age_s <= cfg.stale_after_seconds
        assert n.eta_s == pytest.approx(U.eta_seconds(u, school(), cfg))
    # no unit left out arrives sooner than the last one listed
    listed = {n.unit_id for n in got}
    if got:
        assert all(U.eta_seconds(u, school(), cfg) >= got[-1].eta_s - 1e-9 for u in eligible if u.unit_id not in listed)
        assert U.best_eta(school(), units, MON_1000, cfg) == got[0]
    else:
        assert U.best_eta(school(), units, MON_1000, cfg) is None


times = st.floats(min_value=local("2026-11-28T00:00:00"), max_value=local("2026-12-07T00:00:00"))


@settings(max_examples=300, deadline=None)
@given(units=fleet, t=times, limit=st.sampled_from((180.0, 300.0)))
def test_no_gap_outside_windows_and_gap_iff_in_window_and_uncovered(units, t, limit):
    units = [dataclasses.replace(u, position_at=t - (MON_1000 - u.position_at)) for u in units]  # same ages at t
    cov = U.coverage(school(), units, t, CFG, limit)
    if not U.in_window(school(), t):
        assert not cov.gap and U.gap_change(False, cov) is None
    else:
        best = U.best_eta(school(), units, t, CFG)
        assert cov.gap == (best is None or best.eta_s > limit) and cov.covered == (not cov.gap)


unit_events = st.lists(
    st.one_of(
        st.builds(lambda i, dt, m: pos(f"p{i}", MON_1000 + dt, m), st.integers(0, 5), st.integers(0, 3), st.floats(0, 9000)),
        st.builds(lambda i, dt, v: status(f"s{i}", MON_1000 + dt, v), st.integers(0, 5), st.integers(0, 3), st.sampled_from(UNIT_STATUSES)),
        st.builds(lambda i, dt, on: ev("device.online" if on else "device.offline", f"o{i}", MON_1000 + dt), st.integers(0, 5), st.integers(0, 3), st.booleans()),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(events=unit_events, seed=st.integers(0, 2**32))
def test_unit_state_does_not_depend_on_report_order_or_repeats(events, seed):
    # same event id means the same report (a redelivery): keep one body per id
    events = list({e.event_id: e for e in events}.values())
    shuffled = events * 2
    random.Random(seed).shuffle(shuffled)
    assert fold(shuffled) == fold(events)


@settings(max_examples=50, deadline=None)
@given(units=fleet)
def test_coverage_report_shares_are_ordered(units):
    start = local("2026-11-30T06:30:00")
    timeline = [(MON_0710 - 60 * (i % 40), dataclasses.replace(u, position_at=MON_0710 - 60 * (i % 40))) for i, u in enumerate(units)]
    r = U.coverage_report(school(), timeline, start, start + 7200, CFG)
    assert r.window_minutes == 90  # 07:00-07:50 drop-off, school hours from 07:30 on: 07:00-08:30
    assert r.covered_minutes[180.0] <= r.covered_minutes[300.0] <= r.window_minutes
