"""The 1-3-5 escalation ladder and operator commands: a pure incident state machine.

    opened ──ack──▶ acknowledged ──arrive──▶ arrived ──resolve / false_alarm──▶ closed
      │ no ack by ack_seconds:            onsite_overdue
      │ no arrive by arrive_target_seconds: mobile_late
      │ no arrive by arrive_limit_seconds:  mobile_overdue

A deadline stage fires at most once and only while its condition still holds; the
matching command removes it. `arrive` also settles the on-site deadline (someone is on
scene). Times are epoch seconds supplied by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from pipeline.config import EscalationConfig
from pipeline.records import Alert, Command, iso_utc
from pipeline.rules.incident import Incident

# stage -> (deadline key in the alert, which command settles it)
LADDER = ("onsite_overdue", "mobile_late", "mobile_overdue")
SETTLED_BY = {"onsite_overdue": ("ack", "arrive"), "mobile_late": ("arrive",), "mobile_overdue": ("arrive",)}


# (incident, stage, who) -> headline; each rule describes its own stages
Describe = Callable[[Incident, str, str], str]


@dataclass(frozen=True)
class CommandRejected:
    reason_code: str
    reason: str


def schedule(opened_at: float, esc: EscalationConfig) -> dict[str, float]:
    return {
        "onsite_overdue": opened_at + esc.ack_seconds,
        "mobile_late": opened_at + esc.arrive_target_seconds,
        "mobile_overdue": opened_at + esc.arrive_limit_seconds,
    }


def deadlines_view(inc: Incident, esc: EscalationConfig) -> dict[str, str]:
    """The `deadlines` of an alert: the 1-3-5 targets, fixed at opening."""
    return {
        "ack_by": iso_utc(inc.opened_at + esc.ack_seconds),
        "arrive_target_by": iso_utc(inc.opened_at + esc.arrive_target_seconds),
        "arrive_by": iso_utc(inc.opened_at + esc.arrive_limit_seconds),
    }


def next_due(inc: Incident) -> float | None:
    return min(inc.deadlines.values()) if inc.deadlines else None


def fire_due(inc: Incident, now: float, esc: EscalationConfig, describe: Describe) -> tuple[Incident, list[Alert]]:
    """Emit every pending deadline stage whose time has come, in due order."""
    alerts: list[Alert] = []
    for stage, due in sorted(inc.deadlines.items(), key=lambda kv: kv[1]):
        if due > now:
            break
        pending = dict(inc.deadlines)
        del pending[stage]
        inc = replace(inc, deadlines=pending)
        if stage in inc.stages:  # defensive: a stage is never emitted twice
            continue
        inc, alert = inc.emit(stage, "Update", now, describe(inc, stage, ""), deadlines=deadlines_view(inc, esc), due=due)
        alerts.append(alert)
    return inc, alerts


def apply_command(inc: Incident, cmd: Command, now: float, esc: EscalationConfig, describe: Describe) -> tuple[Incident, list[Alert]] | CommandRejected:
    """Move the incident by an operator command, or say why not."""
    if not inc.is_open:
        return CommandRejected("incident_closed", f"{inc.incident_id} is already closed ({inc.closed_stage})")
    view = deadlines_view(inc, esc) if inc.rule == "panic" else {}
    common = {"by": cmd.by, "command_id": cmd.command_id, "note": cmd.note, "deadlines": view}
    if cmd.command == "ack":
        if inc.acked_at is not None:
            return CommandRejected("already_acknowledged", f"{inc.incident_id} was acknowledged by {inc.acked_by}")
        inc = replace(inc, acked_at=now, acked_by=cmd.by, deadlines=_settle(inc, "ack"))
        inc, alert = inc.emit("acknowledged", "Update", now, describe(inc, "acknowledged", cmd.by), **common)
        return inc, [alert]
    if cmd.command == "arrive":
        if inc.arrived_at is not None:
            return CommandRejected("already_arrived", f"{inc.incident_id}: arrival was reported by {inc.arrived_by}")
        inc = replace(inc, arrived_at=now, arrived_by=cmd.by, deadlines=_settle(inc, "arrive"))
        inc, alert = inc.emit("arrived", "Update", now, describe(inc, "arrived", cmd.by), **common)
        return inc, [alert]
    stage = "resolved" if cmd.command == "resolve" else "false_alarm"
    inc = replace(inc, closed_at=now, closed_stage=stage, deadlines={})
    inc, alert = inc.emit(stage, "Cancel", now, describe(inc, stage, cmd.by), **common)
    return inc, [alert]


def _settle(inc: Incident, command: str) -> dict[str, float]:
    return {s: due for s, due in inc.deadlines.items() if command not in SETTLED_BY.get(s, ())}
