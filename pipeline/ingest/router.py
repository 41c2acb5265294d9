"""One MQTT message -> the Kafka records it becomes. Pure apart from adapter memory.

Every message becomes records, never an exception: parser, adapter, shape-limit,
rate-limit and serialisation problems all become dead-letter records with a reason
code, so the bridge acknowledges the message after Kafka has the DLQ record and goes
on with the next one.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from pipeline import mqtt_auth
from pipeline.config import Config
from pipeline.ingest import native, shape
from pipeline.ingest.adapters.frigate import Frigate
from pipeline.ingest.adapters.zigbee2mqtt import Zigbee2Mqtt
from pipeline.ingest.ratelimit import TokenBuckets
from pipeline.records import UNIT_KIND, CanonicalEvent, Rejection, dlq_entry, dumps, iso_utc
from pipeline.registry import Registry

log = logging.getLogger("huxue.bridge")

REPLAY_MEMORY = 5000  # adapter results kept for MQTT redeliveries (DUP)
EXEMPT_KINDS = frozenset({"panic_button"})  # never rate-limited
URGENT_TYPES = frozenset({"panic.pressed"})  # also sent to the urgent topic (worker/app.py)
# A mobile unit's events go to the compacted units topic, keyed "<unit id>/<aspect>": one
# key per aspect, so compaction keeps the last position AND the last status and online
# state of each unit. Other types (device.tamper, ...) keep their type as the aspect.
UNIT_ASPECTS = {
    "unit.position": "position",
    "unit.status": "status",
    "device.online": "online",
    "device.offline": "online",
    "device.heartbeat": "heartbeat",
}


def unit_key(event: CanonicalEvent) -> str:
    """The units-topic key of a mobile unit's event: "car-07/position", "car-07/online", ..."""
    return f"{event.device_id}/{UNIT_ASPECTS.get(event.type, event.type)}"


@dataclass(frozen=True)
class Record:
    """A Kafka record to produce: an event, or a DLQ entry (`rejection` set)."""

    topic: str
    key: str | None
    value: bytes
    event: CanonicalEvent | None = None
    rejection: Rejection | None = None


def limits_of(cfg: Config) -> shape.Limits:
    b = cfg.bridge
    return shape.Limits(max_depth=b.max_attr_depth, max_items=b.max_attr_items, max_string_chars=b.max_string_chars)


