"""Schools and devices: loaded once from the registry YAML, looked up by id or external name."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from datetime import date, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
import yaml

from pipeline.config import ConfigError
from pipeline.records import DEVICE_KINDS, UNIT_KIND, UNIT_PROFILES

DEVICE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
NOTIFY_ROLES = ("onsite", "mobile", "command")  # the roles of an alert's `notify` list
CONTACT_ROLE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")  # guard_post, principal, police_station, ...
# Loose on purpose (numbers are dialled by people): digits, spaces, '-', an optional leading '+'.
PHONE = re.compile(r"^\+?[0-9][0-9 -]{1,30}[0-9]$")
SITE_PLAN_TYPES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg")


@dataclass(frozen=True)
class Window:
    start: time
    end: time


@dataclass(frozen=True)
class Post:
    id: str
    required_officers: int = 2


@dataclass(frozen=True)
class Coordinates:
    lat: float
    lon: float


@dataclass(frozen=True)
class RoadPlace:
    """A place with a known road distance to a school (a police station, a patrol point, the
    far side of a river's one bridge): units near it use `metres` (rules/units.py)."""

    name: str
    lat: float
    lon: float
    metres: float


@dataclass(frozen=True)
class Contact:
    role: str
    name: str
    phone: str


@dataclass(frozen=True)
class School:
    id: str
    name: str
    timezone: str = "Asia/Shanghai"
    days: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri")
    open: time = time(7, 30)
    close: time = time(17, 30)
    windows: tuple[Window, ...] = ()
    posts: tuple[Post, ...] = ()
    closed_dates: frozenset[date] = frozenset()  # holidays: no school hours, no windows
    # Who is paged for this school, by the roles of an alert's `notify` list: role (onsite,
    # mobile, command) -> names of `notify.receivers` in the config (huxue notifier).
    notify: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Where and who, for the duty room: all optional. site_plan is an http(s) URL or an
    # absolute path (a relative one in the file is resolved against the registry file).
    address: str = ""
    coordinates: Coordinates | None = None
    contacts: tuple[Contact, ...] = ()
    site_plan: str = ""
    # Mobile units (issue 13), optional: this school's road distance / straight-line distance
    # (None: units.road_factor of the config) and places with known road metres to it.
    road_factor: float | None = None
    road_table: tuple[RoadPlace, ...] = ()

    @property
    def site_plan_is_url(self) -> bool:
        return self.site_plan.startswith(("http://", "https://"))

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class Device:
    id: str
    school: str
    kind: str
    zone: str = ""
    external: dict[str, str] = field(default_factory=dict)
    # Third-party details: a Frigate camera's zones -> huxue zones, its zones where being
    # present means loitering, and the Zigbee2MQTT `action` values that mean a press.
    zone_map: dict[str, str] = field(default_factory=dict)
    loiter_zones: tuple[str, ...] = ()
    press_actions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Unit:
    """A mobile unit (patrol car, motorbike officer, foot patrol): registry `units:`.

    Not a school's device: it publishes `unit.position` / `unit.status` on its own device
    topic (huxue/v1/devices/<id>/events), and `area` lists the schools it covers."""

    id: str
    profile: str  # records.UNIT_PROFILES: its speed (config units.speeds_kmh)
    area: tuple[str, ...] = ()
    name: str = ""
    callsign: str = ""
    kind: str = UNIT_KIND


@dataclass(frozen=True)
class Registry:
    schools: dict[str, School]
    devices: dict[str, Device]
    # (ecosystem, external name) -> devices, e.g. ("frigate", "gate_cam"): one Frigate
    # camera can be a video_analytics, a face_camera and a plate_camera device at once
    external: dict[tuple[str, str], tuple[Device, ...]]
    # Mobile units by id (ids never shared with a device: both publish under huxue/v1/devices/)
    units: dict[str, Unit] = field(default_factory=dict)

    def device(self, device_id: str) -> Device | None:
        return self.devices.get(device_id)

    def unit(self, unit_id: str) -> Unit | None:
        return self.units.get(unit_id)

    def units_of(self, school_id: str) -> list[Unit]:
        """The units whose area lists the school."""
        return [u for u in self.units.values() if school_id in u.area]

    def school(self, school_id: str) -> School | None:
        return self.schools.get(school_id)

    def by_external(self, ecosystem: str, name: str, kinds: frozenset[str] | None = None) -> Device | None:
        """The device behind a third-party name, of one of `kinds` when given."""
        for d in self.external.get((ecosystem, name), ()):
            if kinds is None or d.kind in kinds:
                return d
        return None

    def of_ecosystem(self, ecosystem: str) -> list[Device]:
        return [d for d in self.devices.values() if ecosystem in d.external]

    def devices_of(self, school_id: str) -> list[Device]:
        return self._by_school.get(school_id, [])

    @cached_property
    def _by_school(self) -> dict[str, list[Device]]:
        index: dict[str, list[Device]] = {}
        for d in self.devices.values():
            index.setdefault(d.school, []).append(d)
        return index


def _time(value: Any, where: str) -> time:
    """HH:MM (or HH:MM:SS) local time; YAML may hand over 07:30 as a number of minutes."""
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads unquoted 17:30 as 1050 (minutes) and 17:30:15 as seconds; quote times
        if 0 <= value < 24 * 60:
            return time(value // 60, value % 60)
        if value < 24 * 3600:
            return time(value // 3600, value // 60 % 60, value % 60)
    try:
        parts = [int(p) for p in str(value).split(":")]
        if len(parts) not in (2, 3):
            raise ValueError
        return time(*parts)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: expected HH:MM, got {value!r}") from exc


def _coordinates(raw: Any, where: str) -> Coordinates | None:
    if raw is None:
        return None
    ok = isinstance(raw, dict) and set(raw) == {"lat", "lon"} and all(
        isinstance(raw[k], (int, float)) and not isinstance(raw[k], bool) for k in ("lat", "lon"))
    if not ok:
        raise ConfigError(f"{where}: coordinates must be {{lat: <number>, lon: <number>}}, got {raw!r}")
    lat, lon = float(raw["lat"]), float(raw["lon"])
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ConfigError(f"{where}: coordinates out of range (lat -90..90, lon -180..180): {lat}, {lon}")
    return Coordinates(lat, lon)


def _contacts(raw: Any, where: str) -> tuple[Contact, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: contacts must be a list of {{role, name, phone}}, got {raw!r}")
    out = []
    for i, c in enumerate(raw):
        at = f"{where}: contacts[{i}]"
        if not isinstance(c, dict) or set(c) - {"role", "name", "phone"}:
            raise ConfigError(f"{at}: expected {{role, name, phone}}, got {c!r}")
        role, phone = str(c.get("role", "")), c.get("phone")
        if not CONTACT_ROLE.match(role):
            raise ConfigError(f"{at}: role must be a lower-case word such as guard_post, principal, police_station; got {role!r}")
        # YAML reads an unquoted 110 as a number: take it as the digits it is
        phone = str(phone) if isinstance(phone, int) and not isinstance(phone, bool) else phone
        if not isinstance(phone, str) or not PHONE.match(phone.strip()):
            raise ConfigError(f"{at} ({role}): phone must be digits, spaces, '-' and an optional leading '+', got {phone!r}")
        out.append(Contact(role=role, name=str(c.get("name") or ""), phone=phone.strip()))
    return tuple(out)


def _site_plan(raw: Any, base: Path, where: str) -> str:
    """An http(s) URL as given, or a local image path made absolute. The file need not exist
    yet: a missing picture must never stop the alarm pipeline (the console shows a placeholder)."""
    if raw is None or raw == "":
        return ""
    if not isinstance(raw, str):
        raise ConfigError(f"{where}: site_plan must be a path or an http(s) URL, got {raw!r}")
    if "://" in raw:
        if not raw.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: site_plan URL must be http:// or https://, got {raw!r}")
        return raw
    if Path(raw).suffix.lower() not in SITE_PLAN_TYPES:
        raise ConfigError(f"{where}: site_plan must be an image ({', '.join(SITE_PLAN_TYPES)}), got {raw!r}")
    return str((base / raw).resolve())


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _road(raw: dict[str, Any], where: str) -> tuple[float | None, tuple[RoadPlace, ...]]:
    """A school's optional road_factor and road_table (mobile units' ETAs)."""
    factor = raw.get("road_factor")
    if factor is not None and (not _number(factor) or not 1 <= factor <= 5):
        raise ConfigError(f"{where}: road_factor must be a number in [1, 5] (road / straight-line distance), got {factor!r}")
    table = raw.get("road_table")
    if table is None:
        return (None if factor is None else float(factor)), ()
    if not isinstance(table, list):
        raise ConfigError(f"{where}: road_table must be a list of {{name, lat, lon, metres}}, got {table!r}")
    places = []
    for i, p in enumerate(table):
        at = f"{where}: road_table[{i}]"
        if not isinstance(p, dict) or set(p) - {"name", "lat", "lon", "metres"} or not all(_number(p.get(k)) for k in ("lat", "lon", "metres")):
            raise ConfigError(f"{at}: expected {{name, lat: <number>, lon: <number>, metres: <number>}}, got {p!r}")
        c = _coordinates({"lat": p["lat"], "lon": p["lon"]}, at)
        assert c is not None
        if p["metres"] < 0:
            raise ConfigError(f"{at}: metres must not be negative, got {p['metres']!r}")
        places.append(RoadPlace(name=str(p.get("name") or f"place-{i}"), lat=c.lat, lon=c.lon, metres=float(p["metres"])))
    return (None if factor is None else float(factor)), tuple(places)


def _school(raw: dict[str, Any], where: str, base: Path = Path(".")) -> School:
    if not isinstance(raw, dict) or not raw.get("id"):
        raise ConfigError(f"{where}: a school needs an id")
    sid = str(raw["id"])
    tz = str(raw.get("timezone", "Asia/Shanghai"))
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"{where} ({sid}): unknown timezone {tz!r}") from exc
    hours = raw.get("hours") or {}
    days = tuple(str(d).lower()[:3] for d in hours.get("days", School.days))
    bad = [d for d in days if d not in WEEKDAYS]
    if bad:
        raise ConfigError(f"{where} ({sid}): unknown weekday(s) {bad}")
    windows = tuple(
        Window(_time(w.get("start"), f"{where}.windows"), _time(w.get("end"), f"{where}.windows"))
        for w in raw.get("windows") or []
    )
    posts = tuple(
        Post(str(p["id"]), int(p.get("required_officers", 2))) for p in raw.get("posts") or []
    )
    try:
        closed = frozenset(d if isinstance(d, date) else date.fromisoformat(str(d)) for d in raw.get("closed_dates") or [])
    except ValueError as exc:
        raise ConfigError(f"{where} ({sid}): closed_dates must be YYYY-MM-DD: {exc}") from exc
    road_factor, road_table = _road(raw, f"{where} ({sid})")
    notify_raw = raw.get("notify") or {}
    if not isinstance(notify_raw, dict) or set(notify_raw) - set(NOTIFY_ROLES) or not all(isinstance(v, list) for v in notify_raw.values()):
        raise ConfigError(f"{where} ({sid}): notify maps roles ({', '.join(NOTIFY_ROLES)}) to lists of receiver names, got {notify_raw!r}")
    return School(
        id=sid,
        name=str(raw.get("name", sid)),
        timezone=tz,
        days=days,
        open=_time(hours.get("open", "07:30"), f"{where}.hours.open"),
        close=_time(hours.get("close", "17:30"), f"{where}.hours.close"),
        windows=windows,
        posts=posts,
        closed_dates=closed,
        notify={role: tuple(str(r) for r in names) for role, names in notify_raw.items()},
        address=str(raw.get("address") or ""),
        coordinates=_coordinates(raw.get("coordinates"), f"{where} ({sid})"),
        contacts=_contacts(raw.get("contacts"), f"{where} ({sid})"),
        site_plan=_site_plan(raw.get("site_plan"), base, f"{where} ({sid})"),
        road_factor=road_factor,
        road_table=road_table,
    )


def _device(raw: dict[str, Any], schools: dict[str, School], where: str) -> Device:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping")
    did = str(raw.get("id", ""))
    if not DEVICE_ID.match(did):
        raise ConfigError(f"{where}: device id {did!r} must be 1-64 chars of [A-Za-z0-9._-]")
    school = str(raw.get("school", ""))
    if school not in schools:
        raise ConfigError(f"{where} ({did}): unknown school {school!r}")
    kind = str(raw.get("kind", ""))
    if kind == UNIT_KIND:
        raise ConfigError(f"{where} ({did}): a {UNIT_KIND} is not a school's device: list it under units: (with its profile and area)")
    if kind not in DEVICE_KINDS:
        raise ConfigError(f"{where} ({did}): unknown kind {kind!r}; known: {', '.join(sorted(DEVICE_KINDS))}")
    external = {str(k): str(v) for k, v in (raw.get("external") or {}).items()}
    zone_map = raw.get("zone_map") or {}
    if not isinstance(zone_map, dict):
        raise ConfigError(f"{where} ({did}): zone_map must map third-party zones to huxue zones")
    return Device(
        id=did,
        school=school,
        kind=kind,
        zone=str(raw.get("zone", "")),
        external=external,
        zone_map={str(k): str(v) for k, v in zone_map.items()},
        loiter_zones=tuple(str(z) for z in raw.get("loiter_zones") or ()),
        press_actions=tuple(str(a) for a in raw.get("press_actions") or ()),
    )


def _unit(raw: Any, schools: dict[str, School], where: str) -> Unit:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping {{id, profile, area}}")
    uid = str(raw.get("id", ""))
    if not DEVICE_ID.match(uid):
        raise ConfigError(f"{where}: unit id {uid!r} must be 1-64 chars of [A-Za-z0-9._-]")
    unknown = sorted(str(k) for k in set(raw) - {"id", "kind", "profile", "area", "name", "callsign"})
    if unknown:
        raise ConfigError(f"{where} ({uid}): unknown key(s) {', '.join(unknown)}; known: area, callsign, id, kind, name, profile")
    kind = raw.get("kind", UNIT_KIND)
    if kind != UNIT_KIND:
        raise ConfigError(f"{where} ({uid}): a unit's kind is {UNIT_KIND} (or left out), got {kind!r}")
    profile = raw.get("profile")
    if profile not in UNIT_PROFILES:
        raise ConfigError(f"{where} ({uid}): unknown profile {profile!r}; known: {', '.join(UNIT_PROFILES)}")
    area = raw.get("area") or []
    if not isinstance(area, list):
        raise ConfigError(f"{where} ({uid}): area must be a list of school ids, got {area!r}")
    area_ids = tuple(dict.fromkeys(str(s) for s in area))
    missing = [s for s in area_ids if s not in schools]
    if missing:
        raise ConfigError(f"{where} ({uid}): unknown school(s) in area: {', '.join(repr(s) for s in missing)}")
    return Unit(id=uid, profile=profile, area=area_ids, name=str(raw.get("name") or ""), callsign=str(raw.get("callsign") or ""))


def load_registry(path: str | Path) -> Registry:
    path = Path(path)
    try:
        text = path.read_bytes()
        if path.suffix == ".json":  # same structure; parses ~200x faster than YAML (100,000 devices: 0.05 s vs 10 s)
            data = orjson.loads(text) or {}
        else:
            data = yaml.load(text.decode("utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read registry {path}: {exc.strerror}") from exc
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with schools: and devices:")
    schools: dict[str, School] = {}
    for i, raw in enumerate(data.get("schools") or []):
        s = _school(raw, f"{path}: schools[{i}]", path.resolve().parent)
        if s.id in schools:
            raise ConfigError(f"{path}: duplicate school id {s.id!r}")
        schools[s.id] = s
    devices: dict[str, Device] = {}
    external: dict[tuple[str, str], tuple[Device, ...]] = {}
    for i, raw in enumerate(data.get("devices") or []):
        d = _device(raw, schools, f"{path}: devices[{i}]")
        if d.id in devices:
            raise ConfigError(f"{path}: duplicate device id {d.id!r}")
        devices[d.id] = d
        for eco, name in d.external.items():
            same = external.get((eco, name), ())
            if any(o.kind == d.kind for o in same):
                raise ConfigError(f"{path}: {eco} name {name!r} is mapped to two {d.kind} devices")
            external[(eco, name)] = same + (d,)
    units: dict[str, Unit] = {}
    for i, raw in enumerate(data.get("units") or []):
        u = _unit(raw, schools, f"{path}: units[{i}]")
        if u.id in devices:
            raise ConfigError(f"{path}: units[{i}] ({u.id}): id is also a device's; units and devices share huxue/v1/devices/<id>")
        if u.id in units:
            raise ConfigError(f"{path}: duplicate unit id {u.id!r}")
        units[u.id] = u
    return Registry(schools=schools, devices=devices, external=external, units=units)
