"""Rule `lockdown`: an operator locks a school down, and lifts it.

The lockdown is itself an incident (Severe, Immediate, everyone notified) so every
console shows it. While it is open, new Minor and Moderate incidents of the school are
held back (dispatch.py): recorded and published with an empty `notify`; Severe and
Extreme ones still go out. A drill lockdown (`exercise`) holds only drill incidents and
a real one only real incidents. Lifting releases the held incidents: their later
updates notify again. Memory: {"Actual" | "Exercise": incident id} while locked down.
"""

from __future__ import annotations

from dataclasses import replace

from pipeline.records import Command
from pipeline.rules import lifecycle
from pipeline.rules.evidence import clip
from pipeline.rules.rule import CommandRejected, Rule, RuleOutcome, command_key
from pipeline.rules.state import Context, SchoolState

NAME = MEMORY = "lockdown"
MAX_REASON = 1024  # characters of the operator's reason kept in the evidence


def current(state: SchoolState, status: str) -> str | None:
    """The open lockdown incident's id for `status` (closing it by `resolve` also ends it)."""
    iid = (state.memory.get(NAME) or {}).get(status)
    return iid if iid in state.incidents else None


class Lockdown(Rule):
    name = NAME
    memory = MEMORY  # commands only: no events, no timers, cannot be switched off


def on_command(state: SchoolState, cmd: Command, now: float, ctx: Context) -> RuleOutcome | CommandRejected:
    status = "Exercise" if cmd.exercise else "Actual"
    iid = current(state, status)
    memory = {k: v for k, v in (state.memory.get(NAME) or {}).items() if v in state.incidents}
    if cmd.command == "lockdown":
        if iid:
            return CommandRejected("already_locked_down", f"school {state.school_id} is already locked down ({iid})")
        if not cmd.reason:
            return CommandRejected("missing_reason", "a lockdown needs a reason")
        raise_ = lifecycle.Raise(
            rule=NAME,
            key=NAME,
            severity="Severe",
            urgency="Immediate",
            certainty="Observed",
            notify=("onsite", "mobile", "command"),
            title=f"LOCKDOWN at {ctx.school_name(state.school_id)}: {cmd.reason} (ordered by {cmd.by})",
            evidence=({"command": "lockdown", "by": clip(cmd.by), "reason": clip(cmd.reason, MAX_REASON), "command_id": clip(cmd.command_id)},),
            status=status,
            silenceable=False,
            foldable=False,
            cause=command_key(cmd),
        )
        state, alerts = lifecycle.create(state, raise_, now, ctx, by=cmd.by, command_id=cmd.command_id)
        return RuleOutcome(state.remember(NAME, {**memory, status: alerts[0].incident_id}), alerts)
    if not iid:
        return CommandRejected("not_locked_down", f"school {state.school_id} is not locked down" + (" (drill)" if cmd.exercise else ""))
    state, alerts = lifecycle.close(state, state.incidents[iid], "lifted", now, by=cmd.by, note=cmd.note or cmd.reason, command_id=cmd.command_id)
    for inc in list(state.incidents.values()):
        if inc.held == NAME and inc.status == status:
            state = state.put(replace(inc, held=""))  # released: later updates notify again
    rest = {k: v for k, v in memory.items() if k != status}
    return RuleOutcome(state.remember(NAME, rest or None), alerts)
