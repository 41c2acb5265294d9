"""Shared, pure helpers for the unit tests: a small registry, events, commands, a Context.

Imported by test modules as `unit_helpers` (tests/unit is on sys.path under pytest's
default import mode); fixtures live in conftest.py."""

from __future__ import annotations

import dataclasses
import textwrap
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import orjson

from pipeline.config import EscalationConfig
from pipeline.records import Alert, CanonicalEvent, Command, iso_utc, parse_ts
from pipeline.registry import WEEKDAYS, Device, Post, Registry, School, Window
from pipeline.rules import engine
from pipeline.rules.settings import RulesConfig
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
      - {id: zx01-cam-8, school: zx-01, kind: video_analytics, zone: gate-north}
      - {id: zx01-fence-1, school: zx-01, kind: fence, zone: gate-north}
      - {id: zx01-mic-1, school: zx-01, kind: audio_sensor, zone: gate-north}
      - {id: zx01-door-1, school: zx-01, kind: access_control, zone: office}
      - {id: zx01-cam-9, school: zx-01, kind: video_analytics, zone: field}
      - {id: zx01-fence-2, school: zx-01, kind: fence, zone: field}
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
            Device("zx01-cam-8", SCHOOL, "video_analytics", "gate-north"),
            Device("zx01-fence-1", SCHOOL, "fence", "gate-north"),
            Device("zx01-mic-1", SCHOOL, "audio_sensor", "gate-north"),
            Device("zx01-door-1", SCHOOL, "access_control", "office"),
            Device("zx01-cam-9", SCHOOL, "video_analytics", "field"),
            Device("zx01-fence-2", SCHOOL, "fence", "field"),
            Device("bh02-btn-1", OTHER_SCHOOL, "panic_button", ""),
        ]
    }
    external = {(eco, name): d for d in devices.values() for eco, name in d.external.items()}
    return Registry(schools=schools, devices=devices, external=external)


def only_panic() -> RulesConfig:
    """Every rule but `panic` switched off: the ladder tests see the ladder alone."""
    rules = RulesConfig()
    blocks = {f.name: getattr(rules, f.name) for f in dataclasses.fields(rules)}
    return RulesConfig(**{name: dataclasses.replace(b, enabled=False) if hasattr(b, "enabled") else b for name, b in blocks.items()})


# panic buttons of SCHOOL (device_health watches their heartbeats by default)
BUTTONS = ("zx01-btn-1", "zx01-btn-3", "zx01-sos-2")


def make_ctx(esc: EscalationConfig = ESC, max_skew: float = 600, rules: RulesConfig | None = None, registry: Registry | None = None) -> Context:
    return Context(escalation=esc, registry=registry or build_registry(), max_clock_skew_seconds=max_skew, rules=rules or only_panic())


def enable(*names: str, **tuned: dict) -> RulesConfig:
    """only_panic() with the named rule blocks switched back on; `tuned` also switches a
    block on and replaces some of its settings: enable("corroboration", flood={"max_incidents": 2})."""
    rules = only_panic()
    changes = {}
    for name in names:
        changes[name] = dataclasses.replace(getattr(rules, name), enabled=True)
    for name, values in tuned.items():
        block = getattr(rules, name)
        extra = {"enabled": True} if hasattr(block, "enabled") else {}
        changes[name] = dataclasses.replace(block, **{**extra, **values})
    return dataclasses.replace(rules, **changes)


def rules_ctx(*names: str, registry: Registry | None = None, **tuned: dict) -> Context:
    """A Context whose rules are only_panic() plus `enable(*names, **tuned)` (and, if
    given, another registry, e.g. `registry_with(school(...))`)."""
    return make_ctx(rules=enable(*names, **tuned), registry=registry)


_REGISTRY = build_registry()


