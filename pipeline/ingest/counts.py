"""A bounded per-device tally (QoS 0 arrivals): enough to name the worst offenders in a log line."""

from __future__ import annotations

import heapq

OTHERS = "(others)"


class DeviceCounts:
    def __init__(self, max_devices: int = 10_000):
        self.max_devices = max_devices
        self.total = 0
        self._by_device: dict[str, int] = {}

    def add(self, device: str, n: int = 1) -> None:
        self.total += n
        if device not in self._by_device and len(self._by_device) >= self.max_devices:
            device = OTHERS  # the dict never grows past max_devices + 1
        self._by_device[device] = self._by_device.get(device, 0) + n

    def top(self, n: int = 3) -> list[tuple[str, int]]:
        return heapq.nlargest(n, dict(self._by_device).items(), key=lambda kv: kv[1])
