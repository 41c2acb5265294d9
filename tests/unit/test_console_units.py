"""Mobile units in the console (issue 13): the store keeps what a panic card shows of the
units (nearest units, dispatched, the unit that arrived) and the units' reports; the API
checks dispatch against the registry, lets arrive default to the dispatched unit, and serves
/api/units (positions, staleness, availability, each school's coverage; guards see their
area's units only); the CLI's dispatch and arrive verbs check the unit before sending.

Alerts come from the real engine (rules/engine.py with a units view), commands are captured
instead of produced to Kafka; the browser path is tests/integration/test_e2e_console_units.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
import time
from importlib import resources

import pytest
from aiohttp.test_utils import TestClient, TestServer

from pipeline.config import Config, EscalationConfig
from pipeline.ops.auth import Account, Accounts, hash_password
from pipeline.ops.console import Console, coverage_class
from pipeline.ops.store import POSITION_EVERY_SECONDS, Record, Store
from pipeline.records import CanonicalEvent, Command, iso_utc
from pipeline.registry import Coordinates, Registry, Unit
from pipeline.rules import engine
from pipeline.rules.state import Context, SchoolState
from pipeline.rules.units import UnitState
from streams import _event, registry as base_registry

PW = {"duty": "duty-pw", "guard1": "guard-pw", "guard2": "guard2-pw"}
S1 = Coordinates(30.6571, 104.0817)
S2 = Coordinates(30.7000, 104.2000)  # ~12 km east of s1


def north(metres: float, of: Coordinates = S1) -> tuple[float, float]:
    return of.lat + metres / 111_195.0, of.lon


def unit_registry() -> Registry:
    reg = base_registry()
    schools = {**reg.schools, "s1": dataclasses.replace(reg.schools["s1"], coordinates=S1), "s2": dataclasses.replace(reg.schools["s2"], coordinates=S2)}
    units = {
        "car-07": Unit("car-07", "car", ("s1",), callsign="巡逻7号"),
        "moto-3": Unit("moto-3", "motorbike", ("s2",)),
        "foot-1": Unit("foot-1", "foot", ("s1",)),
        "car-09": Unit("car-09", "car", ("s2",), name="Patrol car 9"),
    }
    return dataclasses.replace(reg, schools=schools, units=units)


def state(reg: Registry, uid: str, metres: float, at: float, status: str = "available", online: bool = True) -> UnitState:
    u = reg.units[uid]
    lat, lon = north(metres)
    return UnitState(unit_id=uid, profile=u.profile, area=u.area, callsign=u.callsign or u.name, lat=lat, lon=lon, position_at=at,
                     position_event=f"p-{uid}", status=status, status_at=at, status_event=f"s-{uid}", online=online, online_at=at)


class View:
    """A stand-in for units_view.UnitsView."""

    def __init__(self, states):
        self.states = states
        self.caught_up = threading.Event()
        self.caught_up.set()

    def units(self):
        return tuple(self.states)


def accounts() -> Accounts:
    return Accounts(
        [
            Account("duty", "duty_officer", password_hash=hash_password(PW["duty"], iterations=1000)),
            Account("guard1", "guard", school="s1", password_hash=hash_password(PW["guard1"], iterations=1000)),
            Account("guard2", "guard", school="s2", password_hash=hash_password(PW["guard2"], iterations=1000)),
        ],
        secret="test-secret",
    )


async def login(client, user: str) -> None:
    r = await client.post("/api/login", json={"username": user, "password": PW[user]})
    assert r.status == 200, await r.text()


def alert_records(alerts, start: int = 0) -> list[Record]:
    return [Record("alert", "huxue.alerts", 0, start + i, a.school_id, a.to_dict()) for i, a in enumerate(alerts)]


@pytest.fixture
def panic_world(tmp_path):
    """A real panic at s1 with the engine's nearest units (car-07 1 km, foot-1 300 m, moto-3
    3 km; car-09 busy), and car-07 dispatched."""
    reg = unit_registry()
    now = time.time() - 60
    states = [state(reg, "car-07", 1000, now), state(reg, "foot-1", 300, now), state(reg, "moto-3", 3000, now), state(reg, "car-09", 500, now, status="dispatched")]
    ctx = Context(EscalationConfig(60, 180, 300), reg, units=lambda: states)
    s1 = SchoolState(school_id="s1", partition=0)
    out = engine.on_event(s1, _event(reg.device("s1-btn-1"), "panic.pressed", now, 1), now, ctx)
    opened = out.alerts
    panic = opened[0].incident_id
    out2 = engine.on_command(out.state, Command("dispatch", by="duty", incident_id=panic, school_id="s1", unit="car-07", command_id="c-1"), now + 10, ctx)
    store = Store(f"sqlite:///{tmp_path / 'h.sqlite3'}")
    store.apply(alert_records(opened + out2.alerts))
    return dataclasses.make_dataclass("W", ["reg", "ctx", "store", "panic", "state", "now", "states"])(reg, ctx, store, panic, out2.state, now, states)


def run(cfg, reg, store, scenario, states=()):
    sent: list[Command] = []
    console = Console(cfg, reg, store, accounts(), sent.append, View(states))

    async def go():
        async with TestClient(TestServer(console.app())) as client:
            return await scenario(client, sent, console)

    return asyncio.run(go())


# --- the store -----------------------------------------------------------------------------------------


def test_the_store_keeps_nearest_units_dispatched_and_the_unit_that_arrived(panic_world):
    w = panic_world
    inc = w.store.incident(w.panic)
    # the engine's order: by ETA (car-07 1 km by car 126 s; foot-1 300 m on foot 302 s; moto-3 3 km 432 s); busy car-09 left out
    assert [u["unit_id"] for u in inc["nearest_units"]] == ["car-07", "foot-1", "moto-3"]
    assert inc["nearest_units"][0]["callsign"] == "巡逻7号" and inc["nearest_units"][0]["in_area"] is True
    assert inc["dispatched"] == ["car-07"] and inc["dispatched_at"] and inc["arrived_unit"] == ""
    out = engine.on_command(w.state, Command("arrive", by="duty", incident_id=w.panic, school_id="s1", command_id="c-2"), w.now + 30, w.ctx)
    assert [(a.stage, a.unit) for a in out.alerts] == [("arrived", "car-07")]  # the worker's default: the unit dispatched last
    w.store.apply(alert_records(out.alerts, start=100))
    inc = w.store.incident(w.panic)
    assert (inc["arrived_unit"], inc["dispatched"], inc["stage"]) == ("car-07", ["car-07"], "arrived")
    first = inc["dispatched_at"]
    # a second dispatch (before arrival, on another engine run) keeps the first dispatch time
    again = engine.on_command(w.state, Command("dispatch", by="duty", incident_id=w.panic, school_id="s1", unit="moto-3", command_id="c-3"), w.now + 40, w.ctx)
    w.store.apply(alert_records(again.alerts, start=200))
    assert w.store.incident(w.panic)["dispatched_at"] == first


def test_migration_0002_upgrades_an_existing_store(tmp_path):
    """A store made by the first migration only (with an incident in it) gains the units
    columns and table; its incidents read with empty unit fields."""
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    sql = (resources.files("pipeline.ops.migrations") / "0001_initial.sql").read_text(encoding="utf-8")
    conn.executescript(sql)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL)")
    conn.execute("INSERT INTO schema_migrations VALUES (1, '0001_initial.sql')")
    conn.execute(
        "INSERT INTO incidents (incident_id, school_id, rule, status, severity, urgency, certainty, zone, stage, headline, state, opened_at, updated_at, held, notify, evidence) "
        "VALUES ('inc-s1-old', 's1', 'panic', 'Actual', 'Extreme', 'Immediate', 'Observed', 'gate', 'opened', 'old', 'open', '2026-11-01T00:00:00Z', '2026-11-01T00:00:00Z', '', '[]', '[]')"
    )
    conn.commit()
    conn.close()
    store = Store(f"sqlite:///{path}")
    assert [r["version"] for r in store._rows("SELECT version FROM schema_migrations ORDER BY version")] == [1, 2]
    old = store.incident("inc-s1-old")
    assert (old["nearest_units"], old["dispatched"], old["arrived_unit"], old["dispatched_at"]) == ([], [], "", None)
    assert store.unit_reports("2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z") == [] and store.first_unit_report_at() is None
    assert Store(f"sqlite:///{path}").migrate() == []  # applied once


def unit_event(uid: str, etype: str, at: float, n: int, received: float | None = None, **attrs) -> dict:
    return CanonicalEvent(
        event_id=f"{uid}-{n}", type=etype, ts=iso_utc(at), device_id=uid, school_id="", kind="mobile_unit", zone="", source="native",
        mqtt_topic=f"huxue/v1/devices/{uid}/events", received_at=iso_utc(at if received is None else received), attrs=attrs,
    ).to_dict()


def test_unit_reports_are_recorded_thinned_and_replayable(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'u.sqlite3'}", max_clock_skew_seconds=60)
    t0 = 1_790_000_000.0
    lat, lon = north(1000)
    values = [unit_event("car-07", "unit.status", t0 - 3600, 0, status="available")]
    values += [unit_event("car-07", "unit.position", t0 + 10 * i, i + 1, lat=lat, lon=lon, speed_kmh=0, heading=0) for i in range(10)]  # every 10 s for 90 s
    values += [unit_event("car-07", "device.online", t0, 50), unit_event("car-07", "device.heartbeat", t0, 51)]
    values += [unit_event("car-07", "unit.position", t0 - 7200, 52, received=t0 + 200, lat=lat, lon=lon, speed_kmh=0, heading=0)]  # a clock 2 h behind
    records = [Record("unit", "huxue.units", 0, i, f"car-07/{v['type']}", v) for i, v in enumerate(values)]
    store.apply(records)
    store.apply(records)  # re-applied: nothing changes
    rows = store._rows("SELECT aspect, at, event_id FROM unit_reports ORDER BY at, event_id")
    positions = [r for r in rows if r["aspect"] == "position"]
    # one position per POSITION_EVERY_SECONDS: 0, 30, 60, 90 s; the skewed one re-timed to arrival - 60 s
    assert POSITION_EVERY_SECONDS == 30
    assert [r["event_id"] for r in positions] == ["car-07-1", "car-07-4", "car-07-7", "car-07-10", "car-07-52"]
    assert next(r["at"] for r in positions if r["event_id"] == "car-07-52") == iso_utc(t0 + 140)
    assert {r["aspect"] for r in rows} == {"position", "status", "online"}  # no heartbeat
    # the period's reports, after each aspect's last report before it
    got = store.unit_reports(iso_utc(t0 + 45), iso_utc(t0 + 1000))
    assert [(r["aspect"], r["event_id"]) for r in got] == [
        ("status", "car-07-0"), ("online", "car-07-50"), ("position", "car-07-4"), ("position", "car-07-7"), ("position", "car-07-10"), ("position", "car-07-52")]
    assert got[0]["event"]["attrs"] == {"status": "available"}
    # a fresh store built from the same records is the same
    other = Store(f"sqlite:///{tmp_path / 'v.sqlite3'}", max_clock_skew_seconds=60)
    other.apply(records)
    assert other.dump()["unit_reports"] == store.dump()["unit_reports"]


# --- the API ------------------------------------------------------------------------------------------


def test_dispatch_is_checked_and_arrive_defaults_to_the_dispatched_unit(panic_world):
    w = panic_world

    async def scenario(client, sent, console):
        await login(client, "duty")
        view = await (await client.get(f"/api/incidents/{w.panic}")).json()
        assert [u["unit_id"] for u in view["nearest_units"]] == ["car-07", "foot-1", "moto-3"]
        assert [round(u["eta_s"]) for u in view["nearest_units"]] == [126, 302, 432]
        assert [u["in_area"] for u in view["nearest_units"]] == [True, True, False]
        assert view["dispatched"] == ["car-07"] and view["unit_labels"] == {"car-07": "巡逻7号"}
        assert "dispatch" in view["actions"] and "arrive" in view["actions"]
        post = lambda body, **kw: client.post(f"/api/incidents/{w.panic}/commands", json=body, **kw)  # noqa: E731
        for body, status, code in (
            ({"command": "dispatch"}, 400, "unit_required"),
            ({"command": "dispatch", "unit": "  "}, 400, "unit_required"),
            ({"command": "dispatch", "unit": "car-7"}, 400, "unknown_unit"),
            ({"command": "dispatch", "unit": "car-07"}, 409, "already_dispatched"),
        ):
            r = await post(body)
            assert (r.status, (await r.json())["error"]) == (status, code), body
        r = await post({"command": "dispatch", "unit": "car-7"})
        assert "did you mean car-07" in (await r.json())["detail"]
        assert sent == []
        assert (await post({"command": "dispatch", "unit": " moto-3 ", "note": "from the ring road"})).status == 202
        assert (sent[-1].command, sent[-1].unit, sent[-1].note, sent[-1].by, sent[-1].school_id) == ("dispatch", "moto-3", "from the ring road", "duty", "s1")
        # arrive: without a unit (the worker records the unit dispatched last), a registry unit, or a free-text name
        assert (await post({"command": "arrive"})).status == 202
        assert (sent[-1].command, sent[-1].unit, sent[-1].note) == ("arrive", "", "")
        assert (await post({"command": "arrive", "unit": "foot-1"})).status == 202 and (sent[-1].unit, sent[-1].note) == ("foot-1", "")
        assert (await post({"command": "arrive", "unit": "Guard team B"})).status == 202 and (sent[-1].unit, sent[-1].note) == ("", "Guard team B")
        assert len(sent) == 4
        # a guard of the school sees the card (and its units) but the duty room dispatches
        await client.post("/api/logout", json={})
        await login(client, "guard1")
        me = await (await client.get("/api/me")).json()
        assert me["may_dispatch"] is False
        r = await post({"command": "dispatch", "unit": "foot-1"})
        assert r.status == 403 and len(sent) == 4
        assert (await post({"command": "arrive"})).status == 202  # arrival is still theirs to report

    run(Config(), w.reg, w.store, scenario, w.states)

    # once on scene: no more dispatch
    out = engine.on_command(w.state, Command("arrive", by="duty", incident_id=w.panic, school_id="s1", command_id="c-9"), w.now + 70, w.ctx)
    w.store.apply(alert_records(out.alerts, start=100))

    async def after(client, sent, console):
        await login(client, "duty")
        view = await (await client.get(f"/api/incidents/{w.panic}")).json()
        assert (view["arrived_unit_id"], view["arrived_unit"], view["actions"]) == ("car-07", "car-07", ["ack", "resolve", "false_alarm"])
        r = await client.post(f"/api/incidents/{w.panic}/commands", json={"command": "dispatch", "unit": "foot-1"})
        assert (r.status, (await r.json())["error"]) == (409, "already_arrived") and sent == []

    run(Config(), w.reg, w.store, after, w.states)


def test_arrive_without_unit_still_needs_one_when_nothing_was_dispatched(tmp_path):
    reg = unit_registry()
    now = time.time() - 30
    ctx = Context(EscalationConfig(60, 180, 300), reg)
    out = engine.on_event(SchoolState(school_id="s2", partition=0), _event(reg.device("s2-btn-1"), "panic.pressed", now, 1), now, ctx)
    store = Store(f"sqlite:///{tmp_path / 'h.sqlite3'}")
    store.apply(alert_records(out.alerts))
    panic = out.alerts[0].incident_id

    async def scenario(client, sent, console):
        await login(client, "duty")
        view = await (await client.get(f"/api/incidents/{panic}")).json()
        assert (view["nearest_units"], view["dispatched"]) == ([], [])  # no unit known: none listed
        r = await client.post(f"/api/incidents/{panic}/commands", json={"command": "arrive"})
        assert (r.status, (await r.json())["error"]) == (400, "unit_required") and sent == []

    run(Config(), reg, store, scenario)


def test_units_endpoint_positions_staleness_and_coverage(tmp_path):
    reg = unit_registry()
    now = time.time()
    states = [
        state(reg, "car-07", 1000, now - 5),  # 126 s to s1: within the 3-minute target
        state(reg, "foot-1", 50, now - 500),  # stale: no longer counts
        dataclasses.replace(state(reg, "car-09", 200, now - 5, status="on_scene"), lat=0.0, lon=0.0, assigned_to=("inc-x",)),  # GPS lost its fix
    ]
    store = Store(f"sqlite:///{tmp_path / 'h.sqlite3'}")

    async def scenario(client, sent, console):
        assert (await client.get("/api/units")).status == 401
        await login(client, "duty")
        body = await (await client.get("/api/units")).json()
        assert (body["arrive_target_seconds"], body["arrive_limit_seconds"], body["stale_after_seconds"], body["caught_up"]) == (180, 300, 120, True)
        units = {u["unit_id"]: u for u in body["units"]}
        assert set(units) == {"car-07", "moto-3", "foot-1", "car-09"}  # every registry unit, reported or not
        car = units["car-07"]
        assert (car["label"], car["status"], car["available"], car["stale"], car["reported"]) == ("巡逻7号", "available", True, False, True)
        assert car["lat"] == pytest.approx(north(1000)[0]) and 4 <= car["age_s"] <= 10
        assert (units["foot-1"]["stale"], units["foot-1"]["available"], units["foot-1"]["status"]) == (True, False, "available")
        assert (units["car-09"]["available"], units["car-09"]["status"]) == (False, "on_scene")
        # (0, 0) is no fix: not drawn off the coast of Africa
        assert (units["car-09"]["fix"], units["car-09"]["lat"], units["car-09"]["lon"], units["car-09"]["stale"]) == ("none", None, None, True)
        assert (car["fix"], units["foot-1"]["fix"], units["moto-3"]["fix"]) == ("ok", "ok", None)
        assert (car["assigned_to"], units["moto-3"]["assigned_to"], units["car-09"]["assigned_to"]) == ([], [], ["inc-x"])
        assert (units["moto-3"]["reported"], units["moto-3"]["lat"], units["moto-3"]["status"], units["moto-3"]["stale"]) == (False, None, "unknown", True)
        assert units["car-09"]["label"] == "Patrol car 9"
        schools = {s["school_id"]: s for s in body["schools"]}
        assert schools["s1"]["coverage"] == "target" and schools["s1"]["best"]["unit_id"] == "car-07" and 120 < schools["s1"]["best"]["eta_s"] < 130
        assert schools["s2"]["coverage"] == "none" and schools["s2"]["best"]["unit_id"] == "car-07"  # ~13 km: far beyond 5 minutes
        # a guard: the units whose area lists its school, and its own school's coverage
        await client.post("/api/logout", json={})
        await login(client, "guard2")
        body = await (await client.get("/api/units")).json()
        assert [u["unit_id"] for u in body["units"]] == ["car-09", "moto-3"] and [s["school_id"] for s in body["schools"]] == ["s2"]

    run(Config(), reg, store, scenario, states)


def test_coverage_classes():
    assert [coverage_class(e, True, 180, 300) for e in (None, 60, 180, 181, 300, 301)] == ["none", "target", "target", "limit", "limit", "none"]
    assert coverage_class(60, False, 180, 300) == "unknown"


def test_a_console_without_units_serves_an_empty_list(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'h.sqlite3'}")
    reg = base_registry()

    async def go():
        console = Console(Config(), reg, store, accounts(), [].append)  # no units view
        async with TestClient(TestServer(console.app())) as client:
            await login(client, "duty")
            body = await (await client.get("/api/units")).json()
            assert body["units"] == [] and {s["coverage"] for s in body["schools"]} == {"unknown"}

    asyncio.run(go())


def test_the_openapi_document_describes_units_and_dispatch():
    import json

    spec = json.loads((resources.files("pipeline.ops") / "web" / "openapi.json").read_text(encoding="utf-8"))
    assert "/api/units" in spec["paths"]
    assert "dispatch" in spec["components"]["schemas"]["IncidentCommand"]["properties"]["command"]["enum"]
    assert {"nearest_units", "dispatched", "arrived_unit_id"} <= set(spec["components"]["schemas"]["Incident"]["properties"])


# --- the CLI -------------------------------------------------------------------------------------------


@pytest.fixture
def cli_config(tmp_path):
    import yaml

    reg = {"schools": [{"id": "s1", "name": "School S1"}], "devices": [{"id": "s1-btn-1", "school": "s1", "kind": "panic_button", "zone": "gate"}],
           "units": [{"id": "car-07", "profile": "car", "area": ["s1"]}, {"id": "moto-3", "profile": "motorbike"}]}
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump(reg))
    (tmp_path / "huxue.yaml").write_text("registry: registry.yaml\n")
    return tmp_path / "huxue.yaml"


def test_cli_dispatch_and_arrive_check_the_unit_before_sending(cli_config, capsys, monkeypatch):
    from pipeline import cli
    from pipeline.ops import commands

    sent = []
    monkeypatch.setattr(commands, "send", lambda cfg, cmd, wait_s: sent.append(cmd) or commands.Outcome(True, f"{cmd.incident_id} -> dispatched-1"))
    incident = "inc-20261130-s1-0001-abcdef"

    def huxue(*argv) -> int:
        args = cli.parser().parse_args(["--config", str(cli_config), *argv])
        return args.func(args)

    assert huxue("dispatch", incident, "car-7", "--by", "duty-li") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown_unit" in err and "did you mean car-07" in err, err
    assert sent == []
    assert huxue("dispatch", incident, "car-07", "--by", "duty-li", "--note", "nearest") == 0
    assert (sent[-1].command, sent[-1].unit, sent[-1].note, sent[-1].school_id) == ("dispatch", "car-07", "nearest", "s1")
    assert "dispatch inc-20261130-s1-0001-abcdef: accepted" in capsys.readouterr().out
    assert huxue("arrive", incident, "--by", "duty-li") == 0 and (sent[-1].command, sent[-1].unit) == ("arrive", "")
    assert huxue("arrive", incident, "--by", "duty-li", "--unit", "moto-3") == 0 and sent[-1].unit == "moto-3"
    assert huxue("arrive", incident, "--by", "duty-li", "--unit", "moto3") == 2 and "did you mean moto-3" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the unit is a required argument of dispatch
        cli.parser().parse_args(["dispatch", incident, "--by", "x"])
    assert len(sent) == 3


def test_the_timeline_names_the_unit_of_a_dispatch_and_an_arrival(panic_world):
    w = panic_world
    out = engine.on_command(w.state, Command("arrive", by="duty", incident_id=w.panic, school_id="s1", command_id="c-2"), w.now + 30, w.ctx)
    w.store.apply(alert_records(out.alerts, start=100))
    rows = [(t["stage"], t["unit"], t["actor"]) for t in w.store.timeline(w.panic)]
    assert rows == [("opened", "", ""), ("dispatched-1", "car-07", "duty"), ("arrived", "car-07", "duty")], rows
