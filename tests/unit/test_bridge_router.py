"""pipeline/ingest/router.py and Bridge._on_message without brokers: every message becomes
Kafka records (events or DLQ entries), never an exception; rate limits; the priority lane."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import orjson
import pytest
from kafka.errors import KafkaTimeoutError
from paho.mqtt.client import MQTTMessage

from pipeline.config import BridgeConfig, Config
from pipeline.ingest import priority
from pipeline.ingest.acker import InOrderAcker
from pipeline.ingest.bridge import Bridge
from pipeline.ingest.router import Router
from pipeline.records import CanonicalEvent, Rejection, dumps, iso_utc, parse_ts
from pipeline.registry import Registry, load_registry
from unit_helpers import REGISTRY_YAML


def yaml_registry(text: str) -> Registry:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "registry.yaml"
        path.write_text(text, encoding="utf-8")
        return load_registry(path)


REG = yaml_registry(REGISTRY_YAML)  # with external names, as the bridge loads it
R = parse_ts("2026-11-28T23:41:03.300Z")
CAM = "huxue/v1/devices/zx01-cam-8/events"
BTN = "huxue/v1/devices/zx01-btn-1/events"
DEEP = b'{"event_id":"deep","type":"video.fall","ts":"2026-11-28T23:41:03.250Z","attrs":{"x":' + b"[" * 300 + b"]" * 300 + b"}}"


def cfg(**bridge) -> Config:
    return Config(bridge=BridgeConfig(metrics_port=0, **bridge))


def body(eid: str = "e1", etype: str = "video.fall", **attrs) -> bytes:
    return dumps({"event_id": eid, "type": etype, "ts": iso_utc(R), "attrs": attrs})


def dlq(record) -> dict:
    assert record.rejection is not None, record
    assert record.topic == "huxue.events.dlq"
    return orjson.loads(record.value)


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


# --- router: records, never exceptions --------------------------------------------------


def test_a_good_event_becomes_one_events_record_keyed_by_school():
    [rec] = Router(cfg(), REG).route(CAM, body(), received_at=R)
    assert rec.topic == "huxue.events" and rec.key == "zx-01" and rec.rejection is None
    assert orjson.loads(rec.value)["event_id"] == "e1"


def test_300_deep_attrs_become_a_too_deep_dlq_record():
    [rec] = Router(cfg(), REG).route(CAM, DEEP, received_at=R)
    entry = dlq(rec)
    assert entry["reason_code"] == "too_deep" and entry["payload"] == DEEP.decode() and rec.key == "zx01-cam-8"


def test_an_exception_in_an_adapter_becomes_an_internal_error_dlq_record(monkeypatch):
    router = Router(cfg(), REG)
    z2m = next(a for a in router.adapters if type(a).__name__ == "Zigbee2Mqtt")
    monkeypatch.setattr(z2m, "parse", lambda *a, **k: 1 / 0)
    [rec] = router.route("zigbee2mqtt/office_sos", b'{"action":"sos"}', received_at=R)
    entry = dlq(rec)
    assert entry["reason_code"] == "internal_error" and "ZeroDivisionError" in entry["reason"]
    assert entry["mqtt_topic"] == "zigbee2mqtt/office_sos" and entry["payload"] == '{"action":"sos"}'
    # and the router goes on with the next message
    assert router.route(CAM, body(), received_at=R)[0].topic == "huxue.events"


def test_adapter_output_is_held_to_the_shape_limits(monkeypatch):
    router = Router(cfg(max_attr_depth=4), REG)
    z2m = next(a for a in router.adapters if type(a).__name__ == "Zigbee2Mqtt")
    device = REG.device("zx01-sos-2")
    deep = CanonicalEvent("e", "panic.pressed", iso_utc(R), device.id, device.school, device.kind, "", "zigbee2mqtt", "t", iso_utc(R), attrs={"a": [[[[1]]]]})
    huge = dataclasses.replace(deep, attrs={"n": 2**60})
    monkeypatch.setattr(z2m, "parse", lambda *a, **k: [deep, huge])
    recs = router.route("zigbee2mqtt/office_sos", b"{}", received_at=R)
    assert [dlq(r)["reason_code"] for r in recs] == ["too_deep", "number_out_of_range"]
    assert all(r.key == "zx01-sos-2" for r in recs)


def test_a_serialisation_failure_becomes_an_unserialisable_dlq_record(monkeypatch):
    router = Router(cfg(), REG)
    z2m = next(a for a in router.adapters if type(a).__name__ == "Zigbee2Mqtt")
    device = REG.device("zx01-sos-2")
    # within every shape limit, yet orjson refuses it: a lone surrogate
    bad = CanonicalEvent("e", "panic.pressed", iso_utc(R), device.id, device.school, device.kind, "", "zigbee2mqtt", "t", iso_utc(R), attrs={"s": "\ud800"})
    monkeypatch.setattr(z2m, "parse", lambda *a, **k: [bad])
    [rec] = router.route("zigbee2mqtt/office_sos", b'{"action":"sos"}', received_at=R)
    assert dlq(rec)["reason_code"] == "unserialisable"


def test_a_dlq_entry_that_cannot_be_written_falls_back_to_a_minimal_one():
    rec = Router(cfg(), REG).dlq(Rejection("internal_error", "odd \ud800 text", "zx01-cam-8"), CAM, b"\xff", R)
    entry = orjson.loads(rec.value)
    assert entry["reason_code"] == "internal_error" and entry["payload_b64"] == "/w==" and entry["mqtt_topic"] == CAM


@pytest.mark.parametrize(
    "topic, payload",
    [
        (CAM, DEEP),
        (CAM, b'{"event_id":"e","type":"video.fall","ts":1795909263250,"attrs":{"n":18446744073709551616}}'),
        (CAM, b'{"event_id":"e","type":"video.fall","ts":1795909263250,"attrs":{"n":NaN}}'),
        ("frigate/events", b'{"after":{"camera":"gate_cam","id":"1","label":"person","entered_zones":[' + b"[" * 300 + b"]" * 300 + b"]}}"),
        ("frigate/stats", b'{"cameras":{"gate_cam":{"camera_fps":1e300}}}'),
        ("zigbee2mqtt/office_sos", b'{"action":"sos","battery":' + b"9" * 40 + b"}"),
        ("zigbee2mqtt/office_sos", b"\xff\xfe"),
        ("nowhere/else", b"{}"),
    ],
)
def test_hostile_input_on_every_path_yields_records(topic, payload):
    recs = Router(cfg(), REG).route(topic, payload, received_at=R)
    for rec in recs:
        assert rec.topic in ("huxue.events", "huxue.urgent", "huxue.events.dlq")
        orjson.loads(rec.value)


# --- rate limits ---------------------------------------------------------------------------


def test_a_flooding_device_is_rate_limited_to_the_dlq_and_others_are_not():
    clock = Clock()
    router = Router(cfg(device_rate_per_second=20, device_burst=200), REG, clock=clock)
    recs = [router.route(CAM, body(f"e{i}"), received_at=R)[0] for i in range(1000)]
    assert sum(r.topic == "huxue.events" for r in recs) == 200
    limited = [dlq(r) for r in recs if r.rejection]
    assert len(limited) == 800 and {e["reason_code"] for e in limited} == {"rate_limited"} and {e["device_id"] for e in limited} == {"zx01-cam-8"}
    # another device is unaffected; the camera gets its rate back with time
    assert router.route("huxue/v1/devices/zx01-cam-9/events", body(), received_at=R)[0].topic == "huxue.events"
    clock.t += 1.0
    assert sum(router.route(CAM, body(f"later{i}"), received_at=R)[0].topic == "huxue.events" for i in range(100)) == 20


def test_panic_buttons_are_never_rate_limited_native_or_zigbee():
    router = Router(cfg(device_rate_per_second=1, device_burst=1), REG, clock=Clock())
    native = [router.route(BTN, body(f"p{i}", "panic.pressed"), received_at=R) for i in range(500)]
    assert all([r.topic for r in rs] == ["huxue.urgent", "huxue.events"] for rs in native)
    z2m = [r for i in range(300) for r in router.route("zigbee2mqtt/office_sos", dumps({"action": "sos", "last_seen": i}), received_at=R)]
    assert z2m and all(r.topic in ("huxue.urgent", "huxue.events") for r in z2m)


def test_a_press_goes_to_the_urgent_topic_first_and_to_the_events_topic_others_only_to_events():
    router = Router(cfg(), REG, clock=Clock())
    press = router.route(BTN, body("p1", "panic.pressed"), received_at=R)
    assert [(r.topic, r.key) for r in press] == [("huxue.urgent", "zx-01"), ("huxue.events", "zx-01")]
    assert press[0].value == press[1].value  # the same canonical event
    assert [r.topic for r in router.route(CAM, body("c1"), received_at=R)] == ["huxue.events"]


def test_one_log_line_per_device_per_minute(caplog):
    clock = Clock()
    router = Router(cfg(device_rate_per_second=1, device_burst=1), REG, clock=clock)
    with caplog.at_level("WARNING", logger="huxue.bridge"):
        for i in range(3000):
            clock.t += 0.05  # 20 msg/s for 150 s
            router.route(CAM, body(f"e{i}"), received_at=R)
            router.route("huxue/v1/devices/zx01-cam-9/events", body(f"e{i}"), received_at=R)
    lines = [r for r in caplog.records if r.getMessage().startswith("device rate-limited")]
    assert sorted(r.device for r in lines) == ["zx01-cam-8"] * 3 + ["zx01-cam-9"] * 3


# --- the priority lane -----------------------------------------------------------------------


def test_priority_topics_are_the_panic_buttons_event_topics():
    topics = priority.topics(cfg(), REG)
    assert topics == sorted(
        [
            "huxue/v1/devices/zx01-btn-1/events",
            "huxue/v1/devices/zx01-btn-3/events",
            "huxue/v1/devices/zx01-sos-2/events",
            "huxue/v1/devices/bh02-btn-1/events",
            "zigbee2mqtt/office_sos",
        ]
    )
    assert not any(t.endswith(("/status", "/availability")) for t in topics)


def test_claims_first_lane_forwards_the_other_skips():
    claims = priority.Claims(limit=2)
    assert claims.claim(b"a", "priority") and not claims.claim(b"a", "main")
    assert claims.claim(b"a", "priority")  # a redelivery to the owner is forwarded again
    assert claims.claim(b"b", "main") and not claims.claim(b"b", "priority")
    claims.claim(b"c", "main")
    assert claims.claim(b"a", "main")  # forgotten (bounded): a duplicate at worst, never a loss


# --- Bridge._on_message with a fake producer and acks ------------------------------------------


class FakeFuture:
    def __init__(self, error=None):
        self.error = error

    def add_callback(self, f, *args):
        if self.error is None:
            f(*args, "metadata")

    def add_errback(self, f, *args):
        if self.error is not None:
            f(*args, self.error)


class FakeProducer:
    def __init__(self):
        self.sent: list[tuple[str, str | None, bytes]] = []
        self.fail_with: Exception | None = None
        self.raise_on_events: Exception | None = None

    def send(self, topic, key=None, value=None, headers=None, partition=None):
        if self.raise_on_events is not None and topic == "huxue.events":
            raise self.raise_on_events
        self.sent.append((topic, key, value))
        return FakeFuture(self.fail_with)


def make_bridge(**bridge) -> tuple[Bridge, FakeProducer, dict[str, list[int]]]:
    b = Bridge(cfg(**bridge), REG)
    b.producer = FakeProducer()
    acks: dict[str, list[int]] = {}
    for lane in b.lanes:
        lane.acker = InOrderAcker(lambda mid, qos, name=lane.name: acks.setdefault(name, []).append(mid))
    return b, b.producer, acks


def message(topic: str, payload: bytes, mid: int, qos: int = 1) -> MQTTMessage:
    m = MQTTMessage(mid=mid, topic=topic.encode())
    m.payload, m.qos = payload, qos
    return m


def deliver(b: Bridge, lane_name: str, msg: MQTTMessage) -> None:
    lane = next(lane for lane in b.lanes if lane.name == lane_name)
    b._on_message(lane.client, lane, msg)


def test_deep_payload_is_dead_lettered_and_acked_and_the_next_message_flows():
    b, producer, acks = make_bridge()
    deliver(b, "main", message(CAM, DEEP, 1))
    deliver(b, "main", message(CAM, body("next"), 2))
    assert [(t, orjson.loads(v).get("reason_code")) for t, _, v in producer.sent] == [("huxue.events.dlq", "too_deep"), ("huxue.events", None)]
    assert acks["main"] == [1, 2]
    assert b.counters()["rejected_too_deep"] == 1


def test_an_exception_anywhere_in_handling_is_dead_lettered_and_acked(monkeypatch):
    b, producer, acks = make_bridge()
    monkeypatch.setattr(b.router, "route", lambda *a, **k: [][0])
    deliver(b, "main", message(CAM, body(), 1))
    [(topic, key, value)] = producer.sent
    assert topic == "huxue.events.dlq" and orjson.loads(value)["reason_code"] == "internal_error"
    assert acks["main"] == [1]


def test_an_event_the_producer_refuses_is_dead_lettered():
    b, producer, acks = make_bridge()
    producer.raise_on_events = TypeError("bad value")
    deliver(b, "main", message(CAM, body(), 7))
    [(topic, key, value)] = producer.sent
    assert topic == "huxue.events.dlq" and orjson.loads(value)["reason_code"] == "producer_rejected" and key == "zx01-cam-8"
    assert acks["main"] == [7]


def test_a_kafka_failure_is_not_acked_but_flags_recovery():
    b, producer, acks = make_bridge()
    producer.fail_with = KafkaTimeoutError("down")
    deliver(b, "main", message(CAM, body(), 1))
    assert "main" not in acks and b._trouble.is_set()


def test_a_press_seen_by_both_lanes_is_produced_once():
    b, producer, acks = make_bridge()
    press = body("press-1", "panic.pressed")
    deliver(b, "priority", message(BTN, press, 11))
    deliver(b, "main", message(CAM, body("flood"), 21))
    deliver(b, "main", message(BTN, press, 22))
    assert [t for t, _, v in producer.sent if b"press-1" in v] == ["huxue.urgent", "huxue.events"]  # one copy on each topic
    assert acks == {"priority": [11], "main": [21, 22]}  # the main copy acknowledged without producing
    # when the main lane sees it first, the priority copy is the one skipped
    other = body("press-2", "panic.pressed")
    deliver(b, "main", message(BTN, other, 23))
    deliver(b, "priority", message(BTN, other, 12))
    assert sum(b"press-2" in v for _, _, v in producer.sent) == 2  # urgent + events, from one lane
    assert acks == {"priority": [11, 12], "main": [21, 22, 23]}
    assert b.counters()["skipped_copies"] == 2


def test_urgent_copies_have_a_producer_of_their_own_and_the_ack_waits_for_both():
    b, producer, acks = make_bridge()
    b.urgent_producer = urgent = FakeProducer()
    deliver(b, "main", message(BTN, body("press-3", "panic.pressed"), 31))
    deliver(b, "main", message(CAM, body("cam-3"), 32))
    assert [t for t, _, _ in urgent.sent] == ["huxue.urgent"]
    assert [t for t, _, _ in producer.sent] == ["huxue.events", "huxue.events"]
    assert acks == {"main": [31, 32]}
    urgent.fail_with = KafkaTimeoutError("down")
    deliver(b, "main", message(BTN, body("press-4", "panic.pressed"), 33))
    assert acks == {"main": [31, 32]} and b._trouble.is_set(), "a press is acked once both its copies are on Kafka"


def test_panic_button_status_stays_on_the_main_lane():
    b, _, _ = make_bridge()
    main, prio = b.lanes
    assert "huxue/v1/devices/+/status" in main.subscriptions
    assert prio.subscriptions == priority.topics(b.cfg, REG)
    assert prio.client._client_id == (b.cfg.bridge_client_id + "-priority").encode()


def test_priority_lane_can_be_switched_off():
    b = Bridge(cfg(priority_lane=False), REG)
    assert [lane.name for lane in b.lanes] == ["main"]


def test_qos0_events_are_counted_per_device():
    b, producer, acks = make_bridge()
    for i in range(5):
        deliver(b, "main", message(CAM, body(f"q{i}"), 0, qos=0))
    deliver(b, "main", message("huxue/v1/devices/zx01-cam-9/events", body("q"), 0, qos=0))
    deliver(b, "main", message(CAM, body("one"), 1, qos=1))
    counters = b.counters()
    assert counters["qos0"] == 6 and counters["qos0_top"] == "zx01-cam-8=5, zx01-cam-9=1"
    assert acks["main"] == [1]  # QoS 0 needs no PUBACK


def test_adapters_leave_out_absurd_numbers_instead_of_losing_the_event():
    router = Router(cfg(), REG)
    [hb] = [r for r in router.parse("zigbee2mqtt/office_sos", dumps({"battery": 80, "linkquality": 2**60}), False, False, R)]
    assert isinstance(hb, CanonicalEvent) and hb.attrs == {"battery": 80}
    assert router.parse("frigate/stats", b'{"cameras":{"gate_cam":{"camera_fps":1e300}}}', False, False, R) == []


def test_a_redelivered_copy_is_never_rate_limited():
    router = Router(cfg(device_rate_per_second=1, device_burst=1), REG, clock=Clock())
    assert router.route(CAM, body("a"), received_at=R)[0].topic == "huxue.events"
    assert router.route(CAM, body("b"), received_at=R)[0].rejection.reason_code == "rate_limited"
    # the broker redelivers what Kafka did not confirm (DUP): it was admitted once
    assert all(router.route(CAM, body(f"c{i}"), dup=True, received_at=R)[0].topic == "huxue.events" for i in range(50))


def test_qos0_tally_is_bounded():
    from pipeline.ingest.counts import OTHERS, DeviceCounts

    counts = DeviceCounts(max_devices=3)
    for i in range(100):
        counts.add(f"dev-{i % 10}")
    assert counts.total == 100 and len(counts._by_device) == 4
    assert counts.top(1) == [(OTHERS, 70)]


def test_the_priority_lane_ignores_topics_left_over_from_an_older_registry():
    b, producer, acks = make_bridge()
    deliver(b, "priority", message("huxue/v1/devices/zx01-cam-8/events", body("old"), 5))
    assert producer.sent == [] and acks["priority"] == [5]
    deliver(b, "main", message("huxue/v1/devices/zx01-cam-8/events", body("old"), 6))
    assert len(producer.sent) == 1 and acks["main"] == [6]
