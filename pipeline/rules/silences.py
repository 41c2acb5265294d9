"""Silences: an operator mutes a device, a zone or a whole school for a while, with a reason.

A silenced source raises no new incidents (its events still flow to huxue.events and
rules still learn from them). Panic buttons are never silenced: a silence on one is
rejected, and no silence ever applies to rule `panic` or to panic-button health.
Memory: {"active": [silence...], "seq": n, "due": earliest end}.
"""

from __future__ import annotations

from pipeline.records import Command, SilenceNotice, iso_utc, parse_ts
from pipeline.rules.evidence import clip
from pipeline.rules.rule import CommandRejected, Rule, RuleOutcome
from pipeline.rules.state import Context, SchoolState

NAME = MEMORY = "silence"
MAX_REASON = 1024  # characters of an operator's reason kept


def _memory(state: SchoolState) -> dict:
    return state.memory.get(NAME) or {"active": [], "seq": 0}


def covering(state: SchoolState, device_id: str, zone: str, now: float) -> dict | None:
    """The active silence that covers this source, if any."""
    for s in _memory(state)["active"]:
        if s["ends"] <= now:
            continue
        scope = s["scope"]
        if not scope or scope.get("device") == device_id or (zone and scope.get("zone") == zone):
            return s
    return None


def count_suppressed(state: SchoolState, silence: dict, key: str) -> SchoolState:
    """Count what a silence kept from being raised (a redelivered copy counts once)."""
    if key in silence.get("keys", []):
        return state
    mem = _memory(state)
    counted = {**silence, "suppressed": silence.get("suppressed", 0) + 1, "keys": (silence.get("keys", []) + [key])[-100:]}
    return state.remember(NAME, {**mem, "active": [counted if s["id"] == silence["id"] else s for s in mem["active"]]})


def _notice(state: SchoolState, s: dict, now: float, state_name: str, ended_by: str = "") -> SilenceNotice:
    return SilenceNotice(
        silence_id=s["id"], school_id=state.school_id, state=state_name, scope=s["scope"], reason=s["reason"], by=s["by"],
        starts=iso_utc(s["starts"]), ends=iso_utc(s["ends"]), sent=iso_utc(now), command_id=s.get("command_id", ""),
        ended_by=ended_by, suppressed=s.get("suppressed", 0),
    )


def _store(state: SchoolState, mem: dict) -> SchoolState:
    ends = [s["ends"] for s in mem["active"]]
    return state.remember(NAME, {**mem, "due": min(ends) if ends else None})


def on_command(state: SchoolState, cmd: Command, now: float, ctx: Context) -> RuleOutcome | CommandRejected:
    mem = _memory(state)
    if cmd.command == "unsilence":
        match = next((s for s in mem["active"] if s["id"] == cmd.silence_id), None)
        if match is None:
            return CommandRejected("unknown_silence", f"no active silence {cmd.silence_id} at school {state.school_id}")
        state = _store(state, {**mem, "active": [s for s in mem["active"] if s is not match]})
        return RuleOutcome(state, notices=[_notice(state, match, now, "ended", ended_by=clip(cmd.by))])

    if not cmd.reason:
        return CommandRejected("missing_reason", "a silence needs a reason")
    device_id = cmd.scope.get("device")
    if device_id:  # known and at this school (engine.check_target)
        device = ctx.registry.device(device_id)
        if device.kind == "panic_button":
            return CommandRejected("panic_never_silenced", f"{device_id} is a panic button: panic buttons can never be silenced")
    limit = ctx.rule(NAME, state.school_id).max_seconds
    if cmd.until:
        ends = parse_ts(cmd.until)
    elif cmd.duration_seconds:
        ends = now + cmd.duration_seconds
    else:
        return CommandRejected("invalid_duration", "a silence needs duration_seconds or until")
    if not now < ends <= now + limit:
        return CommandRejected("invalid_duration", f"a silence must end in the future and within {limit:g} s")
    seq = mem["seq"] + 1
    silence = {
        "id": f"sil-{state.school_id}-{seq:04d}", "scope": {k: clip(v) for k, v in cmd.scope.items()}, "reason": clip(cmd.reason, MAX_REASON),
        "by": clip(cmd.by), "starts": now, "ends": ends, "command_id": clip(cmd.command_id), "suppressed": 0,
    }
    state = _store(state, {**mem, "seq": seq, "active": mem["active"] + [silence]})
    return RuleOutcome(state, notices=[_notice(state, silence, now, "active")])


class Silences(Rule):
    name = NAME
    memory = MEMORY  # no `settings`: silences cannot be switched off

    def on_time(self, state: SchoolState, now: float, ctx: Context) -> RuleOutcome:
        """Silences past their end are over: publish that, forget them."""
        mem = state.memory.get(NAME)
        if not mem:
            return RuleOutcome(state)
        ended = [s for s in mem["active"] if s["ends"] <= now]
        if not ended:
            return RuleOutcome(state)
        state = _store(state, {**mem, "active": [s for s in mem["active"] if s["ends"] > now]})
        return RuleOutcome(state, notices=[_notice(state, s, now, "ended", ended_by="expiry") for s in ended])
