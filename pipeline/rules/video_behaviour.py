"""Rule `video_behaviour`: what video analytics see people do.

* `video.fight` -> Severe (unless a corroborated incident took it up already).
* `video.crowd` with `count` >= `crowd_threshold` in a gate zone (`crowd_zones`,
  fnmatch patterns) during a drop-off / pick-up window -> Moderate.
* `minor_types` (`video.fall`, `video.loiter`) -> Minor, grouped per zone.
Further events of the same kind in the same zone join the open incident, which closes
itself after `quiet_close_seconds` without new ones.
"""

from __future__ import annotations

from fnmatch import fnmatch

from pipeline.records import CanonicalEvent
from pipeline.rules import calendar, dispatch, lifecycle
from pipeline.rules.rule import Rule, RuleOutcome
from pipeline.rules.state import Context, SchoolState

SETTINGS = RULE = "video_behaviour"


def _classify(event: CanonicalEvent, ctx: Context, school_id: str, cfg) -> tuple[str, str, str] | None:
    """(group, severity, what) for an event this rule raises on, else None."""
    if event.type == "video.fight":
        return "fight", cfg.fight_severity, "Fight on camera"
    if event.type == "video.crowd":
        count = event.attrs.get("count")
        school = ctx.school(school_id)
        at = event.credible_ts(ctx.max_clock_skew_seconds)
        if (
            isinstance(count, int)
            and count >= cfg.crowd_threshold
            and any(fnmatch(event.zone, p) for p in cfg.crowd_zones)
            and school
            and calendar.window_at(school, at)
        ):
            return "crowd", cfg.crowd_severity, f"Crowd of {count} at the gate"
        return None
    if event.type in cfg.minor_types:
        return "minor", "Minor", {"video.fall": "Person down", "video.loiter": "Loitering"}.get(event.type, event.type)
    return None


class VideoBehaviour(Rule):
    name = RULE
    settings = SETTINGS

    def on_event(self, state: SchoolState, event: CanonicalEvent, now: float, ctx: Context, claimed: bool) -> RuleOutcome:
        if not event.type.startswith("video.") or claimed:
            return RuleOutcome(state)
        cfg = ctx.rule(SETTINGS, state.school_id)
        found = _classify(event, ctx, state.school_id, cfg)
        if found is None:
            return RuleOutcome(state)
        group, severity, what = found
        spec = lifecycle.raise_for(
            event,
            rule=RULE,
            key=f"{group}/{event.zone}",
            severity=severity,
            title=f"{what} at {ctx.school_name(state.school_id)} ({event.zone})",
            notify=("onsite", "command"),
            quiet_close_seconds=cfg.quiet_close_seconds,
        )
        state, alerts = dispatch.raise_or_join(state, spec, now, ctx)
        return RuleOutcome(state, alerts)