def event(
    etype: str,
    device_id: str,
    event_id: str = "s-1",
    *,
    ts: float = T0,
    received: float | None = None,
    attrs: dict | None = None,
    exercise: bool = False,
    zone: str | None = None,
    school_id: str | None = None,
    media: dict | None = None,
) -> CanonicalEvent:
    """A canonical event from a registry device (kind, zone and school from the registry)."""
    device = _REGISTRY.device(device_id)
    return CanonicalEvent(
        event_id=event_id,
        type=etype,
        ts=iso_utc(ts),
        device_id=device_id,
        school_id=school_id or (device.school if device else SCHOOL),
        kind=device.kind if device else "",
        zone=(device.zone if device else "") if zone is None else zone,
        source="native",
        mqtt_topic=f"huxue/v1/devices/{device_id}/" + ("status" if etype in ("device.online", "device.offline") else "events"),
        received_at=iso_utc(ts if received is None else received),
        attrs=attrs or {},
        media=media,
        exercise=exercise,
    )


def camera(etype: str = "video.intrusion", device_id: str = "zx01-cam-7", event_id: str = "v-1", **kw) -> CanonicalEvent:
    return event(etype, device_id, event_id, **kw)


def fence(device_id: str = "zx01-fence-1", event_id: str = "f-1", **kw) -> CanonicalEvent:
    kw.setdefault("attrs", {"zone": _REGISTRY.device(device_id).zone})
    return event("fence.breach", device_id, event_id, **kw)


def scream(device_id: str = "zx01-mic-1", event_id: str = "a-1", **kw) -> CanonicalEvent:
    kw.setdefault("attrs", {"level_db": 95})
    return event("sound.scream", device_id, event_id, **kw)


def door(device_id: str = "zx01-door-1", event_id: str = "d-1", **kw) -> CanonicalEvent:
    kw.setdefault("attrs", {"door": "office-back"})
    return event("door.forced", device_id, event_id, **kw)


def heartbeat(device_id: str, event_id: str = "hb-1", battery: float | None = None, **kw) -> CanonicalEvent:
    if battery is not None:
        kw["attrs"] = {"battery": battery}
    return event("device.heartbeat", device_id, event_id, **kw)


def offline(device_id: str, event_id: str = "off-1", **kw) -> CanonicalEvent:
    return event("device.offline", device_id, event_id, **kw)


def online(device_id: str, event_id: str = "on-1", **kw) -> CanonicalEvent:
    return event("device.online", device_id, event_id, **kw)


def tamper(device_id: str, event_id: str = "t-1", **kw) -> CanonicalEvent:
    return event("device.tamper", device_id, event_id, **kw)


def school_command(
    name: str,
    *,
    by: str = "cc-duty",
    at: float | None = None,
    scope: dict | None = None,
    duration_seconds: float = 0.0,
    until: float | None = None,
    reason: str = "",
    silence_id: str = "",
    command_id: str = "",
    note: str = "",
    exercise: bool = False,
    school_id: str = SCHOOL,
) -> Command:
    """A school command (silence, unsilence, lockdown, lift_lockdown)."""
    return Command(
        command=name,
        by=by,
        at=iso_utc(at) if at is not None else "",
        note=note,
        command_id=command_id,
        school_id=school_id,
        scope=dict(scope or {}),
        duration_seconds=duration_seconds,
        until=iso_utc(until) if until is not None else "",
        reason=reason,
        silence_id=silence_id,
        exercise=exercise,
    )


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
        self.notices: list = []  # SilenceNotice

    def _take(self, outcome: engine.Outcome) -> list[Alert]:
        self.state = outcome.state
        self.alerts.extend(outcome.alerts)
        self.rejected.extend(outcome.rejected)
        self.notices.extend(outcome.notices)
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

    def school_command(self, now: float, name: str, **kw) -> engine.Outcome:
        kw.setdefault("at", now)
        outcome = engine.on_command(self.state, school_command(name, **kw), now, self.ctx)
        self._take(outcome)
        return outcome

    def tick(self, now: float) -> list[Alert]:
        return self._take(engine.on_tick(self.state, now, self.ctx))

    def stages(self, incident_id: str | None = None) -> list[str]:
        return [a.stage for a in self.alerts if incident_id is None or a.incident_id == incident_id]

    def of_rule(self, rule: str) -> list[Alert]:
        return [a for a in self.alerts if a.rule == rule]


# --- calendars relative to T0, for the rules that look at school hours and windows -------------


def clock(offset: float, tz: str = "Asia/Shanghai", base: float = T0) -> time:
    """The wall-clock time, in `tz`, of the instant `base + offset` (microseconds kept, so
    a window built from it starts exactly at that instant)."""
    return datetime.fromtimestamp(base + offset, tz=ZoneInfo(tz)).time()


