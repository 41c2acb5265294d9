"""`huxue simulate`: realistic device traffic over MQTT from the registry.

Background of a school day: every device sends a heartbeat every `heartbeat_seconds`
(as real devices do, so device health sees them alive), and `rate` other events per
second: plate reads and staff face matches at the gates, crowd counts below the alarm
threshold. Background traffic raises no incidents by itself. On top of it, `--panic` presses a button and `--scenario FILE` plays a script
(steps at offsets from the start), e.g. scenarios/school-day.yaml.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from pipeline.records import dumps
from pipeline.registry import Device, Registry

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


@dataclass
class Simulator:
    registry: Registry
    schools: list[str]
    seed: int = 7
    silent: set[str] = field(default_factory=set)  # devices whose heartbeats stop (scenario)

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

    def _ts(self, device: Device) -> str:
        school = self.registry.school(device.school)
        return datetime.now(ZoneInfo(school.timezone if school else "UTC")).isoformat(timespec="milliseconds")

    def event(self, device: Device, etype: str, attrs: dict, exercise: bool = False, extra_attrs: dict | None = None, media: dict | None = None) -> tuple[str, bytes]:
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


def schedule(sim: Simulator, rate: float, heartbeat_seconds: float) -> Iterator[tuple[float, Callable[[], tuple[str, bytes] | None]]]:
    """(offset seconds, make message) for background traffic, in time order, forever.

    Heartbeats are spread evenly so each device beats once per `heartbeat_seconds`.
    """
    devices = sorted(sim.all_devices, key=lambda d: d.id)
    streams: list[tuple[float, int, str]] = []
    if heartbeat_seconds > 0 and devices:
        streams.append((0.0, 0, "hb"))
    if rate > 0:
        streams.append((0.0, 0, "bg"))
    heapq.heapify(streams)
    while streams:
        at, i, kind = heapq.heappop(streams)
        if kind == "hb":
            device = devices[i % len(devices)]
            yield at, (lambda d=device: None if d.id in sim.silent else sim.heartbeat(d))
            heapq.heappush(streams, (at + heartbeat_seconds / len(devices), i + 1, kind))
        else:
            yield at, sim.background
            heapq.heappush(streams, (at + 1.0 / rate, i + 1, kind))


def run(publish: Callable[[str, bytes], object], sim: Simulator, rate: float, stop: threading.Event, duration: float | None = None, heartbeat_seconds: float = 0) -> int:
    """Publish background traffic until `stop` or `duration`; returns the number published."""
    start = time.monotonic()
    count = 0
    for at, make in schedule(sim, rate, heartbeat_seconds):
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
            if not isinstance(event, dict) or not registry.device(str(event.get("device"))) or not event.get("type"):
                raise ValueError(f"{where}: event needs a registered `device` and a `type`")
        status = raw.get("status")
        if status is not None and (not registry.device(str(status.get("device"))) or status.get("state") not in ("online", "offline")):
            raise ValueError(f"{where}: status needs a registered `device` and state online|offline")
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
            device = sim.registry.device(step.event["device"])
            publish(*sim.event(device, step.event["type"], dict(step.event.get("attrs") or {}), exercise=bool(step.event.get("exercise")), media=step.event.get("media")))
        if step.press:
            _, topic, payload = sim.press(step.press, exercise=step.exercise)
            publish(topic, payload)
        if step.status:
            publish(status_topic(step.status["device"]), step.status["state"].encode(), retain=True)
