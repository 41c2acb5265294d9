"""`huxue ack | dispatch | arrive | resolve | false-alarm`: send an operator command, report its outcome."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from pipeline import kafka_client
from pipeline.config import Config
from pipeline.ops.alerts import follow
from pipeline.records import Command, dumps, iso_utc
from pipeline.rules.incident import school_of


BOOTSTRAP_TIMEOUT_MS = 5000  # kafka-python waits 30 s by default before it says the broker is unreachable


@dataclass(frozen=True)
class Outcome:
    accepted: bool | None  # None: no answer within the wait (is a worker running?)
    detail: str


def build(command: str, incident_id: str, by: str, note: str = "", school_id: str = "", unit: str = "") -> Command:
    """An incident command (ack, dispatch, arrive, resolve, false_alarm). `unit`: the mobile
    unit (registry id) of a dispatch (required) or an arrive (default: the one dispatched last)."""
    school = school_id or school_of(incident_id)
    if not school:
        raise ValueError(f"cannot tell the school from {incident_id!r}; pass --school")
    if command == "dispatch" and not unit.strip():
        raise ValueError("dispatch needs the mobile unit sent (a registry unit id)")
    return Command(command=command, incident_id=incident_id, by=by, at=iso_utc(time.time()), note=note, command_id=uuid.uuid4().hex, school_id=school,
                   unit=unit.strip())


def build_school(command: str, school_id: str, by: str, **fields) -> Command:
    """A school command (silence, unsilence, lockdown, lift_lockdown)."""
    return Command(command=command, school_id=school_id, by=by, at=iso_utc(time.time()), command_id=uuid.uuid4().hex, **fields)


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """`90s`, `30m`, `2h`, `7d`, `1w`: a positive number with its unit (a bare `2` is refused:
    2 seconds or 2 hours is exactly the mistake an operator must not make unnoticed)."""
    raw = text.strip().lower()
    try:
        value = float(raw[:-1]) if raw and raw[-1] in DURATION_UNITS else None
    except ValueError:
        value = None
    if value is None or not value > 0 or value == float("inf"):
        raise ValueError(f"cannot read duration {text!r}: a positive number with a unit, e.g. 90s, 30m, 2h, 7d, 1w")
    return value * DURATION_UNITS[raw[-1]]


def send(cfg: Config, cmd: Command, wait_s: float = 10.0) -> Outcome:
    """Produce the command (key = school), then watch alerts and rejections for its id."""
    topics = cfg.topics
    sources = (("alert", topics.alerts), ("rejected", topics.commands_dlq), ("silence", topics.silences))
    watchers = [follow(cfg, t, from_beginning=False, bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS) for _, t in sources] if wait_s > 0 else []
    try:
        for w in watchers:
            next(w)  # positioned at the end before we send
        # an operator waiting at a prompt learns within seconds that Kafka is not there
        producer = kafka_client.producer(cfg, "operator", bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS)
        producer.send(topics.commands, key=cmd.school_id, value=dumps(cmd.to_dict())).get(timeout=30)
        producer.close()
        if not watchers:
            return Outcome(None, "sent")
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            for (source, _), w in zip(sources, watchers):
                record = next(w)
                if record is None:
                    continue
                if source == "alert" and record.get("command_id") == cmd.command_id:
                    return Outcome(True, f"{record['incident_id']} -> {record['stage']}")
                if source == "silence" and record.get("command_id") == cmd.command_id:
                    return Outcome(True, f"{record['silence_id']} {record['state']} until {record['ends']}")
                if source == "silence" and cmd.command == "unsilence" and record.get("silence_id") == cmd.silence_id and record.get("state") == "ended":
                    return Outcome(True, f"{record['silence_id']} ended")
                if source == "rejected" and record.get("command", {}).get("command_id") == cmd.command_id:
                    return Outcome(False, f"{record['reason_code']}: {record['reason']}")
        return Outcome(None, f"sent, but no answer within {wait_s:g} s (is `huxue worker` running?)")
    finally:
        for w in watchers:
            w.close()
