"""Issue 13, the ingest half: mobile units' events routed to the compacted units topic (key
"<unit>/<aspect>"), their MQTT accounts, the topic's ACLs and creation, the sample
registry's units and the simulator's patrols. No brokers (tests/integration/
test_e2e_units_ingest.py runs the bridge on real ones)."""

from __future__ import annotations

import math
import tempfile
import threading
from pathlib import Path

import orjson
import pytest
import yaml
from paho.mqtt.client import MQTTMessage

from pipeline import kafka_client, mqtt_auth, simulate
from pipeline.config import BridgeConfig, Config, MqttConfig, load_config
from pipeline.ingest import native
from pipeline.ingest.acker import InOrderAcker
from pipeline.ingest.bridge import Bridge
from pipeline.ingest.router import UNIT_ASPECTS, Router, unit_key
from pipeline.records import CanonicalEvent, dumps, iso_utc, parse_ts
from pipeline.registry import Registry, load_registry
from pipeline.rules.units import haversine_m

REGISTRY = {
    "schools": [
        {"id": "s1", "name": "S1", "timezone": "Asia/Shanghai", "coordinates": {"lat": 30.65, "lon": 104.05}},
        {"id": "s2", "name": "S2", "timezone": "Asia/Shanghai", "coordinates": {"lat": 30.67, "lon": 104.05}},
        {"id": "s3", "name": "S3", "timezone": "Asia/Shanghai", "coordinates": {"lat": 30.65, "lon": 104.09}},
        {"id": "s4", "name": "S4", "timezone": "Asia/Shanghai"},  # no coordinates
    ],
    "devices": [
        {"id": "s1-btn-1", "school": "s1", "kind": "panic_button", "zone": "gate"},
        {"id": "s1-cam-1", "school": "s1", "kind": "video_analytics", "zone": "gate"},
    ],
    "units": [
        {"id": "car-7", "profile": "car", "area": ["s1", "s2", "s3"], "callsign": "巡逻7号"},
        {"id": "moto-3", "profile": "motorbike", "area": ["s3"]},
        {"id": "foot-1", "profile": "foot", "area": ["s4"]},  # no located school: no patrol
    ],
}
R = parse_ts("2026-12-01T09:41:03.300Z")


def registry(data: dict = REGISTRY) -> Registry:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "registry.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        return load_registry(path)


REG = registry()


def cfg(auth: bool = False, **bridge) -> Config:
    return Config(bridge=BridgeConfig(metrics_port=0, **bridge), mqtt=MqttConfig(auth=auth))


def body(eid: str, etype: str, **attrs) -> bytes:
    return dumps({"event_id": eid, "type": etype, "ts": iso_utc(R), "attrs": attrs})


def route(router: Router, unit: str, payload: bytes, channel: str = "events"):
    return router.route(f"huxue/v1/devices/{unit}/{channel}", payload, received_at=R + 0.2)


POSITION = {"lat": 30.6571, "lon": 104.0817, "speed_kmh": 32.5, "heading": 87.0, "accuracy_m": 6}


# --- routing ----------------------------------------------------------------------------------


def test_a_position_goes_to_the_units_topic_keyed_by_unit_and_aspect():
    [rec] = route(Router(cfg(), REG), "car-7", body("p1", "unit.position", **POSITION))
    assert (rec.topic, rec.key, rec.rejection) == ("huxue.units", "car-7/position", None)
    value = orjson.loads(rec.value)
    assert value == rec.event.to_dict()  # the canonical event, as on the events topic
    assert (value["kind"], value["school_id"], value["zone"], value["device_id"]) == ("mobile_unit", "", "", "car-7")
    assert value["attrs"] == POSITION and value["type"] == "unit.position" and value["event_id"] == "p1"


