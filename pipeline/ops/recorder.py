"""Feeds the history store from Kafka: alerts, commands, rejected commands, silences, the
device-status and guard events of huxue.events, and the mobile units' reports of the units
topic (for the report's coverage shares).

No consumer group: every partition is assigned and positions live in the store, next to
the data, so each record is applied exactly once and a fresh store rebuilds from the
beginning of the topics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from pipeline import kafka_client, metrics
from pipeline.config import Config
from pipeline.ops.store import Change, Record, Store
from pipeline.records import loads

log = logging.getLogger("huxue.recorder")
EVENT_TYPES = (b'"device.online"', b'"device.offline"', b'"guard.checkin"', b'"guard.checkout"')


def kinds(cfg: Config) -> dict[str, str]:
    t = cfg.topics
    return {t.alerts: "alert", t.commands: "command", t.commands_dlq: "rejected", t.silences: "silence", t.events: "event",
            t.notifications: "notification",  # huxue notifier's paging attempts, on the incidents' timelines
            t.units: "unit"}  # mobile units' positions, status and online flag (issue 13)


class Recorder:
    def __init__(self, cfg: Config, store: Store, on_change: Callable[[list[Change]], None] | None = None):
        self.cfg, self.store, self.on_change = cfg, store, on_change
        self.kinds = kinds(cfg)
        self.applied = 0
        self.lag = 0
        self.caught_up = threading.Event()

    def run(self, stop: threading.Event) -> None:
        delay = 1.0
        while not stop.is_set():
            try:
                self._consume(stop)
            except (KafkaError, OSError) as exc:
                log.warning("kafka unavailable, retrying", extra={"error": type(exc).__name__, "retry_in_s": delay})
                stop.wait(delay)
                delay = min(delay * 2, 30.0)

    def _consume(self, stop: threading.Event) -> None:
        consumer = kafka_client.consumer(self.cfg, "operator", group_id=None, enable_auto_commit=False, max_poll_records=1000)
        try:
            parts = [TopicPartition(t, p) for t in self.kinds for p in sorted(consumer.partitions_for_topic(t) or [])]
            consumer.assign(parts)
            known = self.store.positions()
            for tp in parts:
                if (tp.topic, tp.partition) in known:
                    consumer.seek(tp, known[(tp.topic, tp.partition)])
                else:
                    consumer.seek_to_beginning(tp)
            log.info("recording", extra={"partitions": len(parts), "resumed": len(known)})
            while not stop.is_set():
                batch = consumer.poll(timeout_ms=500)
                if batch:
                    records = [rec for rs in batch.values() for r in rs if (rec := self._record(r)) is not None]
                    # positions move past skipped records too (events the store does not keep)
                    positions = {(tp.topic, tp.partition): rs[-1].offset + 1 for tp, rs in batch.items()}
                    changes = self.store.apply(records, positions)
                    self.applied += len(records)
                    metrics.CONSOLE_APPLIED.inc(len(records))
                    if changes and self.on_change:
                        self.on_change(changes)
                self.lag = self._lag(consumer, parts)
                if self.lag == 0:
                    self.caught_up.set()
        finally:
            consumer.close()

    def _record(self, r) -> Record | None:
        kind = self.kinds[r.topic]
        if r.value is None:  # a tombstone (the units topic is compacted)
            return None
        if kind == "event" and not any(t in r.value for t in EVENT_TYPES):
            return None  # cheap filter: the store keeps only device status and guard reports
        try:
            value = loads(r.value)
        except ValueError:
            return None
        if not isinstance(value, dict):
            return None
        key = r.key.decode("utf-8", "replace") if r.key else ""
        return Record(kind, r.topic, r.partition, r.offset, key, value)

    def _lag(self, consumer: KafkaConsumer, parts: list[TopicPartition]) -> int:
        try:
            ends = consumer.end_offsets(parts)
        except KafkaError:
            return self.lag
        return sum(max(0, ends[tp] - consumer.position(tp)) for tp in parts)


def rebuild(cfg: Config, store: Store, timeout: float = 600) -> int:
    """Apply the topics from their beginning into `store` until caught up; returns records applied."""
    stop = threading.Event()
    rec = Recorder(cfg, store)
    thread = threading.Thread(target=rec.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not rec.caught_up.wait(0.5):
        if time.monotonic() > deadline:
            stop.set()
            raise TimeoutError(f"store rebuild did not catch up within {timeout:g} s")
    stop.set()
    thread.join(10)
    return rec.applied
