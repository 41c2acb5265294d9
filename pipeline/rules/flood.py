"""Flood control (ISA-18.2: more than 10 alarms in 10 minutes is a flood).

Every non-panic incident a school raises is counted. While more than `max_incidents`
were raised within `window_seconds`, further Minor and Moderate ones are folded into
one summary incident (rule `flood`) as evidence instead of being opened; Severe and
Extreme still open. The summary ends (Cancel, stage `ended`) once the rate is back
under the limit. Drills are counted apart from real incidents.
Memory: {"raised": {status: [times]}, "due": when to look again}.
"""

from __future__ import annotations

from pipeline.records import Alert
from pipeline.rules import lifecycle
from pipeline.rules.evidence import clip
from pipeline.rules.lifecycle import Raise
from pipeline.rules.rule import Rule, RuleOutcome
from pipeline.rules.state import Context, SchoolState

SETTINGS = NAME = MEMORY = "flood"
FOLDABLE = ("Minor", "Moderate")


def _raised(state: SchoolState, now: float, window: float) -> dict[str, list[float]]:
    stored = (state.memory.get(NAME) or {}).get("raised", {})
    kept = {status: [t for t in times if now - t < window] for status, times in stored.items()}
    return {status: times for status, times in kept.items() if times}


def _store(state: SchoolState, raised: dict[str, list[float]], window: float) -> SchoolState:
    open_for = {i.status for i in state.incidents.values() if i.rule == NAME}
    # while a summary is open, look again when its oldest counted incident leaves the window
    dues = [raised[s][0] + window for s in open_for if raised.get(s)]
    return state.remember(NAME, {"raised": raised, "due": min(dues) if dues else None} if raised or open_for else None)


def admit(state: SchoolState, r: Raise, now: float, ctx: Context) -> tuple[SchoolState, list[Alert], bool]:
    """Count a raise; fold it into the summary instead when the school is flooding."""
    cfg = ctx.rule(NAME, state.school_id)
    raised = _raised(state, now, cfg.window_seconds)
    raised[r.status] = raised.get(r.status, []) + [now]
    state = _store(state, raised, cfg.window_seconds)
    if len(raised[r.status]) <= cfg.max_incidents or r.severity not in FOLDABLE:
        return state, [], False
    item = {**r.evidence[0], "rule": r.rule, "severity": r.severity, "headline": clip(r.title, lifecycle.MAX_TITLE)}
    summary = state.find_open(NAME, NAME, r.status)
    if summary:
        state, alerts = lifecycle.add_evidence(state, summary, [item], now)
    else:
        spec = Raise(
            rule=NAME, key=NAME, severity="Moderate", status=r.status, evidence=(item,),
            title=f"Alarm flood at {ctx.school_name(state.school_id)}: low-priority incidents folded",
            notify=("command",), silenceable=False, foldable=False,
        )
        state, alerts = lifecycle.create(state, spec, now, ctx)
    return _store(state, raised, cfg.window_seconds), alerts, True


class Flood(Rule):
    name = NAME
    memory = MEMORY
    settings = SETTINGS

    def on_time(self, state: SchoolState, now: float, ctx: Context) -> RuleOutcome:
        if NAME not in state.memory:
            return RuleOutcome(state)
        cfg = ctx.rule(NAME, state.school_id)
        raised = _raised(state, now, cfg.window_seconds)
        alerts: list[Alert] = []
        for summary in [i for i in state.incidents.values() if i.rule == NAME]:
            if len(raised.get(summary.status, [])) <= cfg.max_incidents:
                state, closed = lifecycle.close(state, summary, "ended", now)
                alerts += closed
        return RuleOutcome(_store(state, raised, cfg.window_seconds), alerts)
