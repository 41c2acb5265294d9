"""What incidents keep of their inputs, bounded: no input can make the state or an alert
too large or too deep to write.

* `evidence_of(event)`: the event's id, device, type, time and zone, plus its `attrs` and
  `media` reduced to a few scalars (text cut; nested values and integers JSON cannot carry
  dropped). Rules decide on the event itself; evidence is for people and the console.
* `fit(items, budget)`: the first item (the trigger) and as many of the latest as fit in
  `budget` bytes of JSON and MAX_EVIDENCE items. Incidents (state) and alerts both keep
  their evidence through it.
"""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.records import CanonicalEvent

MAX_TEXT = 256  # characters of any text taken from an input
MAX_URL = 1024  # media values are links: longer, or they point nowhere
MAX_KEY = 64
MAX_KEYS = 16  # of attrs
MAX_MEDIA_KEYS = 4  # snapshot, thumbnail, clip, one more
MAX_EVIDENCE = 50
# attrs kept first when an event carries more than MAX_KEYS: what rules, the console and
# operators read (adapters' ids, watchlist and plate facts, posts, sensor levels)
KNOWN = (
    "zone", "person_ref", "watchlist", "similarity", "plate", "direction", "post_id", "officer_id", "count",
    "level_db", "door", "battery", "score", "label", "known_as", "frigate_id", "frigate_zone", "duration_s",
    "snapshot_url", "thumbnail_url", "clip_url",
)
_DROP = object()


def clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[:limit]


def scalars(values: Any, max_text: int = MAX_TEXT, max_keys: int = MAX_KEYS) -> dict[str, Any]:
    """At most `max_keys` of `values`' scalar entries, known keys first, text clipped."""
    if not isinstance(values, dict):
        return {}
    out: dict[str, Any] = {}
    for k in sorted(values, key=lambda k: k not in KNOWN):  # stable: otherwise in order
        v = _scalar(values[k], max_text)
        if v is not _DROP:
            out[clip(str(k), MAX_KEY)] = v
            if len(out) == max_keys:
                break
    return out


def _scalar(v: Any, max_text: int) -> Any:
    if v is None or isinstance(v, (bool, float)):
        return v
    if isinstance(v, int):
        return v if -(2**63) <= v < 2**64 else _DROP  # orjson writes 64-bit integers only
    if isinstance(v, str):
        return clip(v, max_text)
    return _DROP


def evidence_of(event: CanonicalEvent) -> dict[str, Any]:
    item: dict[str, Any] = {
        "event_id": clip(event.event_id),
        "device_id": clip(event.device_id),
        "type": clip(event.type),
        "ts": clip(event.ts),
        "zone": clip(event.zone),
    }
    if attrs := scalars(event.attrs):
        item["attrs"] = attrs
    if media := scalars(event.media, MAX_URL, MAX_MEDIA_KEYS):
        item["media"] = media
    return item


def size(value: Any) -> int:
    """Bytes of `value` as JSON (dataclasses included)."""
    return len(orjson.dumps(value))


def fit(items: tuple[dict[str, Any], ...], budget: int) -> tuple[dict[str, Any], ...]:
    """The first item and as many of the latest as fit in `budget` bytes and MAX_EVIDENCE items."""
    if len(items) <= MAX_EVIDENCE and size(items) <= budget:
        return items
    room = budget - size(items[0]) - 2  # [ ]
    latest: list[dict[str, Any]] = []
    for item in reversed(items[1:]):
        room -= size(item) + 1  # and a comma
        if room < 0 or len(latest) == MAX_EVIDENCE - 1:
            break
        latest.append(item)
    return (items[0], *reversed(latest))
