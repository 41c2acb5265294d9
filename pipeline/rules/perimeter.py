"""Rule `perimeter`: fence breaches, intrusions and forced doors.

Outside the school's hours (its own timezone and calendar) -> Severe; during school
hours -> Moderate. Events already taken up by a corroborated incident (rule
`corroborated`) raise nothing here. Further events in the same zone join the open
incident, which closes itself after `quiet_close_seconds` without new ones.
"""

from __future__ import annotations

from pipeline.records import CanonicalEvent
from pipeline.rules import calendar, dispatch, lifecycle
from pipeline.rules.rule import Rule, RuleOutcome
from pipeline.rules.state import Context, SchoolState

SETTINGS = RULE = "perimeter"
WHAT = {"fence.breach": "Fence breach", "video.intrusion": "Intrusion on camera", "door.forced": "Door forced"}


class Perimeter(Rule):
    name = RULE
    settings = SETTINGS

    def on_event(self, state: SchoolState, event: CanonicalEvent, now: float, ctx: Context, claimed: bool) -> RuleOutcome:
        cfg = ctx.rule(SETTINGS, state.school_id)
        if event.type not in cfg.types or claimed:
            return RuleOutcome(state)
        school = ctx.school(state.school_id)
        after_hours = not (school and calendar.in_hours(school, event.credible_ts(ctx.max_clock_skew_seconds)))
        severity = cfg.severity_after_hours if after_hours else cfg.severity_in_hours
        spec = lifecycle.raise_for(
            event,
            rule=RULE,
            key=event.zone,
            severity=severity,
            urgency="Immediate" if after_hours else "Expected",
            title=f"{'After hours: ' if after_hours else ''}{WHAT.get(event.type, event.type)} at {ctx.school_name(state.school_id)} ({event.zone})",
            notify=("onsite", "mobile", "command") if after_hours else ("onsite", "command"),
            quiet_close_seconds=cfg.quiet_close_seconds,
        )
        state, alerts = dispatch.raise_or_join(state, spec, now, ctx)
        return RuleOutcome(state, alerts)
