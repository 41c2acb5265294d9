"""The incident history store: SQLite (default, a file under HUXUE_HOME) or PostgreSQL.

Everything in it is derived from Kafka records, applied in one transaction per batch
together with the topic positions they came from. Applying a record twice changes
nothing (alerts are keyed by their identifier), so rebuilding the store from the topics
gives the same tables. Schema changes are numbered SQL files in ops/migrations/,
applied in order and recorded in `schema_migrations`.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.records import CanonicalEvent, dumps, iso_utc, loads, parse_ts

MIGRATIONS = "pipeline.ops.migrations"
TABLES = ("incidents", "timeline", "silences", "devices", "rosters", "unit_reports")
# A mobile unit's event type -> the aspect of it a report keeps (heartbeats, tamper: none)
UNIT_ASPECTS = {"unit.position": "position", "unit.status": "status", "device.online": "online", "device.offline": "online"}
# Positions are kept at most this often per unit (a report judges whole minutes; units
# report every 5-30 s): a month of 500 units stays a few million rows.
POSITION_EVERY_SECONDS = 30.0
# An incident as it is read: its row plus the note of its arrival (from the console: the unit
# on scene), taken from the timeline so that the table needs no column of its own.
INCIDENT_SELECT = (
    "SELECT *, (SELECT note FROM timeline t WHERE t.incident_id = incidents.incident_id AND t.kind = 'alert' AND t.stage = 'arrived' LIMIT 1)"
    " AS arrived_note FROM incidents"
)


@dataclass(frozen=True)
class Record:
    """One Kafka record for the store: its kind (alert, command, rejected, silence, event)."""

    kind: str
    topic: str
    partition: int
    offset: int
    key: str
    value: dict[str, Any]


@dataclass(frozen=True)
class Change:
    """What a record changed, for live updates: ("incident", id) or ("school", id)."""

    what: str
    id: str
    school_id: str


class Store:
    def __init__(self, url: str, max_clock_skew_seconds: float = 600.0):
        self.url = url
        # a unit report's time is its credible time (CanonicalEvent.credible_ts): the
        # bridge's bound, config bridge.max_clock_skew_seconds
        self.max_clock_skew_seconds = max_clock_skew_seconds
        parts = urlsplit(url)
        if parts.scheme == "sqlite":
            self.kind = "sqlite"
            self.path = Path(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else Path(parts.path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif parts.scheme in ("postgresql", "postgres"):
            self.kind = "postgresql"
        else:
            raise ValueError(f"store URL must be sqlite:///path or postgresql://..., got {url!r}")
        self._local = threading.local()
        self.migrate()

    # --- connections -----------------------------------------------------------------

    def _conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.kind == "sqlite":
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA journal_mode=WAL")  # readers do not block the recorder
                conn.execute("PRAGMA synchronous=NORMAL")
            else:
                import psycopg
                from psycopg.rows import dict_row

                conn = psycopg.connect(self.url, autocommit=True, row_factory=dict_row)
            self._local.conn = conn
        return conn

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.kind == "postgresql" else sql

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Any]:
        conn = self._conn()
        if self.kind == "sqlite":
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        else:
            with conn.transaction():
                yield conn

    def _exec(self, conn, sql: str, params: tuple = ()) -> Any:
        return conn.execute(self._sql(sql), params)

    def _rows(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self._exec(self._conn(), sql, params).fetchall()]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # --- migrations ---------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Apply the numbered migrations not applied yet; returns their numbers."""
        conn = self._conn()
        self._exec(conn, "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        done = {r["version"] for r in self._rows("SELECT version FROM schema_migrations")}
        files = sorted(f for f in resources.files(MIGRATIONS).iterdir() if f.name.endswith(".sql"))
        applied = []
        for f in files:
            version = int(f.name.split("_", 1)[0])
            if version in done:
                continue
            with self._tx() as tx:
                for statement in _statements(f.read_text(encoding="utf-8")):
                    self._exec(tx, statement)
                self._exec(tx, "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", (version, f.name))
            applied.append(version)
        return applied

    # --- applying records ---------------------------------------------------------------

    def positions(self) -> dict[tuple[str, int], int]:
        return {(r["topic"], r["partition_no"]): r["next_offset"] for r in self._rows("SELECT topic, partition_no, next_offset FROM positions")}

    def apply(self, records: list[Record], positions: dict[tuple[str, int], int] | None = None) -> list[Change]:
        """Apply a batch and advance the positions (default: past its records), in one transaction."""
        changes: list[Change] = []
        with self._tx() as tx:
            last: dict[tuple[str, int], int] = {}
            for r in records:
                change = getattr(self, f"_apply_{r.kind}")(tx, r)
                if change:
                    changes.append(change)
                last[(r.topic, r.partition)] = r.offset + 1
            last.update(positions or {})
            for (topic, partition), nxt in last.items():
                self._exec(
                    tx,
                    "INSERT INTO positions (topic, partition_no, next_offset) VALUES (?, ?, ?) "
                    "ON CONFLICT (topic, partition_no) DO UPDATE SET next_offset = excluded.next_offset",
                    (topic, partition, nxt),
                )
        return changes

    def _timeline(self, tx, entry_id: str, incident_id: str | None, school: str, at: str, kind: str, stage: str, actor: str, note: str, headline: str, body: dict) -> bool:
        """Insert a timeline row; False when it is already there (a re-applied record)."""
        cur = self._exec(
            tx,
            "INSERT INTO timeline (entry_id, incident_id, school_id, at, kind, stage, actor, note, headline, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (entry_id) DO NOTHING",
            (entry_id, incident_id, school, at, kind, stage, actor, note, headline, dumps(body).decode()),
        )
        return cur.rowcount == 1

    def _apply_alert(self, tx, r: Record) -> Change | None:
        a = r.value
        iid, school, sent, stage = a["incident_id"], a["school_id"], a["sent"], a["stage"]
        if not self._timeline(tx, a["identifier"], iid, school, sent, "alert", stage, a.get("by", ""), a.get("note", ""), a.get("headline", ""), a):
            return None
        d = a.get("deadlines") or {}
        common = {
            "severity": a["severity"], "urgency": a.get("urgency", ""), "certainty": a.get("certainty", ""), "zone": a.get("zone", ""),
            "stage": stage, "headline": a.get("headline", ""), "updated_at": sent, "held": a.get("held", ""),
            "notify": dumps(a.get("notify", [])).decode(), "evidence": dumps(a.get("evidence", [])).decode(),
        }
        if stage == "acknowledged":
            common.update(acked_at=sent, acked_by=a.get("by", ""))
        elif stage == "arrived":
            common.update(arrived_at=sent, arrived_by=a.get("by", ""), arrived_unit=a.get("unit") or "")
        # mobile units (issue 13): every alert of the incident carries the latest of them
        if a.get("nearest_units") is not None:
            common["nearest_units"] = dumps(a["nearest_units"]).decode()
        if a.get("dispatched") is not None:
            common["dispatched"] = dumps(a["dispatched"]).decode()
        first_dispatch = sent if stage.startswith("dispatched-") else None
        if a.get("msgType") == "Cancel":
            common.update(state="closed", closed_at=sent, closed_stage=stage, closed_by=a.get("by", ""))
        exists = self._exec(tx, "SELECT 1 FROM incidents WHERE incident_id = ?", (iid,)).fetchone()
        if exists:
            sets = ", ".join(f"{k} = ?" for k in common)
            self._exec(tx, f"UPDATE incidents SET {sets} WHERE incident_id = ?", (*common.values(), iid))
            if first_dispatch:
                self._exec(tx, "UPDATE incidents SET dispatched_at = ? WHERE incident_id = ? AND (dispatched_at IS NULL OR dispatched_at > ?)",
                           (first_dispatch, iid, first_dispatch))
        else:  # the opening alert (or, after topic retention, the oldest one left)
            row = {
                "incident_id": iid, "school_id": school, "rule": a["rule"], "status": a["status"], "state": "open", "opened_at": a.get("onset") or sent,
                "ack_by": d.get("ack_by"), "arrive_target_by": d.get("arrive_target_by"), "arrive_by": d.get("arrive_by"), **common,
                "dispatched_at": first_dispatch,
            }
            cols = ", ".join(row)
            self._exec(tx, f"INSERT INTO incidents ({cols}) VALUES ({', '.join('?' for _ in row)})", tuple(row.values()))
        return Change("incident", iid, school)

    def _apply_command(self, tx, r: Record) -> Change | None:
        c = r.value
        school = c.get("school_id") or r.key
        entry = f"cmd/{c.get('command_id') or _digest(c)}"
        target = c.get("incident_id") or None
        if not self._timeline(tx, entry, target, school, c.get("at") or "", "command", c.get("command", ""), c.get("by", ""), c.get("note") or c.get("reason") or "", "", c):
            return None
        return Change("incident", target, school) if target else Change("school", school, school)

    def _apply_rejected(self, tx, r: Record) -> Change | None:
        c = r.value.get("command") or {}
        school = c.get("school_id") or r.key
        entry = f"rej/{c.get('command_id') or _digest(r.value)}"
        target = c.get("incident_id") or None
        if not self._timeline(tx, entry, target, school, r.value.get("received_at", ""), "rejected", r.value.get("reason_code", ""), c.get("by", ""), r.value.get("reason", ""), "", r.value):
            return None
        return Change("incident", target, school) if target else Change("school", school, school)

    def _apply_notification(self, tx, r: Record) -> Change | None:
        """A paging attempt of `huxue notifier`, on its incident's timeline."""
        n = r.value
        incident = n.get("incident_id") or None
        if not incident or not n.get("receiver"):
            return None  # a whole alert skipped, or a receiver's health: no incident of its own
        entry = f"ntf/{n.get('identifier', '')}/{n['receiver']}/{n.get('attempt', 0)}/{n.get('outcome', '')}"
        status = f"HTTP {n['http_status']}" if n.get("http_status") else ""
        note = "; ".join(x for x in (status, str(n.get("error") or "")) if x)
        headline = f"paging {n['receiver']} ({n.get('type', '')}): {n.get('outcome', '')}, attempt {n.get('attempt', '')}"
        school = n.get("school_id") or r.key
        if not self._timeline(tx, entry, incident, school, n.get("at", ""), "notification", str(n.get("outcome", "")), str(n["receiver"]), note, headline, n):
            return None
        return Change("incident", incident, school)

    def _apply_silence(self, tx, r: Record) -> Change | None:
        s = r.value
        row = (
            s["silence_id"], s["school_id"], s["state"], dumps(s.get("scope", {})).decode(), s.get("reason", ""), s.get("by", ""),
            s["starts"], s["ends"], s.get("ended_by", ""), int(s.get("suppressed", 0)), s["sent"],
        )
        self._exec(
            tx,
            "INSERT INTO silences (silence_id, school_id, state, scope, reason, actor, starts, ends, ended_by, suppressed, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (silence_id) DO UPDATE SET state = excluded.state, "
            "ended_by = excluded.ended_by, suppressed = excluded.suppressed, updated_at = excluded.updated_at "
            "WHERE silences.updated_at <= excluded.updated_at",
            row,
        )
        return Change("school", s["school_id"], s["school_id"])

    def _apply_event(self, tx, r: Record) -> Change | None:
        e = r.value
        etype, school = e.get("type"), e.get("school_id", r.key)
        if etype in ("device.online", "device.offline"):
            self._exec(
                tx,
                "INSERT INTO devices (device_id, school_id, state, changed_at) VALUES (?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET "
                "state = excluded.state, changed_at = excluded.changed_at WHERE devices.changed_at <= excluded.changed_at",
                (e["device_id"], school, etype.split(".")[1], e["ts"]),
            )
            return Change("school", school, school)
        if etype in ("guard.checkin", "guard.checkout") and not e.get("exercise"):
            attrs = e.get("attrs") or {}
            self._exec(
                tx,
                "INSERT INTO rosters (post_id, officer_id, school_id, on_duty, at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (post_id, officer_id) "
                "DO UPDATE SET on_duty = excluded.on_duty, at = excluded.at WHERE rosters.at <= excluded.at",
                (str(attrs.get("post_id", "")), str(attrs.get("officer_id", "")), school, 1 if etype == "guard.checkin" else 0, e["ts"]),
            )
            return Change("school", school, school)
        return None

    def _apply_unit(self, tx, r: Record) -> Change | None:
        """A mobile unit's report from the units topic (key "<unit>/<aspect>"), for the
        report's coverage. Not shown live (the console's UnitsView reads the topic itself)."""
        try:
            event = CanonicalEvent.from_dict(r.value)
        except (KeyError, TypeError, ValueError):
            return None
        aspect = UNIT_ASPECTS.get(event.type)
        if aspect is None:
            return None
        at = event.credible_ts(self.max_clock_skew_seconds)
        if aspect == "position":
            # thinned, deterministically: the rows before it decide (record order is the
            # partition's, the same in a rebuild)
            last = self._exec(tx, "SELECT MAX(at) AS t FROM unit_reports WHERE unit_id = ? AND aspect = 'position' AND at <= ?",
                              (event.device_id, iso_utc(at))).fetchone()
            t = last["t"] if last is not None else None
            if t and at - parse_ts(t) < POSITION_EVERY_SECONDS:
                return None
        self._exec(tx, "INSERT INTO unit_reports (unit_id, event_id, aspect, at, payload) VALUES (?, ?, ?, ?, ?) ON CONFLICT (unit_id, event_id) DO NOTHING",
                   (event.device_id, event.event_id, aspect, iso_utc(at), dumps(r.value).decode()))
        return None

    # --- queries --------------------------------------------------------------------------

    def incidents(
        self,
        *,
        state: str | None = None,
        schools: list[str] | None = None,
        severity: str | None = None,
        rule: str | None = None,
        status: str | None = None,
        since: str | None = None,
        limit: int = 500,
    ) -> list[dict[str, Any]]:
        where, params = [], []
        for col, value in (("state", state), ("severity", severity), ("rule", rule), ("status", status)):
            if value:
                where.append(f"{col} = ?")
                params.append(value)
        if schools is not None:
            if not schools:
                return []
            where.append(f"school_id IN ({', '.join('?' for _ in schools)})")
            params += schools
        if since:
            where.append("opened_at >= ?")
            params.append(since)
        sql = INCIDENT_SELECT + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY opened_at DESC LIMIT ?"
        return [_incident(r) for r in self._rows(sql, (*params, int(limit)))]

    def incident(self, incident_id: str) -> dict[str, Any] | None:
        rows = self._rows(INCIDENT_SELECT + " WHERE incident_id = ?", (incident_id,))
        return _incident(rows[0]) if rows else None

    def timeline(self, incident_id: str) -> list[dict[str, Any]]:
        rows = self._rows("SELECT entry_id, incident_id, school_id, at, kind, stage, actor, note, headline, body FROM timeline WHERE incident_id = ? ORDER BY at, entry_id", (incident_id,))
        for r in rows:  # the mobile unit of a dispatch or an arrival (alerts and commands carry it)
            body = r.pop("body")
            r["unit"] = str(loads(body).get("unit") or "") if '"unit"' in body else ""
        return rows

    def silences(self, school_id: str, now_iso: str) -> list[dict[str, Any]]:
        rows = self._rows("SELECT * FROM silences WHERE school_id = ? AND state = 'active' AND ends > ? ORDER BY starts", (school_id, now_iso))
        for r in rows:
            r["scope"] = loads(r["scope"])
        return rows

    def device_states(self, school_id: str) -> dict[str, dict[str, str]]:
        return {r["device_id"]: r for r in self._rows("SELECT device_id, state, changed_at FROM devices WHERE school_id = ?", (school_id,))}

    def rosters(self, school_id: str) -> dict[str, list[dict[str, str]]]:
        out: dict[str, list[dict[str, str]]] = {}
        for r in self._rows("SELECT post_id, officer_id, at FROM rosters WHERE school_id = ? AND on_duty = 1 ORDER BY at", (school_id,)):
            out.setdefault(r["post_id"], []).append({"officer_id": r["officer_id"], "since": r["at"]})
        return out

    def unit_reports(self, start_iso: str, end_iso: str) -> list[dict[str, Any]]:
        """The units' reports in [start, end), by time, after each unit's last report of each
        aspect before start (its state when the period begins): rows unit_id, event_id,
        aspect, at, event (the canonical event dict)."""
        before = self._rows(
            "SELECT r.unit_id, r.event_id, r.aspect, r.at, r.payload FROM unit_reports r JOIN (SELECT unit_id, aspect, MAX(at) AS at FROM unit_reports "
            "WHERE at < ? GROUP BY unit_id, aspect) l ON r.unit_id = l.unit_id AND r.aspect = l.aspect AND r.at = l.at ORDER BY r.at, r.event_id",
            (start_iso,),
        )
        during = self._rows("SELECT unit_id, event_id, aspect, at, payload FROM unit_reports WHERE at >= ? AND at < ? ORDER BY at, event_id", (start_iso, end_iso))
        out = []
        for row in before + during:
            row["event"] = loads(row.pop("payload"))
            out.append(row)
        return out

    def first_unit_report_at(self) -> float | None:
        rows = self._rows("SELECT MIN(at) AS t FROM unit_reports")
        return parse_ts(rows[0]["t"]) if rows and rows[0]["t"] else None

    def first_record_at(self) -> float | None:
        """The time of the earliest record kept, of any kind and school (None: empty)."""
        times = []
        for sql in ("SELECT MIN(at) AS t FROM timeline WHERE at <> ''", "SELECT MIN(opened_at) AS t FROM incidents", "SELECT MIN(changed_at) AS t FROM devices"):
            for r in self._rows(sql):
                if r["t"]:
                    times.append(parse_ts(r["t"]))
        return min(times, default=None)

    def dump(self) -> dict[str, list[dict[str, Any]]]:
        """Every derived table, in a stable order (used to compare a rebuild)."""
        keys = {"incidents": "incident_id", "timeline": "entry_id", "silences": "silence_id", "devices": "device_id", "rosters": "post_id, officer_id",
                "unit_reports": "unit_id, event_id"}
        return {t: self._rows(f"SELECT * FROM {t} ORDER BY {keys[t]}") for t in TABLES}


def _incident(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    row["notify"] = loads(row["notify"])
    row["evidence"] = loads(row["evidence"])
    # mobile units (migration 0002): lists on every incident, empty when none
    row["nearest_units"] = loads(row["nearest_units"]) if row.get("nearest_units") else []
    row["dispatched"] = loads(row["dispatched"]) if row.get("dispatched") else []
    row["arrived_unit"] = row.get("arrived_unit") or ""
    return row


def _digest(value: dict) -> str:
    return hashlib.sha1(dumps(value)).hexdigest()[:16]


def _statements(sql: str) -> list[str]:
    """Split a migration file into statements (no semicolons inside statements here)."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def seconds_between(a: str | None, b: str | None) -> float | None:
    return parse_ts(b) - parse_ts(a) if a and b else None