@pytest.mark.parametrize(
    ("channel", "payload", "key", "etype"),
    [
        ("events", body("s1", "unit.status", status="dispatched"), "car-7/status", "unit.status"),
        ("status", b"online", "car-7/online", "device.online"),
        ("status", b"offline", "car-7/online", "device.offline"),  # one key: the last of both wins
        ("events", body("h1", "device.heartbeat", battery=80), "car-7/heartbeat", "device.heartbeat"),
        ("events", body("t1", "device.tamper"), "car-7/device.tamper", "device.tamper"),
    ],
)
def test_every_kind_of_unit_report_has_its_own_key(channel, payload, key, etype):
    [rec] = route(Router(cfg(), REG), "car-7", payload, channel)
    assert (rec.topic, rec.key, rec.event.type) == ("huxue.units", key, etype)
    assert orjson.loads(rec.value)["school_id"] == ""


def test_unit_keys_compact_to_one_record_per_aspect():
    assert set(UNIT_ASPECTS.values()) == {"position", "status", "online", "heartbeat"}
    ev = CanonicalEvent("e", "unit.position", iso_utc(R), "moto-3", "", "mobile_unit", "", "native", "t", iso_utc(R))
    assert unit_key(ev) == "moto-3/position"


def test_school_devices_still_go_to_the_events_topic_keyed_by_school():
    router = Router(cfg(), REG)
    [rec] = route(router, "s1-cam-1", body("c1", "video.fall"))
    assert (rec.topic, rec.key) == ("huxue.events", "s1")
    urgent, event = route(router, "s1-btn-1", body("b1", "panic.pressed"))
    assert (urgent.topic, event.topic) == ("huxue.urgent", "huxue.events")


def test_a_topic_prefix_applies_to_the_units_topic():
    c = Config(bridge=BridgeConfig(metrics_port=0))
    c = Config(bridge=c.bridge, kafka=type(c.kafka)(topic_prefix="x."))
    [rec] = route(Router(c, REG), "car-7", body("p1", "unit.position", **POSITION))
    assert rec.topic == c.topics.units == "x.units"


@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [
        (body("p2", "unit.position", **{**POSITION, "lat": 91}), "invalid_field", "attrs.lat must be a number in [-90, 90]"),
        (body("p3", "unit.position", lat=30.6, lon=104.0, speed_kmh=3), "missing_field", "unit.position needs attrs.heading"),
        (body("p4", "unit.status", status="lunch"), "invalid_field", "attrs.status must be one of"),
        (body("p5", "panic.pressed"), "type_not_allowed", "not allowed for a mobile_unit device"),
        (b"{not json", "bad_json", "payload is not JSON"),
    ],
)
def test_a_bad_unit_report_goes_to_the_dlq_with_a_reason(payload, code, reason):
    [rec] = route(Router(cfg(), REG), "car-7", payload)
    assert rec.topic == "huxue.events.dlq" and rec.rejection is not None and rec.key == "car-7"
    entry = orjson.loads(rec.value)
    assert entry["reason_code"] == code and reason in entry["reason"]
    assert entry["mqtt_topic"] == "huxue/v1/devices/car-7/events"


def test_a_flooding_unit_is_rate_limited_to_the_dlq():
    t = [0.0]
    router = Router(cfg(device_rate_per_second=1, device_burst=2), REG, clock=lambda: t[0])
    topics = [route(router, "car-7", body(f"p{i}", "unit.position", **POSITION))[0].topic for i in range(4)]
    assert topics == ["huxue.units", "huxue.units", "huxue.events.dlq", "huxue.events.dlq"]


def test_with_mqtt_auth_the_units_record_names_the_units_account():
    [rec] = route(Router(cfg(auth=True), REG), "car-7", body("p1", "unit.position", **POSITION))
    assert orjson.loads(rec.value)["mqtt_account"] == "car-7"


# --- the bridge: the same at-least-once path -------------------------------------------------


class FakeFuture:
    def add_callback(self, f, *args):
        f(*args, "metadata")

    def add_errback(self, f, *args):
        pass


class FakeProducer:
    def __init__(self):
        self.sent: list[tuple[str, str | None, int | None]] = []

    def send(self, topic, key=None, value=None, headers=None, partition=None):
        self.sent.append((topic, key, partition))
        return FakeFuture()


