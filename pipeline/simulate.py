"""`huxue simulate`: realistic device traffic over MQTT from the registry.

Background of a school day: every device sends a heartbeat every `heartbeat_seconds`
(as real devices do, so device health sees them alive), and `rate` other events per
second: plate reads and staff face matches at the gates, crowd counts below the alarm
threshold. Background traffic raises no incidents by itself. On top of it, `--panic` presses a button and `--scenario FILE` plays a script
(steps at offsets from the start), e.g. scenarios/school-day.yaml.

Mobile units (registry `units:`) patrol their area: a loop through the coordinates of the
area's schools (nearest next), along straight segments at their profile's speed (config
units.speeds_kmh), reporting `unit.position` every `unit_seconds` (heading and speed_kmh
included), after `online` and `unit.status` `available` at the start; a scenario step may
change a unit's status (an `event` of type unit.status), which is remembered and sent on.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from pipeline.config import UnitSpeeds
from pipeline.records import dumps
from pipeline.registry import Device, Registry, Unit
from pipeline.rules.units import haversine_m

# (weight, device kind, event type) of background traffic besides heartbeats
MIX = [
    (40, "plate_camera", "plate.read"),
    (25, "face_camera", "face.match"),
    (35, "video_analytics", "video.crowd"),
]
PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤川青藏琼宁"


def event_topic(device_id: str) -> str:
    return f"huxue/v1/devices/{device_id}/events"


def status_topic(device_id: str) -> str:
    return f"huxue/v1/devices/{device_id}/status"


# --- mobile units' patrols (pure) --------------------------------------------------

LONE_SCHOOL_LOOP_DEG = 0.003  # a unit with one located school circles it: a square of ~650 m


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial great-circle bearing from point 1 to point 2: degrees clockwise from north, [0, 360)."""
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lon2 - lon1)
    x = math.sin(dl) * math.cos(p2)
    y = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(x, y)) % 360.0


def patrol_route(unit: Unit, registry: Registry, schools: list[str] | None = None) -> tuple[tuple[float, float], ...]:
    """The loop a unit drives: the coordinates of its area's schools (an area-less unit: of
    `schools`, default all), from the area's first, nearest next. One located school: a small
    square around it; none: () (the unit reports no position)."""
    points: list[tuple[float, float]] = []
    for sid in unit.area or sorted(schools if schools is not None else registry.schools):
        school = registry.school(sid)
        c = school.coordinates if school else None
        if c is not None and (c.lat, c.lon) not in points:
            points.append((c.lat, c.lon))
    if len(points) == 1:
        (lat, lon), d = points[0], LONE_SCHOOL_LOOP_DEG
        return ((lat + d, lon - d), (lat + d, lon + d), (lat - d, lon + d), (lat - d, lon - d))
    route = points[:1]
    rest = points[1:]
    while rest:
        nxt = min(rest, key=lambda p: haversine_m(*route[-1], *p))
        rest.remove(nxt)
        route.append(nxt)
    return tuple(route)


@dataclass(frozen=True)
class Fix:
    """Where a patrolling unit is: what its `unit.position` reports."""

    lat: float
    lon: float
    heading: float  # degrees from north, [0, 360)
    speed_kmh: float


@dataclass(frozen=True)
class Patrol:
    """A unit driving its route as a closed loop of straight legs at a constant speed."""

    unit_id: str
    route: tuple[tuple[float, float], ...]
    speed_kmh: float
    start_m: float = 0.0  # where on the loop it is at t = 0 (metres from route[0])

    @property
    def legs(self) -> tuple[float, ...]:
        n = len(self.route)
        return tuple(haversine_m(*self.route[i], *self.route[(i + 1) % n]) for i in range(n)) if n > 1 else ()

    @property
    def length_m(self) -> float:
        return sum(self.legs)

    def at(self, t: float) -> Fix:
        """The fix `t` seconds after the start (parked at route[0] without a loop or a speed)."""
        legs = self.legs
        total = sum(legs)
        if total <= 0 or self.speed_kmh <= 0:
            lat, lon = self.route[0]
            return Fix(lat, lon, 0.0, 0.0)
        d = (self.start_m + self.speed_kmh / 3.6 * t) % total
        for i, leg in enumerate(legs):
            if d < leg or i == len(legs) - 1:
                (lat1, lon1), (lat2, lon2) = self.route[i], self.route[(i + 1) % len(self.route)]
                f = min(1.0, d / leg) if leg > 0 else 0.0
                return Fix(lat1 + f * (lat2 - lat1), lon1 + f * (lon2 - lon1), bearing_deg(lat1, lon1, lat2, lon2), self.speed_kmh)
            d -= leg
        raise AssertionError("unreachable")


