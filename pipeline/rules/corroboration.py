"""Rule `corroborated`: sequential confirmation (alarm-receiving practice, BS 8243).

1. A panic press and a camera/sensor event of `types` at the same school within
   `window_seconds`, in either order, upgrade the panic incident: an Update with stage
   `corroborated`, the sensor's evidence, certainty Observed.
2. Without a press: `min_sensors` distinct sensors of at least `min_kinds` device kinds
   reporting `intrusion_types` in one zone within `zone_window_seconds` open a Severe
   incident (certainty Observed); later reports in that zone join it.
Either way the events' separate perimeter / video incidents are closed as `superseded`.
Drills only corroborate drills. Memory: {"recent": [the latest MAX_RECENT sensor event
summaries within the windows], "keys": {event key: when seen}} (keys kept an hour, so
late copies of an event redelivered after a bridge outage never count twice).
"""

from __future__ import annotations

from typing import Any

from pipeline.records import Alert, CanonicalEvent, parse_ts
from pipeline.rules import dispatch, ladder, lifecycle, panic
from pipeline.rules.evidence import clip, evidence_of
from pipeline.rules.rule import Rule, RuleOutcome
from pipeline.rules.state import Context, SchoolState

SETTINGS = MEMORY = "corroboration"
RULE = "corroborated"
SUPERSEDABLE = ("perimeter", "video_behaviour")
KEEP_KEYS_SECONDS = 3600
MAX_KEYS = 500
MAX_RECENT = 50  # sensor events kept within the windows (a burst keeps its latest)


class Corroboration(Rule):
    name = RULE
    memory = MEMORY
    settings = SETTINGS

    def on_event(self, state: SchoolState, event: CanonicalEvent, now: float, ctx: Context, claimed: bool) -> RuleOutcome:
        cfg = ctx.rule(SETTINGS, state.school_id)
        horizon = max(cfg.window_seconds, cfg.zone_window_seconds)
        at = event.credible_ts(ctx.max_clock_skew_seconds)
        memory = state.memory.get(SETTINGS) or {}
        recent = [r for r in memory.get("recent", []) if now - r["seen"] <= horizon]
        if event.type == "panic.pressed":
            status = event.status
            matches = [r for r in recent if r["type"] in cfg.types and r["status"] == status and abs(at - r["at"]) <= cfg.window_seconds]
            return RuleOutcome(*_corroborate_panic(state, [r["evidence"] for r in matches], status, now, ctx))
        if event.type not in cfg.types and event.type not in cfg.intrusion_types:
            return RuleOutcome(state)
        key = event.key
        keys = {k: t for k, t in memory.get("keys", {}).items() if now - t <= KEEP_KEYS_SECONDS}
        if key in keys:  # a redelivered copy
            return RuleOutcome(state, claimed=True)
        keys[key] = now
        if len(keys) > MAX_KEYS:
            keys = dict(sorted(keys.items(), key=lambda kv: kv[1])[-MAX_KEYS:])
        device = ctx.registry.device(event.device_id)
        item = {
            "key": key, "device": event.device_id, "kind": device.kind if device else event.kind, "zone": clip(event.zone),
            "type": event.type, "at": at, "seen": now, "status": event.status, "evidence": evidence_of(event),
        }
        recent = (recent + [item])[-MAX_RECENT:]
        state = state.remember(SETTINGS, {"recent": recent, "keys": keys})
        alerts: list[Alert] = []
        claims = False
        press = state.find_open(panic.RULE, panic.RULE, item["status"])
        if event.type in cfg.types and press and _near_a_press(press, at, cfg.window_seconds):
            state, alerts = _corroborate_panic(state, [item["evidence"]], item["status"], now, ctx)
            claims = True
        if event.type in cfg.intrusion_types:
            state, more, zone_claims = _zone(state, item, recent, now, ctx, cfg)
            alerts += more
            claims = claims or zone_claims
        return RuleOutcome(state, alerts, claimed=claims)


def _near_a_press(press, at: float, window: float) -> bool:
    """Within the window of any press of the incident (a later press extends it)."""
    presses = [parse_ts(e["ts"]) for e in press.evidence if e.get("type") == "panic.pressed"] or [press.opened_at]
    return any(abs(at - t) <= window for t in presses)


def _corroborate_panic(state: SchoolState, evidence: list[dict[str, Any]], status: str, now: float, ctx: Context) -> tuple[SchoolState, list[Alert]]:
    press = state.find_open(panic.RULE, panic.RULE, status)
    if press is None or not evidence:
        return state, []
    known = {(e["device_id"], e["event_id"]) for e in press.evidence}
    fresh = [e for e in evidence if (e["device_id"], e["event_id"]) not in known]
    if not fresh:
        return state, []
    # one Update for everything that arrived together; the first one is `corroborated`
    state, alerts = lifecycle.add_evidence(
        state, press, fresh, now,
        stage="corroborated" if press.certainty != "Observed" else "",
        certainty="Observed",
        describe_fn=panic.describer(ctx.escalation),
        deadlines_view=ladder.deadlines_view(press, ctx.escalation),
    )
    state, superseded = _supersede(state, fresh, press.incident_id, now)
    return state, alerts + superseded


def _zone(state: SchoolState, item: dict, recent: list[dict], now: float, ctx: Context, cfg: Any) -> tuple[SchoolState, list[Alert], bool]:
    status, zone = item["status"], item["zone"]
    open_inc = state.find_open(RULE, zone, status)
    if open_inc:
        state, alerts = lifecycle.add_evidence(state, open_inc, [item["evidence"]], now)
        state, superseded = _supersede(state, [item["evidence"]], open_inc.incident_id, now)
        return state, alerts + superseded, True
    in_zone = [
        r for r in recent
        if r["zone"] == zone and r["status"] == status and r["type"] in cfg.intrusion_types and abs(item["at"] - r["at"]) <= cfg.zone_window_seconds
    ]
    sensors = {r["device"] for r in in_zone}
    kinds = {r["kind"] for r in in_zone}
    if len(sensors) < cfg.min_sensors or len(kinds) < cfg.min_kinds:
        return state, [], False
    evidence = [item["evidence"]] + [r["evidence"] for r in in_zone if r is not item]
    spec = lifecycle.Raise(
        rule=RULE,
        key=zone,
        severity=cfg.severity,
        urgency="Immediate",
        certainty="Observed",
        title=f"Intrusion confirmed by {len(sensors)} sensors ({', '.join(sorted(kinds))}) at {ctx.school_name(state.school_id)} ({zone})",
        evidence=tuple(evidence),
        status=status,
        zone=zone,
        notify=("onsite", "mobile", "command"),
        quiet_close_seconds=cfg.quiet_close_seconds,
    )
    state, alerts = dispatch.raise_incident(state, spec, now, ctx)
    if alerts and alerts[0].rule == RULE:
        state, superseded = _supersede(state, evidence, alerts[0].incident_id, now)
        alerts += superseded
    return state, alerts, True


def _supersede(state: SchoolState, evidence: list[dict[str, Any]], by_incident: str, now: float) -> tuple[SchoolState, list[Alert]]:
    """Close the perimeter / video incidents whose evidence was taken over."""
    keys = {(e["device_id"], e["event_id"]) for e in evidence}
    alerts: list[Alert] = []
    for inc in list(state.incidents.values()):
        if inc.rule in SUPERSEDABLE and keys & {(e.get("device_id"), e.get("event_id")) for e in inc.evidence}:
            state, out = lifecycle.close(state, inc, "superseded", now, superseded_by=by_incident)
            alerts += out
    return state, alerts
