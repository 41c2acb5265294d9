"""Generic incident operations every rule uses: create, add evidence, close, headlines.

No gates here (silences, flood, lockdown live in dispatch.py): this is the bottom layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

from pipeline.records import Alert, CanonicalEvent
from pipeline.rules.evidence import clip, evidence_of, fit
from pipeline.rules.incident import EVIDENCE_BUDGET, Incident
from pipeline.rules.state import Context, SchoolState

MAX_TITLE = 384  # characters: titles quote inputs (zones, person refs, reasons)
# (incident, stage, who) -> headline; each rule may describe its own stages
Describe = Callable[[Incident, str, str], str]

_TEXT = {
    "opened": "{title}",
    "joined": "{title}: reported again ({n} reports)",
    "corroborated": "{title}: corroborated by another sensor",
    "acknowledged": "{title}: acknowledged by {by}",
    "arrived": "{title}: on scene ({by})",
    "dispatched": "{title}: {by} dispatched",
    "units": "{title}: nearest units changed",
    "resolved": "{title}: resolved by {by}",
    "false_alarm": "{title}: closed as false alarm by {by}",
    "expired": "{title}: quiet, closed",
    "superseded": "{title}: merged into another incident",
    "recovered": "{title}: recovered",
    "restored": "{title}: staffing restored",
    "window_ended": "{title}: window ended",
    "lifted": "{title}: lifted by {by}",
    "ended": "{title}: ended",
}


def urgency(severity: str) -> str:
    """CAP urgency for a sensor-raised incident of this severity."""
    return "Immediate" if severity in ("Extreme", "Severe") else "Expected"


def notify_for(severity: str) -> tuple[str, ...]:
    """Who a sensor-raised incident of this severity pages: mobile units only for Extreme."""
    return ("onsite", "mobile", "command") if severity == "Extreme" else ("onsite", "command")


def describe(inc: Incident, stage: str, by: str) -> str:
    text = _TEXT.get(stage.split("-")[0], "{title}: " + stage)
    return text.format(title=inc.title, n=inc.evidence_total, by=by or "operator")


@dataclass(frozen=True)
class Raise:
    """A rule's request to open an incident (dispatch decides whether and how)."""

    rule: str
    key: str
    severity: str
    title: str
    evidence: tuple[dict[str, Any], ...]  # the first item is the trigger (silences look at it)
    status: str = "Actual"
    zone: str = ""
    urgency: str = "Expected"
    certainty: str = "Likely"
    notify: tuple[str, ...] = ("onsite", "command")
    opened_at: float | None = None  # default: now
    quiet_close_seconds: float = 0  # close by itself after this long without evidence; 0: never
    deadlines: dict[str, float] = field(default_factory=dict)  # extra deadline stages (the ladder)
    deadlines_view: dict[str, str] = field(default_factory=dict)  # shown in the alerts
    silenceable: bool = True  # False for panic and for panic-button health
    foldable: bool = True  # False for panic: never folded by flood control
    cause: str = ""  # what opened it when not an event (a command's key); default: the trigger
    units: tuple[dict[str, Any], ...] = ()  # panic: the nearest mobile units (rules/units.py)

    def cause_of(self, opened_at: float) -> str:
        """What goes into the incident id's digest: a reused sequence number stays unique."""
        trigger = self.cause or f"{self.evidence[0].get('device_id', '')}/{self.evidence[0].get('event_id', '')}"
        return f"{self.rule}|{self.key}|{self.status}|{opened_at!r}|{trigger}"


def raise_for(event: CanonicalEvent, *, rule: str, key: str, severity: str, title: str, **more: Any) -> Raise:
    """A Raise triggered by one event: its evidence, status and zone, and the urgency and
    who is paged following the severity (unless given)."""
    fields: dict[str, Any] = {"urgency": urgency(severity), "notify": notify_for(severity), **more}
    return Raise(rule=rule, key=key, severity=severity, title=title, evidence=(evidence_of(event),), status=event.status, zone=event.zone, **fields)


def create(
    state: SchoolState, r: Raise, now: float, ctx: Context, held: str = "", describe_fn: Describe = describe, by: str = "", command_id: str = ""
) -> tuple[SchoolState, list[Alert]]:
    opened_at = now if r.opened_at is None else r.opened_at
    state, iid = state.new_incident_id(opened_at, ctx.school_tz(state.school_id), r.cause_of(opened_at))
    deadlines = dict(r.deadlines)
    if r.quiet_close_seconds:
        deadlines["expired"] = now + r.quiet_close_seconds
    inc = Incident(
        incident_id=iid,
        school_id=state.school_id,
        rule=r.rule,
        status=r.status,
        severity=r.severity,
        urgency=r.urgency,
        certainty=r.certainty,
        zone=r.zone,
        opened_at=opened_at,
        evidence=fit(tuple(r.evidence), EVIDENCE_BUDGET),
        evidence_total=len(r.evidence),
        deadlines=deadlines,
        notify=r.notify,
        title=clip(r.title, MAX_TITLE),
        key=r.key,
        held=held,
        last_evidence_at=now,
        quiet_close_seconds=r.quiet_close_seconds,
        units=r.units,
    )
    inc, alert = inc.emit("opened", "Alert", now, describe_fn(inc, "opened", by), deadlines=r.deadlines_view, by=by, command_id=command_id)
    return state.put(inc), [alert]


def add_evidence(
    state: SchoolState,
    inc: Incident,
    items: list[dict[str, Any]],
    now: float,
    *,
    stage: str = "",
    describe_fn: Describe = describe,
    deadlines_view: dict[str, str] | None = None,
    **changes: Any,
) -> tuple[SchoolState, list[Alert]]:
    """Attach evidence (and e.g. a higher certainty) and publish one Update for it."""
    for item in items:
        inc = inc.with_evidence(item, now)
    inc = replace(inc, **changes)
    if inc.quiet_close_seconds:
        inc = replace(inc, deadlines={**inc.deadlines, "expired": now + inc.quiet_close_seconds})
    stage = stage or f"joined-{inc.evidence_total}"
    inc, alert = inc.emit(stage, "Update", now, describe_fn(inc, stage.split("-")[0], ""), deadlines=deadlines_view or {})
    return state.put(inc), [alert]


def close(state: SchoolState, inc: Incident, stage: str, now: float, *, by: str = "", note: str = "", command_id: str = "", superseded_by: str = "", describe_fn: Describe = describe) -> tuple[SchoolState, list[Alert]]:
    inc = replace(inc, closed_at=now, closed_stage=stage, deadlines={})
    inc, alert = inc.emit(stage, "Cancel", now, describe_fn(inc, stage, by), by=by, note=note, command_id=command_id, superseded_by=superseded_by)
    return state.put(inc), [alert]
