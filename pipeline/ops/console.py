"""`huxue console`: the duty-room web console and its HTTP API (aiohttp).

One process: a recorder thread keeps the history store current from Kafka; the web app
reads the store, sends operator commands to `huxue.commands` (the worker stays the only
writer of incident state) and pushes every change to browsers over Server-Sent Events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeline import metrics
from pipeline.config import Config, ConfigError
from pipeline.ops.auth import Account, Accounts, LoginThrottle
from pipeline.ops.store import Change, Store
from pipeline.records import INCIDENT_COMMANDS, SCHOOL_COMMANDS, Command, iso_utc, parse_ts
from pipeline.registry import Registry, School
from pipeline.rules import units as unit_rules
from pipeline.rules.engine import check_target
from pipeline.rules.units import UnitState

log = logging.getLogger("huxue.console")
RANK = {"Extreme": 0, "Severe": 1, "Moderate": 2, "Minor": 3}
END_OF_STREAM = object()  # put in a live stream's queue: the handler returns
PING_SECONDS = 2  # a quiet stream still sends this often (app.js: stale after 5 s without)
COOKIE = "huxue_session"
ACCOUNT = web.RequestKey("account", Account)


IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp", ".svg": "image/svg+xml"}


def where_who(school: School) -> dict[str, Any]:
    """A school's address, map position, contacts and site plan, as the console shows them. A
    local site plan is served at its own authenticated URL (the file path stays private)."""
    plan = school.site_plan if school.site_plan_is_url else (f"/api/schools/{quote(school.id, safe='')}/site-plan" if school.site_plan else "")
    return {
        "address": school.address,
        "coordinates": {"lat": school.coordinates.lat, "lon": school.coordinates.lon} if school.coordinates else None,
        "contacts": [{"role": c.role, "name": c.name, "phone": c.phone} for c in school.contacts],
        "site_plan_url": plan,
    }


def _error(status: int, code: str, detail: str) -> web.Response:
    return web.json_response({"error": code, "detail": detail}, status=status)


def next_deadline(inc: dict[str, Any], now: float) -> dict[str, Any] | None:
    """The next 1-3-5 target of an open panic incident: ack, then the 3- and 5-minute arrival."""
    if inc["state"] != "open" or inc["rule"] != "panic":
        return None
    if not inc.get("acked_at") and not inc.get("arrived_at") and inc.get("ack_by"):
        name, at = "ack", inc["ack_by"]
    elif not inc.get("arrived_at") and inc.get("arrive_target_by") and now < parse_ts(inc["arrive_target_by"]):
        name, at = "arrive_target", inc["arrive_target_by"]
    elif not inc.get("arrived_at") and inc.get("arrive_by"):
        name, at = "arrive", inc["arrive_by"]
    else:
        return None
    return {"name": name, "at": at, "overdue": now > parse_ts(at)}


def urgency(inc: dict[str, Any], now: float) -> tuple:
    """Sort key of an open incident, most urgent first: unacknowledged real panics, by their
    next 1-3-5 deadline (the most overdue first); then other real incidents by severity and
    deadline; then drills, ordered the same way in their own lane; ties: the longest waiting.
    app.js `urgency` is the same key for the live page."""
    unacked_panic = inc["rule"] == "panic" and not inc.get("acked_at") and not inc.get("arrived_at")
    deadline = next_deadline(inc, now)
    return (
        inc.get("status") == "Exercise",
        not unacked_panic,
        0 if unacked_panic else RANK.get(inc["severity"], 9),
        parse_ts(deadline["at"]) if deadline else float("inf"),
        inc["opened_at"],
    )


# The one table of what an operator may do on an open incident's card, by rule (app.js draws
# these buttons; incident_command refuses the rest). The worker itself takes every incident
# command on every incident, but nobody arrives at a device fault, a staffing gap or a flood
# summary, and a lockdown is lifted (a school command: `resolve` would close it but keep the
# incidents it holds back held).
_NO_SCENE = ("ack", "resolve", "false_alarm")
ACTIONS: dict[str, tuple[str, ...]] = {
    "lockdown": ("lift_lockdown",), "device_health": _NO_SCENE, "paging_health": _NO_SCENE, "post_staffing": _NO_SCENE, "flood": _NO_SCENE,
    "coverage_gap": _NO_SCENE,
}
DEFAULT_ACTIONS = INCIDENT_COMMANDS  # panic and the sensor-raised incidents: a unit may be sent
CARD_COMMANDS = frozenset(DEFAULT_ACTIONS).union(*ACTIONS.values())


class NoUnits:
    """The units view of a console without one (tests, a registry without units)."""

    caught_up = threading.Event()
    caught_up.set()

    def units(self) -> Sequence[UnitState]:
        return ()


def coverage_class(eta_s: float | None, located: bool, target_s: float, limit_s: float) -> str:
    """A school's coverage now, as the map colours it: `target` (a unit within the 3-minute
    arrive target), `limit` (within the 5-minute limit), `none` (no available unit in time),
    `unknown` (the school has no coordinates)."""
    if not located:
        return "unknown"
    if eta_s is None or eta_s > limit_s:
        return "none"
    return "target" if eta_s <= target_s else "limit"


def actions(inc: dict[str, Any]) -> list[str]:
    """The buttons for this incident now: none once closed; ack and arrive only once."""
    if inc["state"] != "open":
        return []
    done = {"ack": inc.get("acked_at"), "arrive": inc.get("arrived_at"), "dispatch": inc.get("arrived_at")}
    return [a for a in ACTIONS.get(inc["rule"], DEFAULT_ACTIONS) if not done.get(a)]


class Console:
    def __init__(self, cfg: Config, registry: Registry, store: Store, accounts: Accounts, send: Callable[[Command], None], units: Any = None):
        self.cfg, self.registry, self.store, self.accounts, self.send = cfg, registry, store, accounts, send
        # the mobile units as last reported: a units_view.UnitsView (units(), caught_up)
        self.unit_view = units if units is not None else NoUnits()
        self.clients: list[tuple[Account, asyncio.Queue]] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.throttle = LoginThrottle()

    # --- presentation -----------------------------------------------------------------

    def unit_label(self, unit_id: str) -> str:
        """A registry unit's callsign (or name), else its id."""
        unit = self.registry.unit(unit_id)
        return (unit.callsign or unit.name or unit.id) if unit else unit_id

    def incident_view(self, inc: dict[str, Any], now: float | None = None) -> dict[str, Any]:
        school = self.registry.school(inc["school_id"])
        dispatched = inc.get("dispatched") or []
        arrived_unit = inc.get("arrived_unit") or ""
        return {**inc, "school_name": school.name if school else inc["school_id"], "next_deadline": next_deadline(inc, now or time.time()),
                # the card shows times on the school's clock, and who came: the registry unit
                # that arrived (issue 13), else what the console sent as the arrive note (a
                # unit not in the registry), else who reported it (the CLI's --by)
                "timezone": school.timezone if school else "UTC", "actions": actions(inc),
                "arrived_unit": arrived_unit or inc.get("arrived_note") or inc.get("arrived_by") or "", "arrived_unit_id": arrived_unit,
                "nearest_units": inc.get("nearest_units") or [], "dispatched": dispatched,
                "unit_labels": {u: self.unit_label(u) for u in dict.fromkeys([*dispatched, *([arrived_unit] if arrived_unit else [])])},
                "checklist": list(self.cfg.console.checklist(inc["rule"]))}

    def units_view(self, account: Account, now: float) -> dict[str, Any]:
        """/api/units: every registry unit as last reported, and each school's coverage now
        (its best ETA against the 1-3-5 arrive target and limit). A guard sees the units
        whose area lists its school, and its own school's coverage only."""
        ucfg, esc = self.cfg.units, self.cfg.escalation
        states = {s.unit_id: s for s in self.unit_view.units()}
        rows = []
        for unit in sorted(self.registry.units.values(), key=lambda u: u.id):
            if account.role == "guard" and account.school not in unit.area:
                continue
            s = states.get(unit.id)
            age = s.position_age(now) if s else None
            rows.append({
                "unit_id": unit.id, "profile": unit.profile, "callsign": unit.callsign, "name": unit.name, "label": self.unit_label(unit.id),
                "area": list(unit.area), "reported": bool(s and (s.position_at, s.status_at, s.online_at) != (None, None, None)),  # held by an incident only: not reported
                # (0, 0) is a receiver's "no fix": drawn nowhere, not in the Gulf of Guinea
                "lat": s.lat if s and s.located else None, "lon": s.lon if s and s.located else None, "accuracy_m": s.accuracy_m if s else None,
                "fix": None if not (s and s.position_at is not None) else "ok" if s.has_fix(ucfg) else "poor" if s.located else "none",
                "speed_kmh": s.speed_kmh if s else None, "heading": s.heading if s else None,
                "position_at": iso_utc(s.position_at) if s and s.position_at is not None else None,
                "age_s": round(age, 1) if age is not None else None,
                "status": (s.status if s else "") or "unknown", "status_at": iso_utc(s.status_at) if s and s.status_at is not None else None,
                "online": s.online if s else None,
                "assigned_to": list(s.assigned_to) if s else [],  # open incidents it was sent to: busy
                "stale": not (s and s.fresh(now, ucfg)), "available": bool(s and s.available(now, ucfg)),
            })
        schools = []
        for school in sorted(self.registry.schools.values(), key=lambda x: x.id):
            if not account.sees(school.id):
                continue
            best = unit_rules.best_eta(school, states.values(), now, ucfg)
            eta = best.eta_s if best else None
            schools.append({
                "school_id": school.id, "window": unit_rules.window_kind(school, now),
                "coverage": coverage_class(eta, school.coordinates is not None, esc.arrive_target_seconds, esc.arrive_limit_seconds),
                "best": {"unit_id": best.unit_id, "label": self.unit_label(best.unit_id), "eta_s": round(best.eta_s, 1), "in_area": best.in_area} if best else None,
            })
        return {"at": iso_utc(now), "caught_up": self.unit_view.caught_up.is_set(), "arrive_target_seconds": esc.arrive_target_seconds,
                "arrive_limit_seconds": esc.arrive_limit_seconds, "stale_after_seconds": ucfg.stale_after_seconds, "units": rows, "schools": schools}

    def sorted_incidents(self, rows: list[dict[str, Any]], now: float | None = None) -> list[dict[str, Any]]:
        """Open incidents by urgency (`urgency`), then the closed ones."""
        now = now or time.time()
        return sorted(rows, key=lambda i: (i["state"] != "open", urgency(i, now) if i["state"] == "open" else ()))

    def school_view(self, school_id: str) -> dict[str, Any]:
        school = self.registry.school(school_id)
        states = self.store.device_states(school_id)
        open_incidents = self.store.incidents(state="open", schools=[school_id])
        unhealthy = {}
        for inc in open_incidents:
            if inc["rule"] == "device_health" and inc["evidence"]:
                unhealthy[inc["evidence"][0].get("device_id")] = inc["headline"]
        devices = []
        for d in sorted(self.registry.devices_of(school_id), key=lambda d: d.id):
            status = states.get(d.id, {}).get("state", "unknown")
            problem = unhealthy.get(d.id, "")
            devices.append({"id": d.id, "kind": d.kind, "zone": d.zone, "status": "problem" if problem else status, "problem": problem})
        rosters = self.store.rosters(school_id)
        posts = [{"id": p.id, "required_officers": p.required_officers, "on_duty": rosters.get(p.id, [])} for p in (school.posts if school else ())]
        lockdown = next((self.incident_view(i) for i in open_incidents if i["rule"] == "lockdown"), None)
        return {
            "id": school_id,
            "name": school.name if school else school_id,
            "timezone": school.timezone if school else "UTC",
            **(where_who(school) if school else {}),
            "devices": devices,
            "offline": [d for d in devices if d["status"] in ("offline", "problem")],
            "posts": posts,
            "silences": self.store.silences(school_id, iso_utc(time.time())),
            "lockdown": lockdown,
            "incidents": [self.incident_view(i) for i in self.sorted_incidents(open_incidents)],
        }

    # --- live updates ---------------------------------------------------------------------

    def changed(self, changes: list[Change]) -> None:
        """Called by the recorder thread after each applied batch: read what changed here
        (off the event loop), then hand it to the loop for the open pages."""
        if self.loop is None:
            return
        payloads: list[dict[str, Any]] = []
        for what, id_, school in dict.fromkeys((c.what, c.id, c.school_id) for c in changes):
            payload: dict[str, Any] = {"type": what, "id": id_, "school_id": school}
            if what == "incident":
                inc = self.store.incident(id_)
                if inc is None:
                    continue
                payload["incident"] = self.incident_view(inc)
            payloads.append(payload)
        self.loop.call_soon_threadsafe(self._fan_out, payloads)

    def _fan_out(self, payloads: list[dict[str, Any]]) -> None:
        for payload in payloads:
            for account, queue in self.clients:
                if account.sees(payload["school_id"]) and not queue.full():
                    queue.put_nowait(payload)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        account = request[ACCOUNT]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        await response.prepare(request)
        queue: asyncio.Queue = asyncio.Queue(maxsize=1000)
        entry = (account, queue)
        self.clients.append(entry)
        metrics.CONSOLE_CLIENTS.set(len(self.clients))
        try:
            await response.write(b": connected\n\n")
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=PING_SECONDS)
                    if item is END_OF_STREAM:
                        break
                    await response.write(f"event: change\ndata: {json.dumps(item)}\n\n".encode())
                except asyncio.TimeoutError:
                    # an event, not a comment: the page sees it, and shows a stale banner when
                    # none came for 5 s (a dead connection may never report an error)
                    await response.write(b"event: ping\ndata: {}\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.clients.remove(entry)
            metrics.CONSOLE_CLIENTS.set(len(self.clients))
        return response

    async def _end_streams(self, app: web.Application) -> None:
        """On SIGTERM/Ctrl-C: end every live stream, so shutdown does not wait for browsers
        (aiohttp would wait its shutdown timeout for these never-ending handlers)."""
        for _, queue in list(self.clients):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(END_OF_STREAM)

    # --- HTTP handlers -----------------------------------------------------------------------

    async def _db(self, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kwargs))

    async def login(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            return _error(400, "bad_request", "send JSON {username, password} (strings)")
        keys = [f"user:{username}", f"addr:{request.remote or '-'}"]
        now = time.time()
        wait = self.throttle.wait(keys, now)
        if wait > 0:
            log.warning("login refused: too many failures", extra={"user": username[:64], "address": request.remote, "retry_after_s": round(wait)})
            response = _error(429, "too_many_failures", f"too many failed logins; try again in {math.ceil(wait)} s")
            response.headers["Retry-After"] = str(math.ceil(wait))
            return response
        # PBKDF2 takes tens of milliseconds: never on the event loop that serves everyone
        account = await asyncio.get_running_loop().run_in_executor(None, self.accounts.login, username, password)
        if account is None:
            self.throttle.failed(keys, now)
            log.warning("login failed", extra={"user": username[:64], "address": request.remote})
            return _error(401, "bad_credentials", "unknown user or wrong password")
        self.throttle.succeeded(keys[:1])  # the user's count; the address keeps its own
        response = web.json_response(account.public())
        response.set_cookie(
            COOKIE, self.accounts.session(account), httponly=True, samesite="Strict", secure=request.secure, max_age=int(self.accounts.session_seconds)
        )
        return response

    async def logout(self, request: web.Request) -> web.Response:
        if COOKIE in request.cookies:
            self.accounts.revoke(request.cookies[COOKIE])  # ended on the server, not only in this browser
        response = web.json_response({"ok": True})
        response.del_cookie(COOKIE)
        return response

    async def me(self, request: web.Request) -> web.Response:
        account: Account = request[ACCOUNT]
        # the school-wide commands this account may send (the card hides the buttons it may not press)
        # and whether it may dispatch mobile units (not a guard: the duty room sends them)
        return web.json_response({**account.public(), "school_commands": [c for c in SCHOOL_COMMANDS if account.may(c, account.school)],
                                  "may_dispatch": account.may("dispatch", account.school)})

    async def incidents(self, request: web.Request) -> web.Response:
        account: Account = request[ACCOUNT]
        q = request.query
        school = q.get("school")
        if school and not account.sees(school):
            return _error(403, "forbidden", f"{account.username} may not see school {school}")
        schools = [school] if school else ([account.school] if account.role == "guard" else None)
        state = q.get("state", "open")
        try:
            limit = min(int(q.get("limit", "500")), 5000)
        except ValueError:
            return _error(400, "bad_request", "limit must be a whole number")
        rows = await self._db(
            self.store.incidents,
            state=None if state == "all" else state,
            schools=schools,
            severity=q.get("severity"),
            rule=q.get("rule"),
            status=q.get("status"),
            since=q.get("since"),
            limit=limit,
        )
        now = time.time()
        return web.json_response({"incidents": [self.incident_view(i, now) for i in self.sorted_incidents(rows)]})

    async def _visible_incident(self, request: web.Request) -> dict[str, Any] | web.Response:
        inc = await self._db(self.store.incident, request.match_info["incident_id"])
        if inc is None:
            return _error(404, "not_found", f"no incident {request.match_info['incident_id']}")
        if not request[ACCOUNT].sees(inc["school_id"]):
            return _error(403, "forbidden", f"{request[ACCOUNT].username} may not see school {inc['school_id']}")
        return inc

    async def incident(self, request: web.Request) -> web.Response:
        inc = await self._visible_incident(request)
        if isinstance(inc, web.Response):
            return inc
        timeline = await self._db(self.store.timeline, inc["incident_id"])
        return web.json_response({**self.incident_view(inc), "timeline": timeline})

    async def timeline(self, request: web.Request) -> web.Response:
        inc = await self._visible_incident(request)
        if isinstance(inc, web.Response):
            return inc
        return web.json_response({"timeline": await self._db(self.store.timeline, inc["incident_id"])})

    async def incident_command(self, request: web.Request) -> web.Response:
        inc = await self._visible_incident(request)
        if isinstance(inc, web.Response):
            return inc
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        name = str(body.get("command", ""))
        if name not in CARD_COMMANDS:
            return _error(400, "bad_command", f"command must be one of {', '.join(sorted(CARD_COMMANDS))}")
        applicable = ACTIONS.get(inc["rule"], DEFAULT_ACTIONS)
        if name not in applicable:
            return _error(409, "not_applicable", f"{name} does not apply to a {inc['rule']} incident (it takes {', '.join(applicable)})")
        account: Account = request[ACCOUNT]
        if not account.may(name, inc["school_id"]):
            return _error(403, "forbidden", f"{account.username} may not {name} at {inc['school_id']}")
        note = str(body.get("note", ""))
        unit = str(body.get("unit") or "").strip()
        if name == "dispatch":
            if not unit:
                return _error(400, "unit_required", 'dispatch needs a mobile unit of the registry, e.g. {"command": "dispatch", "unit": "car-07"}')
            if (wrong := check_target(Command(command=name, by="-", unit=unit), inc["school_id"], self.registry)) is not None:
                return _error(400, wrong.reason_code, wrong.reason)  # unknown_unit, with a did-you-mean
            if inc.get("arrived_at"):
                return _error(409, "already_arrived", f"{inc['incident_id']}: a unit is on scene already")
            if unit in (inc.get("dispatched") or []):
                return _error(409, "already_dispatched", f"{inc['incident_id']}: {unit} was already dispatched")
        if name == "arrive":
            # `by` stays the signed-in operator. A registry unit travels as the command's
            # `unit` (the worker defaults it to the unit dispatched); any other name of who is
            # on scene (a guard team, a unit not in the registry) as its note, as before.
            if not unit and not inc.get("dispatched"):
                return _error(400, "unit_required", 'arrive needs the unit on scene, e.g. {"command": "arrive", "unit": "Mobile unit 3"}')
            if unit and self.registry.unit(unit) is None:
                note, unit = unit, ""
        if name == "lift_lockdown":  # a school command: lifts this lockdown, the drill's or the real one
            return await self._send(Command(command=name, school_id=inc["school_id"], by=account.username, note=note, exercise=inc["status"] == "Exercise"))
        return await self._send(Command(command=name, incident_id=inc["incident_id"], school_id=inc["school_id"], by=account.username, note=note, unit=unit))

    async def units(self, request: web.Request) -> web.Response:
        return web.json_response(await self._db(self.units_view, request[ACCOUNT], time.time()))

    async def schools(self, request: web.Request) -> web.Response:
        account: Account = request[ACCOUNT]
        rows = [{"id": s.id, "name": s.name, "timezone": s.timezone, **where_who(s)}
                for s in sorted(self.registry.schools.values(), key=lambda s: s.id) if account.sees(s.id)]
        return web.json_response({"schools": rows})

    async def site_plan(self, request: web.Request) -> web.StreamResponse:
        """The school's own local site-plan image, and nothing else: the path comes from the
        registry, never from the request."""
        school_id = request.match_info["school_id"]
        school = self.registry.school(school_id)
        if school is None:
            return _error(404, "not_found", f"no school {school_id}")
        if not request[ACCOUNT].sees(school_id):
            return _error(403, "forbidden", f"{request[ACCOUNT].username} may not see school {school_id}")
        path = Path(school.site_plan) if school.site_plan and not school.site_plan_is_url else None
        if path is None or not await self._db(path.is_file):
            return _error(404, "not_found", f"no site plan file for school {school_id}")
        # an SVG opened on its own must not run scripts with the console's origin
        return web.FileResponse(path, headers={"Content-Type": IMAGE_TYPES[path.suffix.lower()], "Cache-Control": "private, max-age=300",
                                               "Content-Security-Policy": "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"})

    async def school(self, request: web.Request) -> web.Response:
        school_id = request.match_info["school_id"]
        if self.registry.school(school_id) is None:
            return _error(404, "not_found", f"no school {school_id}")
        if not request[ACCOUNT].sees(school_id):
            return _error(403, "forbidden", f"{request[ACCOUNT].username} may not see school {school_id}")
        return web.json_response(await self._db(self.school_view, school_id))

    async def school_command(self, request: web.Request) -> web.Response:
        school_id = request.match_info["school_id"]
        if self.registry.school(school_id) is None:
            return _error(404, "not_found", f"no school {school_id}")
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        name = str(body.get("command", ""))
        if name not in SCHOOL_COMMANDS:
            return _error(400, "bad_command", f"command must be one of {', '.join(SCHOOL_COMMANDS)}")
        account: Account = request[ACCOUNT]
        if not account.may(name, school_id):
            return _error(403, "forbidden", f"only an admin may {name}")
        try:
            cmd = Command.from_dict({**{k: v for k, v in body.items() if k in ("scope", "duration_seconds", "until", "reason", "silence_id", "exercise", "note")},
                                      "command": name, "school_id": school_id, "by": account.username})
        except ValueError as exc:
            return _error(400, "bad_command", str(exc))
        if (wrong := check_target(cmd, school_id, self.registry)) is not None:  # e.g. a zone the school lacks
            return _error(400, wrong.reason_code, wrong.reason)
        return await self._send(cmd)

    async def _json(self, request: web.Request) -> dict | web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "bad_request", "the body must be a JSON object")
        return body if isinstance(body, dict) else _error(400, "bad_request", "the body must be a JSON object")

    async def _send(self, cmd: Command) -> web.Response:
        cmd = replace(cmd, command_id=uuid.uuid4().hex, at=iso_utc(time.time()))
        await asyncio.get_running_loop().run_in_executor(None, self.send, cmd)
        log.info("command sent", extra={"command": cmd.command, "target": cmd.incident_id or cmd.school_id, "by": cmd.by})
        return web.json_response({"command_id": cmd.command_id, "command": cmd.to_dict(), "status": "sent"}, status=202)

    async def metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "time": datetime.now(timezone.utc).isoformat()})

    # --- app -----------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._observe, self._same_origin, self._auth])
        app.on_response_prepare.append(_security_headers)
        app.on_shutdown.append(self._end_streams)
        web_dir = resources.files("pipeline.ops") / "web"

        async def static(request: web.Request) -> web.Response:
            name = request.match_info.get("name", "index.html")
            if name not in ("index.html", "app.js", "style.css"):
                raise web.HTTPNotFound()
            types = {"html": "text/html", "js": "text/javascript", "css": "text/css", "json": "application/json"}
            return web.Response(body=(web_dir / name).read_bytes(), content_type=types[name.rsplit(".", 1)[1]], charset="utf-8")

        async def openapi(request: web.Request) -> web.Response:
            return web.Response(body=(web_dir / "openapi.json").read_bytes(), content_type="application/json")

        app.router.add_get("/", static)
        app.router.add_get("/static/{name}", static)
        app.router.add_get("/api/openapi.json", openapi)
        app.router.add_get("/healthz", self.health)
        app.router.add_get("/metrics", self.metrics_page)
        app.router.add_post("/api/login", self.login)
        app.router.add_post("/api/logout", self.logout)
        app.router.add_get("/api/me", self.me)
        app.router.add_get("/api/incidents", self.incidents)
        app.router.add_get("/api/incidents/{incident_id}", self.incident)
        app.router.add_get("/api/incidents/{incident_id}/timeline", self.timeline)
        app.router.add_post("/api/incidents/{incident_id}/commands", self.incident_command)
        app.router.add_get("/api/units", self.units)
        app.router.add_get("/api/schools", self.schools)
        app.router.add_get("/api/schools/{school_id}", self.school)
        app.router.add_get("/api/schools/{school_id}/site-plan", self.site_plan)
        app.router.add_post("/api/schools/{school_id}/commands", self.school_command)
        app.router.add_get("/api/stream", self.stream)

        async def on_startup(_app: web.Application) -> None:
            self.loop = asyncio.get_running_loop()

        app.on_startup.append(on_startup)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        public = request.path in ("/", "/healthz", "/metrics", "/api/login", "/api/openapi.json") or request.path.startswith("/static/")
        if public:
            return await handler(request)
        account = None
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            account = self.accounts.from_token(header[7:].strip())
        elif COOKIE in request.cookies:
            account = self.accounts.from_session(request.cookies[COOKIE])
        if account is None:
            return _error(401, "unauthenticated", "sign in (POST /api/login) or send Authorization: Bearer <token>")
        request[ACCOUNT] = account
        return await handler(request)

    @web.middleware
    async def _same_origin(self, request: web.Request, handler):
        """CSRF: a state-changing request must be JSON (a cross-site form cannot send that
        without a CORS preflight, which the console never grants) and, when the browser says
        where it comes from, come from the console's own origin."""
        if request.method in ("POST", "PUT", "PATCH", "DELETE"):
            if request.content_type != "application/json":
                return _error(415, "json_required", "send the request body as application/json")
            origin = request.headers.get("Origin") or _origin_of(request.headers.get("Referer", ""))
            if origin and origin != f"{request.scheme}://{request.host}":
                log.warning("cross-origin request refused", extra={"path": request.path, "origin": origin[:200], "address": request.remote})
                return _error(403, "cross_origin", "requests must come from the console's own pages")
        return await handler(request)

    @web.middleware
    async def _observe(self, request: web.Request, handler):
        response = await handler(request)
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "other"
        metrics.CONSOLE_REQUESTS.labels(route, str(response.status)).inc()
        return response


