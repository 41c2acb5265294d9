"""Per-device token buckets: one chatty or broken device cannot starve the others.

Pure (the clock is passed in). A bucket holds up to `burst` tokens and refills at
`rate` per second; a message takes one token or is refused. Memory stays bounded: a
bucket idle long enough to be full again is the same as no bucket and is dropped
(kept at least a minute, so the one-log-line-per-minute promise holds), and at most
`max_devices` buckets exist (the least recently used go first).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

LOG_EVERY_SECONDS = 60.0


class _Bucket:
    __slots__ = ("tokens", "stamp", "refused", "logged_at")

    def __init__(self, tokens: float, now: float):
        self.tokens, self.stamp = tokens, now
        self.refused = 0  # since the last log line
        self.logged_at: float | None = None


class TokenBuckets:
    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic, max_devices: int = 200_000):
        self.rate, self.burst, self.clock = rate, max(1.0, burst), clock
        self.max_devices = max_devices
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()  # least recently used first
        self._idle = max(self.burst / rate if rate > 0 else 0.0, LOG_EVERY_SECONDS)
        self.refused_total = 0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def allow(self, key: str) -> bool:
        if not self.enabled:
            return True
        now = self.clock()
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = _Bucket(self.burst, now)
        else:
            b.tokens = min(self.burst, b.tokens + (now - b.stamp) * self.rate)
            b.stamp = now
            self._buckets.move_to_end(key)
        self._evict(now)
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return True
        b.refused += 1
        self.refused_total += 1
        return False

    def report(self, key: str) -> int:
        """Messages refused for `key` since its last report, when a log line is due (else 0).

        Due at the first refusal and then at most once a minute per device.
        """
        b = self._buckets.get(key)
        if b is None or b.refused == 0:
            return 0
        now = self.clock()
        if b.logged_at is not None and now - b.logged_at < LOG_EVERY_SECONDS:
            return 0
        n, b.refused, b.logged_at = b.refused, 0, now
        return n

    def __len__(self) -> int:
        return len(self._buckets)

    def _evict(self, now: float) -> None:
        while self._buckets:
            key, oldest = next(iter(self._buckets.items()))
            if len(self._buckets) > self.max_devices or now - oldest.stamp >= self._idle:
                del self._buckets[key]
            else:
                break
