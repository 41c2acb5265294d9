"""`huxue bridge`: MQTT -> Kafka, at least once.

* paho (MQTT 5, persistent session, QoS 1, manual acknowledgement) delivers each
  message on its network thread; `on_message` parses and validates it (pure, fast),
  hands the record to the kafka-python producer and returns: the thread never blocks.
* The PUBACK is sent only when Kafka confirmed the record (acks=all, idempotent
  producer), in arrival order (InOrderAcker). Rejected input goes to the DLQ and is
  acknowledged the same way, after Kafka has it.
* In flight is bounded: the broker honours Receive Maximum = bridge.max_inflight; above
  bridge.max_inflight_hard, or when Kafka fails a record, the bridge disconnects, lets
  the producer settle and reconnects: the broker redelivers everything unacknowledged
  (duplicates downstream are removed by (device_id, event_id)).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict

from kafka.errors import KafkaError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from pipeline import kafka_client, metrics, mqtt_client
from pipeline.config import Config
from pipeline.ingest import native
from pipeline.ingest.acker import InOrderAcker, Slot
from pipeline.ingest.adapters.frigate import Frigate
from pipeline.ingest.adapters.zigbee2mqtt import Zigbee2Mqtt
from pipeline.records import CanonicalEvent, Rejection, dlq_entry, dumps
from pipeline.registry import Registry

log = logging.getLogger("huxue.bridge")

STALL_WARN_SECONDS = 5.0
SUMMARY_EVERY_SECONDS = 60.0
REPLAY_MEMORY = 5000  # adapter results kept for MQTT redeliveries (DUP)


class Bridge:
    def __init__(self, cfg: Config, registry: Registry):
        self.cfg = cfg
        self.registry = registry
        self.topics = cfg.topics
        self.client = mqtt_client.new_client(cfg.mqtt, cfg.bridge_client_id, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.acker = InOrderAcker(self.client.ack)
        self.adapters = [
            a for a, on in ((Frigate(cfg.adapters.frigate, registry), cfg.adapters.frigate.enabled), (Zigbee2Mqtt(cfg.adapters.zigbee2mqtt, registry), cfg.adapters.zigbee2mqtt.enabled)) if on
        ]
        self.subscriptions = list(native.SUBSCRIPTIONS) + [t for a in self.adapters for t in a.subscriptions()]
        # Adapters remember what they emitted (one event per Frigate object and zone, rising
        # edges), so a redelivered copy would yield nothing: it gets the first result again.
        self._results: OrderedDict[bytes, list[CanonicalEvent | Rejection]] = OrderedDict()
        self.producer = None
        self._trouble = threading.Event()
        self._trouble_reason = ""
        # Written by one thread each (network thread / Kafka sender thread): no lock needed.
        self.received = 0
        self.rejected: dict[str, int] = {}  # reason_code -> count
        self.confirmed = 0
        self.failed = 0

    # --- lifecycle (main thread) ---------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        metrics.serve(self.cfg.bridge.metrics_port)
        self.producer = self._connect_kafka(stop)
        if self.producer is None:
            return
        self._start_mqtt()
        stalled = False
        last_summary, last_received = time.monotonic(), 0
        while not stop.is_set():
            if self._trouble.wait(0.5):
                self._recover(stop)
                continue
            age = self.acker.oldest_age()
            metrics.BRIDGE_INFLIGHT.set(self.acker.depth())
            if age > STALL_WARN_SECONDS and not stalled:
                stalled = True
                log.warning("kafka has not confirmed records", extra={"waiting_s": round(age, 1), "holding": self.acker.depth()})
            elif stalled and age < 1.0:
                stalled = False
                log.info("kafka confirming again", extra={"holding": self.acker.depth()})
            if time.monotonic() - last_summary >= SUMMARY_EVERY_SECONDS:
                if self.received != last_received:
                    log.info("progress", extra=self.counters())
                last_summary, last_received = time.monotonic(), self.received
        self._shutdown()

    def counters(self) -> dict[str, int]:
        return {
            "received": self.received,
            "rejected": sum(dict(self.rejected).values()),
            **{f"rejected_{code}": n for code, n in sorted(dict(self.rejected).items())},  # copy: another thread adds keys
            "confirmed": self.confirmed,
            "failed": self.failed,
            "inflight": self.acker.depth(),
        }

    def _connect_kafka(self, stop: threading.Event):
        delay = 1.0
        while not stop.is_set():
            try:
                kafka_client.ensure_topics(
                    self.cfg.kafka.bootstrap, [self.topics.events, self.topics.events_dlq], self.cfg.kafka.partitions, self.cfg.kafka.replication_factor
                )
                producer = kafka_client.producer(self.cfg.kafka.bootstrap)
                for topic in (self.topics.events, self.topics.events_dlq):
                    producer.partitions_for(topic)  # metadata now, so send() never waits for it
                log.info("kafka connected", extra={"bootstrap": self.cfg.kafka.bootstrap})
                return producer
            except (KafkaError, OSError) as exc:
                log.warning("kafka unavailable, retrying", extra={"error": type(exc).__name__, "retry_in_s": delay})
                stop.wait(delay)
                delay = min(delay * 2, 30.0)
        return None

    def _start_mqtt(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.cfg.mqtt.session_expiry_seconds
        props.ReceiveMaximum = min(self.cfg.bridge.max_inflight, 65535)
        self.client.connect_async(
            self.cfg.mqtt.host, self.cfg.mqtt.port, keepalive=self.cfg.mqtt.keepalive_seconds, clean_start=False, properties=props
        )
        self.client.loop_start()

    def _recover(self, stop: threading.Event) -> None:
        """Stop intake, let Kafka settle, reconnect so the broker redelivers the unacknowledged."""
        log.warning("pausing MQTT intake", extra={"reason": self._trouble_reason, "holding": self.acker.depth()})
        self.client.disconnect()
        self.client.loop_stop()
        delay = 1.0
        while not stop.is_set():
            try:
                self.producer.flush(timeout=30)
                kafka_client.wait_for_kafka(self.cfg.kafka.bootstrap, timeout=5)
                break
            except (KafkaError, TimeoutError, OSError) as exc:
                log.warning("kafka still unavailable", extra={"error": type(exc).__name__, "retry_in_s": delay})
                stop.wait(delay)
                delay = min(delay * 2, 30.0)
        self._trouble.clear()
        if not stop.is_set():
            log.info("resuming MQTT intake")
            self._start_mqtt()

    def _shutdown(self) -> None:
        # Flush first: confirmed records get their PUBACKs queued ahead of the DISCONNECT.
        try:
            self.producer.flush(timeout=10)
        except KafkaError as exc:
            log.warning("flush at shutdown incomplete", extra={"error": type(exc).__name__})
        self.client.disconnect()
        self.client.loop_stop()
        self.producer.close(timeout=5)
        log.info("bridge stopped", extra=self.counters())

    def _flag(self, reason: str) -> None:
        if not self._trouble.is_set():
            self._trouble_reason = reason
            self._trouble.set()

    # --- paho network thread -------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("mqtt connection refused", extra={"reason": str(reason_code)})
            return
        self.acker.new_connection()
        log.info("mqtt connected", extra={"broker": f"{self.cfg.mqtt.host}:{self.cfg.mqtt.port}", "session_present": bool(flags.session_present)})
        # retainHandling=1: retained messages only for a new subscription, not on every resume.
        opts = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        client.subscribe([(topic, opts) for topic in self.subscriptions])

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        log.info("mqtt disconnected", extra={"reason": str(reason_code)})

    def parse(self, topic: str, payload: bytes, retained: bool, dup: bool, received_at: float) -> list[CanonicalEvent | Rejection]:
        """A message -> what goes to Kafka: canonical events and rejections (maybe none)."""
        if topic.startswith("huxue/"):
            return [native.parse_message(topic, payload, retained=retained, received_at=received_at, registry=self.registry, max_payload_bytes=self.cfg.bridge.max_payload_bytes)]
        if len(payload) > self.cfg.bridge.max_payload_bytes:
            return [Rejection("payload_too_large", f"payload is {len(payload)} bytes, limit {self.cfg.bridge.max_payload_bytes}")]
        adapter = next((a for a in self.adapters if a.handles(topic)), None)
        if adapter is None:
            return [Rejection("bad_topic", f"no parser for topic {topic!r}")]
        digest = hashlib.sha1(topic.encode() + b"\0" + payload).digest()
        if dup and digest in self._results:
            return self._results[digest]
        results = adapter.parse(topic, payload, retained=retained, received_at=received_at)
        self._results[digest] = results
        self._results.move_to_end(digest)
        if len(self._results) > REPLAY_MEMORY:
            self._results.popitem(last=False)
        return results

    def _on_message(self, client, userdata, msg) -> None:
        received_at = time.time()
        slot = self.acker.register(msg.mid, msg.qos)
        self.received += 1
        metrics.BRIDGE_MESSAGES.inc()
        try:
            results = self.parse(msg.topic, msg.payload, bool(msg.retain), bool(msg.dup), received_at)
        except Exception as exc:  # input must never crash the bridge
            log.exception("parser failed", extra={"topic": msg.topic})
            results = [Rejection("internal_error", f"{type(exc).__name__}: {exc}")]
        headers = [
            ("mqtt.topic", msg.topic.encode()),
            ("mqtt.qos", str(msg.qos).encode()),
            ("mqtt.dup", b"1" if msg.dup else b"0"),
            ("mqtt.retain", b"1" if msg.retain else b"0"),
        ]
        self.acker.expect(slot, len(results))
        for result in results:
            if isinstance(result, CanonicalEvent):
                self._send(slot, self.topics.events, result.school_id, dumps(result.to_dict()), headers)
            else:
                self.rejected[result.reason_code] = self.rejected.get(result.reason_code, 0) + 1
                metrics.BRIDGE_DLQ.labels(result.reason_code).inc()
                log.debug("rejected", extra={"reason_code": result.reason_code, "device": result.device_id or "-", "topic": msg.topic})
                entry = dlq_entry(result, msg.topic, msg.payload, received_at)
                self._send(slot, self.topics.events_dlq, result.device_id, dumps(entry), headers)
        if self.acker.depth() > self.cfg.bridge.max_inflight_hard:
            self._flag(f"more than {self.cfg.bridge.max_inflight_hard} messages in flight")

    def _send(self, slot: Slot, topic: str, key: str | None, value: bytes, headers) -> None:
        try:
            future = self.producer.send(topic, key=key, value=value, headers=headers)
        except Exception as exc:  # KafkaTimeoutError, buffer or serialisation errors: do not ack
            self._failed(slot, exc)
            return
        future.add_callback(self._confirmed, slot, topic)
        future.add_errback(self._failed, slot)

    # --- kafka-python sender thread ------------------------------------------------

    def _confirmed(self, slot: Slot, topic: str, metadata) -> None:
        self.confirmed += 1
        metrics.BRIDGE_RECORDS.labels(topic).inc()
        metrics.BRIDGE_PRODUCE.observe(time.monotonic() - slot.arrived)
        self.acker.done(slot)

    def _failed(self, slot: Slot, exc: BaseException) -> None:
        self.failed += 1
        metrics.BRIDGE_FAILURES.inc()
        if not self._trouble.is_set():
            log.error("kafka did not take a record; it will be redelivered", extra={"error": f"{type(exc).__name__}: {exc}"})
        self._flag(f"kafka error {type(exc).__name__}")
