"""Routes one input (event, command or clock tick) for one school through the rules.

Pure: `(state, input, now) -> Outcome(state, alerts, rejections)`. `now` is the input's
Kafka timestamp, so replaying the same input after a crash reproduces the same output
(same alert identifiers). Due deadlines are fired before any input is applied, so a
command that arrives after a deadline cannot hide the escalation it came too late for.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from pipeline.records import Alert, CanonicalEvent, Command
from pipeline.rules import ladder, panic
from pipeline.rules.incident import Incident
from pipeline.rules.state import Context, SchoolState


@dataclass(frozen=True)
class Outcome:
    state: SchoolState
    alerts: list[Alert] = field(default_factory=list)
    rejected: list[tuple[Command, ladder.CommandRejected]] = field(default_factory=list)

    def changed(self, before: SchoolState) -> bool:
        return self.state is not before


def describer(inc: Incident, ctx: Context) -> ladder.Describe:
    if inc.rule == panic.RULE:
        return panic.describer(ctx.escalation)
    return lambda i, stage, by: f"{i.title}: {i.rule} {stage}" + (f" by {by}" if by else "")


def on_event(state: SchoolState, event: CanonicalEvent, now: float, ctx: Context) -> Outcome:
    state, alerts = fire_due(state.pruned(now), now, ctx)
    if event.key in state.applied:  # redelivered: already part of the state
        return Outcome(state, alerts)
    after, new = panic.on_event(state, event, now, ctx)
    if new:
        after = after.mark_applied(event.key, now)
    return Outcome(after, alerts + new)


def on_command(state: SchoolState, cmd: Command, now: float, ctx: Context) -> Outcome:
    state, alerts = fire_due(state.pruned(now), now, ctx)
    key = command_key(cmd)
    if key in state.applied:
        return Outcome(state, alerts)
    inc = state.incidents.get(cmd.incident_id)
    if inc is None:
        return Outcome(state, alerts, [(cmd, ladder.CommandRejected("unknown_incident", f"no incident {cmd.incident_id} at school {state.school_id}"))])
    result = ladder.apply_command(inc, cmd, now, ctx.escalation, describer(inc, ctx))
    if isinstance(result, ladder.CommandRejected):
        return Outcome(state, alerts, [(cmd, result)])
    inc, new = result
    return Outcome(state.put(inc).mark_applied(key, now), alerts + new)


def on_tick(state: SchoolState, now: float, ctx: Context) -> Outcome:
    state, alerts = fire_due(state.pruned(now), now, ctx)
    return Outcome(state, alerts)


def fire_due(state: SchoolState, now: float, ctx: Context) -> tuple[SchoolState, list[Alert]]:
    due = [i for i in state.incidents.values() if i.is_open and (ladder.next_due(i) or now + 1) <= now]
    alerts: list[Alert] = []
    for inc in sorted(due, key=lambda i: ladder.next_due(i) or 0):
        inc, fired = ladder.fire_due(inc, now, ctx.escalation, describer(inc, ctx))
        state = state.put(inc)
        alerts.extend(fired)
    return state, alerts


def command_key(cmd: Command) -> str:
    """A command's identity for de-duplication: its id, or a digest of its content."""
    if cmd.command_id:
        return f"cmd/{cmd.command_id}"
    digest = hashlib.sha1(f"{cmd.command}|{cmd.incident_id}|{cmd.by}|{cmd.at}".encode()).hexdigest()[:16]
    return f"cmd/{digest}"

