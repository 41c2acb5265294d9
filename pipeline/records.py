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
    # mobile units (registry `units:`), not school devices: positions and duty status
    "unit.position": frozenset({"mobile_unit"}),
    "unit.status": frozenset({"mobile_unit"}),
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
# Mobile units (patrol cars, motorbike officers, foot patrols): registry `units:`, not a
# school's devices, so not in DEVICE_KINDS. Their speed profiles (config units.speeds_kmh)
# and the duty statuses of `unit.status` (CONTRACT.md §1, issue 13).
UNIT_KIND = "mobile_unit"
UNIT_PROFILES = ("car", "motorbike", "foot")
UNIT_STATUSES = ("available", "dispatched", "on_scene", "off_duty")
SEVERITIES = ("Extreme", "Severe", "Moderate", "Minor")
# commands on one incident, and commands on a school (silences, lockdown)
INCIDENT_COMMANDS = ("ack", "dispatch", "arrive", "resolve", "false_alarm")  # dispatch: a mobile unit was sent (`unit`)
SCHOOL_COMMANDS = ("silence", "unsilence", "lockdown", "lift_lockdown")
COMMANDS = INCIDENT_COMMANDS + SCHOOL_COMMANDS


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
    return in_range(_parse_ts(value), value)


def in_range(epoch: float, shown: Any = None) -> float:
    """`epoch` if huxue can represent it (1970 up to the end of 9998), else ValueError."""
    if not 0 <= epoch < _MAX_EPOCH:
        raise ValueError(f"time {epoch if shown is None else shown!r} is out of range")
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
    # With mqtt.auth: the one account the broker's ACL lets publish on `mqtt_topic` (the
    # device, or its Frigate/Zigbee2MQTT instance); huxue's tool accounts, when enabled, too.
    mqtt_account: str | None = None

    @property
    def key(self) -> str:
        """Identity for de-duplication: redelivery of the same (device, event) is a no-op."""
        return f"{self.device_id}/{self.event_id}"

    @property
    def status(self) -> str:
        """CAP status of what this event raises: drills are `Exercise`."""
        return "Exercise" if self.exercise else "Actual"

    @property
    def ts_epoch(self) -> float:
        return parse_ts(self.ts)

    @property
    def received_epoch(self) -> float:
        return parse_ts(self.received_at)

    def credible_ts(self, max_skew: float) -> float:
        """When it happened: the device's time, unless that clock is not credible.

        An event cannot happen after it arrived, and a device claiming a time more than
        `max_skew` before arrival is re-timed to arrival minus that bound.
        """
        received = self.received_epoch
        return min(received, max(self.ts_epoch, received - max_skew))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for optional in ("media", "mqtt_account"):
            if d[optional] is None:
                del d[optional]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CanonicalEvent:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class Command:
    """An operator command on `huxue.commands` (key: school_id).

    Incident commands name `incident_id`; school commands name `school_id`:
    `silence` (scope `{device: id}`, `{zone: name}` or `{}` for the whole school,
    `duration_seconds` or `until`, and a mandatory `reason`), `unsilence`
    (`silence_id`), `lockdown` (`reason`) and `lift_lockdown`.
    """

    command: str
    by: str
    at: str = ""
    incident_id: str = ""
    note: str = ""
    # Optional, added by huxue's own clients: lets the sender find its outcome.
    command_id: str = ""
    school_id: str = ""
    scope: dict[str, str] = field(default_factory=dict)
    duration_seconds: float = 0.0
    until: str = ""
    reason: str = ""
    silence_id: str = ""
    exercise: bool = False
    # `dispatch` (required) and `arrive` (optional: default the unit last dispatched): a
    # registry unit id (issue 13)
    unit: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in ("", 0.0, {}, False) or k == "note"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Command:
        """Validate a decoded command; ValueError says what is wrong."""
        if not isinstance(d, dict):
            raise ValueError("command must be a JSON object")
        for name in ("command", "by"):
            if not isinstance(d.get(name), str) or not d[name]:
                raise ValueError(f"field {name!r} is required and must be a non-empty string")
        command = d["command"]
        if command not in COMMANDS:
            raise ValueError(f"unknown command {command!r}; one of {', '.join(COMMANDS)}")
        need = {"incident_id"} if command in INCIDENT_COMMANDS else {"school_id"}
        if command == "unsilence":
            need.add("silence_id")
        if command == "dispatch":
            need.add("unit")
        for name in need:
            if not isinstance(d.get(name), str) or not d[name]:
                raise ValueError(f"{command} needs {name!r} (a non-empty string)")
        scope = d.get("scope") or {}
        if not isinstance(scope, dict) or not set(scope) <= {"device", "zone"} or len(scope) > 1 or not all(isinstance(v, str) and v for v in scope.values()):
            raise ValueError("field 'scope' must be {}, {\"device\": id} or {\"zone\": name}")
        duration = d.get("duration_seconds", 0) or 0
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or duration < 0:
            raise ValueError("field 'duration_seconds' must be a non-negative number")
        exercise = d.get("exercise", False)
        if not isinstance(exercise, bool):
            raise ValueError("field 'exercise' must be a boolean")
        if not isinstance(d.get("unit") or "", str):
            raise ValueError("field 'unit' must be a unit id (a string)")
        return cls(
            command=command,
            by=d["by"],
            at=_time_field(d, "at"),
            incident_id=str(d.get("incident_id") or ""),
            note=str(d.get("note") or ""),
            command_id=str(d.get("command_id") or ""),
            school_id=str(d.get("school_id") or ""),
            scope={str(k): str(v) for k, v in scope.items()},
            duration_seconds=float(duration),
            until=_time_field(d, "until"),
            reason=str(d.get("reason") or "").strip(),
            silence_id=str(d.get("silence_id") or ""),
            exercise=exercise,
            unit=str(d.get("unit") or ""),
        )


