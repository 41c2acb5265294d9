"""Routes one input (event, command or clock tick) for one school through the rules.

Pure: `(state, input, now) -> Outcome(state, alerts, rejected, notices)`. `now` is the
input's Kafka timestamp, so replaying the same input after a crash reproduces the same
output (same alert identifiers). Whatever is due (deadline stages, rule timers) fires
before any input is applied, so a command that arrives after a deadline cannot hide
the escalation it came too late for.

Event rules run in this order; a rule may *claim* an event (its evidence went into an
incident), and the rules that would raise a separate incident for it (perimeter, video
behaviour) then leave it alone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from pipeline.records import INCIDENT_COMMANDS, Alert, CanonicalEvent, Command, SilenceNotice
from pipeline.rules import (
    corroboration,
    device_health,
    face_watchlist,
    flood,
    ladder,
    lifecycle,
    lockdown,
    panic,
    perimeter,
    plate_watchlist,
    post_staffing,
    silences,
    vehicle_loitering,
    video_behaviour,
)
from pipeline.rules.incident import Incident
from pipeline.rules.state import Context, SchoolState

EVENT_RULES = (
    panic,
    corroboration,  # before perimeter and video_behaviour: it may claim their events
    face_watchlist,
    plate_watchlist,
    vehicle_loitering,
    perimeter,
    video_behaviour,
    device_health,
    post_staffing,
)
TIMED = (device_health, post_staffing, silences, flood)
# every rule that keeps working memory, by its key (the worker stores each apart)
MEMORY_KEYS = tuple(m.MEMORY for m in (corroboration, vehicle_loitering, device_health, post_staffing, silences, lockdown, flood))


@dataclass(frozen=True)
class Outcome:
    state: SchoolState
    alerts: list[Alert] = field(default_factory=list)
    rejected: list[tuple[Command, ladder.CommandRejected]] = field(default_factory=list)
    notices: list[SilenceNotice] = field(default_factory=list)


def describer(inc: Incident, ctx: Context) -> lifecycle.Describe:
    return panic.describer(ctx.escalation) if inc.rule == panic.RULE else lifecycle.describe


def on_event(state: SchoolState, event: CanonicalEvent, now: float, ctx: Context) -> Outcome:
    state, alerts, notices = run_due(state.pruned(now), now, ctx)
    if event.key in state.applied:  # redelivered: already part of the state
        return Outcome(state, alerts, notices=notices)
    claimed = False
    new: list[Alert] = []
    for rule in EVENT_RULES:
        settings = getattr(rule, "SETTINGS", None)
        if settings and not ctx.rule(settings, state.school_id).enabled:
            continue
        state, out, claims = rule.on_event(state, event, now, ctx, claimed)
        new += out
        claimed = claimed or claims
    if new:
        state = state.mark_applied(event.key, now)
    return Outcome(state, alerts + new, notices=notices)


def on_command(state: SchoolState, cmd: Command, now: float, ctx: Context) -> Outcome:
    state, alerts, notices = run_due(state.pruned(now), now, ctx)
    key = command_key(cmd)
    if key in state.applied:
        return Outcome(state, alerts, notices=notices)
    if cmd.command in INCIDENT_COMMANDS:
        result = _incident_command(state, cmd, now, ctx)
    elif cmd.command in ("silence", "unsilence"):
        result = silences.on_command(state, cmd, now, ctx)
    else:
        result = lockdown.on_command(state, cmd, now, ctx)
    if isinstance(result, ladder.CommandRejected):
        return Outcome(state, alerts, [(cmd, result)], notices)
    state, produced = result
    state = state.mark_applied(key, now)
    if produced and isinstance(produced[0], SilenceNotice):
        return Outcome(state, alerts, notices=notices + produced)
    return Outcome(state, alerts + produced, notices=notices)


def _incident_command(state: SchoolState, cmd: Command, now: float, ctx: Context) -> tuple[SchoolState, list[Alert]] | ladder.CommandRejected:
    inc = state.incidents.get(cmd.incident_id)
    if inc is None:
        if cmd.incident_id in state.closed:
            stage = state.closed[cmd.incident_id][0]
            return ladder.CommandRejected("incident_closed", f"{cmd.incident_id} is already closed ({stage})")
        return ladder.CommandRejected("unknown_incident", f"no incident {cmd.incident_id} at school {state.school_id}")
    result = ladder.apply_command(inc, cmd, now, ctx.escalation, describer(inc, ctx))
    if isinstance(result, ladder.CommandRejected):
        return result
    inc, alerts = result
    return state.put(inc), alerts


def on_tick(state: SchoolState, now: float, ctx: Context) -> Outcome:
    state, alerts, notices = run_due(state.pruned(now), now, ctx)
    return Outcome(state, alerts, notices=notices)


def run_due(state: SchoolState, now: float, ctx: Context) -> tuple[SchoolState, list[Alert], list[SilenceNotice]]:
    """Fire due incident deadlines, then the timers of the rules that keep time."""
    alerts: list[Alert] = []
    due = [i for i in state.incidents.values() if (ladder.next_due(i) or now + 1) <= now]
    for inc in sorted(due, key=lambda i: ladder.next_due(i) or 0):
        inc, fired = ladder.fire_due(inc, now, ctx.escalation, describer(inc, ctx))
        state = state.put(inc)
        alerts.extend(fired)
    notices: list[SilenceNotice] = []
    for rule in TIMED:
        memory = state.memory.get(rule.MEMORY)
        # never run yet (first sight of the school), or its timer is due
        if memory is None or (memory.get("due") is not None and memory["due"] <= now):
            settings = getattr(rule, "SETTINGS", None)
            if settings and not ctx.rule(settings, state.school_id).enabled:
                continue
            state, fired, told = rule.on_time(state, now, ctx)
            alerts.extend(fired)
            notices.extend(told)
    return state, alerts, notices


def command_key(cmd: Command) -> str:
    """A command's identity for de-duplication: its id, or a digest of its content."""
    if cmd.command_id:
        return f"cmd/{cmd.command_id}"
    digest = hashlib.sha1(f"{cmd.command}|{cmd.incident_id}|{cmd.school_id}|{cmd.silence_id}|{cmd.by}|{cmd.at}".encode()).hexdigest()[:16]
    return f"cmd/{digest}"
