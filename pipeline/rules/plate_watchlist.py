"""Rule `plate_watchlist`: a listed vehicle at a school.

`plate.read` of a plate in `plates` (plate -> severity; compared upper-case without
spaces or separators) -> incident with that severity. Further reads within
`join_seconds` join it; it closes itself (`expired`) that long after the last read.
"""

from __future__ import annotations

from pipeline.records import CanonicalEvent
from pipeline.rules import dispatch, lifecycle
from pipeline.rules.rule import Rule, RuleOutcome
from pipeline.rules.settings import normalise_plate
from pipeline.rules.state import Context, SchoolState

SETTINGS = RULE = "plate_watchlist"


class PlateWatchlist(Rule):
    name = RULE
    settings = SETTINGS

    def on_event(self, state: SchoolState, event: CanonicalEvent, now: float, ctx: Context, claimed: bool) -> RuleOutcome:
        if event.type != "plate.read":
            return RuleOutcome(state)
        cfg = ctx.rule(SETTINGS, state.school_id)
        plate = normalise_plate(str(event.attrs.get("plate", "")))
        severity = next((sev for listed, sev in cfg.plates.items() if normalise_plate(listed) == plate), None)
        if severity is None:
            return RuleOutcome(state)
        spec = lifecycle.raise_for(
            event,
            rule=RULE,
            key=plate,
            severity=severity,
            title=f"Watchlist plate {plate} at {ctx.school_name(state.school_id)} ({event.zone})",
            quiet_close_seconds=cfg.join_seconds,
        )
        state, alerts = dispatch.raise_or_join(state, spec, now, ctx)
        return RuleOutcome(state, alerts)
