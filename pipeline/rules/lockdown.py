"""Rule `lockdown`: an operator locks a school down, and lifts it.

The lockdown is itself an incident (Severe, Immediate, everyone notified) so every
console shows it. While it is open, new Minor and Moderate incidents of the school are
held back (dispatch.py): recorded and published with an empty `notify`; Severe and
Extreme ones still go out. Memory: {"incident_id": ...} while locked down.
"""

from __future__ import annotations

from pipeline.records import Alert, Command
from pipeline.rules import lifecycle
from pipeline.rules.ladder import CommandRejected
from pipeline.rules.state import Context, SchoolState

NAME = "lockdown"


def current(state: SchoolState) -> str | None:
    """The open lockdown incident's id (closing it by `resolve` also ends the lockdown)."""
    iid = (state.memory.get(NAME) or {}).get("incident_id")
    return iid if iid in state.incidents else None


def on_command(state: SchoolState, cmd: Command, now: float, ctx: Context) -> tuple[SchoolState, list[Alert]] | CommandRejected:
    iid = current(state)
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
            evidence=({"command": "lockdown", "by": cmd.by, "reason": cmd.reason, "command_id": cmd.command_id},),
            status="Exercise" if cmd.exercise else "Actual",
            silenceable=False,
            foldable=False,
        )
        state, alerts = lifecycle.create(state, raise_, now, ctx)
        return state.remember(NAME, {"incident_id": alerts[0].incident_id}), alerts
    if not iid:
        return CommandRejected("not_locked_down", f"school {state.school_id} is not locked down")
    state, alerts = lifecycle.close(state, state.incidents[iid], "lifted", now, by=cmd.by, note=cmd.note or cmd.reason, command_id=cmd.command_id)
    return state.remember(NAME, None), alerts
