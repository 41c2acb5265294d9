"""`huxue ack | arrive | resolve | false-alarm`: send an operator command, report its outcome."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from pipeline import kafka_client
from pipeline.config import Config
from pipeline.ops.alerts import follow
from pipeline.records import Command, dumps, iso_utc
from pipeline.rules.incident import school_of


@dataclass(frozen=True)
class Outcome:
    accepted: bool | None  # None: no answer within the wait (is a worker running?)
    detail: str


def build(command: str, incident_id: str, by: str, note: str = "", school_id: str = "") -> Command:
    school = school_id or school_of(incident_id)
    if not school:
        raise ValueError(f"cannot tell the school from {incident_id!r}; pass --school")
    return Command(command=command, incident_id=incident_id, by=by, at=iso_utc(time.time()), note=note, command_id=uuid.uuid4().hex, school_id=school)


def send(cfg: Config, cmd: Command, wait_s: float = 10.0) -> Outcome:
    """Produce the command (key = school), then watch alerts and rejections for its id."""
    topics = cfg.topics
    watchers = [follow(cfg.kafka.bootstrap, t, from_beginning=False) for t in (topics.alerts, topics.commands_dlq)] if wait_s > 0 else []
    try:
        for w in watchers:
            next(w)  # positioned at the end before we send
        producer = kafka_client.producer(cfg.kafka.bootstrap)
        producer.send(topics.commands, key=cmd.school_id, value=dumps(cmd.to_dict())).get(timeout=30)
        producer.close()
        if not watchers:
            return Outcome(None, "sent")
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            for source, w in zip(("alert", "rejected"), watchers):
                record = next(w)
                if record is None:
                    continue
                if source == "alert" and record.get("command_id") == cmd.command_id:
                    return Outcome(True, f"{record['incident_id']} -> {record['stage']}")
                if source == "rejected" and record.get("command", {}).get("command_id") == cmd.command_id:
                    return Outcome(False, f"{record['reason_code']}: {record['reason']}")
        return Outcome(None, f"sent, but no answer within {wait_s:g} s (is `huxue worker` running?)")
    finally:
        for w in watchers:
            w.close()