def test_the_bridge_produces_unit_records_with_the_bulk_producer_and_acks_after_kafka():
    b = Bridge(cfg(), REG)
    b.producer, b.urgent_producer = FakeProducer(), FakeProducer()
    acks: list[int] = []
    b.main.acker = InOrderAcker(lambda mid, qos: acks.append(mid))
    for mid, (channel, payload) in enumerate([("events", body("p1", "unit.position", **POSITION)), ("status", b"online"), ("events", body("bad", "unit.status"))], 1):
        m = MQTTMessage(mid=mid, topic=f"huxue/v1/devices/car-7/{channel}".encode())
        m.payload, m.qos = payload, 1
        b._on_message(b.main.client, b.main, m)
    parts = b.cfg.kafka.partitions
    assert b.producer.sent == [
        ("huxue.units", "car-7/position", kafka_client.partition_for("car-7/position", parts)),
        ("huxue.units", "car-7/online", kafka_client.partition_for("car-7/online", parts)),
        ("huxue.events.dlq", "car-7", kafka_client.partition_for("car-7", parts)),
    ]
    assert b.urgent_producer.sent == [] and acks == [1, 2, 3]
    assert b.counters()["rejected_missing_field"] == 1


def test_the_bridge_subscribes_to_the_units_topics_already():
    assert all(any(_matches(s, f"huxue/v1/devices/car-7/{c}") for s in Router(cfg(), REG).subscriptions) for c in ("events", "status"))


def _matches(sub: str, topic: str) -> bool:
    s, t = sub.split("/"), topic.split("/")
    return len(s) == len(t) and all(a in ("+", b) for a, b in zip(s, t))


# --- the topic: in the deployment, compacted, whoever creates it ---------------------------------


def test_the_units_topic_is_deployed_and_compacted():
    t = Config().topics
    assert t.units == "huxue.units"
    assert t.units in t.deployment() and t.units not in t.contract()
    assert t.configs() == {t.units: {"cleanup.policy": "compact"}}


class FakeAdmin:
    def __init__(self, existing: dict[str, int] | None = None, policy: str = "compact"):
        self.existing = dict(existing or {})
        self.created: list = []
        self.policy = policy

    def describe_topics(self, names):
        return [{"name": n, "error_code": 0, "partitions": [{}] * self.existing[n]} if n in self.existing else {"name": n, "error_code": 3} for n in names]

    def create_topics(self, new):
        self.created += new
        for t in new:
            self.existing[t.name] = t.num_partitions

    def describe_configs(self, resources, config_filter=None):
        return {"topic": {r.name: {"cleanup.policy": {"value": self.policy}} for r in resources}}

    def close(self):
        pass


@pytest.mark.parametrize("helper", ["ensure_topics", "ensure_units_topic"])
def test_ensuring_creates_the_units_topic_compacted_and_others_as_before(monkeypatch, helper):
    c = Config()
    a = FakeAdmin()
    monkeypatch.setattr(kafka_client, "admin", lambda *args, **kw: a)
    if helper == "ensure_topics":
        created = kafka_client.ensure_topics(c, "bridge", [c.topics.events, c.topics.units], c.kafka.partitions, configs={"min.insync.replicas": "2"})
        assert created == [c.topics.events, c.topics.units]
        configs = {t.name: t.topic_configs for t in a.created}
        assert configs == {c.topics.events: {"min.insync.replicas": "2"}, c.topics.units: {"cleanup.policy": "compact", "min.insync.replicas": "2"}}
    else:
        assert kafka_client.ensure_units_topic(c, "worker") == [c.topics.units]
        [topic] = a.created
        assert (topic.name, topic.num_partitions, topic.topic_configs) == (c.topics.units, c.kafka.partitions, {"cleanup.policy": "compact"})
    assert kafka_client.ensure_units_topic(c, "worker") == []  # exists now: nothing created


