"""Rule `coverage_gap` (issue 13): the "3-5" of 1-3-5 checked before a press needs it.

While a school needs coverage (its drop-off and pick-up windows and its school hours,
rules/units.py `window_kind`), some available mobile unit must be able to reach it within
`escalation.arrive_limit_seconds`. When none can for `confirm_seconds` in a row (a unit
crossing the limit at a traffic light does not flap it), a Severe incident opens for the
command centre and the mobile units; it closes by itself, `restored` when a unit can make
it again, `window_ended` when coverage is no longer needed.

The same look, for each open panic incident of the school not yet on scene, refreshes its
nearest units: when another unit is nearest now or the list holds other units, an Update
`units-<n>` carries the new list (the console's card follows it; the opened alert had the first).

Timer-driven, every `check_seconds`, and only while the registry lists any unit: a
deployment without units pays nothing. The units are the worker's read-only view of the
units topic (Context.units), not school state, so a replay may see other positions; what
was decided (incident, memory) is in the school's state and is not decided again.
Until the worker's view has read the units topic up to its end at start, no coverage is
decided (a worker just started would otherwise see no unit anywhere).
Memory: {"uncovered_since": t | None, "due": t}.
"""

from __future__ import annotations

from dataclasses import replace

from pipeline.records import Alert, iso_utc
from pipeline.rules import dispatch, lifecycle, panic, units
from pipeline.rules.incident import Incident
from pipeline.rules.rule import Rule, RuleOutcome
from pipeline.rules.state import Context, SchoolState

SETTINGS = NAME = RULE = MEMORY = "coverage_gap"
KEY = "coverage"
IDLE_CHECK_SECONDS = 3600
PANIC = "panic"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _title(ctx: Context, school_id: str, cov: units.Coverage) -> str:
    best = f"nearest available unit {cov.best.unit_id}, {_minutes(cov.best.eta_s)}" if cov.best else "no available unit"
    return f"No mobile unit within {_minutes(cov.limit_s)} of {ctx.school_name(school_id)} ({best})"


def _gap(state: SchoolState, cov: units.Coverage, now: float, ctx: Context) -> tuple[SchoolState, list[Alert]]:
    cfg = ctx.rule(SETTINGS, state.school_id)
    trigger = {
        "event_id": f"coverage-{int(now)}",
        "type": "coverage.check",
        "ts": iso_utc(now),
        "window": cov.window,
        "limit_s": cov.limit_s,
        "best_unit": cov.best.unit_id if cov.best else None,
        "best_eta_s": round(cov.best.eta_s, 1) if cov.best else None,
    }
    spec = lifecycle.Raise(
        rule=RULE,
        key=KEY,
        severity=cfg.severity,
        urgency=lifecycle.urgency(cfg.severity),
        certainty="Likely",
        title=_title(ctx, state.school_id, cov),
        evidence=(trigger,),
        notify=("mobile", "command"),
        silenceable=False,  # a coverage hole is nobody's device to silence
        cause=f"coverage|{int(now)}",
    )
    return dispatch.raise_incident(state, spec, now, ctx)


def _refresh(state: SchoolState, inc: Incident, now: float, ctx: Context) -> tuple[SchoolState, list[Alert]]:
    """The panic's nearest units now; an Update `units-<n>` when they changed."""
    fresh = panic.nearest(state.school_id, now, ctx)
    ids, before = [u["unit_id"] for u in fresh], [u["unit_id"] for u in inc.units]
    # a new nearest unit, or others in the list: not every swap of two patrolling units
    if ids[:1] == before[:1] and set(ids) == set(before):
        return state, []
    inc = replace(inc, units=fresh)
    n = 1 + sum(1 for s in inc.stages if s.startswith("units-"))
    stage = f"units-{n}"
    inc, alert = inc.emit(stage, "Update", now, panic.describer(ctx.escalation)(inc, "units", ""))
    return state.put(inc), [alert]


class CoverageGap(Rule):
    name = RULE
    memory = MEMORY
    settings = SETTINGS

    def on_time(self, state: SchoolState, now: float, ctx: Context) -> RuleOutcome:
        if not ctx.registry.units:  # look again now and then: a restart may bring a registry with units
            return RuleOutcome(state.remember(NAME, {"uncovered_since": None, "due": now + IDLE_CHECK_SECONDS}))
        cfg = ctx.rule(SETTINGS, state.school_id)
        mem = state.memory.get(NAME) or {"uncovered_since": None}
        school = ctx.school(state.school_id)
        alerts: list[Alert] = []
        for inc in list(state.incidents.values()):
            if inc.rule == PANIC and inc.is_open and inc.arrived_at is None and not inc.dispatched:
                state, out = _refresh(state, inc, now, ctx)
                alerts += out
        if school is not None and ctx.units_ready():
            cov = units.coverage(school, ctx.units(), now, ctx.units_config, ctx.escalation.arrive_limit_seconds)
            since = mem.get("uncovered_since")
            since = (since if since is not None else now) if cov.gap else None
            current = state.find_open(RULE, KEY, "Actual")
            if current is None and since is not None and now - since >= cfg.confirm_seconds:
                state, out = _gap(state, cov, now, ctx)
                alerts += out
            elif current is not None:
                change = units.gap_change(True, cov)
                if change is not None:
                    state, out = lifecycle.close(state, current, change, now)
                    alerts += out
            mem = {"uncovered_since": since}
        # on a fixed grid, so every worker looks at the same instants
        due = (now // cfg.check_seconds + 1) * cfg.check_seconds
        return RuleOutcome(state.remember(NAME, {**mem, "due": due}), alerts)
