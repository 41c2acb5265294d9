"""The incident state machine: deadline stages and operator commands (pure).

For rule `panic` the deadlines are the 1-3-5 ladder:

    opened ──ack──▶ acknowledged ──arrive──▶ arrived ──resolve / false_alarm──▶ closed
      (dispatch <unit>, any time before arrive: dispatched-<n>; settles nothing)
      │ no ack by ack_seconds:              onsite_overdue
      │ no arrive by arrive_target_seconds: mobile_late
      │ no arrive by arrive_limit_seconds:  mobile_overdue

A deadline stage fires at most once and only while its condition still holds; the
matching command removes it. `arrive` also settles the on-site deadline (someone is on
scene). Other rules' incidents may carry the deadline `expired` (quiet for a while):
it closes them. Times are epoch seconds supplied by the caller.
"""

from __future__ import annotations

from dataclasses import replace

from pipeline.config import EscalationConfig
from pipeline.records import Alert, Command, iso_utc
from pipeline.rules.evidence import clip
from pipeline.rules.incident import Incident
from pipeline.rules.lifecycle import Describe
from pipeline.rules.rule import CommandRejected

LADDER = ("onsite_overdue", "mobile_late", "mobile_overdue")
SETTLED_BY = {"onsite_overdue": ("ack", "arrive"), "mobile_late": ("arrive",), "mobile_overdue": ("arrive",)}


def schedule(opened_at: float, esc: EscalationConfig) -> dict[str, float]:
    return {
        "onsite_overdue": opened_at + esc.ack_seconds,
        "mobile_late": opened_at + esc.arrive_target_seconds,
        "mobile_overdue": opened_at + esc.arrive_limit_seconds,
    }


def targets(opened_at: float, esc: EscalationConfig) -> dict[str, str]:
    """The 1-3-5 targets as shown in alerts, fixed at opening."""
    return {
        "ack_by": iso_utc(opened_at + esc.ack_seconds),
        "arrive_target_by": iso_utc(opened_at + esc.arrive_target_seconds),
        "arrive_by": iso_utc(opened_at + esc.arrive_limit_seconds),
    }


def deadlines_view(inc: Incident, esc: EscalationConfig) -> dict[str, str]:
    """The `deadlines` of an alert: the ladder's targets for panic incidents only."""
    return targets(inc.opened_at, esc) if inc.rule == "panic" else {}


def next_due(inc: Incident) -> float | None:
    return min(inc.deadlines.values()) if inc.deadlines else None


def fire_due(inc: Incident, now: float, esc: EscalationConfig, describe: Describe, until: float | None = None) -> tuple[Incident, list[Alert]]:
    """Emit every pending deadline stage due by `until` (default `now`), in due order."""
    alerts: list[Alert] = []
    until = now if until is None else min(now, until)
    for stage, due in sorted(inc.deadlines.items(), key=lambda kv: kv[1]):
        if due > until or not inc.is_open:
            break
        inc = replace(inc, deadlines={s: d for s, d in inc.deadlines.items() if s != stage})
        if stage in inc.stages:  # defensive: a stage is never emitted twice
            continue
        # A stage is sent as of its deadline, whichever input fires it: after a crash between
        # the alert and the state that records it, the copy re-emitted by another input (a
        # later tick, deadlines held for queued commands) is the same alert.
        if stage == "expired":
            inc = replace(inc, closed_at=now, closed_stage=stage, deadlines={})
            inc, alert = inc.emit(stage, "Cancel", due, describe(inc, stage, ""), due=due)
        else:
            inc, alert = inc.emit(stage, "Update", due, describe(inc, stage, ""), deadlines=deadlines_view(inc, esc), due=due)
        alerts.append(alert)
    return inc, alerts


def apply_command(inc: Incident, cmd: Command, now: float, esc: EscalationConfig, describe: Describe) -> tuple[Incident, list[Alert]] | CommandRejected:
    """Move the incident by an operator command, or say why not."""
    if not inc.is_open:
        return CommandRejected("incident_closed", f"{inc.incident_id} is already closed ({inc.closed_stage})")
    # A command created before a stage it could have settled, but read after that stage
    # fired (its producer's clock, batching, a broker restart), takes effect when it was
    # read: "arrived" must not be dated before the "mobile_late" that went out without it.
    now = max(now, inc.last_sent)
    common = {"by": cmd.by, "command_id": cmd.command_id, "note": cmd.note, "deadlines": deadlines_view(inc, esc)}
    if cmd.command == "ack":
        if inc.acked_at is not None:
            return CommandRejected("already_acknowledged", f"{inc.incident_id} was acknowledged by {inc.acked_by}")
        inc = replace(inc, acked_at=now, acked_by=clip(cmd.by), deadlines=_settle(inc, "ack"))
        inc, alert = inc.emit("acknowledged", "Update", now, describe(inc, "acknowledged", cmd.by), **common)
        return inc, [alert]
    if cmd.command == "dispatch":
        # A mobile unit was sent: recorded, paged, and the default unit of `arrive`. The
        # ladder keeps running until someone is on scene.
        if inc.arrived_at is not None:
            return CommandRejected("already_arrived", f"{inc.incident_id}: arrival was reported by {inc.arrived_by}")
        if not cmd.unit:  # Command.from_dict requires it; this guards a command built in code
            return CommandRejected("invalid_command", "dispatch needs the unit sent (a registry unit id)")
        if cmd.unit in inc.dispatched:
            return CommandRejected("already_dispatched", f"{inc.incident_id}: {cmd.unit} was already dispatched")
        inc = replace(inc, dispatched=inc.dispatched + (cmd.unit,))
        stage = f"dispatched-{len(inc.dispatched)}"
        inc, alert = inc.emit(stage, "Update", now, describe(inc, "dispatched", cmd.unit), unit=cmd.unit, **common)
        return inc, [alert]
    if cmd.command == "arrive":
        if inc.arrived_at is not None:
            return CommandRejected("already_arrived", f"{inc.incident_id}: arrival was reported by {inc.arrived_by}")
        unit = cmd.unit or (inc.dispatched[-1] if inc.dispatched else "")
        inc = replace(inc, arrived_at=now, arrived_by=clip(cmd.by), arrived_unit=unit, deadlines=_settle(inc, "arrive"))
        inc, alert = inc.emit("arrived", "Update", now, describe(inc, "arrived", cmd.by), unit=unit, **common)
        return inc, [alert]
    stage = "resolved" if cmd.command == "resolve" else "false_alarm"
    inc = replace(inc, closed_at=now, closed_stage=stage, deadlines={})
    inc, alert = inc.emit(stage, "Cancel", now, describe(inc, stage, cmd.by), **common)
    return inc, [alert]


def _settle(inc: Incident, command: str) -> dict[str, float]:
    return {s: due for s, due in inc.deadlines.items() if command not in SETTLED_BY.get(s, ())}
