"""Routes one input (event, command, notification record or clock tick) for one school through the rules.

Pure: `(state, input, now) -> Outcome(state, alerts, rejected, notices, failures)`. `now`
is the input's Kafka timestamp, so replaying the same input after a crash reproduces the
same output (same alert identifiers). Whatever is due (deadline stages, rule timers)
fires before any input is applied, so a command that arrives after a deadline cannot
hide the escalation it came too late for.

Deadlines wait for the commands that could settle them: the worker passes `until`, the
time up to which every command of the school's partition has been processed (an ack
produced before a deadline but still queued, e.g. while the worker restarted, must settle
it, not arrive after its escalation). A command itself settles what it can at its own time.

Every rule is a `rule.Rule`, listed once in RULES; events go through them in this order.
A rule may *claim* an event (its evidence went into an incident), and the rules that would
raise a separate incident for it (perimeter, video behaviour) then leave it alone.

Failures are isolated: a rule, a deadline stage or a command that raises leaves the
school's state as it was before that step, every other step still runs (panic and the
ladder above all), and the failure is reported in `Outcome.failures` for the worker to
log, count and dead-letter.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Callable, TypeVar

from pipeline.records import INCIDENT_COMMANDS, Alert, CanonicalEvent, Command, Notification, SilenceNotice
from pipeline.registry import Registry
from pipeline.rules import (
    corroboration,
    coverage_gap,
    device_health,
    face_watchlist,
    flood,
    ladder,
    lifecycle,
    lockdown,
    paging_health,
    panic,
    perimeter,
    plate_watchlist,
    post_staffing,
    silences,
    vehicle_loitering,
    video_behaviour,
)
from pipeline.rules.incident import Incident
from pipeline.rules.rule import CommandRejected, Rule, RuleFailure, RuleOutcome, command_key, memory_keys
from pipeline.rules.state import Context, SchoolState

RULES: tuple[Rule, ...] = (
    panic.Panic(),
    corroboration.Corroboration(),  # before perimeter and video_behaviour: it may claim their events
    face_watchlist.FaceWatchlist(),
    plate_watchlist.PlateWatchlist(),
    vehicle_loitering.VehicleLoitering(),
    perimeter.Perimeter(),
    video_behaviour.VideoBehaviour(),
    device_health.DeviceHealth(),
    paging_health.PagingHealth(),  # takes huxue notifier's records (on_notification), not events
    post_staffing.PostStaffing(),
    coverage_gap.CoverageGap(),  # timer only: mobile units' coverage, a panic's nearest units
    silences.Silences(),
    lockdown.Lockdown(),
    flood.Flood(),
)
# every key of the rules' working memories (the worker stores each apart)
MEMORY_KEYS = tuple(k for r in RULES for k in memory_keys(r))
LADDER = "ladder"  # what deadline stages and incident commands report failures as

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    state: SchoolState
    alerts: list[Alert] = field(default_factory=list)
    rejected: list[tuple[Command, CommandRejected]] = field(default_factory=list)
    notices: list[SilenceNotice] = field(default_factory=list)
    failures: list[RuleFailure] = field(default_factory=list)


def describer(inc: Incident, ctx: Context) -> lifecycle.Describe:
    return panic.describer(ctx.escalation) if inc.rule == panic.RULE else lifecycle.describe


def on_event(state: SchoolState, event: CanonicalEvent, now: float, ctx: Context, until: float | None = None) -> Outcome:
    due = run_due(state.pruned(now), now, ctx, until)
    state = due.state
    if event.key in state.applied:  # redelivered: already part of the state
        return due
    alerts: list[Alert] = []
    notices: list[SilenceNotice] = []
    failures = list(due.failures)
    claimed = False
    for rule in _routes(RULES)[0]:
        if not _enabled(rule, state, ctx):
            continue
        out = _attempt(rule.name, failures, rule.on_event, state, event, now, ctx, claimed)
        if out is not None:
            state, claimed = out.state, claimed or out.claimed
            alerts += out.alerts
            notices += out.notices
    if alerts:
        state = state.mark_applied(event.key, now)
    return Outcome(state, due.alerts + alerts, notices=due.notices + notices, failures=failures)


def check_target(cmd: Command, school: str, registry: Registry) -> CommandRejected | None:
    """What a command names must exist: its school, and a silence's device or zone (an
    unknown incident is the ladder's answer). The CLI and the console ask before sending;
    the worker rejects what got through anyway. `school`: the one the command is for (the
    worker reads it from the incident id first: foreign clients may leave school_id out)."""
    if registry.school(school) is None:
        return CommandRejected("unknown_school", f"no school {school!r} in the registry{_did_you_mean(school, registry.schools)}")
    if cmd.unit and registry.unit(cmd.unit) is None:
        return CommandRejected("unknown_unit", f"no mobile unit {cmd.unit!r} in the registry{_did_you_mean(cmd.unit, registry.units)}")
    if cmd.command == "silence":
        device_id, zone = cmd.scope.get("device"), cmd.scope.get("zone")
        if device_id:
            device = registry.device(device_id)
            if device is None or device.school != school:
                return CommandRejected("unknown_device", f"device {device_id} is not at school {school}")
        if zone:
            zones = {d.zone for d in registry.devices_of(school)}
            if zone not in zones:
                return CommandRejected("unknown_zone", f"no zone {zone!r} at school {school}; its zones: {', '.join(sorted(zones)) or 'none'}")
    return None


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=3)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def on_command(state: SchoolState, cmd: Command, now: float, ctx: Context) -> Outcome:
    due = run_due(state.pruned(now), now, ctx)
    state = due.state
    key = command_key(cmd)
    if key in state.applied:
        return due
    if (wrong := check_target(cmd, state.school_id, ctx.registry)) is not None:
        return replace(due, rejected=[(cmd, wrong)])
    if cmd.command in INCIDENT_COMMANDS:
        name, apply = LADDER, _incident_command
    elif cmd.command in ("silence", "unsilence"):
        name, apply = silences.NAME, silences.on_command
    else:
        name, apply = lockdown.NAME, lockdown.on_command
    failures = list(due.failures)
    result = _attempt(name, failures, apply, state, cmd, now, ctx)
    if result is None:
        return replace(due, failures=failures)
    if isinstance(result, CommandRejected):
        return replace(due, rejected=[(cmd, result)])
    return Outcome(result.state.mark_applied(key, now), due.alerts + result.alerts, notices=due.notices + result.notices, failures=failures)


def _incident_command(state: SchoolState, cmd: Command, now: float, ctx: Context) -> RuleOutcome | CommandRejected:
    inc = state.incidents.get(cmd.incident_id)
    if inc is None:
        if cmd.incident_id in state.closed:
            stage = state.closed[cmd.incident_id][0]
            return CommandRejected("incident_closed", f"{cmd.incident_id} is already closed ({stage})")
        return CommandRejected("unknown_incident", f"no incident {cmd.incident_id} at school {state.school_id}")
    result = ladder.apply_command(inc, cmd, now, ctx.escalation, describer(inc, ctx))
    if isinstance(result, CommandRejected):
        return result
    inc, alerts = result
    return RuleOutcome(state.put(inc), alerts)


def on_notification(state: SchoolState, note: Notification, now: float, ctx: Context, until: float | None = None) -> Outcome:
    """A record of huxue notifier: rule paging_health alone reads them."""
    due = run_due(state.pruned(now), now, ctx, until)
    state = due.state
    if note.key in state.applied or not _enabled(paging_health.PagingHealth, state, ctx):
        return due
    failures = list(due.failures)
    out = _attempt(paging_health.NAME, failures, paging_health.on_notification, state, note, now, ctx)
    if out is None:
        return replace(due, failures=failures)
    state = out.state.mark_applied(note.key, now) if out.alerts else out.state
    return Outcome(state, due.alerts + out.alerts, notices=due.notices, failures=failures)


def on_tick(state: SchoolState, now: float, ctx: Context, until: float | None = None) -> Outcome:
    return run_due(state.pruned(now), now, ctx, until)


def run_due(state: SchoolState, now: float, ctx: Context, until: float | None = None) -> Outcome:
    """Fire incident deadlines due by `until` (default `now`), then the timers of the rules that keep time."""
    alerts: list[Alert] = []
    notices: list[SilenceNotice] = []
    failures: list[RuleFailure] = []
    horizon = now if until is None else min(now, until)
    due = [i for i in state.incidents.values() if (ladder.next_due(i) or horizon + 1) <= horizon]
    for inc in sorted(due, key=lambda i: ladder.next_due(i) or 0):
        fired = _attempt(LADDER, failures, ladder.fire_due, inc, now, ctx.escalation, describer(inc, ctx), horizon)
        if fired is not None:
            state = state.put(fired[0])
            alerts += fired[1]
    for rule in _routes(RULES)[1]:
        memory = state.memory.get(rule.memory) if rule.memory else None
        # never run yet (first sight of the school), or its timer is due
        if (memory is None or (memory.get("due") is not None and memory["due"] <= now)) and _enabled(rule, state, ctx):
            out = _attempt(rule.name, failures, rule.on_time, state, now, ctx)
            if out is not None:
                state = out.state
                alerts += out.alerts
                notices += out.notices
    return Outcome(state, alerts, notices=notices, failures=failures)


def _enabled(rule: Rule, state: SchoolState, ctx: Context) -> bool:
    return rule.settings is None or ctx.rule(rule.settings, state.school_id).enabled


@functools.cache
def _routes(rules: tuple[Rule, ...]) -> tuple[tuple[Rule, ...], tuple[Rule, ...]]:
    """(the rules that take events, the rules that keep time): those that override `Rule`'s
    do-nothing default, in RULES order (skipping the others saves work on every input)."""
    return tuple(r for r in rules if type(r).on_event is not Rule.on_event), tuple(r for r in rules if type(r).on_time is not Rule.on_time)


def _attempt(name: str, failures: list[RuleFailure], step: Callable[..., T], *args: Any) -> T | None:
    """`step(*args)`, or None with its failure recorded: the caller keeps the state it had."""
    try:
        return step(*args)
    except Exception as exc:  # noqa: BLE001 - one rule's bug must not silence the others
        failures.append(RuleFailure.of(name, exc))
        return None