def window(start: float, end: float, tz: str = "Asia/Shanghai", base: float = T0) -> Window:
    """A daily window from `base + start` to `base + end` (wall clock in `tz`)."""
    return Window(clock(start, tz, base), clock(end, tz, base))


def local_epoch(text: str, tz: str) -> float:
    """Epoch seconds of a wall-clock time `YYYY-MM-DDTHH:MM[:SS]` in `tz`."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


def school(
    school_id: str = SCHOOL,
    *,
    tz: str = "Asia/Shanghai",
    name: str | None = None,
    days: tuple[str, ...] = WEEKDAYS,
    open_: time = time(7, 30),
    close: time = time(17, 30),
    windows: tuple[Window, ...] = (),
    posts: dict[str, int] | None = None,
    closed_dates: tuple[str, ...] = (),
) -> School:
    """A school for a test registry: every day a school day unless `days` says otherwise;
    `posts` maps post id -> required officers."""
    default_name = SCHOOL_NAME if school_id == SCHOOL else school_id
    return School(
        id=school_id,
        name=name or default_name,
        timezone=tz,
        days=tuple(days),
        open=open_,
        close=close,
        windows=tuple(windows),
        posts=tuple(Post(pid, n) for pid, n in (posts or {}).items()),
        closed_dates=frozenset(date.fromisoformat(d) for d in closed_dates),
    )


def registry_with(*schools: School) -> Registry:
    """build_registry() with these schools added or replacing those of the same id."""
    base = build_registry()
    return dataclasses.replace(base, schools={**base.schools, **{s.id: s for s in schools}})


# --- events of the watchlist, vehicle, video and guard rules -------------------------------------

OMIT = object()  # face(similarity=OMIT): the attribute is left out


def face(
    person_ref: str | None = "p-1",
    category: object = "wanted",  # any value, to test what the rule makes of it
    similarity: object = 0.91,
    event_id: str = "fm-1",
    device_id: str = "zx01-face-1",
    **kw,
) -> CanonicalEvent:
    """A `face.match`; pass OMIT (or None for person_ref) to leave an attribute out."""
    attrs: dict = {}
    if category is not OMIT:
        attrs["watchlist"] = category
    if person_ref is not None:
        attrs["person_ref"] = person_ref
    if similarity is not OMIT:
        attrs["similarity"] = similarity
    kw.setdefault("attrs", attrs)
    return event("face.match", device_id, event_id, **kw)


def plate(number: str = "京A12345", event_id: str = "pl-1", device_id: str = "zx01-lpr-1", **kw) -> CanonicalEvent:
    kw.setdefault("attrs", {"plate": number, "direction": "in"})
    return event("plate.read", device_id, event_id, **kw)


def crowd(count: object = 30, event_id: str = "cr-1", device_id: str = "zx01-cam-7", **kw) -> CanonicalEvent:
    kw.setdefault("attrs", {"count": count})
    return event("video.crowd", device_id, event_id, **kw)


def checkin(post_id: str, officer_id: str, event_id: str, device_id: str = "zx01-guard-1", **kw) -> CanonicalEvent:
    kw.setdefault("attrs", {"post_id": post_id, "officer_id": officer_id})
    return event("guard.checkin", device_id, event_id, **kw)


def checkout(post_id: str, officer_id: str, event_id: str, device_id: str = "zx01-guard-1", **kw) -> CanonicalEvent:
    kw.setdefault("attrs", {"post_id": post_id, "officer_id": officer_id})
    return event("guard.checkout", device_id, event_id, **kw)


def round_trip(state: SchoolState) -> SchoolState:
    """What a restarted worker reads back: the two stored values, through JSON."""
    core = orjson.loads(orjson.dumps(state.core_dict()))
    memory = orjson.loads(orjson.dumps(state.memory))
    return SchoolState.from_dicts(core, memory)


class RestartingDriver(Driver):
    """A Driver that stores and reloads the school state after every input."""

    def _take(self, outcome: engine.Outcome) -> list[Alert]:
        alerts = super()._take(outcome)
        self.state = round_trip(self.state)
        return alerts
