"""Rule `paging_health`: paging to a receiver is failing, an incident of the school.

huxue notifier decides when a receiver is failing (notify.failing_after, failing_seconds)
and writes a `receiver_failing` record on the notifications topic, once per school whose
pages fail there; this rule only turns that verdict into an incident "Paging to <receiver>
failing" (key: the receiver). It closes (Cancel, stage `recovered`, as device health)
when the receiver delivers for the school again: `receiver_recovered`, or any `delivered`
record (the same fact; it also closes what a restarted notifier no longer remembers).

* Moderate; Severe (`severity_panic`) when the failing page was a panic's. A panic's page
  failing there while the incident is open raises it to that severity (once).
* Never silenced, never folded by flood control: a pager that is down is a safety hole,
  like a dead panic button. Always `Actual`: a receiver failing a drill's page is real.
* No loop: the notifier never pages an incident about a receiver to that receiver
  (notify/routing.py), reports a receiver once per failing spell and school, and an open
  incident is never opened twice; resolved by an operator, it stays closed until the
  receiver has recovered and failed again.
Keeps no memory: the open incident is the state.
"""

from __future__ import annotations

from typing import Any

from pipeline.records import DELIVERED, FAILED, RECEIVER_FAILING, RECEIVER_RECOVERED, RETRYING, Notification
from pipeline.rules import dispatch, lifecycle
from pipeline.rules.evidence import clip
from pipeline.rules.rule import Rule, RuleOutcome
from pipeline.rules.state import Context, SchoolState

NAME = RULE = SETTINGS = "paging_health"
STATUS = "Actual"
WORKS = (DELIVERED, RECEIVER_RECOVERED)
PAGE_FAILED = (FAILED, RETRYING)


def relevant(note: Notification) -> bool:
    """Can this record change an incident? (The worker skips the others unread.)"""
    if not note.receiver or not note.school_id:
        return False
    return note.outcome in (RECEIVER_FAILING, *WORKS) or (note.outcome in PAGE_FAILED and note.rule == "panic")


def receiver_of(alert: dict[str, Any]) -> str:
    """The receiver an alert of this rule is about ('' for any other alert)."""
    if alert.get("rule") != RULE:
        return ""
    evidence = alert.get("evidence") or [{}]
    return str(evidence[0].get("receiver", "")) if isinstance(evidence[0], dict) else ""


def _evidence(note: Notification) -> dict[str, Any]:
    return {
        "event_id": clip(note.identifier or note.key),
        "type": f"paging.{note.outcome}",
        "receiver": clip(note.receiver),
        "receiver_type": clip(note.type),
        "incident_id": clip(note.incident_id),  # the incident whose page failed
        "rule": clip(note.rule),
        "ts": clip(note.at),
        "error": clip(note.error),
    }


class PagingHealth(Rule):
    """Listed in engine.RULES for its settings; its input is notification records."""

    name = RULE
    settings = SETTINGS


def on_notification(state: SchoolState, note: Notification, now: float, ctx: Context) -> RuleOutcome:
    current = state.find_open(RULE, note.receiver, STATUS)
    if note.outcome in WORKS:
        if current is None:
            return RuleOutcome(state)
        state, alerts = lifecycle.close(state, current, "recovered", now)
        return RuleOutcome(state, alerts)
    cfg = ctx.rule(SETTINGS, state.school_id)
    severity = cfg.severity_panic if note.rule == "panic" else cfg.severity
    if current is None:
        if note.outcome != RECEIVER_FAILING:
            return RuleOutcome(state)  # the notifier has not called it failing (yet)
        spec = lifecycle.Raise(
            rule=RULE,
            key=note.receiver,
            severity=severity,
            title=f"Paging to {note.receiver} failing at {ctx.school_name(state.school_id)}",
            evidence=(_evidence(note),),
            status=STATUS,
            urgency=lifecycle.urgency(severity),
            certainty="Observed",
            notify=("onsite", "command"),
            silenceable=False,
            foldable=False,
            cause=note.key,
        )
        state, alerts = dispatch.raise_incident(state, spec, now, ctx)
        return RuleOutcome(state, alerts)
    if dispatch.RANK[severity] > dispatch.RANK[current.severity]:
        state, alerts = lifecycle.add_evidence(state, current, [_evidence(note)], now, severity=severity, urgency=lifecycle.urgency(severity))
        return RuleOutcome(state, alerts)
    return RuleOutcome(state)
