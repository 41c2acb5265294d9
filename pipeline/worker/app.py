"""`huxue worker`: the Faust app. Thin: decode, route, call the pure engine, send, save.

Co-partitioning (faust.md §2): events, commands, alerts and the app's tick topic all
have `kafka.partitions` partitions and are keyed by school_id, placed with murmur2, so
one partition owns a school's events, commands and table entries. A record that some
other client placed elsewhere (kcat and confluent-kafka default to CRC32) is forwarded
to its school's partition before any state is touched: it is then processed there, by
the school's one writer, timed when it was forwarded (so a school's alerts stay in time
order: a command that was misplaced cannot settle a deadline that already fired).

Two agents, so that alarms never wait behind telemetry: `urgent` reads the urgent topic
(the bridge's copies of panic presses), commands and ticks; `process` reads the events and
huxue notifier's records (notifications, for rule paging_health: a failing receiver is an
incident of the school; read only, the notifier places them by school with murmur2).
A school still has one writer at a time: both take the school's lock around
load -> engine -> send -> save, and a press seen on both topics is applied once (its
`(device_id, event_id)`); the rules treat a press that overtakes a camera event like one
that came first.
Ticks are how time enters: a timer on every worker sends an empty record to each of
its own partitions of the tick topic every `worker.tick_seconds`; processing a tick of
partition p fires the due deadlines of the schools of p, inside stream iteration (the
only place Faust lets us write tables). Deadlines therefore fire without other traffic
and survive restarts: they live in the table (its changelog), not in memory.

Every input is processed with its Kafka timestamp as `now`, so a replay after a crash
reproduces the same alerts with the same identifiers. The new state is encoded before
anything is sent (an input that would make it unwritable is dead-lettered and changes
nothing), alerts are confirmed by Kafka before that state is saved: a crash in between
re-emits (same identifier), never loses. A send that retrying cannot fix (record too
large, invalid) dead-letters the input; a stuck worker still stops on SIGTERM within
`stack.stop_timeout_seconds`, and an agent that dies takes the process with it (exit
non-zero, for the supervisor to restart).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import threading
from collections import defaultdict
from typing import Any

import faust
from faust.types import TP
from aiokafka.errors import CorruptRecordException, MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError

from pipeline import kafka_client, metrics
from pipeline.config import Config, ConfigError
from pipeline.records import CanonicalEvent, Command, Notification, dumps, iso_utc, loads, parse_ts, payload_fields
from pipeline.registry import Registry
from pipeline.rules import engine, paging_health
from pipeline.rules import units as unit_rules
from pipeline.rules.incident import school_of
from pipeline.rules.state import Context
from pipeline.units_view import UnitsView
from pipeline.worker.tables import SchoolTables
from pipeline.worker import due, faust_fixes, offsets

log = logging.getLogger("huxue.worker")

TICK_RETENTION_MS = str(3600 * 1000)  # ticks only carry the time; an hour is plenty
# Send errors that no retry can fix: the input that produced the record is dead-lettered.
UNSENDABLE = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError, CorruptRecordException)
REPORT_TIMER_FAILURES_EVERY = 60.0  # a timer rule failing at every tick: report once a minute
# Deadlines wait while commands that could settle them are still queued (engine.py), but
# never longer than this: an escalation may come a little late, never not at all.
HOLD_DEADLINES_AT_MOST_SECONDS = 5.0
EXIT_AGENT_DIED = 70
EXIT_STOP_TIMEOUT = 71


def _units_busy(before, outcome: engine.Outcome) -> list[tuple[str, bytes | None]]:
    """The units-topic records of the outcome's alerts: which units a dispatch or arrival
    holds, and which a close releases (rules/units.py assignment_changes), encoded."""
    changes = unit_rules.assignment_changes(outcome.alerts, before.incidents, outcome.state.incidents)
    return [(key, None if a is None else dumps(a.to_dict())) for key, a in changes]


class Unsendable(Exception):
    """Kafka refused a record for good (too large, invalid): retrying cannot help."""


class Stopping(BaseException):
    """The worker is shutting down while a send is still being retried."""


class Shutdown:
    """SIGTERM handling that cannot hang: Faust's warm shutdown waits for the agent to
    finish its current input, which never happens while a send is retried against a
    broker that refuses it. On SIGTERM a watchdog starts; past `timeout` it ends the
    process. Nothing unconfirmed was committed, so the input is processed again after
    the restart."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.requested = threading.Event()

    def request(self) -> None:
        if self.requested.is_set():
            return
        self.requested.set()
        timer = threading.Timer(self.timeout, self._expired)
        timer.daemon = True
        timer.start()

    def _expired(self) -> None:
        log.error("worker did not stop in time; exiting", extra={"stop_timeout_s": self.timeout})
        logging.shutdown()
        os._exit(EXIT_STOP_TIMEOUT)