class Router:
    def __init__(self, cfg: Config, registry: Registry, clock: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self.registry = registry
        self.topics = cfg.topics
        self.limits = limits_of(cfg)
        self.adapters = [
            a
            for a, on in (
                (Frigate(cfg.adapters.frigate, registry), cfg.adapters.frigate.enabled),
                (Zigbee2Mqtt(cfg.adapters.zigbee2mqtt, registry), cfg.adapters.zigbee2mqtt.enabled),
            )
            if on
        ]
        self.subscriptions = list(native.SUBSCRIPTIONS) + [t for a in self.adapters for t in a.subscriptions()]
        self.buckets = TokenBuckets(cfg.bridge.device_rate_per_second, cfg.bridge.device_burst, clock)
        # Adapters remember what they emitted (one event per Frigate object and zone, rising
        # edges), so a redelivered copy would yield nothing: it gets the first result again.
        self._results: OrderedDict[bytes, list[CanonicalEvent | Rejection]] = OrderedDict()

    # --- parsing -----------------------------------------------------------------------

    def parse(self, topic: str, payload: bytes, retained: bool, dup: bool, received_at: float) -> list[CanonicalEvent | Rejection]:
        """A message -> canonical events and rejections (maybe none), within the shape limits."""
        return [self._shaped(r) for r in self._parse(topic, payload, retained, dup, received_at)]

    def _parse(self, topic: str, payload: bytes, retained: bool, dup: bool, received_at: float) -> list[CanonicalEvent | Rejection]:
        max_bytes = self.cfg.bridge.max_payload_bytes
        if topic.startswith("huxue/"):
            return [native.parse_message(topic, payload, retained=retained, received_at=received_at, registry=self.registry, max_payload_bytes=max_bytes, limits=self.limits)]
        if len(payload) > max_bytes:
            return [Rejection("payload_too_large", f"payload is {len(payload)} bytes, limit {max_bytes}")]
        adapter = next((a for a in self.adapters if a.handles(topic)), None)
        if adapter is None:
            return [Rejection("bad_topic", f"no parser for topic {topic!r}")]
        digest = hashlib.sha1(topic.encode() + b"\0" + payload).digest()
        if dup and digest in self._results:
            return self._results[digest]
        results = adapter.parse(topic, payload, retained=retained, received_at=received_at)
        self._results[digest] = results
        self._results.move_to_end(digest)
        if len(self._results) > REPLAY_MEMORY:
            self._results.popitem(last=False)
        return results

    def _shaped(self, result: CanonicalEvent | Rejection) -> CanonicalEvent | Rejection:
        """Adapters copy third-party values into attrs and media: the same limits apply."""
        if not isinstance(result, CanonicalEvent):
            return result
        problem = shape.check(result.attrs, self.limits, "attrs") or (result.media is not None and shape.check(result.media, self.limits, "media"))
        return Rejection(problem.reason_code, problem.reason, result.device_id) if problem else result

    # --- records -----------------------------------------------------------------------

    def route(self, topic: str, payload: bytes, *, retained: bool = False, dup: bool = False, received_at: float) -> list[Record]:
        """A message -> Kafka records. Never raises (the bridge must outlive any input)."""
        try:
            results = self.parse(topic, payload, retained, dup, received_at)
            # a redelivered copy (DUP, set by the broker only) was admitted once: never refuse it now
            results = (None if dup else self._rate_limited(results)) or results
            return [rec for r in results for rec in self._records(r, topic, payload, received_at)]
        except Exception as exc:  # noqa: BLE001 - a bug meets odd input: dead-letter it, keep going
            log.exception("could not route a message", extra={"topic": _printable(topic)})
            return [self.dlq(Rejection("internal_error", f"{type(exc).__name__}: {exc}"), topic, payload, received_at)]

    def _rate_limited(self, results: list[CanonicalEvent | Rejection]) -> list[CanonicalEvent | Rejection] | None:
        """One token per message from its device; panic buttons are never limited."""
        if not self.buckets.enabled:
            return None
        ids = [r.device_id for r in results if r.device_id]
        if not ids or any(self._kind(d) in EXEMPT_KINDS for d in ids):
            return None
        device = ids[0]
        if self.buckets.allow(device):
            return None
        refused = self.buckets.report(device)
        if refused:
            log.warning(
                "device rate-limited: messages go to the DLQ",
                extra={"device": device, "refused": refused, "rate_per_s": self.buckets.rate, "burst": self.buckets.burst},
            )
        return [Rejection("rate_limited", f"device {device} sent more than {self.buckets.rate:g} messages/s (burst {self.buckets.burst:g})", device)]

    def _kind(self, device_id: str) -> str:
        d = self.registry.device(device_id)
        return d.kind if d else ""

    def _records(self, result: CanonicalEvent | Rejection, topic: str, payload: bytes, received_at: float) -> list[Record]:
        """The Kafka records of one result: a dead letter, or the event (alarm types also
        as an urgent copy first, which the worker reads without waiting behind telemetry;
        a mobile unit's event on the units topic instead, key `unit_key`)."""
        if isinstance(result, Rejection):
            return [self.dlq(result, topic, payload, received_at)]
        if self.cfg.mqtt.auth:
            result = dataclasses.replace(result, mqtt_account=mqtt_auth.account_of_topic(self.cfg, topic))
        try:
            value = dumps(result.to_dict())
        except Exception as exc:  # noqa: BLE001 - orjson refused it (shape limits should have caught it)
            return [self.dlq(Rejection("unserialisable", f"event could not be written as JSON: {type(exc).__name__}: {exc}", result.device_id), topic, payload, received_at)]
        if result.kind == UNIT_KIND:  # no school: the units topic, not the events topic
            return [Record(self.topics.units, unit_key(result), value, event=result)]
        event = Record(self.topics.events, result.school_id, value, event=result)
        if result.type in URGENT_TYPES:
            return [Record(self.topics.urgent, result.school_id, value, event=result), event]
        return [event]

    def dlq(self, rejection: Rejection, topic: str, payload: bytes, received_at: float) -> Record:
        """The DLQ record of a rejected message; falls back to a minimal entry, never raises."""
        try:
            value = dumps(dlq_entry(rejection, topic, payload, received_at))
        except Exception:  # noqa: BLE001 - e.g. a reason with characters JSON cannot carry
            value = dumps(
                {
                    "reason_code": rejection.reason_code,
                    "reason": _printable(rejection.reason),
                    "mqtt_topic": _printable(topic),
                    "received_at": iso_utc(received_at),
                    "payload_b64": base64.b64encode(bytes(payload[: 256 * 1024])).decode("ascii"),
                }
            )
        return Record(self.topics.events_dlq, rejection.device_id, value, rejection=rejection)


def _printable(text: str) -> str:
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")
