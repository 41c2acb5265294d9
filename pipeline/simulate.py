"""`huxue simulate`: realistic device traffic over MQTT from the registry.

A school day's background: heartbeats from every device, plate reads and staff face
matches at the gates, crowd counts at drop-off, the odd loitering or fall report from
video analytics. On top of it, panic presses can be injected (`--panic`).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from pipeline.mqtt_client import Publisher
from pipeline.records import dumps
from pipeline.registry import Device, Registry

# (weight, kind, type): the mix of background traffic
MIX = [
    (60, None, "device.heartbeat"),
    (15, "plate_camera", "plate.read"),
    (10, "face_camera", "face.match"),
    (8, "video_analytics", "video.crowd"),
    (4, "video_analytics", "video.loiter"),
    (3, "video_analytics", "video.fall"),
]
PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤川青藏琼宁"


def event_topic(device_id: str) -> str:
    return f"huxue/v1/devices/{device_id}/events"


@dataclass
class Simulator:
    registry: Registry
    schools: list[str]
    seed: int = 7

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.run_id = uuid.uuid4().hex[:6]
        self.n = 0
        chosen = set(self.schools)
        devices = [d for d in self.registry.devices.values() if d.school in chosen]
        self.by_kind: dict[str, list[Device]] = {}
        for d in devices:
            self.by_kind.setdefault(d.kind, []).append(d)
        self.all_devices = devices
        self.plates = [f"{self.rng.choice(PROVINCES)}{self.rng.choice('ABCDEFGH')}{self.rng.randint(10000, 99999)}" for _ in range(400)]

    def _ts(self, device: Device) -> str:
        school = self.registry.school(device.school)
        tz = ZoneInfo(school.timezone if school else "UTC")
        return datetime.now(tz).isoformat(timespec="milliseconds")

    def event(self, device: Device, etype: str, attrs: dict, exercise: bool = False, extra_attrs: dict | None = None) -> tuple[str, bytes]:
        self.n += 1
        body = {"event_id": f"sim-{self.run_id}-{self.n}", "type": etype, "ts": self._ts(device), "attrs": {**attrs, **(extra_attrs or {})}}
        if exercise:
            body["exercise"] = True
        return event_topic(device.id), dumps(body)

    def background(self, extra_attrs: dict | None = None) -> tuple[str, bytes]:
        """One message of background traffic."""
        weights = [w if (kind is None or self.by_kind.get(kind)) else 0 for w, kind, _ in MIX]
        _, kind, etype = self.rng.choices(MIX, weights=weights)[0]
        device = self.rng.choice(self.by_kind[kind] if kind else self.all_devices)
        attrs: dict = {}
        if etype == "device.heartbeat":
            attrs = {"battery": self.rng.randint(35, 100)}
        elif etype == "plate.read":
            attrs = {"plate": self.rng.choice(self.plates), "direction": self.rng.choice(["in", "out"])}
        elif etype == "face.match":
            attrs = {"watchlist": "staff", "person_ref": f"staff-{self.rng.randint(1, 120):03d}", "similarity": round(self.rng.uniform(0.86, 0.99), 3)}
        elif etype == "video.crowd":
            attrs = {"zone": device.zone, "count": self.rng.randint(5, 60)}
        elif etype == "video.loiter":
            attrs = {"zone": device.zone, "duration_s": self.rng.randint(30, 200)}
        elif etype == "video.fall":
            attrs = {"zone": device.zone}
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


def run(publisher: Publisher, sim: Simulator, rate: float, stop: threading.Event, duration: float | None = None) -> int:
    """Publish background traffic at `rate`/s; returns the number of messages published."""
    count = 0
    for _ in paced(rate, stop, duration):
        topic, payload = sim.background()
        publisher.publish(topic, payload)
        count += 1
    return count
