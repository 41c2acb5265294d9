"""A recorded week of huxue traffic for the history store and report tests.

Produced by the real rules engine (not hand-written alerts): panic presses acknowledged
and attended after known delays, a drill, a silent panic button that recovers, a silence,
guard check-ins and device status changes; then laid out as the Kafka records the
console's recorder would read (topic, partition, offset, key, value).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import EscalationConfig
from pipeline.ops.store import Record
from pipeline.records import CanonicalEvent, Command, iso_utc
from pipeline.registry import Device, Post, Registry, School
from pipeline.rules import engine
from pipeline.rules.settings import RulesConfig
from pipeline.rules.state import Context, SchoolState

DAY = 86400.0
SCHOOLS = ("s1", "s2")
# (school, day, delay to ack or None, delay to arrive or None, close with, drill?)
PANICS = [
    ("s1", 0, 30, 150, "resolve", False),
    ("s1", 1, 75, 240, "resolve", False),
    ("s1", 2, 45, 400, "false_alarm", False),
    ("s2", 0, 20, 170, "resolve", False),
    ("s2", 1, None, None, None, False),  # never acknowledged: still open
    ("s2", 2, 10, 60, "resolve", True),  # a drill
]


def registry() -> Registry:
    schools = {
        s: School(id=s, name=f"School {s.upper()}", timezone="Asia/Shanghai", posts=(Post(f"{s}-gate", 2),))
        for s in SCHOOLS
    }
    devices = {}
    for s in SCHOOLS:
        for d in (Device(f"{s}-btn-1", s, "panic_button", "gate"), Device(f"{s}-btn-2", s, "panic_button", "office"),
                  Device(f"{s}-cam-1", s, "video_analytics", "gate"), Device(f"{s}-post-1", s, "guard_terminal", "gate")):
            devices[d.id] = d
    return Registry(schools=schools, devices=devices, external={})


def _event(device: Device, etype: str, at: float, n: int, exercise: bool = False, **attrs: Any) -> CanonicalEvent:
    return CanonicalEvent(
        event_id=f"ev-{n}", type=etype, ts=iso_utc(at), device_id=device.id, school_id=device.school, kind=device.kind,
        zone=device.zone, source="native", mqtt_topic=f"huxue/v1/devices/{device.id}/events", received_at=iso_utc(at),
        attrs=attrs, exercise=exercise,
    )


@dataclass
class Week:
    start: float
    records: list[Record] = field(default_factory=list)
    acks: dict[str, list[float]] = field(default_factory=dict)  # school -> ack delays of real panics
    arrivals: dict[str, list[float]] = field(default_factory=dict)
    down: dict[str, float] = field(default_factory=dict)  # school -> panic-button seconds silent


def week(start: float) -> Week:
    """Three days of traffic beginning at `start`, as recorder input, with the expected numbers."""
    reg = registry()
    rules = RulesConfig()
    rules = dataclasses.replace(
        rules,
        # only s1 watches heartbeats (its buttons beat hourly): silent for 90 min = absent
        device_health=dataclasses.replace(rules.device_health, enabled=False, schools={"s1": {"enabled": True, "heartbeat_timeout_seconds": 5400}}),
        post_staffing=dataclasses.replace(rules.post_staffing, enabled=False),
    )
    ctx = Context(EscalationConfig(60, 180, 300), reg, 600, rules)
    states = {s: SchoolState(school_id=s, partition=i) for i, s in enumerate(SCHOOLS)}
    out = Week(start=start)
    offsets: dict[tuple[str, int], int] = {}

    def emit(kind: str, topic: str, school: str, value: dict[str, Any]) -> None:
        part = SCHOOLS.index(school)
        off = offsets.get((topic, part), 0)
        offsets[(topic, part)] = off + 1
        out.records.append(Record(kind, topic, part, off, school, value))

    # every input as (time, order, school, what, payload), processed in time order
    inputs: list[tuple[float, int, str, str, Any]] = []
    n = 0

    def add(at: float, school: str, what: str, payload: Any) -> None:
        nonlocal n
        n += 1
        inputs.append((at, n, school, what, payload))

    for p, (school, day, ack, arrive, close, drill) in enumerate(PANICS):
        t0 = start + day * DAY + 8 * 3600
        add(t0, school, "press", (p, _event(reg.device(f"{school}-btn-1"), "panic.pressed", t0, n + 1, drill)))
        if not drill:
            out.acks.setdefault(school, [])
            out.arrivals.setdefault(school, [])
        for delay, name, who in ((ack, "ack", "guard"), (arrive, "arrive", "patrol")):
            if delay is not None:
                add(t0 + delay, school, "command", (p, name, f"{who}-{school}"))
                if not drill:
                    (out.acks if name == "ack" else out.arrivals)[school].append(float(delay))
        if close:
            add(t0 + 600, school, "command", (p, close, f"duty-{school}"))
    # s1's buttons beat hourly; btn-2 misses the beat at 24 h: absent at 23 h + 90 min, back at 25 h
    for hour in range(72):
        for button in ("s1-btn-1", "s1-btn-2"):
            if not (button == "s1-btn-2" and hour == 24):
                add(start + hour * 3600, "s1", "event", _event(reg.device(button), "device.heartbeat", start + hour * 3600, n + 1, battery=90))
    add(start + 23 * 3600 + 5400, "s1", "tick", None)
    out.down["s1"] = 25 * 3600 - (23 * 3600 + 5400.0)
    # at s2: a silence, guard check-ins and a camera going offline
    add(start + DAY, "s2", "silence", Command(command="silence", school_id="s2", by="admin", at=iso_utc(start + DAY), scope={"zone": "gate"}, duration_seconds=3600, reason="gate works", command_id="c-sil"))
    for i, (etype, officer) in enumerate((("guard.checkin", "o-1"), ("guard.checkin", "o-2"), ("guard.checkout", "o-1"))):
        add(start + DAY + 60 * i, "s2", "raw", _event(reg.device("s2-post-1"), etype, start + DAY + 60 * i, n + 1, post_id="s2-gate", officer_id=officer))
    for i, etype in enumerate(("device.offline", "device.online", "device.offline")):
        add(start + DAY + 120 + i, "s2", "raw", _event(reg.device("s2-cam-1"), etype, start + DAY + 120 + i, n + 1))

    opened: dict[int, str] = {}  # press number -> the incident it opened
    for at, _, school, what, payload in sorted(inputs, key=lambda x: (x[0], x[1])):
        if what == "press":
            p, event = payload
            outcome = engine.on_event(states[school], event, at, ctx)
            opened[p] = next(a.incident_id for a in outcome.alerts if a.stage == "opened")
        elif what == "event":
            outcome = engine.on_event(states[school], payload, at, ctx)
        elif what == "tick":
            outcome = engine.on_tick(states[school], at, ctx)
        elif what == "raw":  # events the worker does nothing with, but the store keeps
            emit("event", "huxue.events", school, payload.to_dict())
            continue
        else:
            if what == "command":
                p, name, by = payload
                payload = Command(command=name, incident_id=opened[p], school_id=school, by=by, at=iso_utc(at), command_id=f"c-{school}-{at}")
            emit("command", "huxue.commands", school, payload.to_dict())
            outcome = engine.on_command(states[school], payload, at, ctx)
        states[school] = outcome.state
        for a in outcome.alerts:
            emit("alert", "huxue.alerts", school, a.to_dict())
        for cmd, why in outcome.rejected:
            emit("rejected", "huxue.commands.dlq", school, {"reason_code": why.reason_code, "reason": why.reason, "command": cmd.to_dict(), "received_at": iso_utc(at)})
        for notice in outcome.notices:
            emit("silence", "huxue.silences", school, notice.to_dict())
    return out
