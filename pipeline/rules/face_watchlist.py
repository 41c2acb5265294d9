"""Rule `face_watchlist`: a face from a watchlist at a school.

`face.match` whose `watchlist` category has a severity in the config (wanted,
restraining_order, missing_student by default; `staff` has none and raises nothing)
and `similarity` >= `min_similarity` -> incident with that severity. A match without a
similarity is taken as the camera's own decision. Further matches of the same person
within `join_seconds` join it; it closes itself (`expired`) that long after the last.
"""

from __future__ import annotations

from pipeline.records import CanonicalEvent
from pipeline.rules import dispatch, lifecycle
from pipeline.rules.evidence import clip
from pipeline.rules.rule import Rule, RuleOutcome
from pipeline.rules.state import Context, SchoolState

SETTINGS = RULE = "face_watchlist"


class FaceWatchlist(Rule):
    name = RULE
    settings = SETTINGS

    def on_event(self, state: SchoolState, event: CanonicalEvent, now: float, ctx: Context, claimed: bool) -> RuleOutcome:
        if event.type != "face.match":
            return RuleOutcome(state)
        cfg = ctx.rule(SETTINGS, state.school_id)
        category = event.attrs.get("watchlist")
        severity = cfg.categories.get(category) if isinstance(category, str) else None
        similarity = event.attrs.get("similarity", 1.0)
        if severity is None or similarity < cfg.min_similarity:
            return RuleOutcome(state)
        person = clip(str(event.attrs.get("person_ref") or "unknown person"))  # it keys the incident
        spec = lifecycle.raise_for(
            event,
            rule=RULE,
            key=f"{category}/{person}",
            severity=severity,
            title=f"Watchlist face ({category}: {person}, similarity {similarity:.2f}) at {ctx.school_name(state.school_id)} ({event.zone})",
            quiet_close_seconds=cfg.join_seconds,
        )
        state, alerts = dispatch.raise_or_join(state, spec, now, ctx)
        return RuleOutcome(state, alerts)
