"""The one way a rule opens an incident: silences, then flood control, then lockdown.

    silenced source ──▶ nothing raised (the silence counts it)
    flooding school ──▶ Minor/Moderate folded into the flood summary
    locked down     ──▶ Minor/Moderate opened but held back (empty notify)
    otherwise       ──▶ opened
"""

from __future__ import annotations

from pipeline.records import SEVERITIES, Alert
from pipeline.rules import flood, lifecycle, lockdown, silences
from pipeline.rules.evidence import clip
from pipeline.rules.lifecycle import Describe, Raise
from pipeline.rules.state import Context, SchoolState

HELD = ("Minor", "Moderate")


def raise_incident(state: SchoolState, r: Raise, now: float, ctx: Context, describe_fn: Describe = lifecycle.describe) -> tuple[SchoolState, list[Alert]]:
    if r.silenceable:
        trigger = r.evidence[0]
        silence = silences.covering(state, trigger.get("device_id", ""), r.zone, now)
        if silence:
            return silences.count_suppressed(state, silence, f"{r.rule}/{trigger.get('device_id')}/{trigger.get('event_id')}"), []
    if r.foldable and ctx.rule(flood.NAME, state.school_id).enabled:
        state, alerts, folded = flood.admit(state, r, now, ctx)
        if folded:
            return state, alerts
    held = lockdown.NAME if r.severity in HELD and lockdown.current(state, r.status) else ""
    return lifecycle.create(state, r, now, ctx, held=held, describe_fn=describe_fn)


RANK = {severity: n for n, severity in enumerate(reversed(SEVERITIES))}  # Minor 0 .. Extreme 3: higher is worse


def raise_or_join(state: SchoolState, r: Raise, now: float, ctx: Context) -> tuple[SchoolState, list[Alert]]:
    """Join the open incident of the same rule, key and status, or raise a new one.

    Evidence that would have raised a more severe incident raises the open one to that
    severity (e.g. an after-hours breach joining an in-hours incident).
    """
    current = state.find_open(r.rule, r.key, r.status)
    if current is None:
        return raise_incident(state, r, now, ctx)
    upgrade = {}
    if RANK[r.severity] > RANK[current.severity]:
        upgrade = {"severity": r.severity, "urgency": r.urgency, "notify": r.notify, "title": clip(r.title, lifecycle.MAX_TITLE)}
    return lifecycle.add_evidence(state, current, [r.evidence[0]], now, **upgrade)
