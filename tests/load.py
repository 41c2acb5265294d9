"""Steady load and what it measures, for the failover tests (cluster, scale-out): QoS 1
heartbeats at a fixed rate, panic presses at schools of their own, and arrival times."""

from __future__ import annotations

import itertools
import os
import threading
import time
from typing import Any

from harness import Collector
from pipeline.config import Config
from pipeline.mqtt_client import Publisher
from pipeline.records import dumps, iso_utc, loads

# background messages per second, QoS 1; HUXUE_TEST_LOAD_RATE measures the failover tests at another rate by hand
RATE = float(os.environ.get("HUXUE_TEST_LOAD_RATE", "200"))
PRESS_EVERY = 0.5  # seconds between panic presses, each at a school of its own


class Timed(Collector):
    """A Collector that also notes when each record arrived (wall clock)."""

    def __init__(self, cfg: Config, topic: str):
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        super().__init__(cfg, topic)

    def _run(self) -> None:
        while not self._stop.is_set():
            for rs in self._consumer.poll(timeout_ms=50).values():
                now = time.time()
                for r in rs:
                    self.raw.append(r)
                    record = loads(r.value)
                    self.records.append(record)
                    self.arrivals.append((now, record))


class Load:
    """Heartbeats at RATE msg/s from many cameras, and a panic press every PRESS_EVERY s at
    a school of its own (until every school was pressed), all QoS 1, each lane its own MQTT connection."""

    def __init__(self, cfg: Config, schools: list[str], rate: float = RATE, press_every: float = PRESS_EVERY):
        self.rate, self.press_every = rate, press_every
        self.beats, self.buttons = Publisher(cfg), Publisher(cfg)
        self.cameras = [f"{s}-cam-1" for s in schools]
        self.schools = iter(schools)
        self.sent: list[tuple[str, Any]] = []  # (event id, MQTTMessageInfo)
        self.presses: list[tuple[str, str, float, Any]] = []  # (school, event id, published at, info)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._beat, self._press)]

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def _beat(self) -> None:
        t0, n = time.monotonic(), 0
        while not self._stop.is_set():
            while n < (time.monotonic() - t0) * self.rate:
                eid = f"hb-{n}"
                body = {"event_id": eid, "type": "device.heartbeat", "ts": iso_utc(time.time())}
                device = self.cameras[n % len(self.cameras)]
                self.sent.append((eid, self.beats.publish(f"huxue/v1/devices/{device}/events", dumps(body))))
                n += 1
            self._stop.wait(0.02)  # pacing: RATE per second on average

    def _press(self) -> None:
        while not self._stop.wait(self.press_every):  # pacing: one press every PRESS_EVERY s
            school = next(self.schools, None)
            if school is None:
                return  # every school pressed once: the test waits for what it has
            eid = f"press-{school}"
            body = {"event_id": eid, "type": "panic.pressed", "ts": iso_utc(time.time())}
            at = time.time()
            self.presses.append((school, eid, at, self.buttons.publish(f"huxue/v1/devices/{school}-btn-1/events", dumps(body))))

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def close(self) -> None:
        self.stop()
        self.beats.close()
        self.buttons.close()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest time without a new record between `start` and `end`."""
    inside = sorted(t for t in times if start <= t <= end)
    points = [start, *inside, end]
    return max(b - a for a, b in itertools.pairwise(points))
