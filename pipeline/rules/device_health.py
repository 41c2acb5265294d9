"""Rule `device_health`: dead, disconnected, tampered or flat devices.

* A device of `heartbeat_kinds` (panic buttons by default: a dead panic button is a
  safety hole) silent for `heartbeat_timeout_seconds` -> incident, timer-driven: it
  fires with no other traffic and survives restarts (the due time is in memory).
* `device.offline` -> incident (panic button Moderate, other kinds Minor).
* Any later sign of life from the device (heartbeat, online, any event) closes those
  with Cancel, stage `recovered`.
* `device.tamper` -> Severe. Battery below `battery_low_percent` -> Minor, closed
  when a heartbeat reports it back above.
Panic-button health is never silenced. An absence is reported once per silence of the
device, whatever became of the report (opened, folded by flood control, silenced).
Memory: {"last_seen": {device: t}, "since": t, "absent": [devices reported], "due": t}.
"""

from __future__ import annotations

from pipeline.records import Alert, CanonicalEvent, iso_utc
from pipeline.registry import Device
from pipeline.rules import dispatch, lifecycle
from pipeline.rules.evidence import evidence_of
from pipeline.rules.rule import Rule, RuleOutcome
from pipeline.rules.state import Context, SchoolState

SETTINGS = NAME = RULE = MEMORY = "device_health"
WHAT = {"absent": "no heartbeat", "offline": "offline", "tamper": "tampered with", "battery": "battery low"}


def _severity(device: Device, condition: str, cfg) -> str:
    if condition == "tamper":
        return cfg.severity_tamper
    if condition == "battery":
        return cfg.severity_other
    return cfg.severity_panic_button if device.kind == "panic_button" else cfg.severity_other


def _raise(state: SchoolState, device: Device, condition: str, evidence: dict, status: str, now: float, ctx: Context) -> tuple[SchoolState, list[Alert]]:
    if state.find_open(RULE, f"{device.id}/{condition}", status):
        return state, []
    cfg = ctx.rule(SETTINGS, state.school_id)
    label = device.kind.replace("_", " ")
    spec = lifecycle.Raise(
        rule=RULE,
        key=f"{device.id}/{condition}",
        severity=_severity(device, condition, cfg),
        title=f"{label.capitalize()} {device.id} at {ctx.school_name(state.school_id)} ({device.zone}): {WHAT[condition]}",
        evidence=(evidence,),
        status=status,
        zone=device.zone,
        notify=("onsite", "command"),
        certainty="Observed",
        silenceable=device.kind != "panic_button",
    )
    return dispatch.raise_incident(state, spec, now, ctx)


def _close(state: SchoolState, device_id: str, conditions: tuple[str, ...], now: float) -> tuple[SchoolState, list[Alert]]:
    alerts: list[Alert] = []
    for inc in list(state.incidents.values()):
        if inc.rule == RULE and inc.key in {f"{device_id}/{c}" for c in conditions}:
            state, out = lifecycle.close(state, inc, "recovered", now)
            alerts += out
    return state, alerts


def _memory(state: SchoolState, now: float) -> dict:
    return state.memory.get(NAME) or {"last_seen": {}, "since": now, "absent": []}


def _store(state: SchoolState, mem: dict, now: float, ctx: Context) -> SchoolState:
    """Remember, with the next time a watched device would count as silent."""
    cfg = ctx.rule(SETTINGS, state.school_id)
    dues = [
        mem["last_seen"].get(d.id, mem["since"]) + cfg.heartbeat_timeout_seconds
        for d in ctx.registry.devices_of(state.school_id)
        if d.kind in cfg.heartbeat_kinds and d.id not in mem["absent"]
    ]
    return state.remember(NAME, {**mem, "due": min(dues) if dues else None})


class DeviceHealth(Rule):
    name = RULE
    memory = MEMORY
    settings = SETTINGS

    def on_event(self, state: SchoolState, event: CanonicalEvent, now: float, ctx: Context, claimed: bool) -> RuleOutcome:
        device = ctx.registry.device(event.device_id)
        if device is None or device.school != state.school_id:
            return RuleOutcome(state)
        cfg = ctx.rule(SETTINGS, state.school_id)
        mem = _memory(state, now)
        watched = device.kind in cfg.heartbeat_kinds
        if watched:
            mem = {**mem, "last_seen": {**mem["last_seen"], device.id: now}, "absent": [d for d in mem["absent"] if d != device.id]}
        status = event.status
        alerts: list[Alert] = []
        if event.type == "device.offline":
            state, alerts = _raise(state, device, "offline", evidence_of(event), status, now, ctx)
        else:
            state, alerts = _close(state, device.id, ("absent", "offline"), now)
        if event.type == "device.tamper":
            state, more = _raise(state, device, "tamper", evidence_of(event), status, now, ctx)
            alerts += more
        battery = event.attrs.get("battery") if event.type == "device.heartbeat" else None
        if isinstance(battery, (int, float)):
            if battery < cfg.battery_low_percent:
                state, more = _raise(state, device, "battery", evidence_of(event), status, now, ctx)
            else:
                state, more = _close(state, device.id, ("battery",), now)
            alerts += more
        if not watched and not alerts:
            return RuleOutcome(state)  # nothing to remember: no state write for every camera event
        return RuleOutcome(_store(state, mem, now, ctx), alerts)


    def on_time(self, state: SchoolState, now: float, ctx: Context) -> RuleOutcome:
        """Raise for every watched device silent for longer than the timeout."""
        cfg = ctx.rule(SETTINGS, state.school_id)
        mem = _memory(state, now)
        alerts: list[Alert] = []
        for device in ctx.registry.devices_of(state.school_id):
            if device.kind not in cfg.heartbeat_kinds:
                continue
            seen = mem["last_seen"].get(device.id, mem["since"])
            if now - seen >= cfg.heartbeat_timeout_seconds and device.id not in mem["absent"]:
                evidence = {"event_id": f"absent-since-{int(seen)}", "device_id": device.id, "type": "device.absent", "zone": device.zone, "ts": iso_utc(seen)}
                state, out = _raise(state, device, "absent", evidence, "Actual", now, ctx)
                alerts += out
                mem = {**mem, "absent": mem["absent"] + [device.id]}
        return RuleOutcome(_store(state, mem, now, ctx), alerts)
