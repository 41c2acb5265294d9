"""`huxue worker`: the Faust app. Thin: decode, call the pure engine, send, save.

Co-partitioning (faust.md §2): events, commands, alerts and the app's tick topic all
have `kafka.partitions` partitions and are keyed by school_id with the same murmur2
partitioner, so one partition owns a school's events, commands and table entry.

One agent reads events, commands and ticks, so each school's state has one writer.
Ticks are how time enters: a timer on every worker sends an empty record to each of
its own partitions of the tick topic every `worker.tick_seconds`; processing a tick of
partition p fires the due deadlines of the schools of p, inside stream iteration (the
only place Faust lets us write tables). Deadlines therefore fire without other traffic
and survive restarts: they live in the table (its changelog), not in memory.

Every input is processed with its Kafka timestamp as `now`, so a replay after a crash
reproduces the same alerts with the same identifiers. Alerts are confirmed by Kafka
before the state that records them is saved: a crash in between re-emits (same
identifier), never loses.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from kafka.partitioner.default import murmur2

from pipeline import kafka_client, metrics
from pipeline.config import Config
from pipeline.records import CanonicalEvent, Command, dumps, iso_utc, loads, parse_ts
from pipeline.registry import Registry
from pipeline.rules import engine
from pipeline.rules.incident import school_of
from pipeline.rules.state import Context, SchoolState

log = logging.getLogger("huxue.worker")

TICK_RETENTION_MS = str(3600 * 1000)  # ticks only carry the time; an hour is plenty


def partition_of(school_id: str, partitions: int) -> int:
    """The partition of a school's key: Kafka's default (murmur2) partitioner, as every producer here uses."""
    return (murmur2(school_id.encode("utf-8")) & 0x7FFFFFFF) % partitions


def create_app(cfg: Config, registry: Registry) -> faust.App:
    topics = cfg.topics
    n = cfg.kafka.partitions
    ctx = Context(cfg.escalation, registry, cfg.bridge.max_clock_skew_seconds, cfg.rules)
    schools_by_partition: dict[int, list[str]] = {}
    for school_id in registry.schools:
        schools_by_partition.setdefault(partition_of(school_id, n), []).append(school_id)
    app = faust.App(
        cfg.worker.app_id,
        broker=[f"kafka://{h}" for h in cfg.kafka.bootstrap.split(",")],
        store=cfg.worker.store,
        datadir=str(cfg.worker_datadir),
        topic_partitions=n,
        topic_replication_factor=cfg.kafka.replication_factor,
        processing_guarantee="at_least_once",
        web_enabled=False,
        web_tables_enabled=False,
        env_prefix="HUXUE_FAUST_",  # only HUXUE_FAUST_* variables may override settings
        consumer_auto_offset_reset="earliest",
        consumer_group_instance_id=cfg.worker_instance_id,
        broker_session_timeout=cfg.worker.session_timeout_seconds,
        broker_heartbeat_interval=min(3.0, cfg.worker.session_timeout_seconds / 3),
        broker_commit_interval=1.0,
        broker_max_poll_records=1000,
        worker_redirect_stdouts=False,
    )
    raw = {"key_serializer": "raw", "value_serializer": "raw", "partitions": n}
    inputs = app.topic(topics.events, topics.commands, topics.ticks, **raw)
    alerts = app.topic(topics.alerts, **raw)
    events_dlq = app.topic(topics.events_dlq, **raw)
    commands_dlq = app.topic(topics.commands_dlq, **raw)
    silences = app.topic(topics.silences, **raw)
    ticks = app.topic(topics.ticks, **raw)
    # Per school (rules/state.py): its incidents, and each rule's working memory apart
    # (key "<school>|<rule>"), so a change rewrites only the value it touches.
    schools = app.Table("schools", default=None, partitions=n)
    memory = app.Table("memory", default=None, partitions=n)
    decoded: dict[str, tuple[Any, tuple, SchoolState]] = {}  # school -> (stored values, state)

    async def deliver(topic: faust.TopicT, key: str | None, value: bytes) -> None:
        """Send and wait for Kafka's confirmation; on failure retry (stall), never drop."""
        delay = 0.5
        while True:
            try:
                fut = await topic.send(key=key.encode() if key else None, value=value)
                await fut
                return
            except Exception as exc:  # noqa: BLE001 - any send failure is retried
                log.error("send failed, retrying", extra={"topic": topic.get_topic_name(), "error": f"{type(exc).__name__}: {exc}", "retry_in_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def stored(school_id: str) -> tuple[Any, dict[str, Any]]:
        mem = {k: v for k in engine.MEMORY_KEYS if (v := memory.get(f"{school_id}|{k}")) is not None}
        return schools.get(school_id), mem

    def load(school_id: str, partition: int) -> SchoolState:
        """The school's state; decoded again only when the stored values changed."""
        core, mem = stored(school_id)
        hit = decoded.get(school_id)
        if hit and hit[0] is core and len(hit[1]) == len(mem) and all(a is b for a, b in zip(hit[1], mem.values())):
            return hit[2]
        state = SchoolState.from_dicts(core, mem, school_id, partition)
        decoded[school_id] = (core, tuple(mem.values()), state)
        return state

    async def apply(school_id: str, before: SchoolState, outcome: engine.Outcome, now: float) -> None:
        for alert in outcome.alerts:
            await deliver(alerts, school_id, dumps(alert.to_dict()))
            log.info("alert", extra={"incident": alert.incident_id, "rule": alert.rule, "stage": alert.stage, "status": alert.status})
            metrics.WORKER_ALERTS.labels(alert.rule, metrics.stage_label(alert.stage)).inc()
            if alert.due:
                metrics.WORKER_LATENESS.observe(max(0.0, parse_ts(alert.sent) - parse_ts(alert.due)))
        for notice in outcome.notices:
            await deliver(silences, school_id, dumps(notice.to_dict()))
            log.info("silence", extra={"silence": notice.silence_id, "state": notice.state, "by": notice.ended_by or notice.by})
        for cmd, why in outcome.rejected:
            entry = {"reason_code": why.reason_code, "reason": why.reason, "command": cmd.to_dict(), "received_at": iso_utc(now)}
            await deliver(commands_dlq, school_id, dumps(entry))
            log.info("command rejected", extra={"command": cmd.command, "target": cmd.incident_id or cmd.school_id, "reason_code": why.reason_code})
            metrics.WORKER_REJECTED.labels(why.reason_code).inc()
        after = outcome.state
        # Write only the values that changed (states are immutable: identity tells); a
        # school seen for the first time gets its core written, so ticks know it started.
        core = schools.get(school_id)
        if core is None or any(getattr(after, f) is not getattr(before, f) for f in ("incidents", "closed", "applied", "next_seq", "partition")):
            core = schools[school_id] = after.core_dict()
        for key in set(before.memory) | set(after.memory):
            if after.memory.get(key) is not before.memory.get(key):
                if key in after.memory:
                    memory[f"{school_id}|{key}"] = after.memory[key]
                else:
                    del memory[f"{school_id}|{key}"]
        decoded[school_id] = (core, tuple(v for k in engine.MEMORY_KEYS if (v := after.memory.get(k)) is not None), after)

    async def on_event(key: str, value: bytes, partition: int, now: float) -> None:
        try:
            event = CanonicalEvent.from_dict(loads(value))
            event.ts_epoch, event.received_epoch  # validates both times
        except (ValueError, TypeError, KeyError) as exc:
            entry = {"reason_code": "worker_rejected", "reason": f"not a canonical event: {exc}", "payload": value.decode("utf-8", "replace"), "received_at": iso_utc(now)}
            await deliver(events_dlq, key, dumps(entry))
            return
        school_id = key or event.school_id
        state = load(school_id, partition)
        await apply(school_id, state, engine.on_event(state, event, now, ctx), now)

    async def on_command(key: str, value: bytes, partition: int, now: float) -> None:
        try:
            cmd = Command.from_dict(loads(value))
        except ValueError as exc:
            entry = {"reason_code": "invalid_command", "reason": str(exc), "payload": value.decode("utf-8", "replace"), "received_at": iso_utc(now)}
            await deliver(commands_dlq, key, dumps(entry))
            log.info("command rejected", extra={"reason_code": "invalid_command", "reason": str(exc)})
            return
        school_id = key or cmd.school_id or school_of(cmd.incident_id) or ""
        state = load(school_id, partition)
        await apply(school_id, state, engine.on_command(state, cmd, now, ctx), now)

    def due(value: dict | None, now: float) -> bool:
        return value is not None and (value.get("next_due") or now + 1) <= now

    async def on_tick(partition: int, now: float) -> None:
        # The registry's schools of this partition (so timers start with no traffic at
        # all) and any other school stored here. Memory tables also hold standby keys:
        # filter by partition. The stored `next_due` avoids decoding schools not due.
        here = [k for k, v in list(schools.items()) if v.get("partition") == partition]
        for school_id in sorted(set(schools_by_partition.get(partition, [])) | set(here)):
            core, mem = stored(school_id)
            if core is not None and not due(core, now) and not any((v.get("due") or now + 1) <= now for v in mem.values() if isinstance(v, dict)):
                continue
            state = load(school_id, partition)
            await apply(school_id, state, engine.on_tick(state, now, ctx), now)

    processed: dict = {}  # TopicPartition -> next offset, for the lag metric
    kind_of = {topics.events: "event", topics.commands: "command", topics.ticks: "tick"}

    @app.agent(inputs, name="process")
    async def process(stream):
        async for event in stream.events():
            msg = event.message
            key = msg.key.decode("utf-8", "replace") if msg.key else ""
            now = msg.timestamp
            processed[msg.tp] = msg.offset + 1
            metrics.WORKER_INPUTS.labels(kind_of.get(msg.topic, "other")).inc()
            try:
                if msg.topic == topics.ticks:
                    await on_tick(msg.partition, now)
                elif msg.topic == topics.commands:
                    await on_command(key, msg.value, msg.partition, now)
                else:
                    await on_event(key, msg.value, msg.partition, now)
            except Exception:  # noqa: BLE001 - an exception here would skip the record silently
                log.exception("processing failed", extra={"topic": msg.topic, "partition": msg.partition, "offset": msg.offset})
                entry = {"reason_code": "worker_error", "reason": "processing failed; see worker log", "topic": msg.topic, "offset": msg.offset, "received_at": iso_utc(now)}
                target = commands_dlq if msg.topic == topics.commands else events_dlq
                if msg.topic != topics.ticks:
                    await deliver(target, key or None, dumps(entry))

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
            for stored in list(schools.values()):
                if stored.get("partition") in mine:
                    for inc in stored.get("incidents", {}).values():
                        counts[inc["severity"]] = counts.get(inc["severity"], 0) + 1
            for sev, n in counts.items():
                metrics.WORKER_OPEN.labels(sev).set(n)
            lag: dict[str, int] = {}
            for tp, nxt in list(processed.items()):
                high = app.consumer.highwater(tp)
                if high is not None:
                    lag[tp.topic] = lag.get(tp.topic, 0) + max(0, high - nxt)
            for topic, n in lag.items():
                metrics.WORKER_LAG.labels(topic).set(n)
        except Exception:  # noqa: BLE001 - a raising timer would crash the worker
            log.exception("metrics update failed")

    @app.task
    async def announce_ready() -> None:
        # Tasks start after the first table recovery: from here on deadlines fire.
        mine = sorted(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topics.events)
        log.info("worker ready", extra={"app_id": cfg.worker.app_id, "partitions": ",".join(map(str, mine)) or "-"})

    return app


def run(cfg: Config, registry: Registry) -> None:
    t = cfg.topics
    kafka_client.ensure_topics(cfg.kafka.bootstrap, t.contract(), cfg.kafka.partitions, cfg.kafka.replication_factor)
    kafka_client.ensure_topics(cfg.kafka.bootstrap, [t.ticks], cfg.kafka.partitions, cfg.kafka.replication_factor, configs={"retention.ms": TICK_RETENTION_MS})
    cfg.worker_datadir.mkdir(parents=True, exist_ok=True)
    metrics.serve(cfg.worker.metrics_port)
    app = create_app(cfg, registry)
    faust.Worker(app, quiet=True, override_logging=False).execute_from_commandline()
