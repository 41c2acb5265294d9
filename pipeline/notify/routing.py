"""Which receivers page an alert. Pure.

Two sources, joined: the first matching route of `notify.routes` (by rule, severity, school,
stage, status), and the people of the roles this stage concerns (STAGE_ROLES) among the
alert's `notify` list: `notify.roles` for every school plus the school's own `notify:` in the
registry. So a panic's `opened` pages the school's guards, its area's mobile units and the
command centre; `onsite_overdue` (the guards did not answer) pages the command centre and
the mobile units; the later ladder stages the command centre.

An incident "paging to X failing" (rule paging_health) is never paged to X: it would fail
there too. When nobody else is left, the people of every role get it instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.config import NotifyConfig, RouteConfig
from pipeline.registry import Registry
from pipeline.rules.paging_health import receiver_of

# alert field each match key reads
MATCH_FIELDS = {"rule": "rule", "severity": "severity", "school": "school_id", "stage": "stage", "status": "status"}
# panic is never held back, whatever the alert says (a press always reaches a person)
NEVER_HELD = frozenset({"panic"})
# Which roles a stage concerns (others: all of the alert's `notify` roles). A role pages only
# if the alert's `notify` list names it.
ALL_ROLES = ("onsite", "mobile", "command")
STAGE_ROLES = {
    "onsite_overdue": ("command", "mobile"),  # the guards did not answer in 1 minute
    "mobile_late": ("command",),
    "mobile_overdue": ("command",),
    "acknowledged": ("command", "mobile"),  # someone is on it: the others may stand down
    "arrived": ("command", "onsite"),
    "dispatched": ("command", "mobile"),  # dispatched-<n>: which unit goes (the units learn it)
    "units": ("command",),  # units-<n>: the nearest units changed, for the duty room only
    "resolved": ALL_ROLES,
    "false_alarm": ALL_ROLES,
}


def roles_of(alert: dict[str, Any]) -> tuple[str, ...]:
    """The roles the alert's stage concerns, among those its `notify` list names."""
    stage = str(alert.get("stage", ""))
    wanted = STAGE_ROLES.get(stage) or STAGE_ROLES.get(stage.split("-")[0], ALL_ROLES)  # numbered stages by their name
    named = alert.get("notify") or ()
    return tuple(r for r in wanted if r in named)


def people(alert: dict[str, Any], notify: NotifyConfig, registry: Registry | None, roles: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """Receiver names of the alert's roles (or of `roles`): `notify.roles` and the school's own."""
    school = registry.school(str(alert.get("school_id", ""))) if registry else None
    out: list[str] = []
    for role in roles_of(alert) if roles is None else roles:
        out += notify.roles.get(role, ())
        out += school.notify.get(role, ()) if school else ()
    return tuple(dict.fromkeys(out))


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


def route(alert: dict[str, Any], notify: NotifyConfig, registry: Registry | None = None) -> Decision:
    """The receivers of `alert`: those of the first route that matches, and the people of
    its roles (`people`).

    Alerts held back (`held`, e.g. during a lockdown) or with an empty `notify` list are
    recorded only (the contract: an empty list means record only), except rule panic.
    """
    drill = alert.get("status") == "Exercise"
    if alert.get("rule") not in NEVER_HELD:
        if alert.get("held"):
            return Decision((), f"held: {alert['held']}", drill)
        if not alert.get("notify"):
            return Decision((), "notify_empty", drill)
    routed = next((r.receivers for r in notify.routes if matches(r, alert)), ())
    receivers = tuple(dict.fromkeys((*routed, *people(alert, notify, registry))))
    if failing := receiver_of(alert):
        receivers = tuple(r for r in receivers if r != failing) or tuple(r for r in people(alert, notify, registry, ALL_ROLES) if r != failing)
    return Decision(receivers, "" if receivers else "no_route", drill)