# No inline script or style anywhere (the page loads /static/app.js and style.css); device
# snapshots may come from NVRs over http(s).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' http: https:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def accounts_from(cfg: Config) -> Accounts:
    return Accounts(
        [Account(username=a["username"], role=a["role"], school=a.get("school", ""), password_hash=a.get("password_hash", ""), token_sha256=a.get("token_sha256", "")) for a in cfg.console.accounts],
        secret=cfg.console.session_secret,
        session_seconds=cfg.console.session_hours * 3600,
    )


def run(cfg: Config, registry: Registry) -> None:
    """Serve the console until SIGINT/SIGTERM, recording from Kafka in a thread."""
    from pipeline import kafka_client
    from pipeline.ops import recorder
    from pipeline.ops.recorder import Recorder
    from pipeline.records import dumps

    tls = cfg.console_tls()
    context = None
    if tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(*tls)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"console TLS: cannot use {tls[0]} / {tls[1]}: {exc}") from exc
    store = Store(cfg.store_url, cfg.bridge.max_clock_skew_seconds)
    # the topics it reads and writes (with Kafka ACLs the operator account sees no others)
    kafka_client.ensure_topics(cfg, "operator", list(recorder.kinds(cfg)), cfg.kafka.partitions, cfg.kafka.replication_factor)
    producer = kafka_client.producer(cfg, "operator")

    def send(cmd: Command) -> None:
        producer.send(cfg.topics.commands, key=cmd.school_id, value=dumps(cmd.to_dict())).get(timeout=30)

    from pipeline.units_view import UnitsView

    # the mobile units, read whole from their compacted topic (nothing to read without units)
    units = UnitsView(cfg, registry, "operator").start()
    console = Console(cfg, registry, store, accounts_from(cfg), send, units)
    stop = threading.Event()
    recorder = Recorder(cfg, store, console.changed)

    def record() -> None:
        recorder.run(stop)

    def watch() -> None:
        while not stop.wait(2):
            metrics.CONSOLE_LAG.set(recorder.lag)

    threading.Thread(target=record, daemon=True, name="recorder").start()
    threading.Thread(target=watch, daemon=True, name="console-metrics").start()
    scheme = "https" if tls else "http"
    log.info("console", extra={"url": f"{scheme}://{cfg.console.bind}:{cfg.console.port}/", "store": store.kind, "accounts": len(cfg.console.accounts)})
    try:
        web.run_app(console.app(), host=cfg.console.bind, port=cfg.console.port, ssl_context=context, print=None, access_log=None,
                    shutdown_timeout=min(5.0, cfg.stack.stop_timeout_seconds))  # a backstop: streams end at once
    finally:
        stop.set()
        units.stop()
        producer.close(timeout=5)
