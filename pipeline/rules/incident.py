"""An incident and the alert messages it emits. Pure data, no clock of its own.

Every alert carries a deterministic identifier `<incident_id>/<n>` (n = 1, 2, ... in
emission order), so replaying the same input after a crash re-emits the same
identifiers and consumers de-duplicate on them.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pipeline.records import Alert, CanonicalEvent, iso_utc

INCIDENT_ID = re.compile(r"^inc-(\d{8})-(.+)-(\d{4,})$")
MAX_EVIDENCE = 50


def incident_id_for(school_id: str, seq: int, opened_at: float, tz: str) -> str:
    """`inc-<local date>-<school>-<seq>`: readable, and the school (the Kafka key of a
    command) can be read back from it by `school_of`."""
    day = datetime.fromtimestamp(opened_at, tz=ZoneInfo(tz)).strftime("%Y%m%d")
    return f"inc-{day}-{school_id}-{seq:04d}"


def school_of(incident_id: str) -> str | None:
    m = INCIDENT_ID.match(incident_id)
    return m.group(2) if m else None


def evidence_of(event: CanonicalEvent) -> dict[str, Any]:
    item: dict[str, Any] = {
        "event_id": event.event_id,
        "device_id": event.device_id,
        "type": event.type,
        "ts": event.ts,
        "zone": event.zone,
    }
    if event.attrs:
        item["attrs"] = event.attrs
    if event.media:
        item["media"] = event.media
    return item


@dataclass(frozen=True)
class Incident:
    incident_id: str
    school_id: str
    rule: str
    status: str  # Actual | Exercise
    severity: str
    urgency: str
    certainty: str
    zone: str
    opened_at: float
    evidence: tuple[dict[str, Any], ...] = ()  # capped at MAX_EVIDENCE: first and latest
    evidence_total: int = 1  # items ever attached, including those trimmed by the cap
    stages: tuple[str, ...] = ()  # emitted, in order; each at most once
    messages: int = 0  # alerts emitted so far
    deadlines: dict[str, float] = field(default_factory=dict)  # pending stage -> due (epoch s)
    acked_at: float | None = None
    acked_by: str = ""
    arrived_at: float | None = None
    arrived_by: str = ""
    closed_at: float | None = None
    closed_stage: str = ""
    notify: tuple[str, ...] = ("onsite", "mobile", "command")
    # what the incident is about, for headlines: "Watchlist face (wanted) at <school> (gate)"
    title: str = ""
    # identity within the rule at one school: further evidence with the same key joins
    # (a zone, a person_ref, a plate, a device/condition, a post)
    key: str = ""
    # "lockdown" while held back: recorded and published with an empty `notify`
    held: str = ""
    last_evidence_at: float = 0.0
    quiet_close_seconds: float = 0.0  # the `expired` deadline moves this far past new evidence

    @property
    def is_open(self) -> bool:
        return self.closed_at is None

    def with_evidence(self, item: dict[str, Any], now: float) -> Incident:
        ev = self.evidence + (item,)
        if len(ev) > MAX_EVIDENCE:
            ev = ev[:1] + ev[-(MAX_EVIDENCE - 1):]  # keep the first and the latest
        return replace(self, evidence=ev, evidence_total=self.evidence_total + 1, last_evidence_at=max(self.last_evidence_at, now))

    def emit(
        self,
        stage: str,
        msg_type: str,
        now: float,
        headline: str,
        *,
        deadlines: dict[str, str] | None = None,
        by: str = "",
        command_id: str = "",
        note: str = "",
        due: float | None = None,
        superseded_by: str = "",
    ) -> tuple[Incident, Alert]:
        """Record `stage` as emitted and build its alert."""
        n = self.messages + 1
        alert = Alert(
            identifier=f"{self.incident_id}/{n}",
            incident_id=self.incident_id,
            sent=iso_utc(now),
            status=self.status,
            msgType=msg_type,
            school_id=self.school_id,
            rule=self.rule,
            stage=stage,
            severity=self.severity,
            urgency=self.urgency,
            certainty=self.certainty,
            headline=("[DRILL] " if self.status == "Exercise" else "") + headline,
            notify=[] if self.held else list(self.notify),
            evidence=list(self.evidence),
            deadlines=deadlines or {},
            zone=self.zone,
            onset=iso_utc(self.opened_at),
            by=by,
            command_id=command_id,
            note=note,
            due=iso_utc(due) if due is not None else "",
            held=self.held,
            superseded_by=superseded_by,
        )
        return replace(self, messages=n, stages=self.stages + (stage,)), alert

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["evidence"] = list(self.evidence)
        d["stages"] = list(self.stages)
        d["notify"] = list(self.notify)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Incident:
        d = dict(d)
        d["evidence"] = tuple(d.get("evidence", ()))
        d["stages"] = tuple(d.get("stages", ()))
        d["notify"] = tuple(d.get("notify", ("onsite", "mobile", "command")))
        d["deadlines"] = dict(d.get("deadlines", {}))
        return cls(**d)


def local_clock(epoch: float, tz: str) -> str:
    return datetime.fromtimestamp(epoch, tz=ZoneInfo(tz)).strftime("%H:%M:%S")


