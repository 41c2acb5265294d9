"""The console's HTTP API with an HTTP client (aiohttp's test server), auth included.

The store holds a recorded week (tests/streams.py); commands are captured instead of
produced to Kafka — the end-to-end path through the brokers is tests/integration/
test_e2e_console.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from pipeline.config import Config
from pipeline.ops.auth import Account, Accounts, LoginThrottle, check_password, hash_password, token_hash
from pipeline.ops.console import Console, next_deadline
from pipeline.ops.store import Change, Store
from pipeline.records import iso_utc
from streams import DAY, registry, week

PASSWORDS = {"duty": "duty-pw", "guard1": "guard-pw", "admin": "admin-pw"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('api') / 'h.sqlite3'}")
    store.apply(week(time.time() - 4 * DAY).records)
    accounts = Accounts(
        [
            Account("duty", "duty_officer", password_hash=hash_password(PASSWORDS["duty"], iterations=1000)),
            Account("guard1", "guard", school="s1", password_hash=hash_password(PASSWORDS["guard1"], iterations=1000)),
            Account("admin", "admin", password_hash=hash_password(PASSWORDS["admin"], iterations=1000), token_sha256=token_hash("admin-token")),
        ],
        secret="test-secret",
    )
    return store, accounts


def run(world, scenario):
    """Run `scenario(client, sent, console)` against a fresh app on the shared store."""
    store, accounts = world
    sent = []
    console = Console(Config(), registry(), store, accounts, sent.append)

    async def go():
        async with TestClient(TestServer(console.app())) as client:
            return await scenario(client, sent, console)

    return asyncio.run(go())


async def login(client, user: str) -> None:
    r = await client.post("/api/login", json={"username": user, "password": PASSWORDS[user]})
    assert r.status == 200, await r.text()


def test_passwords_and_sessions():
    stored = hash_password("s3cret", iterations=1000)
    assert check_password("s3cret", stored) and not check_password("wrong", stored) and not check_password("s3cret", "garbage")
    accounts = Accounts([Account("a", "admin", password_hash=stored)], secret="k", session_seconds=60)
    cookie = accounts.session(accounts.by_name["a"], now=1000)
    assert accounts.from_session(cookie, now=1030).username == "a"
    assert accounts.from_session(cookie, now=1061) is None  # expired
    assert accounts.from_session(cookie.replace(".", ".0"), now=1030) is None  # tampered
    assert Accounts([], secret="other").from_session(cookie, now=1030) is None


def test_unauthenticated_calls_are_refused_and_public_pages_served(world):
    async def scenario(client, sent, console):
        for path in ("/api/me", "/api/incidents", "/api/schools/s1", "/api/stream"):
            r = await client.get(path)
            assert r.status == 401 and (await r.json())["error"] == "unauthenticated"
        r = await client.post("/api/incidents/x/commands", json={"command": "ack"})
        assert r.status == 401 and sent == []
        bad = await client.post("/api/login", json={"username": "duty", "password": "nope"})
        assert bad.status == 401 and (await bad.json())["error"] == "bad_credentials"
        page = await client.get("/")
        assert page.status == 200 and "huxue" in await page.text()
        spec = await (await client.get("/api/openapi.json")).json()
        assert spec["openapi"].startswith("3.") and "/api/incidents/{incident_id}/commands" in spec["paths"]
        assert (await client.get("/metrics")).status == 200

    run(world, scenario)


def test_duty_officer_sees_all_schools_open_first_by_severity_then_age(world):
    async def scenario(client, sent, console):
        await login(client, "duty")
        me = await (await client.get("/api/me")).json()
        # no lockdown/silence buttons; the duty room dispatches mobile units
        assert me == {"username": "duty", "role": "duty_officer", "school": "", "school_commands": [], "may_dispatch": True}
        data = await (await client.get("/api/incidents?state=all")).json()
        incidents = data["incidents"]
        assert {i["school_id"] for i in incidents} == {"s1", "s2"}
        states = [i["state"] for i in incidents]
        assert states == sorted(states, key=lambda s: s != "open")  # open first
        open_ones = [i for i in incidents if i["state"] == "open"]
        ranks = [{"Extreme": 0, "Severe": 1, "Moderate": 2, "Minor": 3}[i["severity"]] for i in open_ones]
        assert ranks == sorted(ranks)
        only = await (await client.get("/api/incidents?state=open&status=Actual&rule=panic")).json()
        assert [i["status"] for i in only["incidents"]] == ["Actual"] and only["incidents"][0]["school_name"] == "School S2"
        assert only["incidents"][0]["next_deadline"]["overdue"] is True
        detail = await (await client.get(f"/api/incidents/{only['incidents'][0]['incident_id']}")).json()
        assert [e["stage"] for e in detail["timeline"]][:1] == ["opened"]

    run(world, scenario)


def test_guard_sees_and_acts_on_its_own_school_only(world):
    async def scenario(client, sent, console):
        await login(client, "guard1")
        mine = await (await client.get("/api/incidents?state=all")).json()
        assert {i["school_id"] for i in mine["incidents"]} == {"s1"}
        assert (await client.get("/api/incidents?school=s2")).status == 403
        other = next(i for i in console.store.incidents() if i["school_id"] == "s2")
        assert (await client.get(f"/api/incidents/{other['incident_id']}")).status == 403
        r = await client.post(f"/api/incidents/{other['incident_id']}/commands", json={"command": "ack"})
        assert r.status == 403 and sent == []
        own = mine["incidents"][0]["incident_id"]
        r = await client.post(f"/api/incidents/{own}/commands", json={"command": "resolve", "note": "checked the gate"})
        assert r.status == 202
        assert len(sent) == 1 and (sent[0].command, sent[0].by, sent[0].incident_id, sent[0].school_id, sent[0].note) == ("resolve", "guard1", own, "s1", "checked the gate")
        assert sent[0].command_id and sent[0].at
        assert (await client.post("/api/schools/s1/commands", json={"command": "lockdown", "reason": "x"})).status == 403
        assert (await client.get("/api/schools/s2")).status == 403
        schools = await (await client.get("/api/schools")).json()
        assert [s["id"] for s in schools["schools"]] == ["s1"]

    run(world, scenario)


def test_bad_commands_are_refused_with_reasons(world):
    async def scenario(client, sent, console):
        await login(client, "duty")
        iid = console.store.incidents()[0]["incident_id"]
        r = await client.post(f"/api/incidents/{iid}/commands", json={"command": "explode"})
        assert r.status == 400 and (await r.json())["error"] == "bad_command"
        r = await client.post(f"/api/incidents/{iid}/commands", data=b"not json", headers={"Content-Type": "application/json"})
        assert r.status == 400
        assert (await client.post("/api/incidents/inc-nope/commands", json={"command": "ack"})).status == 404
        assert (await client.post("/api/schools/s1/commands", json={"command": "silence", "reason": "x", "duration_seconds": 60})).status == 403  # duty officers may not
        assert sent == []

    run(world, scenario)


def test_admin_token_silences_and_locks_down(world):
    async def scenario(client, sent, console):
        headers = {"Authorization": "Bearer admin-token"}
        me = await (await client.get("/api/me", headers=headers)).json()
        assert me["school_commands"] == ["silence", "unsilence", "lockdown", "lift_lockdown"]  # the card shows these buttons
        r = await client.post("/api/schools/s2/commands", headers=headers, json={"command": "silence", "scope": {"zone": "gate"}, "duration_seconds": 600, "reason": "works"})
        assert r.status == 202
        r = await client.post("/api/schools/s2/commands", headers=headers, json={"command": "lockdown", "reason": "armed person nearby"})
        assert r.status == 202
        r = await client.post("/api/schools/s2/commands", headers=headers, json={"command": "silence", "scope": {"floor": 3}})
        assert r.status == 400
        r = await client.post("/api/schools/s2/commands", headers=headers, json={"command": "silence", "scope": {"zone": "roof"}, "duration_seconds": 600, "reason": "works"})
        assert r.status == 400 and (await r.json())["error"] == "unknown_zone"  # checked before sending
        assert [(c.command, c.by, c.school_id) for c in sent] == [("silence", "admin", "s2"), ("lockdown", "admin", "s2")]
        assert sent[0].scope == {"zone": "gate"} and sent[0].duration_seconds == 600
        assert (await client.get("/api/me", headers={"Authorization": "Bearer wrong"})).status == 401

    run(world, scenario)


def test_school_view_shows_devices_posts_and_problems(world):
    async def scenario(client, sent, console):
        await login(client, "duty")
        s2 = await (await client.get("/api/schools/s2")).json()
        assert s2["name"] == "School S2" and len(s2["devices"]) == 4
        assert [d["id"] for d in s2["offline"]] == ["s2-cam-1"]
        assert s2["posts"] == [{"id": "s2-gate", "required_officers": 2, "on_duty": [{"officer_id": "o-2", "since": s2["posts"][0]["on_duty"][0]["since"]}]}]
        assert s2["lockdown"] is None and s2["silences"] == []
        assert any(i["rule"] == "panic" for i in s2["incidents"])
        assert (await client.get("/api/schools/nowhere")).status == 404

    run(world, scenario)


def test_live_updates_reach_only_those_who_may_see_them(world):
    async def scenario(client, sent, console):
        await login(client, "guard1")
        stream = await client.get("/api/stream")
        assert stream.status == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
        assert (await stream.content.readline()).startswith(b": connected")
        await stream.content.readline()
        s1 = next(i for i in console.store.incidents() if i["school_id"] == "s1")
        s2 = next(i for i in console.store.incidents() if i["school_id"] == "s2")
        console.changed([Change("incident", s2["incident_id"], "s2"), Change("incident", s1["incident_id"], "s1")])
        lines = [await asyncio.wait_for(stream.content.readline(), 5) for _ in range(2)]
        assert lines[0] == b"event: change\n"
        assert s1["incident_id"].encode() in lines[1] and s2["incident_id"].encode() not in lines[1]
        stream.close()

    run(world, scenario)


def test_next_deadline_walks_the_ladder():
    base = {"state": "open", "rule": "panic", "acked_at": None, "arrived_at": None,
            "ack_by": iso_utc(100), "arrive_target_by": iso_utc(220), "arrive_by": iso_utc(340)}
    assert next_deadline(base, 50) == {"name": "ack", "at": iso_utc(100), "overdue": False}
    assert next_deadline(base, 150)["overdue"] is True  # still the ack, now overdue
    acked = {**base, "acked_at": iso_utc(90)}
    assert next_deadline(acked, 150)["name"] == "arrive_target"
    assert next_deadline(acked, 250) == {"name": "arrive", "at": iso_utc(340), "overdue": False}
    assert next_deadline({**acked, "arrived_at": iso_utc(200)}, 250) is None
    assert next_deadline({**base, "rule": "perimeter"}, 50) is None and next_deadline({**base, "state": "closed"}, 50) is None


# --- hardening (issue 10) ---------------------------------------------------------------------


def test_login_costs_the_same_for_unknown_users_and_is_throttled():
    slow = hash_password("pw", iterations=20_000)
    accounts = Accounts([Account("a", "admin", password_hash=slow)], secret="k")
    assert accounts.decoy().split("$")[1] == "20000", "unknown users check a hash as costly as the real ones"
    assert accounts.login("nobody", "pw") is None and accounts.login("a", "pw").username == "a"

    throttle = LoginThrottle(limit=3, base_seconds=30, max_seconds=100)
    keys = ["user:a", "addr:1.2.3.4"]
    for _ in range(2):
        throttle.failed(keys, 1000)
    assert throttle.wait(keys, 1000) == 0
    throttle.failed(keys, 1000)
    assert throttle.wait(keys, 1000) == 30 and throttle.wait(["user:b"], 1000) == 0
    for _ in range(3):
        throttle.failed(keys, 1031)
    assert throttle.wait(keys, 1031) == 60, "the wait doubles each time the limit is reached again"
    for _ in range(6):
        throttle.failed(keys, 2000)
    assert throttle.wait(keys, 2000) == 100, "capped"
    throttle.succeeded(["user:a"])
    assert throttle.wait(["user:a"], 2000) == 0 and throttle.wait(["addr:1.2.3.4"], 2000) == 100


def test_repeated_failed_logins_get_429_and_are_logged(world, caplog):
    async def scenario(client, sent, console):
        console.throttle = LoginThrottle(limit=3, base_seconds=60)
        for _ in range(3):
            assert (await client.post("/api/login", json={"username": "duty", "password": "nope"})).status == 401
        r = await client.post("/api/login", json={"username": "duty", "password": PASSWORDS["duty"]})
        assert r.status == 429 and int(r.headers["Retry-After"]) > 0 and (await r.json())["error"] == "too_many_failures"
        assert (await client.post("/api/login", json={"username": "guard1", "password": PASSWORDS["guard1"]})).status == 429, "the address waits too"

    with caplog.at_level("WARNING", logger="huxue.console"):
        run(world, scenario)
    assert sum(r.getMessage() == "login failed" for r in caplog.records) == 3


def test_logout_ends_the_session_on_the_server(world):
    async def scenario(client, sent, console):
        await login(client, "duty")
        cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))["huxue_session"].value
        assert (await client.get("/api/me")).status == 200
        assert (await client.post("/api/logout", json={})).status == 200
        # a copy of the cookie (stolen, or another tab) is refused as well
        r = await client.get("/api/me", headers={"Cookie": f"huxue_session={cookie}"})
        assert r.status == 401

    run(world, scenario)


def test_state_changing_requests_must_be_json_from_the_consoles_own_origin(world):
    async def scenario(client, sent, console):
        await login(client, "duty")
        iid = (await (await client.get("/api/incidents")).json())["incidents"][0]["incident_id"]
        form = await client.post(f"/api/incidents/{iid}/commands", data={"command": "ack"})
        assert form.status == 415 and sent == []
        evil = await client.post(f"/api/incidents/{iid}/commands", json={"command": "ack"}, headers={"Origin": "http://evil.example"})
        assert evil.status == 403 and (await evil.json())["error"] == "cross_origin" and sent == []
        referer = await client.post(f"/api/incidents/{iid}/commands", json={"command": "ack"}, headers={"Referer": "http://evil.example/page"})
        assert referer.status == 403 and sent == []
        own = str(client.make_url("/")).rstrip("/")
        ok = await client.post(f"/api/incidents/{iid}/commands", json={"command": "ack"}, headers={"Origin": own})
        assert ok.status == 202 and len(sent) == 1

    run(world, scenario)


def test_security_headers_and_bad_parameters(world):
    async def scenario(client, sent, console):
        for path in ("/", "/static/app.js", "/api/me", "/healthz"):
            r = await client.get(path)
            csp = r.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
            assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["Referrer-Policy"] == "same-origin"
        page = await (await client.get("/")).text()
        assert "<script>" not in page and " style=" not in page and " onclick=" not in page, "nothing inline for the CSP to block"
        array = await client.post("/api/login", json=["duty", "duty-pw"])
        assert array.status == 400 and (await array.json())["error"] == "bad_request"
        numbers = await client.post("/api/login", json={"username": 1, "password": 2})
        assert numbers.status == 400
        await login(client, "duty")
        r = await client.get("/api/incidents?limit=abc")
        assert r.status == 400 and (await r.json())["error"] == "bad_request"

    run(world, scenario)


def test_unacknowledged_real_panics_come_first_by_deadline_then_severity_then_drills():
    """The duty officer's finding: an unacknowledged real panic 4:44 overdue was listed third,
    behind an acknowledged panic and a drill."""
    from pipeline.ops.console import urgency
    from pipeline.records import iso_utc

    now = 1_800_000_000.0

    def inc(name, rule="panic", severity="Extreme", status="Actual", opened=-600, acked=False, ack_in=None):
        row = {"incident_id": name, "rule": rule, "severity": severity, "status": status, "state": "open", "opened_at": iso_utc(now + opened)}
        if rule == "panic":
            row.update(ack_by=iso_utc(now + (ack_in if ack_in is not None else opened + 60)), arrive_target_by=iso_utc(now + opened + 180), arrive_by=iso_utc(now + opened + 300))
        if acked:
            row["acked_at"] = iso_utc(now + opened + 30)
        return row

    rows = [
        inc("acked-panic", opened=-100, acked=True),
        inc("drill-panic", status="Exercise", opened=-50),
        inc("fence", rule="perimeter", severity="Severe", opened=-900),
        inc("overdue-panic", opened=-584),  # its ack was due 4:44 ago
        inc("fresh-panic", opened=-5),
        inc("crowd", rule="video_behaviour", severity="Moderate", opened=-2000),
        inc("drill-fence", rule="perimeter", severity="Severe", status="Exercise", opened=-3000),
    ]
    ordered = [r["incident_id"] for r in sorted(rows, key=lambda r: urgency(r, now))]
    assert ordered == ["overdue-panic", "fresh-panic", "acked-panic", "fence", "crowd", "drill-panic", "drill-fence"]


def test_each_incident_kind_offers_only_the_actions_that_apply():
    from pipeline.ops.console import actions

    panic = {"rule": "panic", "state": "open"}
    assert actions(panic) == ["ack", "dispatch", "arrive", "resolve", "false_alarm"]
    assert actions({**panic, "acked_at": "t"}) == ["dispatch", "arrive", "resolve", "false_alarm"]
    assert actions({**panic, "acked_at": "t", "arrived_at": "t"}) == ["resolve", "false_alarm"]
    assert actions({**panic, "state": "closed"}) == []
    assert actions({"rule": "lockdown", "state": "open"}) == ["lift_lockdown"]  # lifted, never "arrived"
    assert "arrive" not in actions({"rule": "device_health", "state": "open"}) and "arrive" in actions({"rule": "perimeter", "state": "open"})


def _card_store(path):
    """A store with what the engine made of: a real panic at s1 attended by a named unit, a
    real panic at s2 nobody attended yet, and a drill lockdown at s1."""
    from pipeline.config import EscalationConfig
    from pipeline.ops.store import Record
    from pipeline.records import Command
    from pipeline.rules import engine
    from pipeline.rules.state import Context, SchoolState
    from streams import _event

    reg = registry()
    ctx = Context(EscalationConfig(60, 180, 300), reg)
    now = time.time() - 100
    s1, s2 = SchoolState(school_id="s1", partition=0), SchoolState(school_id="s2", partition=1)
    alerts = []
    out = engine.on_event(s1, _event(reg.device("s1-btn-1"), "panic.pressed", now, 1), now, ctx)
    panic = out.alerts[0].incident_id
    alerts += out.alerts
    out = engine.on_command(out.state, Command("arrive", by="duty", incident_id=panic, school_id="s1", note="Mobile unit 3", command_id="c-1"), now + 5, ctx)
    alerts += out.alerts
    out = engine.on_command(out.state, Command("lockdown", by="admin", school_id="s1", reason="intruder drill", command_id="c-2", exercise=True), now + 6, ctx)
    alerts += out.alerts
    other = engine.on_event(s2, _event(reg.device("s2-btn-1"), "panic.pressed", now, 2), now, ctx)
    alerts += other.alerts
    store = Store(f"sqlite:///{path / 'card.sqlite3'}")
    store.apply([Record("alert", "huxue.alerts", 0, i, a.school_id, a.to_dict()) for i, a in enumerate(alerts)])
    return store, panic, out.alerts[0].incident_id, other.alerts[0].incident_id


def test_the_card_record_school_zone_unit_on_scene_and_lifting_a_lockdown(world, tmp_path):
    store, panic, lockdown, unattended = _card_store(tmp_path)
    assert store.incident(panic)["arrived_note"] == "Mobile unit 3" and store.incident(unattended)["arrived_note"] is None

    async def scenario(client, sent, console):
        console.store = store
        await login(client, "duty")
        views = {i["incident_id"]: i for i in (await (await client.get("/api/incidents")).json())["incidents"]}
        assert views[panic]["timezone"] == "Asia/Shanghai"
        # who came is the unit; who reported it stays on record apart
        assert (views[panic]["arrived_unit"], views[panic]["arrived_by"], views[panic]["actions"]) == ("Mobile unit 3", "duty", ["ack", "resolve", "false_alarm"])
        assert (views[lockdown]["rule"], views[lockdown]["actions"], views[unattended]["arrived_unit"]) == ("lockdown", ["lift_lockdown"], "")
        post = lambda iid, body, **kw: client.post(f"/api/incidents/{iid}/commands", json=body, **kw)  # noqa: E731
        r = await post(lockdown, {"command": "arrive", "unit": "Mobile unit 3"})
        assert r.status == 409 and (await r.json())["error"] == "not_applicable"
        for body in ({"command": "arrive"}, {"command": "arrive", "unit": "  "}, {"command": "arrive", "note": "Mobile unit 3"}):
            r = await post(unattended, body)
            assert r.status == 400 and (await r.json())["error"] == "unit_required", body
        assert (await post(unattended, {"command": "arrive", "unit": " Mobile unit 4 "})).status == 202
        assert (sent[-1].command, sent[-1].note, sent[-1].by) == ("arrive", "Mobile unit 4", "duty")
        assert (await post(lockdown, {"command": "lift_lockdown"})).status == 403  # an admin's command
        r = await post(lockdown, {"command": "lift_lockdown", "note": "all clear"}, headers={"Authorization": "Bearer admin-token"})
        assert r.status == 202
        lift = sent[-1]  # the school command, for the drill lockdown this card is
        assert (lift.command, lift.school_id, lift.exercise, lift.incident_id, lift.by, lift.note) == ("lift_lockdown", "s1", True, "", "admin", "all clear")
        assert len(sent) == 2

    run(world, scenario)


# --- where and who (issue 11) ---------------------------------------------------------------


def test_schools_carry_where_and_who_and_incidents_their_checklist(world, tmp_path):
    """/api/schools and /api/schools/{id}: address, coordinates, contacts, site plan; each
    incident its rule's checklist (config, else the defaults); the site plan of a local file
    is served at its own authenticated URL and no other file is."""
    import dataclasses

    from pipeline.config import ConsoleConfig
    from pipeline.registry import Contact, Coordinates

    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
    (tmp_path / "s1.png").write_bytes(png)
    reg = registry()
    s1 = dataclasses.replace(reg.schools["s1"], address="1 Gate Road, Chengdu", coordinates=Coordinates(30.65, 104.07),
                             contacts=(Contact("guard_post", "North gate", "+86 28 6555 0001"),), site_plan=str(tmp_path / "s1.png"))
    s2 = dataclasses.replace(reg.schools["s2"], site_plan="https://maps.example.cn/s2.jpg")
    reg = dataclasses.replace(reg, schools={**reg.schools, "s1": s1, "s2": s2})
    cfg = Config(console=ConsoleConfig(checklists={"perimeter": ("Walk the fence",)}))
    store, accounts = world

    async def go():
        console = Console(cfg, reg, store, accounts, [].append)
        async with TestClient(TestServer(console.app())) as client:
            assert (await client.get("/api/schools/s1/site-plan")).status == 401
            await login(client, "duty")
            schools = {s["id"]: s for s in (await (await client.get("/api/schools")).json())["schools"]}
            assert schools["s1"] == {
                "id": "s1", "name": "School S1", "timezone": "Asia/Shanghai", "address": "1 Gate Road, Chengdu",
                "coordinates": {"lat": 30.65, "lon": 104.07}, "contacts": [{"role": "guard_post", "name": "North gate", "phone": "+86 28 6555 0001"}],
                "site_plan_url": "/api/schools/s1/site-plan",  # the file's path stays on the server
            }
            assert schools["s2"]["site_plan_url"] == "https://maps.example.cn/s2.jpg" and schools["s2"]["coordinates"] is None
            detail = await (await client.get("/api/schools/s1")).json()
            assert detail["address"] == "1 Gate Road, Chengdu" and detail["contacts"][0]["phone"] == "+86 28 6555 0001"

            plan = await client.get("/api/schools/s1/site-plan")
            assert plan.status == 200 and plan.headers["Content-Type"] == "image/png" and await plan.read() == png
            assert "sandbox" in plan.headers["Content-Security-Policy"]  # an SVG opened alone runs no script
            assert (await client.get("/api/schools/s2/site-plan")).status == 404  # a URL: linked, not proxied
            assert (await client.get("/api/schools/nowhere/site-plan")).status == 404
            assert (await client.get("/api/schools/s1/site-plan/../../etc/passwd")).status == 404

            incidents = (await (await client.get("/api/incidents?state=all")).json())["incidents"]
            by_rule = {i["rule"]: i["checklist"] for i in incidents}
            assert "Call the school's guard post" in by_rule["panic"] and by_rule["device_health"] == []  # the defaults
            view = console.incident_view({**incidents[0], "rule": "perimeter"})
            assert view["checklist"] == ["Walk the fence"]  # the configured one

            await client.post("/api/logout", json={})
            await login(client, "guard1")  # school s1 only
            assert (await client.get("/api/schools/s1/site-plan")).status == 200
            assert (await client.get("/api/schools/s2/site-plan")).status == 403
            (tmp_path / "s1.png").unlink()
            assert (await client.get("/api/schools/s1/site-plan")).status == 404  # missing file: the page shows a placeholder

    asyncio.run(go())
