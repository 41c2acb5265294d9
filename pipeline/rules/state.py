"""Per-school state, owned by the one partition that carries the school's key.

Stored as separate table values so that frequent, small changes (a heartbeat's
last-seen time, a plate read) rewrite only what they touch:
  * core: open incidents, tombstones of recently closed ones, the incident sequence and
    the keys of recently applied inputs (de-duplication);
  * memory: each rule's own working state (recent sensor events, plate reads, last
    heartbeat per device, post rosters, silences, lockdown, flood counters), a plain
    JSON value per rule, stored one per (school, rule). A rule that needs the clock
    stores its next due time under the key "due" of its memory; the worker's tick wakes
    the school then.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pipeline.config import EscalationConfig, UnitsConfig
from pipeline.registry import Registry, School
from pipeline.rules.incident import Incident, incident_id_for
from pipeline.rules.settings import RulesConfig

if TYPE_CHECKING:
    from pipeline.rules.units import UnitState


def _no_units() -> Sequence[UnitState]:
    return ()

# Closed incidents are remembered this long so late commands get "closed", not "unknown".
KEEP_CLOSED_SECONDS = 24 * 3600
# Keys of inputs that changed the incidents, for de-duplication of redelivered input.
KEEP_APPLIED_SECONDS = 24 * 3600
MAX_APPLIED = 1000


@dataclass(frozen=True)
class Context:
    """What rules may consult besides the state: configuration and the registry."""

    escalation: EscalationConfig
    registry: Registry
    max_clock_skew_seconds: float = 600
    rules: RulesConfig = field(default_factory=RulesConfig)
    units_config: UnitsConfig = field(default_factory=UnitsConfig)
    # The mobile units as last reported (issue 13): in the worker a read-only view of the
    # compacted units topic (worker/units_view.py), not school state; rules only read it.
    units: Callable[[], Sequence[UnitState]] = field(default=_no_units, compare=False, repr=False)
    # False until that view has read the topic up to where it ended at start: no coverage
    # decision is made on a view that has not seen the units yet.
    units_ready: Callable[[], bool] = field(default=lambda: True, compare=False, repr=False)
    _effective: dict = field(default_factory=dict, compare=False, repr=False)

    def rule(self, name: str, school_id: str) -> Any:
        """A rule's settings with the school's overrides applied."""
        key = (name, school_id)
        if key not in self._effective:
            base = getattr(self.rules, name)
            override = base.schools.get(school_id)
            self._effective[key] = replace(base, **override) if override else base
        return self._effective[key]

    def school(self, school_id: str) -> School | None:
        return self.registry.school(school_id)

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
    incidents: dict[str, Incident] = field(default_factory=dict)  # open incidents
    closed: dict[str, list] = field(default_factory=dict)  # incident id -> [stage, closed_at]
    applied: dict[str, float] = field(default_factory=dict)  # input key -> when applied
    memory: dict[str, Any] = field(default_factory=dict)  # rule name -> its working state

    def find_open(self, rule: str, key: str, status: str) -> Incident | None:
        for inc in self.incidents.values():
            if inc.rule == rule and inc.key == key and inc.status == status:
                return inc
        return None

    def new_incident_id(self, opened_at: float, tz: str, cause: str) -> tuple[SchoolState, str]:
        """The next incident id; `cause` (what opened it) goes into its digest."""
        iid = incident_id_for(self.school_id, self.next_seq, opened_at, tz, cause)
        return replace(self, next_seq=self.next_seq + 1), iid

    def put(self, inc: Incident) -> SchoolState:
        """Store an incident; a closed one leaves only its tombstone."""
        if inc.is_open:
            return replace(self, incidents={**self.incidents, inc.incident_id: inc})
        incidents = {k: v for k, v in self.incidents.items() if k != inc.incident_id}
        return replace(self, incidents=incidents, closed={**self.closed, inc.incident_id: [inc.closed_stage, inc.closed_at]})

    def remember(self, rule: str, value: Any) -> SchoolState:
        """Replace a rule's memory (None forgets it); the same value changes nothing."""
        if self.memory.get(rule) == value:
            return self  # identity tells the worker there is nothing to write
        memory = {k: v for k, v in self.memory.items() if k != rule}
        if value is not None:
            memory[rule] = value
        return replace(self, memory=memory)

    def mark_applied(self, key: str, now: float) -> SchoolState:
        applied = {**self.applied, key: now}
        if len(applied) > MAX_APPLIED:
            applied = dict(sorted(applied.items(), key=lambda kv: kv[1])[-MAX_APPLIED:])
        return replace(self, applied=applied)

    def pruned(self, now: float) -> SchoolState:
        """Forget tombstones and applied keys past their retention."""
        closed = {k: v for k, v in self.closed.items() if now - v[1] < KEEP_CLOSED_SECONDS}
        applied = {k: t for k, t in self.applied.items() if now - t < KEEP_APPLIED_SECONDS}
        if len(closed) == len(self.closed) and len(applied) == len(self.applied):
            return self
        return replace(self, closed=closed, applied=applied)

    def incidents_due(self) -> float | None:
        dues = [d for i in self.incidents.values() for d in i.deadlines.values()]
        return min(dues) if dues else None

    def memory_due(self) -> float | None:
        dues = [m["due"] for m in self.memory.values() if isinstance(m, dict) and m.get("due") is not None]
        return min(dues) if dues else None

    def next_due(self) -> float | None:
        dues = [d for d in (self.incidents_due(), self.memory_due()) if d is not None]
        return min(dues) if dues else None

    # Two stored values (see the module docstring). `next_due` in each is derived and
    # lets the worker's tick skip a school without decoding it.
    def core_dict(self) -> dict[str, Any]:
        return {
            "school_id": self.school_id,
            "partition": self.partition,
            "next_seq": self.next_seq,
            "incidents": {k: v.to_dict() for k, v in self.incidents.items()},
            "closed": self.closed,
            "applied": self.applied,
            "next_due": self.incidents_due(),
        }

    @classmethod
    def from_dicts(cls, core: dict[str, Any] | None, memory: dict[str, Any] | None, school_id: str = "", partition: int = -1) -> SchoolState:
        """From a stored core value and the rules' memories (rule -> value)."""
        core = core or {"school_id": school_id, "partition": partition}
        return cls(
            school_id=core["school_id"],
            partition=core.get("partition", partition),
            next_seq=core.get("next_seq", 1),
            incidents={k: Incident.from_dict(v) for k, v in core.get("incidents", {}).items()},
            closed={k: list(v) for k, v in core.get("closed", {}).items()},
            applied=dict(core.get("applied", {})),
            memory=dict(memory or {}),
        )
