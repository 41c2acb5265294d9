"""The priority lane: panic presses never queue behind another device's flood.

One MQTT subscription is FIFO, so a press published after 20,000 messages of a broken
camera would wait for all of them. The bridge runs a second MQTT session that
subscribes only to the exact event topics of panic buttons; the broker queues those
few messages separately and delivers them at once.

Both sessions receive a press. `Claims` decides which one forwards it: the first
session to see a message claims it; the other acknowledges its copy without producing.
A message is only skipped when the other session holds its own copy (unacknowledged
until Kafka confirmed it, redelivered by the broker after any failure), so skipping
never loses anything. Kafka sees one copy, except when a claim was forgotten (bounded
memory) or the process restarted in between: then a duplicate, removed downstream by
(device_id, event_id) as for any redelivery.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from pipeline.config import Config
from pipeline.registry import Registry

WILDCARDS = ("+", "#")


def topics(cfg: Config, registry: Registry) -> list[str]:
    """Exact event topics of every panic button: native, and Zigbee2MQTT state topics."""
    out: set[str] = set()
    z2m = cfg.adapters.zigbee2mqtt
    for d in registry.devices.values():
        if d.kind != "panic_button":
            continue
        out.add(f"huxue/v1/devices/{d.id}/events")
        name = d.external.get("zigbee2mqtt")
        if z2m.enabled and name and not any(w in name for w in WILDCARDS):
            # the adapter resolves `<base>/<name>` as the name with and without its base
            out.update(f"{base}/{name}" for base in z2m.base_topics)
            if any(name.startswith(f"{base}/") for base in z2m.base_topics):
                out.add(name)
    return sorted(out)


class Claims:
    """Which session forwards a message seen by both (thread-safe, bounded)."""

    def __init__(self, limit: int = 20_000):
        self._owner: OrderedDict[bytes, str] = OrderedDict()
        self._lock = threading.Lock()
        self._limit = limit

    def claim(self, digest: bytes, lane: str) -> bool:
        """True if `lane` forwards the message: it saw it first (or sees it again, redelivered)."""
        with self._lock:
            owner = self._owner.get(digest)
            if owner is None:
                self._owner[digest] = lane
                if len(self._owner) > self._limit:
                    self._owner.popitem(last=False)
                return True
            return owner == lane
