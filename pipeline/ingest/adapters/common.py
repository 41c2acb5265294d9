"""What the adapters share: timestamps in every producer's format, availability words,
canonical event construction, and a bounded memory of what was already emitted."""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pipeline.ingest import shape
from pipeline.records import CanonicalEvent, Rejection, in_range, iso_utc, parse_ts
from pipeline.registry import Device, Registry

UP = {"online", "true", "on", "1"}
DOWN = {"offline", "false", "off", "0", "stopped"}


def any_ts(value: Any, tz: str) -> tuple[float, bool]:
    """Epoch seconds from any producer format, and whether a zone had to be assumed.

    Float epoch seconds (Frigate, Shelly); integer epoch milliseconds (or seconds);
    ISO 8601 with `Z` or an offset; local time without a zone -> the school's zone.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, (int, float)):
        seconds = value / 1000.0 if value > 1e11 else float(value)
        return in_range(seconds, value), False
    text = str(value).strip()
    try:
        return parse_ts(text), False
    except ValueError:
        pass
    try:
        naive = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a time: {text[:40]!r}") from None
    if naive.tzinfo is not None:
        raise ValueError(f"not a time: {text[:40]!r}")
    try:
        return in_range(naive.replace(tzinfo=ZoneInfo(tz)).timestamp(), text), True
    except (OverflowError, OSError):
        raise ValueError(f"time {text[:40]!r} is out of range") from None


def number(value: Any) -> int | float | None:
    """`value` if it is a number a canonical event may carry (finite, within ±2^53), else None.

    Third-party fields copied into attrs (scores, link quality, fps) are informational:
    an absurd value is left out rather than costing the whole event.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if shape.check(value) is None else None


def availability(payload: bytes) -> str | None:
    """`online` / `offline` from plain text (any case) or {"state": ...}; None if neither."""
    text = payload.strip().decode("utf-8", "replace")
    if text.startswith("{"):
        try:
            import orjson

            body = orjson.loads(text)
            text = str(body.get("state", "")) if isinstance(body, dict) else ""
        except ValueError:
            return None
    word = text.strip().lower()
    return "online" if word in UP else "offline" if word in DOWN else None


def school_tz(registry: Registry, device: Device) -> str:
    school = registry.school(device.school)
    return school.timezone if school else "UTC"


def event(
    device: Device,
    event_id: str,
    etype: str,
    ts: float,
    topic: str,
    received_at: float,
    source: str,
    attrs: dict[str, Any] | None = None,
    media: dict[str, Any] | None = None,
    zone: str = "",
) -> CanonicalEvent:
    return CanonicalEvent(
        event_id=event_id[:128],
        type=etype,
        ts=iso_utc(ts),
        device_id=device.id,
        school_id=device.school,
        kind=device.kind,
        zone=zone or device.zone,
        source=source,
        mqtt_topic=topic,
        received_at=iso_utc(received_at),
        attrs=attrs or {},
        media=media,
    )


def unknown(ecosystem: str, name: str) -> Rejection:
    return Rejection("unknown_device", f"{ecosystem} name {name!r} is not in the registry (external: {{{ecosystem}: ...}})")


class Seen:
    """A bounded, insertion-ordered set: what an adapter already emitted."""

    def __init__(self, limit: int = 20000):
        self._items: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def add(self, key: str) -> bool:
        """True if new."""
        if key in self._items:
            return False
        self._items[key] = None
        if len(self._items) > self._limit:
            self._items.popitem(last=False)
        return True
