"""The contract's records (CONTRACT.md §1, §3-§5) and their one JSON encoding (orjson).

Everything that crosses a process boundary is one of these. Times on the wire are
RFC 3339 UTC strings with milliseconds and a `Z`; inside, epoch seconds (float).
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

# type -> device kinds allowed to send it (None: any kind). CONTRACT.md §1.
EVENT_TYPES: dict[str, frozenset[str] | None] = {
    "panic.pressed": frozenset({"panic_button"}),
    "face.match": frozenset({"face_camera"}),
    "plate.read": frozenset({"plate_camera"}),
    "fence.breach": frozenset({"fence"}),
    "video.intrusion": frozenset({"video_analytics"}),
    "video.fight": frozenset({"video_analytics"}),
    "video.fall": frozenset({"video_analytics"}),
    "video.crowd": frozenset({"video_analytics"}),
    "video.loiter": frozenset({"video_analytics"}),
    "sound.scream": frozenset({"audio_sensor"}),
    "door.forced": frozenset({"access_control"}),
    "guard.checkin": frozenset({"guard_terminal"}),
    "guard.checkout": frozenset({"guard_terminal"}),
    "device.tamper": None,
    "device.heartbeat": None,
}
# Produced by the bridge from `.../status` messages, never accepted from a device's event topic.
STATUS_TYPES = ("device.online", "device.offline")
DEVICE_KINDS = frozenset(
    {
        "panic_button",
        "face_camera",
        "plate_camera",
        "fence",
        "video_analytics",
        "audio_sensor",
        "access_control",
        "guard_terminal",
    }
)
SEVERITIES = ("Extreme", "Severe", "Moderate", "Minor")
COMMANDS = ("ack", "arrive", "resolve", "false_alarm")


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def iso_utc(epoch: float) -> str:
    """Epoch seconds -> `2026-11-29T07:42:03.300Z`."""
    dt = datetime.fromtimestamp(epoch, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


# Times huxue can represent and write back (iso_utc): 1970 up to the end of year 9998.
_MAX_EPOCH = 253370764800.0


def parse_ts(value: Any) -> float:
    """RFC 3339 with offset, or integer epoch milliseconds -> epoch seconds.

    Raises ValueError with a reason for anything else (naive times, floats, bools,
    times before 1970 or past year 9998).
    """
    epoch = _parse_ts(value)
    if not 0 <= epoch < _MAX_EPOCH:
        raise ValueError(f"ts {value!r} is out of range")
    return epoch


def _parse_ts(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("ts must be RFC 3339 or epoch milliseconds, got a boolean")
    if isinstance(value, int):
        if not 0 <= value < 10**14:
            raise ValueError(f"ts {value} is not epoch milliseconds")
        return value / 1000.0
    if not isinstance(value, str):
        raise ValueError(f"ts must be RFC 3339 or integer epoch milliseconds, got {type(value).__name__}")
    text = value.strip()
    if text.endswith(("z", "Z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"ts {value!r} is not RFC 3339") from None
    if "T" not in text.upper() and " " not in text:
        raise ValueError(f"ts {value!r} has no time part")
    if dt.tzinfo is None:
        raise ValueError(f"ts {value!r} has no UTC offset")
    return dt.timestamp()


@dataclass(frozen=True)
class CanonicalEvent:
    """What the bridge writes to `huxue.events` (key: school_id)."""

    event_id: str
    type: str
    ts: str
    device_id: str
    school_id: str
    kind: str
    zone: str
    source: str
    mqtt_topic: str
    received_at: str
    attrs: dict[str, Any] = field(default_factory=dict)
    media: dict[str, Any] | None = None
    exercise: bool = False

    @property
    def key(self) -> str:
        """Identity for de-duplication: redelivery of the same (device, event) is a no-op."""
        return f"{self.device_id}/{self.event_id}"

    @property
    def ts_epoch(self) -> float:
        return parse_ts(self.ts)

    @property
    def received_epoch(self) -> float:
        return parse_ts(self.received_at)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["media"] is None:
            del d["media"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CanonicalEvent:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class Command:
    """An operator command on `huxue.commands` (key: school_id)."""

    command: str
    incident_id: str
    by: str
    at: str
    note: str = ""
    # Optional, added by huxue's own clients: lets the sender find its outcome.
    command_id: str = ""
    school_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v != "" or k in ("note",)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Command:
        """Validate a decoded command; ValueError says what is wrong."""
        if not isinstance(d, dict):
            raise ValueError("command must be a JSON object")
        for name in ("command", "incident_id", "by"):
            if not isinstance(d.get(name), str) or not d[name]:
                raise ValueError(f"field {name!r} is required and must be a non-empty string")
        if d["command"] not in COMMANDS:
            raise ValueError(f"unknown command {d['command']!r}; one of {', '.join(COMMANDS)}")
        at = d.get("at")
        if at is None or at == "":
            at = ""
        else:
            epoch = parse_ts(at)  # raises with the reason
            at = at if isinstance(at, str) else iso_utc(epoch)
        return cls(
            command=d["command"],
            incident_id=d["incident_id"],
            by=d["by"],
            at=at,
            note=str(d.get("note") or ""),
            command_id=str(d.get("command_id") or ""),
            school_id=str(d.get("school_id") or ""),
        )


@dataclass(frozen=True)
class Alert:
    """An alert message on `huxue.alerts` (CONTRACT.md §4, CAP 1.2 names)."""

    identifier: str
    incident_id: str
    sent: str
    status: str  # Actual | Exercise
    msgType: str  # Alert | Update | Cancel
    school_id: str
    rule: str
    stage: str
    severity: str
    urgency: str
    certainty: str
    headline: str
    notify: list[str]
    evidence: list[dict[str, Any]]
    deadlines: dict[str, str] = field(default_factory=dict)
    sender: str = "huxue"
    category: str = "Security"
    zone: str = ""
    # Who moved the incident (command stages) and which command did it.
    by: str = ""
    command_id: str = ""
    note: str = ""
    # Deadline stages: when the deadline was due (lateness = sent - due).
    due: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in ("", None) or k in _ALERT_REQUIRED}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Alert:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


_ALERT_REQUIRED = {"identifier", "incident_id", "sent", "status", "msgType", "school_id", "rule", "stage", "severity", "evidence"}


@dataclass(frozen=True)
class Rejection:
    """Input that huxue refused: becomes a dead-letter entry with a reason code."""

    reason_code: str
    reason: str
    device_id: str | None = None


def dlq_entry(rejection: Rejection, mqtt_topic: str, payload: bytes, received_at: float, max_bytes: int = 256 * 1024) -> dict[str, Any]:
    """A `huxue.events.dlq` value: the reason and the original payload, byte-faithful."""
    entry: dict[str, Any] = {
        "reason_code": rejection.reason_code,
        "reason": rejection.reason,
        "mqtt_topic": mqtt_topic,
        "received_at": iso_utc(received_at),
    }
    if rejection.device_id:
        entry["device_id"] = rejection.device_id
    body = payload
    if len(body) > max_bytes:
        # Kafka's default message limit is 1 MiB; keep the head and say so.
        body = body[:max_bytes]
        entry["payload_truncated"] = True
        entry["payload_size"] = len(payload)
    try:
        entry["payload"] = body.decode("utf-8")
    except UnicodeDecodeError:
        entry["payload_b64"] = base64.b64encode(body).decode("ascii")
    return entry
