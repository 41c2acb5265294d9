"""Rule `vehicle_loitering`: the same plate read again and again around one school.

`min_reads` reads of one plate (normalised) within `window_seconds` -> Moderate
incident, Severe when the last read falls in a drop-off / pick-up window (the school's
own calendar). Later reads join it; it closes itself after `quiet_close_seconds`.
Memory: {"plates": {plate: [[time, event key], ...]}} (only reads inside the window).
"""

from __future__ import annotations

from pipeline.records import Alert, CanonicalEvent, iso_utc
from pipeline.rules import calendar, dispatch, lifecycle
from pipeline.rules.incident import evidence_of
from pipeline.rules.settings import normalise_plate
from pipeline.rules.state import Context, SchoolState

SETTINGS = RULE = "vehicle_loitering"


def on_event(state: SchoolState, event: CanonicalEvent, now: float, ctx: Context, claimed: bool) -> tuple[SchoolState, list[Alert], bool]:
    if event.type != "plate.read":
        return state, [], False
    plate = normalise_plate(str(event.attrs.get("plate", "")))
    if not plate:
        return state, [], False
    cfg = ctx.rule(SETTINGS, state.school_id)
    at = event.credible_ts(ctx.max_clock_skew_seconds)
    plates = {
        p: kept
        for p, reads in (state.memory.get(SETTINGS) or {}).get("plates", {}).items()
        if (kept := [r for r in reads if at - r[0] <= cfg.window_seconds])
    }
    reads = plates.get(plate, [])
    if any(key == event.key for _, key in reads):  # a redelivered copy
        return state, [], False
    reads = (reads + [[at, event.key]])[-cfg.min_reads:]
    plates[plate] = reads
    state = state.remember(SETTINGS, {"plates": plates})
    if len(reads) < cfg.min_reads:
        return state, [], False
    school = ctx.school(state.school_id)
    in_window = bool(school and calendar.window_at(school, at))
    severity = cfg.severity_in_windows if in_window else cfg.severity
    spec = lifecycle.Raise(
        rule=RULE,
        key=plate,
        severity=severity,
        title=f"Vehicle {plate} loitering at {ctx.school_name(state.school_id)}: {len(reads)} reads in {cfg.window_seconds / 60:g} min"
        + (" during drop-off/pick-up" if in_window else ""),
        # the earlier reads as far as memory keeps them, then this one in full
        evidence=(evidence_of(event),) + tuple(_earlier(plate, t, key) for t, key in reads[:-1]),
        status="Exercise" if event.exercise else "Actual",
        zone=event.zone,
        quiet_close_seconds=cfg.quiet_close_seconds,
    )
    state, alerts = dispatch.raise_or_join(state, spec, now, ctx)
    return state, alerts, False


def _earlier(plate: str, at: float, key: str) -> dict:
    device_id, _, event_id = key.partition("/")
    return {"event_id": event_id, "device_id": device_id, "type": "plate.read", "ts": iso_utc(at), "attrs": {"plate": plate}}