def test_an_existing_units_topic_that_is_not_compacted_is_reported(monkeypatch, caplog):
    c = Config()
    a = FakeAdmin({c.topics.units: c.kafka.partitions}, policy="delete")
    monkeypatch.setattr(kafka_client, "admin", lambda *args, **kw: a)
    with caplog.at_level("WARNING", logger="huxue.kafka"):
        assert kafka_client.ensure_units_topic(c, "admin") == []
    [warning] = [r for r in caplog.records if r.levelname == "WARNING"]
    assert warning.topic == c.topics.units and (warning.value, warning.expected) == ("delete", "compact")


def test_a_role_that_may_not_read_configs_still_ensures(monkeypatch):
    c = Config()
    a = FakeAdmin({c.topics.units: c.kafka.partitions})

    def denied(*args, **kw):
        raise RuntimeError("TopicAuthorizationFailedError")

    a.describe_configs = denied
    monkeypatch.setattr(kafka_client, "admin", lambda *args, **kw: a)
    assert kafka_client.ensure_units_topic(c, "bridge") == []


def test_a_units_topic_with_another_partition_count_is_refused(monkeypatch):
    c = Config()
    monkeypatch.setattr(kafka_client, "admin", lambda *args, **kw: FakeAdmin({c.topics.units: 1}))
    with pytest.raises(kafka_client.TopicMismatch):
        kafka_client.ensure_units_topic(c, "worker")


# --- MQTT accounts -------------------------------------------------------------------------------


def auth_setup(tmp_path):
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump(REGISTRY, allow_unicode=True))
    (tmp_path / "huxue.yaml").write_text(yaml.safe_dump({"registry": "registry.yaml", "stack": {"home": str(tmp_path / "home")}}))
    c = load_config(tmp_path / "huxue.yaml", env={})
    return c, load_registry(c.registry_path)


def test_each_unit_gets_an_account_that_writes_only_its_own_device_topics(tmp_path):
    c, reg = auth_setup(tmp_path)
    accts = {a.name: a for a in mqtt_auth.accounts(c, reg)}
    for unit in ("car-7", "moto-3", "foot-1"):
        assert accts[unit].role == "unit"
        assert accts[unit].acl == (f"write huxue/v1/devices/{unit}/#",)
        assert mqtt_auth.account_of_topic(c, f"huxue/v1/devices/{unit}/events") == unit
    assert "user car-7\ntopic write huxue/v1/devices/car-7/#\n" in mqtt_auth.acl_text(list(accts.values()))


def test_devices_credentials_of_a_unit(tmp_path):
    c, reg = auth_setup(tmp_path)
    synced = mqtt_auth.sync(c, reg)
    assert "car-7" in synced.added
    login = mqtt_auth.credentials_of(c, reg, "car-7")
    assert login.username == "car-7" and len(login.password) >= 20
    assert mqtt_auth.rotate(c, reg, "car-7") != login.password
    with pytest.raises(RuntimeError, match="not a native device or mobile unit"):
        mqtt_auth.credentials_of(c, reg, "car-8")


# --- the sample registry ------------------------------------------------------------------------


def test_the_sample_units_cover_every_sample_school_and_get_accounts(tmp_path):
    from pipeline.config import packaged_config_path

    reg = load_registry(packaged_config_path().parent / "registry.yaml")
    assert len(reg.units) == 8 and {s for u in reg.units.values() for s in u.area} == set(reg.schools)
    assert {u.profile for u in reg.units.values()} == {"car", "motorbike", "foot"}
    c = Config()
    names = {a.name for a in mqtt_auth.accounts(c, reg)}
    assert set(reg.units) <= names
    sim = simulate.Simulator(reg, sorted(reg.schools))
    assert set(sim.patrols) == set(reg.units)  # every sample school has coordinates


# --- the simulator's patrols ---------------------------------------------------------------------


