"""Per-school state: one value per school in the worker's table, owned by one partition."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from pipeline.config import EscalationConfig
from pipeline.registry import Registry
from pipeline.rules.incident import Incident, incident_id_for

# Closed incidents are kept this long so late commands get "closed", not "unknown".
KEEP_CLOSED_SECONDS = 24 * 3600
# Keys of events that changed state, for de-duplication of redelivered input.
KEEP_APPLIED_SECONDS = 24 * 3600
MAX_APPLIED = 2000


@dataclass(frozen=True)
class Context:
    """What rules may consult besides the state: configuration and the registry."""

    escalation: EscalationConfig
    registry: Registry
    max_clock_skew_seconds: float = 600

    def school_name(self, school_id: str) -> str:
        s = self.registry.school(school_id)
        return s.name if s else school_id

    def school_tz(self, school_id: str) -> str:
        s = self.registry.school(school_id)
        return s.timezone if s else "UTC"


@dataclass(frozen=True)
class SchoolState:
    school_id: str
    partition: int = -1  # the Kafka partition that owns this school (set by the worker)
    next_seq: int = 1
    incidents: dict[str, Incident] = field(default_factory=dict)
    applied: dict[str, float] = field(default_factory=dict)  # event key -> when applied

    def open_incident(self, rule: str, status: str) -> Incident | None:
        for inc in self.incidents.values():
            if inc.is_open and inc.rule == rule and inc.status == status:
                return inc
        return None

    def new_incident_id(self, opened_at: float, tz: str) -> tuple[SchoolState, str]:
        iid = incident_id_for(self.school_id, self.next_seq, opened_at, tz)
        return replace(self, next_seq=self.next_seq + 1), iid

    def put(self, inc: Incident) -> SchoolState:
        return replace(self, incidents={**self.incidents, inc.incident_id: inc})

    def mark_applied(self, key: str, now: float) -> SchoolState:
        applied = {**self.applied, key: now}
        if len(applied) > MAX_APPLIED:
            applied = dict(sorted(applied.items(), key=lambda kv: kv[1])[-MAX_APPLIED:])
        return replace(self, applied=applied)

    def pruned(self, now: float) -> SchoolState:
        """Forget closed incidents and applied keys past their retention."""
        incidents = {
            k: v for k, v in self.incidents.items() if v.closed_at is None or now - v.closed_at < KEEP_CLOSED_SECONDS
        }
        applied = {k: t for k, t in self.applied.items() if now - t < KEEP_APPLIED_SECONDS}
        if len(incidents) == len(self.incidents) and len(applied) == len(self.applied):
            return self
        return replace(self, incidents=incidents, applied=applied)

    def next_due(self) -> float | None:
        """The earliest pending deadline of any open incident."""
        dues = [d for i in self.incidents.values() if i.is_open for d in i.deadlines.values()]
        return min(dues) if dues else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "school_id": self.school_id,
            "next_due": self.next_due(),  # derived; lets the tick skip schools without decoding
            "partition": self.partition,
            "next_seq": self.next_seq,
            "incidents": {k: v.to_dict() for k, v in self.incidents.items()},
            "applied": self.applied,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SchoolState:
        return cls(
            school_id=d["school_id"],
            partition=d.get("partition", -1),
            next_seq=d.get("next_seq", 1),
            incidents={k: Incident.from_dict(v) for k, v in d.get("incidents", {}).items()},
            applied=dict(d.get("applied", {})),
        )