@dataclass
class Simulator:
    registry: Registry
    schools: list[str]
    seed: int = 7
    silent: set[str] = field(default_factory=set)  # devices whose heartbeats stop (scenario)
    unit_speeds: UnitSpeeds = field(default_factory=UnitSpeeds)  # config units.speeds_kmh

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.run_id = uuid.uuid4().hex[:6]
        self.n = 0
        chosen = set(self.schools)
        self.all_devices = [d for d in self.registry.devices.values() if d.school in chosen]
        self.by_kind: dict[str, list[Device]] = {}
        for d in self.all_devices:
            self.by_kind.setdefault(d.kind, []).append(d)
        # parents' cars: a pool per school, large enough that a plate rarely repeats
        self.plates = {
            s: [f"{self.rng.choice(PROVINCES)}{self.rng.choice('ABCDEFGH')}{self.rng.randint(10000, 99999)}" for _ in range(3000)]
            for s in self.schools
        }
        # mobile units of the chosen schools' areas (and area-less ones), with a random
        # generator of their own: the devices' traffic stays what it was for a seed
        self.unit_rng = random.Random(f"{self.seed}/units")
        self.units = [u for _, u in sorted(self.registry.units.items()) if not u.area or chosen & set(u.area)]
        self.patrols: dict[str, Patrol] = {}
        for u in self.units:
            route = patrol_route(u, self.registry, self.schools)
            if route:
                loop = Patrol(u.id, route, float(getattr(self.unit_speeds, u.profile)))
                self.patrols[u.id] = dataclasses.replace(loop, start_m=self.unit_rng.uniform(0, loop.length_m))
        self.unit_status = {u.id: "available" for u in self.units}

    def _ts(self, device: Device | Unit) -> str:
        sid = (device.area[0] if device.area else "") if isinstance(device, Unit) else device.school
        school = self.registry.school(sid) if sid else None
        return datetime.now(ZoneInfo(school.timezone) if school else timezone.utc).isoformat(timespec="milliseconds")

    def is_unit_topic(self, topic: str) -> bool:
        """A mobile unit's message (the CLI publishes it through the unit's own account)."""
        parts = topic.split("/")
        return len(parts) == 5 and self.registry.unit(parts[3]) is not None

    def unit_online(self, unit: Unit, online: bool = True) -> tuple[str, bytes]:
        return status_topic(unit.id), b"online" if online else b"offline"

    def unit_status_report(self, unit: Unit, status: str | None = None) -> tuple[str, bytes]:
        """A `unit.status` of the unit's current status (`status`: it changes to that first)."""
        if status is not None:
            self.unit_status[unit.id] = status
        return self.event(unit, "unit.status", {"status": self.unit_status[unit.id]})

    def unit_position(self, unit: Unit, t: float) -> tuple[str, bytes] | None:
        """Its `unit.position` `t` seconds after the start; None for a unit without a route."""
        patrol = self.patrols.get(unit.id)
        if patrol is None:
            return None
        fix = patrol.at(t)
        attrs = {
            "lat": round(fix.lat, 6),
            "lon": round(fix.lon, 6),
            "speed_kmh": round(fix.speed_kmh, 1),
            "heading": round(fix.heading, 1),
            "accuracy_m": self.unit_rng.randint(3, 15),
        }
        return self.event(unit, "unit.position", attrs)

    def goodbye(self) -> list[tuple[str, bytes]]:
        """At the end: every unit goes offline (as its last will would say)."""
        return [self.unit_online(u, False) for u in self.units]

    def event(self, device: Device | Unit, etype: str, attrs: dict, exercise: bool = False, extra_attrs: dict | None = None, media: dict | None = None) -> tuple[str, bytes]:
        self.n += 1
        body: dict[str, Any] = {"event_id": f"sim-{self.run_id}-{self.n}", "type": etype, "ts": self._ts(device), "attrs": {**attrs, **(extra_attrs or {})}}
        if exercise:
            body["exercise"] = True
        if media:
            body["media"] = media
        return event_topic(device.id), dumps(body)

    def heartbeat(self, device: Device) -> tuple[str, bytes]:
        return self.event(device, "device.heartbeat", {"battery": self.rng.randint(40, 100)})

    def background(self, extra_attrs: dict | None = None) -> tuple[str, bytes]:
        """One event of background traffic (not a heartbeat); raises no incident by itself."""
        weights = [w if self.by_kind.get(kind) else 0 for w, kind, _ in MIX]
        _, kind, etype = self.rng.choices(MIX, weights=weights)[0]
        device = self.rng.choice(self.by_kind[kind])
        attrs: dict = {}
        if etype == "plate.read":
            attrs = {"plate": self.rng.choice(self.plates[device.school]), "direction": self.rng.choice(["in", "out"])}
        elif etype == "face.match":
            attrs = {"watchlist": "staff", "person_ref": f"staff-{self.rng.randint(1, 120):03d}", "similarity": round(self.rng.uniform(0.86, 0.99), 3)}
        elif etype == "video.crowd":
            attrs = {"zone": device.zone, "count": self.rng.randint(3, 25)}
        return self.event(device, etype, attrs, extra_attrs=extra_attrs)

    def panic_button(self, target: str) -> Device:
        """`target` is a panic button id or a school id (its first button)."""
        device = self.registry.device(target)
        if device and device.kind == "panic_button":
            return device
        buttons = sorted((d for d in self.registry.devices_of(target) if d.kind == "panic_button"), key=lambda d: d.id)
        if not buttons:
            raise ValueError(f"{target!r} is neither a panic button nor a school with one")
        return buttons[0]

    def press(self, target: str, exercise: bool = False) -> tuple[Device, str, bytes]:
        device = self.panic_button(target)
        topic, payload = self.event(device, "panic.pressed", {}, exercise=exercise)
        return device, topic, payload