def create_app(cfg: Config, registry: Registry, shutdown: Shutdown | None = None, units: UnitsView | None = None) -> faust.App:
    faust_fixes.apply()  # Faust patches: a restart never skips an input record (raises if Faust moved)
    topics = cfg.topics
    faust_fixes.prioritise({topics.urgent, topics.commands, topics.ticks})  # fetched alarms go first
    n = cfg.kafka.partitions
    shutdown = shutdown or Shutdown(cfg.stack.stop_timeout_seconds)
    ctx = Context(cfg.escalation, registry, cfg.bridge.max_clock_skew_seconds, cfg.rules, cfg.units, **({"units": units.units, "units_ready": units.caught_up.is_set} if units else {}))
    schools_by_partition: dict[int, list[str]] = {}
    for school_id in registry.schools:
        schools_by_partition.setdefault(kafka_client.partition_for(school_id, n), []).append(school_id)
    app = faust.App(
        cfg.worker.app_id,
        **kafka_client.faust_settings(cfg, "worker"),  # broker (and SASL credentials)
        store=cfg.worker.store,
        datadir=str(cfg.worker_datadir),
        topic_partitions=n,
        topic_replication_factor=cfg.kafka.replication_factor,
        table_standby_replicas=cfg.worker.standby_replicas,
        processing_guarantee="at_least_once",
        web_enabled=False,
        web_tables_enabled=False,
        env_prefix="HUXUE_FAUST_",  # only HUXUE_FAUST_* variables may override settings
        consumer_auto_offset_reset="earliest",
        consumer_group_instance_id=cfg.worker_instance_id,
        broker_session_timeout=cfg.worker.session_timeout_seconds,
        broker_heartbeat_interval=min(3.0, cfg.worker.session_timeout_seconds / 3),
        broker_commit_interval=1.0,
        broker_max_poll_records=100,  # the fetch loop waits on a full events queue for at most one poll's worth
        # No producer linger: it batched changelog and alert records (fewer produce requests)
        # but widened the window between an alert and the state that records it, where a
        # crash re-emits the alert; see README, known issues (replay order after a crash).
        # a fetch brings at most 256 KiB per partition (Faust: 1 MiB): less telemetry to
        # decode and queue ahead of a tick or a press in the same fetch
        consumer_max_fetch_size=256 * 1024,
        worker_redirect_stdouts=False,
    )
    raw = {"key_serializer": "raw", "value_serializer": "raw", "partitions": n}
    events = app.topic(topics.events, **raw)
    event_inputs = app.topic(topics.events, topics.notifications, **raw)
    urgent_inputs = app.topic(topics.urgent, topics.commands, topics.ticks, **raw)
    urgent = app.topic(topics.urgent, **raw)
    commands = app.topic(topics.commands, **raw)
    alerts = app.topic(topics.alerts, **raw)
    events_dlq = app.topic(topics.events_dlq, **raw)
    commands_dlq = app.topic(topics.commands_dlq, **raw)
    silences = app.topic(topics.silences, **raw)
    ticks = app.topic(topics.ticks, **raw)
    units_out = app.topic(topics.units, **raw)  # which units are busy with an incident (rules/units.py)
    # Per school (rules/state.py, worker/tables.py): its incidents, and each rule's
    # working memory apart (key "<school>|<rule>"), so a change rewrites only the value
    # it touches. Values are orjson bytes, encoded by huxue before anything is sent.
    as_bytes = faust.Schema(key_serializer="json", value_serializer="raw")  # keys as before: JSON strings
    tables = SchoolTables(
        app.Table("schools", default=None, partitions=n, schema=as_bytes),  # names: Topics.changelogs
        app.Table("memory", default=None, partitions=n, schema=as_bytes),
        engine.MEMORY_KEYS,
    )
    timer_failures: dict[tuple[str, str], float] = {}  # (school, rule) -> last reported

    async def deliver(topic: faust.TopicT, key: str | None, value: bytes | None, **where: Any) -> None:
        """Send and wait for Kafka's confirmation. Retriable failures are retried with
        backoff (never dropped); a record Kafka refuses for good raises Unsendable."""
        delay = 0.5
        while True:
            try:
                fut = await topic.send(key=key.encode() if key else None, value=value, **where)
                await fut
                return
            except UNSENDABLE as exc:
                raise Unsendable(f"{type(exc).__name__}: {exc}; {len(value or b'')} bytes to {topic.get_topic_name()}") from exc
            except Exception as exc:  # noqa: BLE001 - anything else may pass: retry
                if shutdown.requested.is_set():
                    raise Stopping() from exc
                log.error("send failed, retrying", extra={"topic": topic.get_topic_name(), "error": f"{type(exc).__name__}: {exc}", "retry_in_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def dead_letter(target: faust.TopicT, key: str | None, reason_code: str, reason: str, now: float, **more: Any) -> None:
        metrics.WORKER_DLQ.labels(reason_code).inc()
        entry = {"reason_code": reason_code, "reason": reason[:2000], **more, "received_at": iso_utc(now)}
        await deliver(target, key, dumps(entry))

    async def apply(school_id: str, before, outcome: engine.Outcome, now: float, origin: dict[str, Any]) -> None:
        # Encode everything first: an unwritable state or alert raises here, before
        # anything has been sent, and the input is dead-lettered with nothing changed.
        writes = tables.prepare(school_id, before, outcome.state)
        encoded = [(alert, dumps(alert.to_dict())) for alert in outcome.alerts]
        busy = _units_busy(before, outcome) if outcome.alerts else []  # most inputs emit no alert
        for alert, value in encoded:
            await deliver(alerts, school_id, value)
            log.info("alert", extra={"incident": alert.incident_id, "rule": alert.rule, "stage": alert.stage, "status": alert.status})
            metrics.WORKER_ALERTS.labels(alert.rule, metrics.stage_label(alert.stage)).inc()
            if alert.due:
                metrics.WORKER_LATENESS.observe(max(0.0, now - parse_ts(alert.due)))
        # before the state: a crash in between sends them again (same key, same value)
        for key, value in busy:
            await deliver(units_out, key, value)
        for notice in outcome.notices:
            await deliver(silences, school_id, dumps(notice.to_dict()))
            log.info("silence", extra={"silence": notice.silence_id, "state": notice.state, "by": notice.ended_by or notice.by})
        for cmd, why in outcome.rejected:
            await deliver(commands_dlq, school_id, dumps({"reason_code": why.reason_code, "reason": why.reason, "command": cmd.to_dict(), "received_at": iso_utc(now)}))
            log.info("command rejected", extra={"command": cmd.command, "target": cmd.incident_id or cmd.school_id, "reason_code": why.reason_code})
            metrics.WORKER_REJECTED.labels(why.reason_code).inc()
        for failure in outcome.failures:
            metrics.WORKER_RULE_FAILURES.labels(failure.rule).inc()
            if origin.get("topic") == topics.ticks:
                last = timer_failures.get((school_id, failure.rule))
                if last is not None and now - last < REPORT_TIMER_FAILURES_EVERY:
                    continue
                timer_failures[(school_id, failure.rule)] = now
            log.error("rule failed; its state is kept as before", extra={"rule": failure.rule, "school": school_id, "error": failure.error, "input": origin.get("topic")})
            # a command's failure is its answer: the sender finds it on the commands DLQ
            target = commands_dlq if origin.get("topic") == topics.commands else events_dlq
            await dead_letter(target, school_id, "rule_error", f"rule {failure.rule} failed: {failure.error}", now, rule=failure.rule, school_id=school_id, **origin)
        tables.save(writes)
        due_index.update(owner(school_id), school_id, outcome.state.next_due())

    async def forward(school_id: str, msg: Any, right: int) -> None:
        """Re-send a record some other client placed on the wrong partition to its
        school's partition (same topic), keyed by the school."""
        topic = {topics.events: events, topics.urgent: urgent, topics.commands: commands}[msg.topic]
        headers = [*(msg.headers or []), ("huxue.forwarded_from", f"{msg.partition}/{msg.offset}".encode())]
        await deliver(topic, school_id, msg.value, partition=right, headers=headers)
        metrics.WORKER_FORWARDED.labels(kind_of[msg.topic]).inc()
        log.debug("forwarded", extra={"topic": msg.topic, "from": msg.partition, "to": right, "school": school_id})

    def owner(school_id: str) -> int:
        return kafka_client.partition_for(school_id, n)

    async def on_event(msg: Any, now: float) -> None:
        try:
            event = CanonicalEvent.from_dict(loads(msg.value))
            event.ts_epoch, event.received_epoch  # validates both times
            if not isinstance(event.school_id, str) or not event.school_id:
                raise ValueError("school_id is missing")
        except (ValueError, TypeError, KeyError) as exc:
            await dead_letter(events_dlq, _key(msg), "worker_rejected", f"not a canonical event: {exc}", now, **payload_fields(msg.value or b""))
            return
        # The value names the school (the bridge keys by it too; a foreign producer may not).
        school_id = event.school_id
        if (right := owner(school_id)) != msg.partition:
            await forward(school_id, msg, right)
            return
        async with locks[school_id]:
            state = tables.load(school_id, msg.partition)
            await apply(school_id, state, engine.on_event(state, event, now, ctx, deadline_horizon(msg.partition, now)), now, {"topic": msg.topic, "event_id": event.event_id, "device_id": event.device_id})

    async def on_command(msg: Any, now: float) -> None:
        try:
            cmd = Command.from_dict(loads(msg.value))
        except ValueError as exc:  # orjson's decode error is a ValueError too
            await dead_letter(commands_dlq, _key(msg) or None, "invalid_command", str(exc), now, **payload_fields(msg.value or b""))
            log.info("command rejected", extra={"reason_code": "invalid_command", "reason": str(exc)[:200]})
            return
        # An incident command belongs to the incident's school, whatever key it came with.
        school_id = (school_of(cmd.incident_id) if cmd.incident_id else None) or cmd.school_id or _key(msg)
        if not school_id:
            await dead_letter(commands_dlq, None, "invalid_command", "the command names no school", now, command=cmd.to_dict())
            return
        if (right := owner(school_id)) != msg.partition:
            await forward(school_id, msg, right)
            return
        async with locks[school_id]:
            state = tables.load(school_id, msg.partition)
            await apply(school_id, state, engine.on_command(state, cmd, now, ctx), now, {"topic": msg.topic, "command": cmd.to_dict()})
        last_command[msg.partition] = now

    async def on_notification(msg: Any, now: float) -> None:
        try:
            note = Notification.from_dict(loads(msg.value))
        except (ValueError, TypeError):  # orjson's decode error is a ValueError too
            return  # the notifier's topic, not an input of ours to dead-letter
        if not paging_health.relevant(note) or registry.school(note.school_id) is None:
            return
        if owner(note.school_id) != msg.partition:  # misplaced: the worker may not write this topic to forward it
            log.warning("notification record on the wrong partition, ignored", extra={"school": note.school_id, "partition": msg.partition})
            return
        async with locks[note.school_id]:
            state = tables.load(note.school_id, msg.partition)
            outcome = engine.on_notification(state, note, now, ctx, deadline_horizon(msg.partition, now))
            await apply(note.school_id, state, outcome, now, {"topic": msg.topic, "identifier": note.identifier, "receiver": note.receiver, "outcome": note.outcome})

    due_index = due.DueIndex()  # a tick visits the due schools only (worker/due.py)

    @app.on_partitions_assigned.connect
    async def _on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        due_index.clear()  # table recovery may change states behind the index's back
        tables.forget()  # and behind the decoded states'

    @app.on_rebalance_complete.connect
    async def _on_rebalanced(sender: Any, **kwargs: Any) -> None:
        # Tables recovered: from here this worker fires the deadlines of these partitions.
        active = sorted(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topics.events)
        standby = sorted({tp.partition for tp in app.assignor.assigned_standbys()})
        log.info("partitions active", extra={"partitions": ",".join(map(str, active)) or "-", "standby": ",".join(map(str, standby)) or "-"})

    def partition_schools(partition: int) -> list[tuple[str, float | None]]:
        # The registry's schools of this partition (so timers start with no traffic at
        # all) and any other school stored here. The tables also hold standby keys and
        # keys of partitions since lost: keep those this partition owns.
        stored = [k for k in list(tables.schools.keys()) if owner(k) == partition]
        return [
            (school_id, tables.load(school_id, partition).next_due() if tables.has_core(school_id) else due.NOW)
            for school_id in set(schools_by_partition.get(partition, ())) | set(stored)
        ]

    async def on_tick(partition: int, now: float) -> None:
        until = deadline_horizon(partition, now)
        for school_id in due_index.due(partition, now, lambda: partition_schools(partition)):
            async with locks[school_id]:
                started = tables.has_core(school_id)
                state = tables.load(school_id, partition)
                if started and (state.next_due() is None or state.next_due() > now):
                    due_index.update(partition, school_id, state.next_due())  # an input moved it meanwhile
                    continue
                await apply(school_id, state, engine.on_tick(state, now, ctx, until), now, {"topic": topics.ticks})

    last_command: dict[int, float] = {}  # partition -> time of the last command processed there
    behind_since: dict[int, float] = {}  # partition -> since when its commands are not all processed

    def deadline_horizon(partition: int, now: float) -> float | None:
        """Up to when deadlines of this partition may fire: None (up to `now`) once every
        command of the partition Kafka has is processed; otherwise the time of the last
        command processed, for at most HOLD_DEADLINES_AT_MOST_SECONDS."""
        tp = TP(topics.commands, partition)
        position = processed.get(tp)
        if position is None:  # no command processed since start: they were, up to the committed offset
            position = app.consumer._committed_offset.get(tp)  # noqa: SLF001 - Faust keeps no public view
        high = app.consumer.highwater(tp)
        if high is not None and position is not None and position >= high:
            behind_since.pop(partition, None)
            return None
        since = behind_since.setdefault(partition, now)
        if now - since > HOLD_DEADLINES_AT_MOST_SECONDS:
            return None
        return last_command.get(partition, 0.0)

    processed: dict = {}  # TopicPartition -> next offset, for the lag metric
    kind_of = {topics.events: "event", topics.urgent: "urgent", topics.commands: "command", topics.ticks: "tick", topics.notifications: "notification"}
    locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)  # school -> its one writer at a time

    async def handle(msg: Any) -> None:
        now = msg.timestamp
        try:
            if msg.topic == topics.ticks:
                await on_tick(msg.partition, now)
            elif msg.topic == topics.commands:
                await on_command(msg, now)
            elif msg.topic == topics.notifications:
                await on_notification(msg, now)
            else:
                await on_event(msg, now)
        except (Stopping, asyncio.CancelledError):
            raise
        except Exception as exc:  # noqa: BLE001 - one input must never stop the others
            where = {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset}
            if msg.topic == topics.ticks:
                log.exception("tick processing failed", extra=where)
                return
            unsendable = isinstance(exc, Unsendable)
            log.error("input dead-lettered", extra={**where, "error": f"{type(exc).__name__}: {exc}"[:300]}, exc_info=not unsendable)
            target = commands_dlq if msg.topic == topics.commands else events_dlq
            code = "unsendable" if unsendable else "worker_error"
            await dead_letter(target, _key(msg) or None, code, f"{type(exc).__name__}: {exc}", now, **where, **payload_fields(msg.value or b""))

    async def consume(stream) -> None:
        """One agent's loop: guard offsets, process each input, die loudly."""
        try:
            async for event in stream.events():
                msg = event.message
                # offset guard (worker/offsets.py): exit rather than skip an input
                if not await offsets.check(app, msg, (topics.events, topics.urgent, topics.commands)):
                    continue
                processed[msg.tp] = msg.offset + 1
                metrics.WORKER_INPUTS.labels(kind_of.get(msg.topic, "other")).inc()
                await handle(msg)
                # An input that needed no I/O never suspends the agent: without this the
                # busy events agent would run back to back and the urgent one wait.
                await asyncio.sleep(0)
        except Stopping:
            log.warning("stopping with an input not fully processed; it is processed again after the restart")
            logging.shutdown()
            os._exit(EXIT_STOP_TIMEOUT)
        except asyncio.CancelledError:
            raise
        except BaseException:  # a dead agent must not leave a live process that does nothing
            log.critical("agent died; exiting so the supervisor restarts the worker", exc_info=True)
            logging.shutdown()
            os._exit(EXIT_AGENT_DIED)

    @app.agent(urgent_inputs, name="urgent")
    async def process_urgent(stream):
        await consume(stream)

    @app.agent(event_inputs, name="process")
    async def process(stream):
        await consume(stream)

    @app.timer(cfg.worker.tick_seconds)
    async def send_ticks() -> None:
        try:
            mine = sorted(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topics.events)
            for p in mine:
                await ticks.send(value=b"", partition=p)
        except Exception:  # noqa: BLE001 - a raising timer would crash the worker
            log.exception("tick emission failed")

    @app.timer(5.0)
    async def update_gauges() -> None:
        try:
            mine = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topics.events}
            counts = {sev: 0 for sev in ("Extreme", "Severe", "Moderate", "Minor")}
            for state in tables.cached():
                if owner(state.school_id) in mine:
                    for inc in state.incidents.values():
                        counts[inc.severity] = counts.get(inc.severity, 0) + 1
            for sev, count in counts.items():
                metrics.WORKER_OPEN.labels(sev).set(count)
            lag: dict[str, int] = {}
            for tp, nxt in list(processed.items()):
                high = app.consumer.highwater(tp)
                if high is not None:
                    lag[tp.topic] = lag.get(tp.topic, 0) + max(0, high - nxt)
            for topic, count in lag.items():
                metrics.WORKER_LAG.labels(topic).set(count)
        except Exception:  # noqa: BLE001 - a raising timer would crash the worker
            log.exception("metrics update failed")

    @app.task
    async def announce_ready() -> None:
        # Tasks start after the first table recovery: from here on deadlines fire.
        mine = sorted(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topics.events)
        log.info("worker ready", extra={"app_id": cfg.worker.app_id, "partitions": ",".join(map(str, mine)) or "-"})

    return app


