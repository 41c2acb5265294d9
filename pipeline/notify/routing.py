"""Which receivers page an alert: the first matching route of `notify.routes`. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.config import NotifyConfig, RouteConfig

# alert field each match key reads
MATCH_FIELDS = {"rule": "rule", "severity": "severity", "school": "school_id", "stage": "stage", "status": "status"}
# panic is never held back, whatever the alert says (a press always reaches a person)
NEVER_HELD = frozenset({"panic"})


@dataclass(frozen=True)
class Decision:
    receivers: tuple[str, ...]  # empty: record only, page nobody
    reason: str = ""  # why nobody is paged (held, notify_empty, no_route)
    drill: bool = False  # status Exercise: delivered, marked as a drill


def matches(route: RouteConfig, alert: dict[str, Any]) -> bool:
    for key, wanted in route.match.items():
        value = str(alert.get(MATCH_FIELDS[key], ""))
        if key == "stage":
            if wanted not in (value, value.split("-")[0]):
                return False
        elif value != wanted:
            return False
    return True


def route(alert: dict[str, Any], notify: NotifyConfig) -> Decision:
    """The receivers of `alert`: those of the first route that matches.

    Alerts held back (`held`, e.g. during a lockdown) or with an empty `notify` list are
    recorded only (the contract: an empty list means record only), except rule panic.
    """
    drill = alert.get("status") == "Exercise"
    if alert.get("rule") not in NEVER_HELD:
        if alert.get("held"):
            return Decision((), f"held: {alert['held']}", drill)
        if not alert.get("notify"):
            return Decision((), "notify_empty", drill)
    for r in notify.routes:
        if matches(r, alert):
            return Decision(tuple(dict.fromkeys(r.receivers)), "", drill)
    return Decision((), "no_route", drill)