STATUS_EVERY = 6  # a unit repeats its status with every 6th position report


def schedule(sim: Simulator, rate: float, heartbeat_seconds: float, unit_seconds: float = 0) -> Iterator[tuple[float, Callable[[], tuple[str, bytes] | None]]]:
    """(offset seconds, make message) for background traffic, in time order, forever.

    Heartbeats are spread evenly so each device beats once per `heartbeat_seconds`; with
    `unit_seconds` > 0 each mobile unit goes online and reports its status at the start,
    then its position once per `unit_seconds` (spread evenly too).
    """
    devices = sorted(sim.all_devices, key=lambda d: d.id)
    patrolling = [u for u in sim.units if u.id in sim.patrols]
    streams: list[tuple[float, int, str]] = []
    if heartbeat_seconds > 0 and devices:
        streams.append((0.0, 0, "hb"))
    if rate > 0:
        streams.append((0.0, 0, "bg"))
    if unit_seconds > 0:
        for unit in sim.units:
            yield 0.0, (lambda u=unit: sim.unit_online(u))
            yield 0.0, (lambda u=unit: sim.unit_status_report(u))
        if patrolling:
            streams.append((0.0, 0, "un"))
    heapq.heapify(streams)
    while streams:
        at, i, kind = heapq.heappop(streams)
        if kind == "hb":
            device = devices[i % len(devices)]
            yield at, (lambda d=device: None if d.id in sim.silent else sim.heartbeat(d))
            heapq.heappush(streams, (at + heartbeat_seconds / len(devices), i + 1, kind))
        elif kind == "un":
            unit = patrolling[i % len(patrolling)]
            yield at, (lambda u=unit, t=at: sim.unit_position(u, t))
            if (i // len(patrolling)) % STATUS_EVERY == STATUS_EVERY - 1:
                # and its status now and then, as a terminal does: one report lost (a bridge
                # not yet subscribed at the very first start) does not leave it unknown
                yield at, (lambda u=unit: sim.unit_status_report(u))
            heapq.heappush(streams, (at + unit_seconds / len(patrolling), i + 1, kind))
        else:
            yield at, sim.background
            heapq.heappush(streams, (at + 1.0 / rate, i + 1, kind))


def run(
    publish: Callable[[str, bytes], object], sim: Simulator, rate: float, stop: threading.Event, duration: float | None = None, heartbeat_seconds: float = 0, unit_seconds: float = 0
) -> int:
    """Publish background traffic until `stop` or `duration`; returns the number published."""
    start = time.monotonic()
    count = 0
    for at, make in schedule(sim, rate, heartbeat_seconds, unit_seconds):
        if duration is not None and at >= duration:
            break
        wait = start + at - time.monotonic()
        if wait > 0 and stop.wait(wait):  # pacing to the schedule
            break
        if stop.is_set():
            break
        message = make()
        if message:
            publish(*message)
            count += 1
    return count


def paced(rate: float, stop: threading.Event, duration: float | None = None) -> Iterator[int]:
    """Yield 0, 1, 2, ... at `rate` per second until `stop` or `duration` (catches up after stalls)."""
    start = time.monotonic()
    i = 0
    while not stop.is_set():
        due = start + i / rate
        now = time.monotonic()
        if duration is not None and due - start >= duration:
            return
        if due > now:
            stop.wait(due - now)
            continue
        yield i
        i += 1


# --- scenarios --------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    at: float
    say: str = ""
    event: dict[str, Any] | None = None  # {device, type, attrs, exercise, media}
    press: str = ""  # a button or a school
    exercise: bool = False
    status: dict[str, str] | None = None  # {device, state: online|offline}
    silence_heartbeats: tuple[str, ...] = ()  # these devices stop sending heartbeats
    resume_heartbeats: tuple[str, ...] = ()


def parse_offset(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip().lower()
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit):
            try:
                return float(text[: -len(unit)]) * units[unit]
            except ValueError:
                break
    raise ValueError(f"cannot read time offset {value!r}; use e.g. 30s, 2m")


def load_scenario(path: str | Path, registry: Registry) -> tuple[str, list[Step]]:
    """A scenario file: `name`, and `steps` at offsets; each step may `repeat: {count, every}`."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    steps: list[Step] = []
    for i, raw in enumerate(data.get("steps") or []):
        where = f"{path}: steps[{i}]"
        if not isinstance(raw, dict) or "at" not in raw:
            raise ValueError(f"{where}: a step needs `at`")
        at = parse_offset(raw["at"])
        repeat = raw.get("repeat") or {"count": 1, "every": 0}
        event = raw.get("event")
        if event is not None:
            if not isinstance(event, dict) or not _sender(registry, event.get("device")) or not event.get("type"):
                raise ValueError(f"{where}: event needs a registered `device` (or mobile unit) and a `type`")
        status = raw.get("status")
        if status is not None and (not _sender(registry, status.get("device")) or status.get("state") not in ("online", "offline")):
            raise ValueError(f"{where}: status needs a registered `device` (or mobile unit) and state online|offline")
        for n in range(int(repeat.get("count", 1))):
            steps.append(
                Step(
                    at=at + n * parse_offset(repeat.get("every", 0)),
                    say=str(raw.get("say", "")) if n == 0 else "",
                    event=event,
                    press=str(raw.get("press", "")),
                    exercise=bool(raw.get("exercise", False)),
                    status=status,
                    silence_heartbeats=tuple(raw.get("silence_heartbeats") or ()),
                    resume_heartbeats=tuple(raw.get("resume_heartbeats") or ()),
                )
            )
    return str(data.get("name", Path(path).stem)), sorted(steps, key=lambda s: s.at)


def _sender(registry: Registry, name: Any) -> Device | Unit | None:
    """A scenario's `device`: a device or a mobile unit of the registry."""
    return registry.device(str(name)) or registry.unit(str(name))


def play(steps: list[Step], sim: Simulator, publish: Callable[..., object], stop: threading.Event, say: Callable[[str], None] = print) -> None:
    """Run a scenario's steps at their offsets (real time)."""
    start = time.monotonic()
    for step in steps:
        wait = start + step.at - time.monotonic()
        if wait > 0 and stop.wait(wait):  # pacing to the script
            return
        if step.say:
            say(step.say)
        sim.silent.update(step.silence_heartbeats)
        sim.silent.difference_update(step.resume_heartbeats)
        if step.event:
            device = _sender(sim.registry, step.event["device"])
            status = (step.event.get("attrs") or {}).get("status")
            if isinstance(device, Unit) and step.event["type"] == "unit.status" and isinstance(status, str):
                sim.unit_status[device.id] = status  # a status change: the unit goes on with it
            publish(*sim.event(device, step.event["type"], dict(step.event.get("attrs") or {}), exercise=bool(step.event.get("exercise")), media=step.event.get("media")))
        if step.press:
            _, topic, payload = sim.press(step.press, exercise=step.exercise)
            publish(topic, payload)
        if step.status:
            publish(status_topic(step.status["device"]), step.status["state"].encode(), retain=True)