def test_bearing_points_the_way():
    assert simulate.bearing_deg(30.0, 104.0, 30.1, 104.0) == pytest.approx(0.0, abs=1e-9)
    assert simulate.bearing_deg(30.0, 104.0, 30.0, 104.1) == pytest.approx(90.0, abs=0.1)
    assert simulate.bearing_deg(30.1, 104.0, 30.0, 104.0) == pytest.approx(180.0, abs=1e-9)
    assert simulate.bearing_deg(30.0, 104.1, 30.0, 104.0) == pytest.approx(270.0, abs=0.1)


def test_a_route_visits_the_area_nearest_next_and_skips_schools_without_coordinates():
    assert simulate.patrol_route(REG.unit("car-7"), REG) == ((30.65, 104.05), (30.67, 104.05), (30.65, 104.09))
    reg = registry({**REGISTRY, "units": [{"id": "car-7", "profile": "car", "area": ["s1", "s3", "s2", "s4"]}]})
    assert simulate.patrol_route(reg.unit("car-7"), reg) == ((30.65, 104.05), (30.67, 104.05), (30.65, 104.09))
    assert simulate.patrol_route(REG.unit("foot-1"), REG) == ()
    # one located school: a small square around it
    square = simulate.patrol_route(REG.unit("moto-3"), REG)
    assert len(square) == 4 and all(200 < haversine_m(30.65, 104.09, lat, lon) < 600 for lat, lon in square)


def test_a_patrol_moves_at_its_speed_along_straight_legs_and_loops():
    p = simulate.Patrol("car-7", ((30.65, 104.05), (30.67, 104.05), (30.65, 104.09)), speed_kmh=36.0)
    assert p.at(0) == simulate.Fix(30.65, 104.05, 0.0, 36.0)
    leg = p.legs[0]
    half = p.at(leg / 2 / 10)  # 36 km/h = 10 m/s
    assert half.lat == pytest.approx(30.66) and half.lon == pytest.approx(104.05) and half.heading == pytest.approx(0.0, abs=1e-9)
    second = p.at((leg + 10) / 10)  # on the second leg, heading south-east
    assert 90 < second.heading < 180 and second.speed_kmh == 36.0
    assert p.at(p.length_m / 10).lat == pytest.approx(30.65)  # back at the start
    for t in range(0, 2000, 37):  # it covers its speed's distance (less across a corner)
        a, b = p.at(t), p.at(t + 5)
        assert haversine_m(a.lat, a.lon, b.lat, b.lon) <= 50.0 * 1.001  # lat/lon interpolation: not quite great-circle
    assert p.at(100) == p.at(100 + p.length_m / 10)


def test_a_patrol_without_a_loop_parks():
    assert simulate.Patrol("x", ((30.0, 104.0),), 40).at(99) == simulate.Fix(30.0, 104.0, 0.0, 0.0)


def unit_messages(sim, seconds: float, unit_seconds: float = 5) -> list[tuple[float, str, bytes]]:
    out = []
    for at, make in simulate.schedule(sim, 0, 0, unit_seconds):
        if at >= seconds:
            break
        m = make()
        if m:
            out.append((at, *m))
    return out


