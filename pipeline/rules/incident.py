"""An incident and the alert messages it emits. Pure data, no clock of its own.

Incident ids are `inc-<school-local date>-<school>-<seq>-<h>`: `seq` counts the school's
incidents and `h` (6 hex digits) is a digest of what opened it (rule, key, status, time,
trigger), so a sequence number reused after lost state cannot name a different incident.
Every alert carries the identifier `<incident_id>/<stage>`: an incident emits each stage at
most once, and replaying the same input after a crash re-emits the same identifier, on
which consumers de-duplicate.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pipeline.records import Alert, iso_utc
from pipeline.rules.evidence import clip, fit, size

# new ids end in the cause digest; ids of earlier versions end in the sequence number
INCIDENT_ID = re.compile(r"^inc-(\d{8})-(.+)-(\d{4,})-([0-9a-f]{6})$")
OLD_INCIDENT_ID = re.compile(r"^inc-(\d{8})-(.+)-(\d{4,})$")
ALERT_BUDGET = 64 * 1024  # bytes of an alert's JSON; evidence gives way (evidence_omitted)
EVIDENCE_BUDGET = 48 * 1024  # bytes of evidence an open incident keeps in the state
MAX_HEADLINE = 512
MAX_NOTE = 1024


def incident_id_for(school_id: str, seq: int, opened_at: float, tz: str, cause: str) -> str:
    """`inc-<local date>-<school>-<seq>-<digest of cause>`: readable, unique, and the
    school (the Kafka key of a command) can be read back from it by `school_of`."""
    day = datetime.fromtimestamp(opened_at, tz=ZoneInfo(tz)).strftime("%Y%m%d")
    return f"inc-{day}-{school_id}-{seq:04d}-{hashlib.sha1(cause.encode()).hexdigest()[:6]}"


def school_of(incident_id: str) -> str | None:
    """The school of an incident id, new format or old (commands may name old incidents)."""
    m = INCIDENT_ID.match(incident_id) or OLD_INCIDENT_ID.match(incident_id)
    return m.group(2) if m else None


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
    evidence: tuple[dict[str, Any], ...] = ()  # the first and the latest (evidence.fit)
    evidence_total: int = 1  # items ever attached, including those trimmed
    stages: tuple[str, ...] = ()  # emitted, in order; each at most once
    messages: int = 0  # alerts emitted so far (identifiers no longer count them)
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
    # Mobile units (issue 13): the nearest available units (NearestUnit.to_dict) as last
    # computed, the units dispatched (in order) and the unit that arrived.
    units: tuple[dict[str, Any], ...] = ()
    dispatched: tuple[str, ...] = ()
    arrived_unit: str = ""
    # When the latest alert was sent (a stage fired by a deadline is sent as of its due):
    # a command is applied no earlier, so the incident's alerts stay in time order.
    last_sent: float = 0.0

    @property
    def is_open(self) -> bool:
        return self.closed_at is None

    def with_evidence(self, item: dict[str, Any], now: float) -> Incident:
        ev = fit(self.evidence + (item,), EVIDENCE_BUDGET)
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
        unit: str = "",
    ) -> tuple[Incident, Alert]:
        """Record `stage` as emitted and build its alert (within ALERT_BUDGET)."""
        if stage in self.stages:  # its identifier would name two different alerts
            raise ValueError(f"{self.incident_id} already emitted stage {stage!r}")
        alert = Alert(
            identifier=f"{self.incident_id}/{stage}",
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
            headline=clip(("[DRILL] " if self.status == "Exercise" else "") + headline, MAX_HEADLINE),
            notify=[] if self.held else list(self.notify),
            evidence=list(self.evidence),
            deadlines=deadlines or {},
            zone=clip(self.zone),
            onset=iso_utc(self.opened_at),
            by=clip(by),
            command_id=clip(command_id),
            note=clip(note, MAX_NOTE),
            due=iso_utc(due) if due is not None else "",
            held=self.held,
            superseded_by=superseded_by,
            nearest_units=[dict(u) for u in self.units] or None,
            unit=unit,
            dispatched=list(self.dispatched) or None,
        )
        total = size(alert)
        if total > ALERT_BUDGET:
            kept = fit(self.evidence, ALERT_BUDGET - (total - size(alert.evidence)))
            alert = replace(alert, evidence=list(kept))
        omitted = self.evidence_total - len(alert.evidence)
        if omitted > 0:
            alert = replace(alert, evidence_omitted=omitted)
        return replace(self, messages=self.messages + 1, stages=self.stages + (stage,), last_sent=max(self.last_sent, now)), alert

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["evidence"] = list(self.evidence)
        d["stages"] = list(self.stages)
        d["notify"] = list(self.notify)
        d["units"] = list(self.units)
        d["dispatched"] = list(self.dispatched)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Incident:
        d = dict(d)
        d["evidence"] = tuple(d.get("evidence", ()))
        d["stages"] = tuple(d.get("stages", ()))
        d["notify"] = tuple(d.get("notify", ("onsite", "mobile", "command")))
        d["deadlines"] = dict(d.get("deadlines", {}))
        d["units"] = tuple(d.get("units", ()))
        d["dispatched"] = tuple(d.get("dispatched", ()))
        return cls(**d)


def local_clock(epoch: float, tz: str) -> str:
    return datetime.fromtimestamp(epoch, tz=ZoneInfo(tz)).strftime("%H:%M:%S")


