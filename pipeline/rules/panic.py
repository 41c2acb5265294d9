"""Rule `panic`: a one-key alarm opens an incident on the 1-3-5 ladder.

Further presses at the same school while its incident is open join it (an `Update`
stage `joined-<n>`, n = number of reports so far, so each stage name is unique).
Drills (`exercise: true`) open their own `Exercise` incidents and never join real ones.
A panic incident is latched: it never closes by itself, is never silenced, folded or
held back.
"""

from __future__ import annotations

from pipeline.config import EscalationConfig
from pipeline.records import Alert, CanonicalEvent
from pipeline.rules import dispatch, ladder, lifecycle, units
from pipeline.rules.evidence import evidence_of
from pipeline.rules.incident import Incident, local_clock
from pipeline.rules.rule import Rule, RuleOutcome
from pipeline.rules.state import Context, SchoolState

RULE = "panic"
NOTIFY = ("onsite", "mobile", "command")


def describer(esc: EscalationConfig) -> lifecycle.Describe:
    def describe(inc: Incident, stage: str, by: str) -> str:
        where = inc.title
        latest = inc.evidence[-1] if inc.evidence else {}
        presses = sum(1 for e in inc.evidence if e.get("type") == "panic.pressed")
        joined = (
            f"Panic button pressed again at {where} ({presses} presses)"
            if latest.get("type") == "panic.pressed"
            else f"Panic at {where}: more evidence, {latest.get('type', '?')} from {latest.get('device_id', '?')}"
        )
        texts = {
            "opened": f"Panic button pressed at {where}",
            "joined": joined,
            "corroborated": f"Panic at {where} corroborated by a sensor",
            "onsite_overdue": f"Panic button at {where}: no on-site response after {esc.ack_seconds:g} s",
            "mobile_late": f"Panic button at {where}: mobile unit not on scene after {esc.arrive_target_seconds:g} s",
            "mobile_overdue": f"Panic button at {where}: mobile unit overdue, not on scene after {esc.arrive_limit_seconds:g} s",
            "acknowledged": f"Panic at {where} acknowledged by {by}",
            "arrived": f"Panic at {where}: on scene ({by})",
            "dispatched": f"Panic at {where}: mobile unit {by} dispatched",
            "units": f"Panic at {where}: nearest mobile units changed",
            "resolved": f"Panic at {where} resolved by {by}",
            "false_alarm": f"Panic at {where} closed as false alarm by {by}",
        }
        return texts.get(stage, f"Panic at {where}: {stage}")

    return describe


class Panic(Rule):
    name = RULE

    def on_event(self, state: SchoolState, event: CanonicalEvent, now: float, ctx: Context, claimed: bool) -> RuleOutcome:
        return RuleOutcome(*_press(state, event, now, ctx)) if event.type == "panic.pressed" else RuleOutcome(state)


def _press(state: SchoolState, event: CanonicalEvent, now: float, ctx: Context) -> tuple[SchoolState, list[Alert]]:
    status = event.status
    describe = describer(ctx.escalation)
    current = state.find_open(RULE, RULE, status)
    if current is not None:
        return lifecycle.add_evidence(
            state, current, [evidence_of(event)], now, describe_fn=describe, deadlines_view=ladder.deadlines_view(current, ctx.escalation)
        )
    opened_at = event.credible_ts(ctx.max_clock_skew_seconds)  # the 1-3-5 clock starts at the press
    place = ctx.school_name(state.school_id) + (f" ({event.zone})" if event.zone else "")
    spec = lifecycle.Raise(
        rule=RULE,
        key=RULE,
        severity="Extreme",
        urgency="Immediate",
        # A human press is likely real; corroboration by a sensor makes it Observed.
        certainty="Likely",
        title=place,
        evidence=(evidence_of(event),),
        status=status,
        zone=event.zone,
        notify=NOTIFY,
        opened_at=opened_at,
        deadlines=ladder.schedule(opened_at, ctx.escalation),
        deadlines_view=ladder.targets(opened_at, ctx.escalation),
        silenceable=False,
        foldable=False,
        units=nearest(state.school_id, now, ctx),  # who could go: in the opened alert
    )
    ack_by = local_clock(opened_at + ctx.escalation.ack_seconds, ctx.school_tz(state.school_id))

    def describe_opened(inc: Incident, stage: str, by: str) -> str:
        return describe(inc, stage, by) + (f": on-site response by {ack_by}" if stage == "opened" else "")

    return dispatch.raise_incident(state, spec, now, ctx, describe_fn=describe_opened)


def nearest(school_id: str, now: float, ctx: Context) -> tuple[dict, ...]:
    """The available mobile units nearest the school now (NearestUnit.to_dict), by ETA."""
    school = ctx.school(school_id)
    if school is None:
        return ()
    return tuple(n.to_dict() for n in units.nearest_units(school, ctx.units(), now, ctx.units_config))

