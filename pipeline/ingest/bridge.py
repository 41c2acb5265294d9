"""`huxue bridge`: MQTT -> Kafka, at least once.

* paho (MQTT 5, persistent session, QoS 1, manual acknowledgement) delivers each
  message on its network thread; `on_message` turns it into Kafka records (router.py:
  pure, fast, never raises), hands them to the kafka-python producer and returns: the
  thread never blocks.
* The PUBACK is sent only when Kafka confirmed the record (acks=all, idempotent
  producer), in arrival order (InOrderAcker). Rejected input goes to the DLQ and is
  acknowledged the same way, after Kafka has it.
* In flight is bounded: the broker honours Receive Maximum = bridge.max_inflight; above
  bridge.max_inflight_hard, or when Kafka fails a record, the bridge disconnects, lets
  the producer settle and reconnects: the broker redelivers everything unacknowledged
  (duplicates downstream are removed by (device_id, event_id)).
* Panic buttons' event topics also arrive on a second session, the priority lane
  (priority.py), so a press never queues behind another device's flood.
* Several bridges (bridge.share_group): the main session's subscriptions are MQTT 5 shared
  subscriptions, each device message goes to one bridge; the priority lane is not shared,
  every bridge forwards every press, so a dead bridge delays none.
* A dead network or sender thread ends the process (exit 70) for the supervisor to
  restart it; SIGTERM ends it within stack.stop_timeout_seconds in every state.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from pipeline import kafka_client, metrics, mqtt_client
from pipeline.config import Config
from pipeline.ingest import priority
from pipeline.ingest.acker import InOrderAcker, Slot
from pipeline.ingest.counts import DeviceCounts
from pipeline.ingest.router import Record, Router
from pipeline.records import CanonicalEvent, Rejection
from pipeline.registry import Registry

log = logging.getLogger("huxue.bridge")

STALL_WARN_SECONDS = 5.0
SUMMARY_EVERY_SECONDS = 60.0
RETIRE_QUIET_SECONDS = 2.0  # retiring: a session is drained after this long without a message
HEALTH_EVERY_SECONDS = 0.5
SUBSCRIBE_CHUNK = 500  # topics per SUBSCRIBE packet (the priority lane may hold thousands)
PRIORITY_RECEIVE_MAXIMUM = 100
# Telemetry batches linger a little: kafka-python wakes its sender thread for every new
# batch, and at 2 ms a batch held one or two records (Sender.wakeup alone was 16% of the
# bridge in a profile, 6% at 20 ms). Urgent copies do not linger.
BULK_LINGER_MS = 20
EXIT_THREAD_DIED = 70  # EX_SOFTWARE: the supervisor (compose restart:, systemd) restarts the bridge
EXIT_STOP_TIMEOUT = 1


class Interrupted(Exception):
    """Stop was requested while waiting on a blocking call."""


class Lane:
    """One MQTT session of the bridge: its client, in-order acker and subscriptions."""

    def __init__(self, name: str, client, client_id: str, subscriptions: list[str], receive_maximum: int):
        self.name = name
        self.client = client
        self.client_id = client_id  # also its MQTT account (mqtt_auth.bridge_accounts)
        self.subscriptions = subscriptions
        self.receive_maximum = receive_maximum
        self.acker = InOrderAcker(client.ack)
        self.running = False  # its network thread is meant to be alive
        self.received = 0
        self.connected_at = 0.0  # monotonic time of the last connection (retire: drained after it)
        self.last_message_at = 0.0

    def thread_alive(self) -> bool:
        # paho has no public accessor; it clears _thread when its loop thread ends
        thread = getattr(self.client, "_thread", None)
        return thread is not None and thread.is_alive()


class Bridge:
    def __init__(self, cfg: Config, registry: Registry, retire: bool = False):
        self.cfg = cfg
        # `huxue bridge --retire`: take no new messages, forward what the broker queued for
        # this bridge's sessions, then end them (a removed bridge of a share group would
        # otherwise keep getting its share of the traffic until its session expired)
        self.retiring = retire
        self.registry = registry
        self.topics = cfg.topics
        self.router = Router(cfg, registry)
        self.adapters = self.router.adapters
        self.subscriptions = self.router.subscriptions
        group = cfg.bridge.share_group
        # several bridges: the broker gives each device message to one of them (MQTT 5 shared subscription)
        main = [f"$share/{group}/{t}" for t in self.subscriptions] if group else self.subscriptions
        self.main = self._lane("main", cfg.bridge_client_id, main, min(cfg.bridge.max_inflight, 65535))
        self.lanes = [self.main]
        self.priority_topics = frozenset(priority.topics(cfg, registry) if cfg.bridge.priority_lane else ())
        if self.priority_topics:
            self.lanes.append(self._lane("priority", f"{cfg.bridge_client_id}-priority", sorted(self.priority_topics), PRIORITY_RECEIVE_MAXIMUM))
        self.claims = priority.Claims()
        self.client, self.acker = self.main.client, self.main.acker
        self.producer = None  # every record but the urgent copies
        # Urgent copies of panic presses get a producer (its own sender thread and batches) of
        # their own: behind a backlog of camera batches they would wait for several requests.
        self.urgent_producer = None
        self._trouble = threading.Event()
        self._trouble_reason = ""
        self._finished = threading.Event()
        self._lock = threading.Lock()  # counters written by both network threads
        self._route_lock = threading.Lock()
        self.rejected: dict[str, int] = {}  # reason_code -> count
        self.skipped = 0  # copies the other lane forwarded
        self.qos0 = DeviceCounts()
        # Written by the Kafka sender thread only.
        self.confirmed = 0
        self.failed = 0

    def _lane(self, name: str, client_id: str, subscriptions: list[str], receive_maximum: int) -> Lane:
        client = mqtt_client.new_client(self.cfg, client_id, account=None, manual_ack=True)  # logs in as client_id in run()
        lane = Lane(name, client, client_id, subscriptions, receive_maximum)
        client.user_data_set(lane)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        return lane

    @property
    def received(self) -> int:
        return sum(lane.received for lane in self.lanes)

    def parse(self, topic: str, payload: bytes, retained: bool, dup: bool, received_at: float) -> list[CanonicalEvent | Rejection]:
        """A message -> canonical events and rejections (see Router.parse)."""
        return self.router.parse(topic, payload, retained, dup, received_at)

    # --- lifecycle (main thread) ---------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        """Until `stop`: exit code 0, or EXIT_THREAD_DIED when a thread it needs died."""
        for lane in self.lanes:  # missing credentials: one clear error before anything starts
            mqtt_client.log_in(lane.client, self.cfg, lane.client_id)
        threading.Thread(target=self._watchdog, args=(stop,), daemon=True, name="bridge-watchdog").start()
        try:
            return self._run(stop)
        finally:
            self._finished.set()

    def _run(self, stop: threading.Event) -> int:
        metrics.serve(self.cfg.bridge.metrics_port, self.cfg.bridge.metrics_bind)
        producers = self._connect_kafka(stop)
        if producers is None:
            log.info("bridge stopped before kafka was reachable")
            return 0
        self.producer, self.urgent_producer = producers
        log.info("priority lane", extra={"topics": len(self.priority_topics), "client_id": f"{self.cfg.bridge_client_id}-priority" if self.priority_topics else "-"})
        for lane in self.lanes:
            self._start(lane)
        stalled = False
        last_summary, last_received = time.monotonic(), 0
        while not stop.is_set():
            dead = self.dead_thread()
            if dead:
                log.error("a bridge thread died; exiting for the supervisor to restart the bridge", extra={"dead_thread": dead, "exit_code": EXIT_THREAD_DIED})
                self._abort()
                return EXIT_THREAD_DIED
            if self._trouble.wait(HEALTH_EVERY_SECONDS):
                self._recover(stop)
                continue
            age = max(lane.acker.oldest_age() for lane in self.lanes)
            metrics.BRIDGE_INFLIGHT.set(self.inflight())
            if age > STALL_WARN_SECONDS and not stalled:
                stalled = True
                log.warning("kafka has not confirmed records", extra={"waiting_s": round(age, 1), "holding": self.inflight()})
            elif stalled and age < 1.0:
                stalled = False
                log.info("kafka confirming again", extra={"holding": self.inflight()})
            if self.retiring and self._drained():
                return self._end_sessions()
            if time.monotonic() - last_summary >= SUMMARY_EVERY_SECONDS:
                if self.received != last_received:
                    log.info("progress", extra=self.counters())
                last_summary, last_received = time.monotonic(), self.received
        self._shutdown(time.monotonic() + max(1.0, self.cfg.stack.stop_timeout_seconds - 1.5))
        return 0

    def inflight(self) -> int:
        return sum(lane.acker.depth() for lane in self.lanes)

    def _drained(self) -> bool:
        """Retiring: every session connected, quiet for RETIRE_QUIET_SECONDS, all confirmed."""
        now = time.monotonic()
        return all(lane.connected_at and now - max(lane.connected_at, lane.last_message_at) >= RETIRE_QUIET_SECONDS for lane in self.lanes) and self.inflight() == 0

    def _end_sessions(self) -> int:
        for producer in self._producers():
            producer.flush(timeout=30)
        props = Properties(PacketTypes.DISCONNECT)
        props.SessionExpiryInterval = 0  # the broker deletes the session at this disconnect
        for lane in self.lanes:
            lane.running = False
            lane.client.disconnect(properties=props)
            lane.client.loop_stop()
        for producer in self._producers():
            producer.close(timeout=5)
        log.info("retired: queued messages forwarded, sessions ended", extra=self.counters())
        return 0

    def counters(self) -> dict[str, Any]:
        with self._lock:
            rejected = dict(self.rejected)
        return {
            "received": self.received,
            "priority_received": sum(lane.received for lane in self.lanes if lane is not self.main),
            "rejected": sum(rejected.values()),
            **{f"rejected_{code}": n for code, n in sorted(rejected.items())},
            "confirmed": self.confirmed,
            "failed": self.failed,
            "inflight": self.inflight(),
            "skipped_copies": self.skipped,
            "qos0": self.qos0.total,
            "qos0_top": ", ".join(f"{d}={n}" for d, n in self.qos0.top(3)) or "-",
        }

    def dead_thread(self) -> str | None:
        """The name of a thread the bridge needs that is no longer alive, if any."""
        for lane in self.lanes:
            if lane.running and not lane.thread_alive():
                return f"mqtt network thread ({lane.name} session)"
        for name, producer in (("", self.producer), ("urgent ", self.urgent_producer)):
            sender = getattr(producer, "_sender", None)  # kafka-python's I/O thread
            if sender is not None and not sender.is_alive():
                return f"kafka {name}producer sender thread"
        return None

    def _producers(self) -> list:
        return [p for p in (self.producer, self.urgent_producer) if p is not None]

    def _watchdog(self, stop: threading.Event) -> None:
        """Last resort for SIGTERM: whatever blocks, the process ends within stop_timeout_seconds."""
        stop.wait()
        if self._finished.wait(max(0.2, self.cfg.stack.stop_timeout_seconds - 0.5)):
            return
        log.error("bridge did not stop within stack.stop_timeout_seconds; exiting hard", extra={"timeout_s": self.cfg.stack.stop_timeout_seconds})
        os._exit(EXIT_STOP_TIMEOUT)

    def _interruptible(self, stop: threading.Event, call: Callable[[], Any]) -> Any:
        """Run a blocking call (kafka-python's bootstrap can block 30 s) without holding up a stop."""
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = call()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                box["error"] = exc

        worker = threading.Thread(target=target, daemon=True, name="bridge-blocking-call")
        worker.start()
        while worker.is_alive():
            if stop.is_set():
                raise Interrupted()
            worker.join(0.1)
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def _connect_kafka(self, stop: threading.Event):
        def connect():
            # the units topic is created compacted (Topics.configs)
            written = [self.topics.events, self.topics.urgent, self.topics.events_dlq, self.topics.units]
            kafka_client.ensure_topics(self.cfg, "bridge", written, self.cfg.kafka.partitions, self.cfg.kafka.replication_factor)
            made = []
            try:
                for topics, linger in (((self.topics.events, self.topics.events_dlq, self.topics.units), BULK_LINGER_MS), ((self.topics.urgent,), 0)):
                    made.append(kafka_client.producer(self.cfg, "bridge", linger_ms=linger))
                    for topic in topics:
                        made[-1].partitions_for(topic)  # metadata now, so send() never waits for it
            except Exception:
                for producer in made:
                    producer.close(timeout=0)
                raise
            return made[0], made[1]

        delay = 1.0
        while not stop.is_set():
            try:
                producers = self._interruptible(stop, connect)
                log.info("kafka connected", extra={"bootstrap": self.cfg.kafka.bootstrap})
                return producers
            except Interrupted:
                return None
            except (KafkaError, OSError) as exc:
                log.warning("kafka unavailable, retrying", extra={"error": type(exc).__name__, "retry_in_s": delay})
                stop.wait(delay)
                delay = min(delay * 2, 30.0)
        return None

    def _start(self, lane: Lane) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.cfg.mqtt.session_expiry_seconds
        props.ReceiveMaximum = lane.receive_maximum
        lane.client.connect_async(self.cfg.mqtt.host, self.cfg.mqtt.port, keepalive=self.cfg.mqtt.keepalive_seconds, clean_start=False, properties=props)
        lane.client.loop_start()
        lane.running = True

    def _halt(self, lane: Lane) -> None:
        lane.running = False
        lane.client.disconnect()
        lane.client.loop_stop()

    def _flush(self, stop: threading.Event | None = None, deadline: float | None = None) -> bool:
        """Flush in one-second slices, so a stop or a deadline is noticed; True when done."""
        while True:
            try:
                for producer in self._producers():
                    producer.flush(timeout=1.0)
                return True
            except KafkaTimeoutError:
                if (stop is not None and stop.is_set()) or (deadline is not None and time.monotonic() >= deadline):
                    return False

    def _recover(self, stop: threading.Event) -> None:
        """Stop intake, let Kafka settle, reconnect so the broker redelivers the unacknowledged."""
        log.warning("pausing MQTT intake", extra={"reason": self._trouble_reason, "holding": self.inflight()})
        for lane in self.lanes:
            self._halt(lane)
        delay = 1.0
        while not stop.is_set():
            try:
                if self._flush(stop):
                    self._interruptible(stop, lambda: kafka_client.wait_for_kafka(self.cfg, "bridge", timeout=5))
                    break
            except Interrupted:
                break
            except (KafkaError, TimeoutError, OSError) as exc:
                log.warning("kafka still unavailable", extra={"error": type(exc).__name__, "retry_in_s": delay})
                stop.wait(delay)
                delay = min(delay * 2, 30.0)
        self._trouble.clear()
        if not stop.is_set():
            log.info("resuming MQTT intake")
            for lane in self.lanes:
                self._start(lane)

    def _shutdown(self, deadline: float) -> None:
        # Flush first: confirmed records get their PUBACKs queued ahead of the DISCONNECT.
        if not self._flush(deadline=deadline - 1.0):
            log.warning("flush at shutdown incomplete; the broker redelivers what was not acknowledged")
        for lane in self.lanes:
            if lane.running:
                self._halt(lane)
        for producer in self._producers():
            producer.close(timeout=max(0.0, deadline - time.monotonic()))
        log.info("bridge stopped", extra=self.counters())

    def _abort(self) -> None:
        """After a thread died: no flush (the broker redelivers everything unacknowledged)."""
        for lane in self.lanes:
            lane.running = False
            try:
                lane.client.disconnect()
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        for producer in self._producers():
            try:
                producer.close(timeout=1.0)
            except Exception:  # noqa: BLE001
                pass

    def _flag(self, reason: str) -> None:
        if not self._trouble.is_set():
            self._trouble_reason = reason
            self._trouble.set()

    # --- paho network threads ------------------------------------------------------

    def _on_connect(self, client, lane: Lane, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("mqtt connection refused", extra={"session": lane.name, "reason": str(reason_code)})
            return
        lane.acker.new_connection()
        lane.connected_at = time.monotonic()
        if self.retiring:
            # no new messages; the broker still sends what it queued for this session
            for i in range(0, len(lane.subscriptions), SUBSCRIBE_CHUNK):
                client.unsubscribe(lane.subscriptions[i : i + SUBSCRIBE_CHUNK])
            log.info("mqtt connected, retiring", extra={"session": lane.name})
            return
        log.info("mqtt connected", extra={"session": lane.name, "broker": f"{self.cfg.mqtt.host}:{self.cfg.mqtt.port}", "session_present": bool(flags.session_present)})
        # retainHandling=1: retained messages only for a new subscription, not on every resume.
        opts = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        for i in range(0, len(lane.subscriptions), SUBSCRIBE_CHUNK):
            client.subscribe([(topic, opts) for topic in lane.subscriptions[i : i + SUBSCRIBE_CHUNK]])
        if lane is self.main and self.cfg.bridge.share_group and flags.session_present:
            # a session from before share_group was set still holds the plain filters: it would
            # receive every message besides its share (harmless if they are not there)
            for i in range(0, len(self.subscriptions), SUBSCRIBE_CHUNK):
                client.unsubscribe(self.subscriptions[i : i + SUBSCRIBE_CHUNK])

    def _on_disconnect(self, client, lane: Lane, flags, reason_code, properties) -> None:
        log.info("mqtt disconnected", extra={"session": lane.name, "reason": str(reason_code)})

    def _on_message(self, client, lane: Lane, msg) -> None:
        received_at = time.time()
        slot = lane.acker.register(msg.mid, msg.qos)
        lane.received += 1
        lane.last_message_at = time.monotonic()
        metrics.BRIDGE_MESSAGES.inc()
        if lane is not self.main:
            metrics.BRIDGE_PRIORITY.inc()
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # Mosquitto checks topics are UTF-8; paho raises if not
            topic = msg._topic.decode("utf-8", "replace")
        try:
            records = self._records(lane, topic, msg, received_at)
        except Exception as exc:  # noqa: BLE001 - the network thread must survive anything
            log.exception("message handling failed", extra={"topic": topic})
            records = [self.router.dlq(Rejection("internal_error", f"{type(exc).__name__}: {exc}"), topic, msg.payload, received_at)]
        headers = [
            ("mqtt.topic", topic.encode()),
            ("mqtt.qos", str(msg.qos).encode()),
            ("mqtt.dup", b"1" if msg.dup else b"0"),
            ("mqtt.retain", b"1" if msg.retain else b"0"),
        ]
        lane.acker.expect(slot, len(records))
        for record in records:
            self._send(lane, slot, record, headers, topic, msg.payload, received_at)
        if lane.acker.depth() > self.cfg.bridge.max_inflight_hard:
            self._flag(f"more than {self.cfg.bridge.max_inflight_hard} messages in flight ({lane.name} session)")

    def _records(self, lane: Lane, topic: str, msg, received_at: float) -> list[Record]:
        if lane is not self.main and topic not in self.priority_topics:
            return []  # a subscription left in the persistent session by an older registry: main has its copy
        if topic in self.priority_topics:
            # both sessions receive a panic button's events: the first to see one forwards it
            digest = hashlib.sha1(topic.encode() + b"\0" + msg.payload).digest()
            if not self.claims.claim(digest, lane.name):
                with self._lock:
                    self.skipped += 1
                return []
        with self._route_lock:  # adapters' memory and the token buckets are shared by both sessions
            records = self.router.route(topic, msg.payload, retained=bool(msg.retain), dup=bool(msg.dup), received_at=received_at)
        if msg.qos == 0 and records:
            # QoS 0 is lost while the bridge is down (MQTT's rule): make it visible
            first = records[0]
            device = first.event.device_id if first.event else (first.rejection.device_id if first.rejection else None)
            with self._lock:
                self.qos0.add(device or "(unknown)")
            metrics.BRIDGE_QOS0.inc()
        return records

    def _send(self, lane: Lane, slot: Slot, record: Record, headers, topic: str, payload: bytes, received_at: float) -> None:
        if record.rejection is not None:
            code = record.rejection.reason_code
            with self._lock:
                self.rejected[code] = self.rejected.get(code, 0) + 1
            metrics.BRIDGE_DLQ.labels(code).inc()
            log.debug("rejected", extra={"reason_code": code, "device": record.rejection.device_id or "-", "topic": topic})
        try:
            producer = self.urgent_producer if record.topic == self.topics.urgent and self.urgent_producer is not None else self.producer
            # the partition kafka-python's murmur2 would pick, from a cache (its Python murmur2 was 4% of the bridge)
            partition = kafka_client.partition_for(record.key, self.cfg.kafka.partitions) if record.key is not None else None
            future = producer.send(record.topic, key=record.key, value=record.value, headers=headers, partition=partition)
        except (TypeError, ValueError, MessageSizeTooLargeError) as exc:
            if record.rejection is None:  # this record cannot be produced, whatever Kafka's state: dead-letter it
                device = record.event.device_id if record.event else None
                dead = self.router.dlq(Rejection("producer_rejected", f"the producer refused the event: {type(exc).__name__}: {exc}", device), topic, payload, received_at)
                self._send(lane, slot, dead, headers, topic, payload, received_at)
            else:
                self._failed(lane, slot, exc)
            return
        except Exception as exc:  # noqa: BLE001 - KafkaTimeoutError, closed producer: do not ack, redeliver
            self._failed(lane, slot, exc)
            return
        future.add_callback(self._confirmed, lane, slot, record.topic)
        future.add_errback(self._failed, lane, slot)

    # --- kafka-python sender thread ------------------------------------------------

    def _confirmed(self, lane: Lane, slot: Slot, topic: str, metadata) -> None:
        self.confirmed += 1
        metrics.BRIDGE_RECORDS.labels(topic).inc()
        metrics.BRIDGE_PRODUCE.observe(time.monotonic() - slot.arrived)
        lane.acker.done(slot)

    def _failed(self, lane: Lane, slot: Slot, exc: BaseException) -> None:
        self.failed += 1
        metrics.BRIDGE_FAILURES.inc()
        if not self._trouble.is_set():
            log.error("kafka did not take a record; it will be redelivered", extra={"session": lane.name, "error": f"{type(exc).__name__}: {exc}"})
        self._flag(f"kafka error {type(exc).__name__}")