def _time_field(d: dict[str, Any], name: str) -> str:
    """An optional time: kept as given when RFC 3339, epoch ms rendered as RFC 3339."""
    value = d.get(name)
    if value is None or value == "":
        return ""
    try:
        epoch = parse_ts(value)
    except ValueError as exc:
        raise ValueError(f"field {name!r}: {exc}") from None
    return value if isinstance(value, str) else iso_utc(epoch)


@dataclass(frozen=True)
class SilenceNotice:
    """A change of a silence, on `huxue.silences` (key: school_id)."""

    silence_id: str
    school_id: str
    state: str  # active | ended
    scope: dict[str, str]
    reason: str
    by: str
    starts: str
    ends: str
    sent: str
    command_id: str = ""
    ended_by: str = ""  # who lifted it, or "expiry"
    suppressed: int = 0  # incidents it kept from being raised

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
    onset: str = ""  # CAP onset: when the incident began (the press), the 1-3-5 clock's zero
    zone: str = ""
    # Who moved the incident (command stages) and which command did it.
    by: str = ""
    command_id: str = ""
    note: str = ""
    # Deadline stages: when the deadline was due (their `sent` too; lateness = Kafka timestamp - due).
    due: str = ""
    # Non-empty while the incident is held back (lockdown): recorded, nobody notified.
    held: str = ""
    # Stage `superseded`: the incident that took this one's evidence over.
    superseded_by: str = ""
    # Evidence items of the incident not in `evidence` (it keeps the first and the latest
    # within MAX_EVIDENCE items and the alert's size budget); absent when none.
    evidence_omitted: int | None = None
    # Panic incidents (issue 13): the available mobile units nearest the school, by ETA, as
    # of the opening or the latest `units-<n>` update (advisory: units move); absent when
    # no unit is known. Items: unit_id, profile, callsign, distance_m, road_m, eta_s,
    # position_age_s, in_area, lat, lon[, accuracy_m].
    nearest_units: list[dict[str, Any]] | None = None
    # The mobile unit of a `dispatched-<n>` or `arrived` stage; `dispatched`: every unit sent so far.
    unit: str = ""
    dispatched: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in ("", None) or k in _ALERT_REQUIRED}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Alert:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


_ALERT_REQUIRED = {"identifier", "incident_id", "sent", "status", "msgType", "school_id", "rule", "stage", "severity", "evidence"}

# `outcome` of a notification record (huxue notifier, pipeline/notify/service.py)
DELIVERED, RETRYING, FAILED, SKIPPED, RECEIVER_FAILING, RECEIVER_RECOVERED = (
    "delivered", "retrying", "failed", "skipped", "receiver_failing", "receiver_recovered"
)


@dataclass(frozen=True)
class Notification:
    """One paging attempt of `huxue notifier` on `huxue.notifications` (key: school_id).

    `receiver_failing` / `receiver_recovered` are the notifier's verdict on a receiver, once
    per school whose pages it fails (its alert's identifiers; empty for the other schools a
    recovery is told to)."""

    identifier: str
    incident_id: str
    school_id: str
    receiver: str  # empty when the whole alert was skipped
    type: str  # the receiver's type
    attempt: int
    outcome: str
    at: str
    rule: str = ""  # the alert's rule
    http_status: int | None = None
    error: str = ""
    latency_ms: int | None = None

    @property
    def key(self) -> str:
        """Identity for de-duplication of a redelivered record."""
        return f"ntf/{self.identifier}/{self.receiver}/{self.attempt}/{self.outcome}/{self.at}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> Notification:
        """Validate a decoded record; ValueError says what is wrong."""
        if not isinstance(d, dict):
            raise ValueError("notification must be a JSON object")
        for name in ("school_id", "receiver", "outcome", "at"):
            if not isinstance(d.get(name), str):
                raise ValueError(f"field {name!r} must be a string")
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in d.items() if k in names}
        for name in ("identifier", "incident_id", "type", "rule", "error"):
            fields[name] = str(fields.get(name) or "")
        fields["attempt"] = int(fields.get("attempt") or 0)
        return cls(**fields)


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
    return {**entry, **payload_fields(payload, max_bytes)}


def payload_fields(payload: bytes, max_bytes: int = 256 * 1024) -> dict[str, Any]:
    """A dead letter's copy of its input, byte-faithful: `payload` (text) or `payload_b64`."""
    fields: dict[str, Any] = {}
    body = payload
    if len(body) > max_bytes:
        # Kafka's default message limit is 1 MiB; keep the head and say so.
        body = body[:max_bytes]
        fields["payload_truncated"] = True
        fields["payload_size"] = len(payload)
    try:
        fields["payload"] = body.decode("utf-8")
    except UnicodeDecodeError:
        fields["payload_b64"] = base64.b64encode(body).decode("ascii")
    return fields