def _key(msg: Any) -> str:
    return msg.key.decode("utf-8", "replace") if msg.key else ""


class Worker(faust.Worker):
    """Faust's worker with a SIGTERM that cannot hang (see Shutdown)."""

    def __init__(self, app: faust.App, shutdown: Shutdown, **kwargs: Any):
        super().__init__(app, **kwargs)
        self._huxue_shutdown = shutdown

    def _on_sigterm(self) -> None:
        self._huxue_shutdown.request()
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self._huxue_shutdown.request()
        super()._on_sigint()


def run(cfg: Config, registry: Registry) -> None:
    if cfg.worker.store == "rocksdb://" and importlib.util.find_spec("rocksdict") is None:
        raise ConfigError("worker.store rocksdb:// needs rocksdict: pip install 'huxue[rocksdb]'")
    t = cfg.topics
    kafka_client.ensure_topics(cfg, "worker", t.deployment(), cfg.kafka.partitions, cfg.kafka.replication_factor)
    kafka_client.ensure_topics(cfg, "worker", [t.ticks], cfg.kafka.partitions, cfg.kafka.replication_factor, configs={"retention.ms": TICK_RETENTION_MS})
    # The tables' changelogs too, before Faust starts: when Faust created them itself, its
    # first metadata could still miss one ("Ignoring missing topic"), and every write to that
    # table then failed (PartitionsMismatch) while the worker reported ready.
    kafka_client.ensure_topics(cfg, "worker", t.changelogs, cfg.kafka.partitions, cfg.kafka.replication_factor, configs={"cleanup.policy": "compact"})
    cfg.worker_datadir.mkdir(parents=True, exist_ok=True)
    metrics.serve(cfg.worker.metrics_port, cfg.worker.metrics_bind)
    shutdown = Shutdown(cfg.stack.stop_timeout_seconds)
    # the mobile units, read whole by every worker (not school state: see units_view.py)
    units = UnitsView(cfg, registry, "worker").start()
    app = create_app(cfg, registry, shutdown, units)
    Worker(app, shutdown, quiet=True, override_logging=False).execute_from_commandline()
