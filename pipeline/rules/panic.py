"""Rule `panic`: a one-key alarm opens an incident on the 1-3-5 ladder.

Further presses at the same school while its incident is open join it (an `Update`
stage `joined-<n>`, n = number of presses so far, so each stage name is unique). Drills (`exercise: true`) open
their own `Exercise` incidents and never join real ones.
"""

from __future__ import annotations

from pipeline.config import EscalationConfig
from pipeline.records import Alert, CanonicalEvent
from pipeline.rules import ladder
from pipeline.rules.incident import Incident, evidence_of, local_clock
from pipeline.rules.state import Context, SchoolState

RULE = "panic"


def started_at(event: CanonicalEvent, max_skew: float) -> float:
    """When the 1-3-5 clock starts: the press time, unless the device clock is not credible.

    A press cannot happen after it arrived, and a device claiming a press more than
    `max_skew` before arrival is re-timed to arrival minus that bound.
    """
    received = event.received_epoch
    return min(received, max(event.ts_epoch, received - max_skew))


def describer(esc: EscalationConfig) -> ladder.Describe:
    def describe(inc: Incident, stage: str, by: str) -> str:
        where = f"{inc.title} ({inc.zone})" if inc.zone else inc.title
        texts = {
            "opened": f"Panic button pressed at {where}",
            "joined": f"Panic button pressed again at {where} ({inc.evidence_total} presses)",
            "onsite_overdue": f"Panic button at {where}: no on-site response after {esc.ack_seconds:g} s",
            "mobile_late": f"Panic button at {where}: mobile unit not on scene after {esc.arrive_target_seconds:g} s",
            "mobile_overdue": f"Panic button at {where}: mobile unit overdue, not on scene after {esc.arrive_limit_seconds:g} s",
            "acknowledged": f"Panic at {where} acknowledged by {by}",
            "arrived": f"Panic at {where}: on scene ({by})",
            "resolved": f"Panic at {where} resolved by {by}",
            "false_alarm": f"Panic at {where} closed as false alarm by {by}",
        }
        return texts.get(stage, f"Panic at {where}: {stage}")

    return describe


def on_event(state: SchoolState, event: CanonicalEvent, now: float, ctx: Context) -> tuple[SchoolState, list[Alert]]:
    if event.type != "panic.pressed":
        return state, []
    status = "Exercise" if event.exercise else "Actual"
    item = evidence_of(event)
    current = state.open_incident(RULE, status)
    if current is not None:
        inc = current.with_evidence(item)
        describe = describer(ctx.escalation)
        inc, alert = inc.emit(
            f"joined-{inc.evidence_total}", "Update", now, describe(inc, "joined", ""), deadlines=ladder.deadlines_view(inc, ctx.escalation)
        )
        return state.put(inc), [alert]

    opened_at = started_at(event, ctx.max_clock_skew_seconds)
    state, iid = state.new_incident_id(opened_at, ctx.school_tz(state.school_id))
    inc = Incident(
        incident_id=iid,
        school_id=state.school_id,
        rule=RULE,
        status=status,
        severity="Extreme",
        urgency="Immediate",
        # A human press is likely real; corroboration by a sensor makes it Observed.
        certainty="Likely",
        zone=event.zone,
        opened_at=opened_at,
        evidence=(item,),
        deadlines=ladder.schedule(opened_at, ctx.escalation),
        title=ctx.school_name(state.school_id),
    )
    view = ladder.deadlines_view(inc, ctx.escalation)
    headline = describer(ctx.escalation)(inc, "opened", "") + f": on-site response by {local_clock(opened_at + ctx.escalation.ack_seconds, ctx.school_tz(state.school_id))}"
    inc, alert = inc.emit("opened", "Alert", now, headline, deadlines=view)
    return state.put(inc), [alert]
