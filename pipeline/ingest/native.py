"""Native MQTT message -> canonical event, or a rejection with a reason code.

Pure: no I/O, no clock (the arrival time is passed in). Reason codes are part of the
DLQ contract and listed in the README.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from pipeline.ingest import shape
from pipeline.records import EVENT_TYPES, UNIT_STATUSES, CanonicalEvent, Rejection, iso_utc, parse_ts
from pipeline.registry import DEVICE_ID, Registry, Unit

TOPIC = re.compile(r"^huxue/v1/devices/([^/]+)/(events|status)$")
SUBSCRIPTIONS = ("huxue/v1/devices/+/events", "huxue/v1/devices/+/status")

# Attributes some rules depend on: (name, check, description). Others pass through.
_NUMBER = (int, float)
_ATTR_RULES: dict[str, list[tuple[str, bool, Any, str]]] = {
    # (attr, required, predicate, what it must be)
    "face.match": [
        ("watchlist", False, lambda v: isinstance(v, str), "a string"),
        ("person_ref", False, lambda v: isinstance(v, str), "a string"),
        ("similarity", False, lambda v: isinstance(v, _NUMBER) and not isinstance(v, bool) and 0 <= v <= 1, "a number in [0, 1]"),
    ],
    "plate.read": [
        ("plate", True, lambda v: isinstance(v, str) and 0 < len(v.strip()) <= 32, "a non-empty string"),
        ("direction", False, lambda v: v in ("in", "out"), "'in' or 'out'"),
    ],
    "guard.checkin": [
        ("post_id", True, lambda v: isinstance(v, str) and v != "", "a non-empty string"),
        ("officer_id", True, lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    ],
    "guard.checkout": [
        ("post_id", True, lambda v: isinstance(v, str) and v != "", "a non-empty string"),
        ("officer_id", True, lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    ],
    "video.crowd": [("count", False, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a non-negative integer")],
    "video.loiter": [("duration_s", False, lambda v: isinstance(v, _NUMBER) and not isinstance(v, bool) and v >= 0, "a non-negative number")],
    "sound.scream": [("level_db", False, lambda v: isinstance(v, _NUMBER) and not isinstance(v, bool), "a number")],
    "device.heartbeat": [
        ("battery", False, lambda v: isinstance(v, _NUMBER) and not isinstance(v, bool) and 0 <= v <= 100, "a number in [0, 100]")
    ],
    # mobile units (registry `units:`)
    "unit.position": [
        ("lat", True, lambda v: isinstance(v, _NUMBER) and not isinstance(v, bool) and -90 <= v <= 90, "a number in [-90, 90]"),
        ("lon", True, lambda v: isinstance(v, _NUMBER) and not isinstance(v, bool) and -180 <= v <= 180, "a number in [-180, 180]"),
        ("speed_kmh", True, lambda v: isinstance(v, _NUMBER) and not isinstance(v, bool) and v >= 0, "a non-negative number"),
        ("heading", True, lambda v: isinstance(v, _NUMBER) and not isinstance(v, bool) and 0 <= v <= 360, "a number in [0, 360]"),
        ("accuracy_m", False, lambda v: isinstance(v, _NUMBER) and not isinstance(v, bool) and v >= 0, "a non-negative number"),
    ],
    "unit.status": [("status", True, lambda v: v in UNIT_STATUSES, f"one of {', '.join(UNIT_STATUSES)}")],
}


def parse_message(
    topic: str,
    payload: bytes,
    *,
    retained: bool,
    received_at: float,
    registry: Registry,
    max_payload_bytes: int = 64 * 1024,
    limits: shape.Limits = shape.DEFAULT,
) -> CanonicalEvent | Rejection:
    m = TOPIC.match(topic)
    if not m or not DEVICE_ID.match(m.group(1)):
        return Rejection("bad_topic", f"topic {topic!r} is not huxue/v1/devices/{{device_id}}/events|status")
    device_id, channel = m.group(1), m.group(2)
    device = registry.device(device_id) or registry.unit(device_id)
    if device is None:
        return Rejection("unknown_device", f"device {device_id!r} is not in the registry", device_id)
    # A mobile unit belongs to no school: its events carry school_id "" and kind mobile_unit
    # (for the bridge to route by unit, not by school: issue 13).
    school_id, zone_of = ("", "") if isinstance(device, Unit) else (device.school, device.zone)
    if len(payload) > max_payload_bytes:
        return Rejection("payload_too_large", f"payload is {len(payload)} bytes, limit {max_payload_bytes}", device_id)

    if channel == "status":
        state = payload.strip().decode("utf-8", "replace").lower()
        if state not in ("online", "offline"):
            return Rejection("bad_status", f"status payload must be 'online' or 'offline', got {state[:40]!r}", device_id)
        now = iso_utc(received_at)
        return CanonicalEvent(
            # A status has no id of its own; its arrival (ms) makes one. Status events are
            # idempotent state, so a redelivered copy with a new id is harmless.
            event_id=f"status-{state}-{int(received_at * 1000)}",
            type=f"device.{state}",
            ts=now,
            device_id=device_id,
            school_id=school_id,
            kind=device.kind,
            zone=zone_of,
            source="native",
            mqtt_topic=topic,
            received_at=now,
            attrs={"retained": True} if retained else {},
        )

    if retained:
        # Retained copies are replayed at every subscribe: an old event, not a new one.
        return Rejection("retained_replay", "retained message on an event topic (replayed at subscribe); not a new event", device_id)
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return Rejection("bad_json", f"payload is not JSON: {exc}", device_id)
    if not isinstance(body, dict):
        return Rejection("not_an_object", f"payload must be a JSON object, got {type(body).__name__}", device_id)
    return _event(body, device_id, school_id, device.kind, zone_of, topic, received_at, limits)


def _event(
    body: dict[str, Any], device_id: str, school: str, kind: str, zone: str, topic: str, received_at: float, limits: shape.Limits = shape.DEFAULT
) -> CanonicalEvent | Rejection:
    event_id = body.get("event_id")
    if event_id is None:
        return Rejection("missing_field", "field 'event_id' is required", device_id)
    if not isinstance(event_id, str) or not 1 <= len(event_id) <= 128:
        return Rejection("invalid_field", "field 'event_id' must be a string of 1-128 chars", device_id)
    etype = body.get("type")
    if etype is None:
        return Rejection("missing_field", "field 'type' is required", device_id)
    if not isinstance(etype, str) or etype not in EVENT_TYPES:
        return Rejection("unknown_type", f"type {str(etype)[:60]!r} is not a known event type", device_id)
    kinds = EVENT_TYPES[etype]
    if kinds is not None and kind not in kinds:
        return Rejection("type_not_allowed", f"type {etype!r} is not allowed for a {kind} device", device_id)
    if "ts" not in body:
        return Rejection("missing_field", "field 'ts' is required", device_id)
    try:
        ts = parse_ts(body["ts"])
    except ValueError as exc:
        return Rejection("invalid_field", f"field 'ts': {exc}", device_id)
    attrs = body.get("attrs", {})
    if attrs is None:
        attrs = {}
    if not isinstance(attrs, dict):
        return Rejection("invalid_field", "field 'attrs' must be an object", device_id)
    media = body.get("media")
    if media is not None and not isinstance(media, dict):
        return Rejection("invalid_field", "field 'media' must be an object", device_id)
    # attrs and media are copied to Kafka as they are: bounded before anything reads them
    problem = shape.check(attrs, limits, "attrs") or (media is not None and shape.check(media, limits, "media"))
    if problem:
        return Rejection(problem.reason_code, problem.reason, device_id)
    for name, required, ok, what in _ATTR_RULES.get(etype, ()):
        if name not in attrs:
            if required:
                return Rejection("missing_field", f"{etype} needs attrs.{name}", device_id)
            continue
        if not ok(attrs[name]):
            return Rejection("invalid_field", f"attrs.{name} must be {what}", device_id)
    exercise = body.get("exercise", False)
    if exercise is None:
        exercise = False
    if not isinstance(exercise, bool):
        return Rejection("invalid_field", "field 'exercise' must be a boolean", device_id)
    event_zone = attrs.get("zone")
    return CanonicalEvent(
        event_id=event_id,
        type=etype,
        ts=iso_utc(ts),
        device_id=device_id,
        school_id=school,
        kind=kind,
        zone=event_zone if isinstance(event_zone, str) and event_zone else zone,
        source="native",
        mqtt_topic=topic,
        received_at=iso_utc(received_at),
        attrs=attrs,
        media=media,
        exercise=exercise,
    )
