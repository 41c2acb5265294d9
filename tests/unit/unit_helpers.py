"""Shared, pure helpers for the unit tests: a small registry, events, commands, a Context.

Imported by test modules as `unit_helpers` (tests/unit is on sys.path under pytest's
default import mode); fixtures live in conftest.py."""

from __future__ import annotations

import textwrap

from pipeline.config import EscalationConfig
from pipeline.records import Alert, CanonicalEvent, Command, iso_utc, parse_ts
from pipeline.registry import Device, Registry, School
from pipeline.rules import engine
from pipeline.rules.state import Context, SchoolState

SCHOOL = "zx-01"
SCHOOL_NAME = "Zixing No.1 Middle School"
OTHER_SCHOOL = "bh-02"
# 2026-11-28T23:41:03.250Z: the press of the contract's example.
T0 = parse_ts("2026-11-29T07:41:03.250+08:00")
ESC = EscalationConfig(ack_seconds=60, arrive_target_seconds=180, arrive_limit_seconds=300)

REGISTRY_YAML = textwrap.dedent(
    """\
    schools:
      - id: zx-01
        name: Zixing No.1 Middle School
        timezone: Asia/Shanghai
        hours: {days: [mon, tue, wed, thu, fri], open: "07:30", close: "17:30"}
        windows: [{start: "07:00", end: "07:50"}, {start: "16:50", end: "17:40"}]
        posts: [{id: zx01-gate-n, required_officers: 2}]
      - id: bh-02
        name: Binhu Experimental Primary School
        timezone: Europe/London
    devices:
      - {id: zx01-btn-1, school: zx-01, kind: panic_button, zone: gate-north}
      - {id: zx01-btn-3, school: zx-01, kind: panic_button, zone: office}
      - {id: zx01-cam-7, school: zx-01, kind: video_analytics, zone: gate-north,
         external: {frigate: gate_cam}}
      - {id: zx01-face-1, school: zx-01, kind: face_camera, zone: gate-north}
      - {id: zx01-lpr-1, school: zx-01, kind: plate_camera, zone: gate-south}
      - {id: zx01-guard-1, school: zx-01, kind: guard_terminal, zone: gate-north}
      - {id: zx01-sos-2, school: zx-01, kind: panic_button, zone: office,
         external: {zigbee2mqtt: office_sos}}
      - {id: bh02-btn-1, school: bh-02, kind: panic_button}
    """
)


def build_registry() -> Registry:
    """The same small registry as REGISTRY_YAML, built directly (no file)."""
    schools = {
        SCHOOL: School(id=SCHOOL, name=SCHOOL_NAME, timezone="Asia/Shanghai"),
        OTHER_SCHOOL: School(id=OTHER_SCHOOL, name="Binhu Experimental Primary School", timezone="Europe/London"),
    }
    devices = {
        d.id: d
        for d in [
            Device("zx01-btn-1", SCHOOL, "panic_button", "gate-north"),
            Device("zx01-btn-3", SCHOOL, "panic_button", "office"),
            Device("zx01-cam-7", SCHOOL, "video_analytics", "gate-north", {"frigate": "gate_cam"}),
            Device("zx01-face-1", SCHOOL, "face_camera", "gate-north"),
            Device("zx01-lpr-1", SCHOOL, "plate_camera", "gate-south"),
            Device("zx01-guard-1", SCHOOL, "guard_terminal", "gate-north"),
            Device("zx01-sos-2", SCHOOL, "panic_button", "office", {"zigbee2mqtt": "office_sos"}),
            Device("bh02-btn-1", OTHER_SCHOOL, "panic_button", ""),
        ]
    }
    external = {(eco, name): d for d in devices.values() for eco, name in d.external.items()}
    return Registry(schools=schools, devices=devices, external=external)


def make_ctx(esc: EscalationConfig = ESC, max_skew: float = 600) -> Context:
    return Context(escalation=esc, registry=build_registry(), max_clock_skew_seconds=max_skew)


def press(
    event_id: str = "e-1",
    *,
    device_id: str = "zx01-btn-1",
    ts: float = T0,
    received: float | None = None,
    exercise: bool = False,
    zone: str = "gate-north",
    school_id: str = SCHOOL,
    etype: str = "panic.pressed",
    media: dict | None = None,
) -> CanonicalEvent:
    return CanonicalEvent(
        event_id=event_id,
        type=etype,
        ts=iso_utc(ts),
        device_id=device_id,
        school_id=school_id,
        kind="panic_button",
        zone=zone,
        source="native",
        mqtt_topic=f"huxue/v1/devices/{device_id}/events",
        received_at=iso_utc(ts if received is None else received),
        media=media,
        exercise=exercise,
    )


def command(command: str, incident_id: str, *, by: str = "guard-zx01-02", at: float | None = None, command_id: str = "", note: str = "") -> Command:
    return Command(
        command=command,
        incident_id=incident_id,
        by=by,
        at=iso_utc(at) if at is not None else "",
        note=note,
        command_id=command_id,
        school_id=SCHOOL,
    )


class Driver:
    """Feeds inputs through pipeline.rules.engine and records what comes out."""

    def __init__(self, ctx: Context | None = None, state: SchoolState | None = None):
        self.ctx = ctx or make_ctx()
        self.state = state or SchoolState(school_id=SCHOOL)
        self.alerts: list[Alert] = []
        self.rejected: list[tuple[Command, object]] = []

    def _take(self, outcome: engine.Outcome) -> list[Alert]:
        self.state = outcome.state
        self.alerts.extend(outcome.alerts)
        self.rejected.extend(outcome.rejected)
        return list(outcome.alerts)

    def event(self, ev: CanonicalEvent, now: float) -> list[Alert]:
        return self._take(engine.on_event(self.state, ev, now, self.ctx))

    def press(self, now: float, event_id: str = "e-1", **kw) -> list[Alert]:
        kw.setdefault("ts", now)
        return self.event(press(event_id, **kw), now)

    def command(self, now: float, name: str, incident_id: str, **kw) -> engine.Outcome:
        kw.setdefault("at", now)
        outcome = engine.on_command(self.state, command(name, incident_id, **kw), now, self.ctx)
        self._take(outcome)
        return outcome

    def tick(self, now: float) -> list[Alert]:
        return self._take(engine.on_tick(self.state, now, self.ctx))

    def stages(self, incident_id: str | None = None) -> list[str]:
        return [a.stage for a in self.alerts if incident_id is None or a.incident_id == incident_id]