def test_units_go_online_report_available_then_positions_that_the_bridge_accepts():
    sim = simulate.Simulator(REG, sorted(REG.schools), unit_speeds=type(Config().units.speeds_kmh)(car=40, motorbike=35, foot=5))
    msgs = unit_messages(sim, 20)
    first = msgs[: 2 * len(sim.units)]
    assert [(t, topic) for t, topic, _ in first[:2]] == [(0.0, "huxue/v1/devices/car-7/status"), (0.0, "huxue/v1/devices/car-7/events")]
    assert {p for _, t, p in first if t.endswith("/status")} == {b"online"}
    statuses = [orjson.loads(p) for _, t, p in first if t.endswith("/events")]
    assert {s["type"] for s in statuses} == {"unit.status"} and {s["attrs"]["status"] for s in statuses} == {"available"}
    positions = [(at, t, p) for at, t, p in msgs[len(first):]]
    # two patrolling units (foot-1 has no route), each every 5 s: 8 reports in 20 s
    assert len(positions) == 8 and {t.split("/")[3] for _, t, _ in positions} == {"car-7", "moto-3"}
    router = Router(cfg(), REG)
    for at, topic, payload in positions:
        [rec] = router.route(topic, payload, received_at=R)
        assert rec.topic == "huxue.units" and rec.key.endswith("/position"), orjson.loads(rec.value)
        attrs = rec.event.attrs
        assert attrs["speed_kmh"] == {"car-7": 40, "moto-3": 35}[rec.event.device_id] and 0 <= attrs["heading"] <= 360
        assert sim.is_unit_topic(topic) and not sim.is_unit_topic("huxue/v1/devices/s1-cam-1/events")
    car = [orjson.loads(p)["attrs"] for _, t, p in positions if "/car-7/" in t]
    moved = haversine_m(car[0]["lat"], car[0]["lon"], car[1]["lat"], car[1]["lon"])
    assert moved == pytest.approx(40 / 3.6 * 5, rel=0.02)  # 5 s at 40 km/h on one leg (or less at a corner)


def test_unit_traffic_is_deterministic_with_the_seed_and_off_by_default():
    def run(seed):
        sim = simulate.Simulator(REG, sorted(REG.schools), seed=seed)
        return [(t, orjson.loads(p)["attrs"]) for _, t, p in unit_messages(sim, 30) if t.endswith("/events")]

    assert run(3) == run(3) and run(3) != run(4)
    sim = simulate.Simulator(REG, sorted(REG.schools))
    assert not any(sim.is_unit_topic(m[0]) for m in (make() for _, make in _first(simulate.schedule(sim, 5, 1), 50)) if m)


def _first(it, n):
    for i, item in enumerate(it):
        if i >= n:
            return
        yield item


def test_the_devices_traffic_of_a_seed_does_not_change_with_units():
    no_units = registry({**REGISTRY, "units": []})

    def background(reg):
        sim = simulate.Simulator(reg, sorted(reg.schools), seed=5)
        return [orjson.loads(m[1])["attrs"] for _, make in _first(simulate.schedule(sim, 10, 0), 20) if (m := make())]

    assert background(no_units) == background(REG)


def test_units_are_chosen_by_the_simulated_schools():
    sim = simulate.Simulator(REG, ["s1"])
    assert [u.id for u in sim.units] == ["car-7"]


def test_a_scenario_may_change_a_units_status_and_it_sticks(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"steps": [{"at": 0, "event": {"device": "car-7", "type": "unit.status", "attrs": {"status": "dispatched"}}}, {"at": 0, "status": {"device": "moto-3", "state": "offline"}}]}))
    _, steps = simulate.load_scenario(path, REG)
    sim = simulate.Simulator(REG, sorted(REG.schools))
    sent = []
    simulate.play(steps, sim, lambda topic, payload, retain=False: sent.append((topic, payload)), threading.Event(), say=lambda _: None)
    assert [t for t, _ in sent] == ["huxue/v1/devices/car-7/events", "huxue/v1/devices/moto-3/status"]
    assert sim.unit_status["car-7"] == "dispatched"
    topic, payload = sim.unit_status_report(REG.unit("car-7"))
    assert orjson.loads(payload)["attrs"] == {"status": "dispatched"}
    assert native.parse_message(topic, payload, retained=False, received_at=R, registry=REG).type == "unit.status"


def test_goodbye_takes_every_unit_offline():
    sim = simulate.Simulator(REG, sorted(REG.schools))
    assert sim.goodbye() == [(f"huxue/v1/devices/{u}/status", b"offline") for u in ("car-7", "foot-1", "moto-3")]


def test_a_units_timestamp_is_in_its_first_schools_timezone():
    sim = simulate.Simulator(REG, sorted(REG.schools))
    _, payload = sim.unit_status_report(REG.unit("car-7"))
    assert orjson.loads(payload)["ts"].endswith("+08:00")
    assert not math.isnan(parse_ts(orjson.loads(payload)["ts"]))
