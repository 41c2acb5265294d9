"""pipeline/ingest/adapters/zigbee2mqtt.py through Bridge.parse (no brokers).

Golden tests replay the verbatim fixtures in ../shared/fixtures/devices/; behaviour tests use
synthetic Zigbee2MQTT state messages (built here: compact JSON with sorted keys, as Zigbee2MQTT
publishes them); property tests feed random JSON and random alarm sequences.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import textwrap
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from device_fixtures import FIXTURES, fixture, fixture_retain
from pipeline.config import AdaptersConfig, Config, FrigateConfig, Zigbee2MqttConfig
from pipeline.ingest.bridge import Bridge
from pipeline.records import EVENT_TYPES, CanonicalEvent, Rejection, parse_ts
from pipeline.registry import Registry, load_registry

# --- helpers --------------------------------------------------------------------------


R = parse_ts("2026-11-29T07:41:03.250+08:00")  # fixed bridge receive time
R_ISO = "2026-11-28T23:41:03.250Z"
R_SECOND = 1795909263

REGISTRY_YAML = textwrap.dedent(
    """\
    schools:
      - {id: zx-01, name: Zixing No.1 Middle School, timezone: Asia/Shanghai}
      - {id: bh-02, name: Binhu Experimental Primary School, timezone: Europe/London}
    devices:
      # the fixtures' names
      - {id: zx01-sos-1, school: zx-01, kind: panic_button, zone: office, external: {zigbee2mqtt: button}}
      - {id: bh02-sos-1, school: bh-02, kind: panic_button, zone: hall, external: {zigbee2mqtt: remote}, press_actions: [hold]}
      # a friendly name with slashes
      - {id: zx01-sos-3, school: zx-01, kind: panic_button, zone: room-101, external: {zigbee2mqtt: school/room101/sos}}
      # an IAS zone SOS button (Feibit SEB01ZB style: boolean sos/tamper)
      - {id: zx01-sos-4, school: zx-01, kind: panic_button, zone: library, external: {zigbee2mqtt: library_sos}}
      # not a panic button: a door contact on the fence
      - {id: zx01-fence-1, school: zx-01, kind: fence, zone: gate-north, external: {zigbee2mqtt: gate_contact}}
      # a second Zigbee2MQTT instance (base topic z2m_east), named <base>/<name>
      - {id: zx01-sos-5, school: zx-01, kind: panic_button, zone: east-hall, external: {zigbee2mqtt: z2m_east/hall_sos}}
      # not a Zigbee2MQTT device
      - {id: zx01-btn-1, school: zx-01, kind: panic_button, zone: office}
    """
)


def yaml_registry(text: str) -> Registry:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "registry.yaml"
        path.write_text(text, encoding="utf-8")
        return load_registry(path)


REG = yaml_registry(REGISTRY_YAML)


def make_bridge(registry: Registry = REG, **z2m: object) -> Bridge:
    """A fresh Bridge (fresh adapter memory); constructing it connects nothing."""
    return Bridge(Config(adapters=AdaptersConfig(frigate=FrigateConfig(), zigbee2mqtt=Zigbee2MqttConfig(**z2m))), registry)






def state(**fields) -> bytes:
    """A Zigbee2MQTT device state message: compact JSON, sorted keys."""
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


def parse(bridge: Bridge, topic: str, payload: bytes, *, retained=False, dup=False, at: float = R):
    return bridge.parse(topic, payload, retained, dup, at)


def types(results) -> list[str]:
    return [r.type if isinstance(r, CanonicalEvent) else f"rejected:{r.reason_code}" for r in results]


def rejected(results, code: str, device_id: str | None = None) -> Rejection:
    assert len(results) == 1 and isinstance(results[0], Rejection), results
    assert results[0].reason_code == code, results[0]
    assert results[0].reason
    assert results[0].device_id == device_id
    return results[0]


def digest(topic: str, payload: bytes) -> str:
    """The documented content hash: sha1 of topic + NUL + payload, 12 hex digits."""
    return hashlib.sha1(topic.encode() + b"\0" + payload).hexdigest()[:12]


def cev(**kw) -> CanonicalEvent:
    base = dict(source="zigbee2mqtt", received_at=R_ISO, attrs={}, media=None, exercise=False)
    base.update(kw)
    return CanonicalEvent(**base)


STATUS_LIKE = {"device.online", "device.offline", "device.heartbeat", "device.tamper"}


def allowed_types(kind: str) -> set[str]:
    return {t for t, kinds in EVENT_TYPES.items() if kinds is None or kind in kinds} | STATUS_LIKE


def assert_well_formed(results, topic: str, at: float = R) -> None:
    assert isinstance(results, list)
    for r in results:
        assert isinstance(r, (CanonicalEvent, Rejection)), r
        if isinstance(r, Rejection):
            assert isinstance(r.reason_code, str) and r.reason_code
            assert isinstance(r.reason, str) and r.reason
            assert r.device_id is None or REG.device(r.device_id) is not None
            continue
        device = REG.device(r.device_id)
        assert device is not None, r
        assert r.school_id == device.school and REG.school(r.school_id) is not None, r
        assert r.kind == device.kind and r.zone == device.zone
        assert r.type in allowed_types(device.kind), r
        assert r.type != "panic.pressed" or device.kind == "panic_button"
        assert 1 <= len(r.event_id) <= 128, r.event_id
        assert 0 <= parse_ts(r.ts) < 253370764800.0  # parseable, in range
        assert parse_ts(r.received_at) <= at + 0.0005  # a DUP replay keeps the first copy's arrival (ms rounding)
        assert r.mqtt_topic == topic and r.source == "zigbee2mqtt"
        orjson.dumps(r.to_dict())


# --- golden: the fixtures ----------------------------------------------------------------

BUTTON = dict(device_id="zx01-sos-1", school_id="zx-01", kind="panic_button", zone="office", mqtt_topic="zigbee2mqtt/button", ts=R_ISO)

GOLDEN: dict[str, list] = {
    # Aqara single click: `single` is a default press action; linkquality in the heartbeat
    "zigbee2mqtt_1": [
        cev(event_id="z2m-zx01-sos-1-89b173e4e0fb-1795909263-press", type="panic.pressed", attrs={"action": "single"}, **BUTTON),
        cev(event_id="z2m-zx01-sos-1-89b173e4e0fb-1795909263-hb", type="device.heartbeat", attrs={"linkquality": 10}, **BUTTON),
    ],
    # the same press with Home Assistant's null properties: nulls are not attributes
    "zigbee2mqtt_2": [
        cev(event_id="z2m-zx01-sos-1-5ec3e080ec91-1795909263-press", type="panic.pressed", attrs={"action": "single"}, **BUTTON),
        cev(event_id="z2m-zx01-sos-1-5ec3e080ec91-1795909263-hb", type="device.heartbeat", attrs={}, **BUTTON),
    ],
    # action "" follow-up: not a press, still a heartbeat
    "zigbee2mqtt_3": [cev(event_id="z2m-zx01-sos-1-ed245f44162c-1795909263-hb", type="device.heartbeat", attrs={}, **BUTTON)],
    # the plain-text /action channel is ignored (the press is read from the state message)
    "zigbee2mqtt_4": [],
    # 2.x JSON availability, retained: status is accepted from retained messages
    "zigbee2mqtt_8": [
        cev(event_id="z2m-bh02-sos-1-online-1795909263250", type="device.online", ts=R_ISO, device_id="bh02-sos-1", school_id="bh-02",
            kind="panic_button", zone="hall", mqtt_topic="zigbee2mqtt/remote/availability", attrs={"retained": True})
    ],
    # the bridge's own state (2.x JSON will, 1.x plain text) and bridge events: ignored
    "zigbee2mqtt_9": [],
    "zigbee2mqtt_10": [],
    "zigbee2mqtt_11": [],
}


def test_every_zigbee2mqtt_fixture_has_a_golden_expectation():
    assert FIXTURES.is_dir(), f"device fixtures not found at {FIXTURES} (set HUXUE_DEVICE_FIXTURES)"
    assert {p.stem for p in FIXTURES.glob("zigbee2mqtt_*.topic")} == set(GOLDEN)
    assert set(GOLDEN) <= set(fixture_retain())


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_fixture(name):
    topic, payload = fixture(name)
    assert parse(make_bridge(), topic, payload, retained=fixture_retain()[name]) == GOLDEN[name]


def test_golden_fixture_topics_match_the_readme():
    for line in (FIXTURES / "README.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\| (zigbee2mqtt_\w+)\.(?:json|raw) \| ([^|]+) \|", line)
        if m:
            assert fixture(m.group(1))[0] == m.group(2).strip()


def test_golden_ids_follow_the_documented_rule():
    for name in ("zigbee2mqtt_1", "zigbee2mqtt_2", "zigbee2mqtt_3"):
        topic, payload = fixture(name)
        for ev in parse(make_bridge(), topic, payload):
            assert ev.event_id.startswith(f"z2m-zx01-sos-1-{digest(topic, payload)}-{R_SECOND}-")


def test_golden_one_press_on_three_channels_is_one_press():
    """A press arrives as the state message, an `action: ""` follow-up and the /action topic."""
    b = make_bridge()
    out = [parse(b, *fixture(n), at=R + i * 0.01) for i, n in enumerate(("zigbee2mqtt_2", "zigbee2mqtt_3", "zigbee2mqtt_4"))]
    assert [types(r) for r in out] == [["panic.pressed", "device.heartbeat"], ["device.heartbeat"], []]


def test_golden_availability_not_retained_and_1x_plain_text():
    b = make_bridge()
    [live] = parse(b, *fixture("zigbee2mqtt_8"), retained=False)
    assert (live.type, live.attrs) == ("device.online", {})
    [plain] = parse(b, "zigbee2mqtt/remote/availability", fixture("zigbee2mqtt_10")[1], retained=True)
    assert (plain.type, plain.device_id, plain.attrs) == ("device.online", "bh02-sos-1", {"retained": True})
    [down] = parse(b, "zigbee2mqtt/remote/availability", fixture("zigbee2mqtt_9")[1], retained=True)
    assert (down.type, down.event_id) == ("device.offline", "z2m-bh02-sos-1-offline-1795909263250")


def test_golden_retained_state_is_a_replay():
    topic, payload = fixture("zigbee2mqtt_1")
    rejected(parse(make_bridge(), topic, payload, retained=True), "retained_replay", "zx01-sos-1")


# --- presses ---------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["emergency", "sos", "panic", "single", "double", "long"])
def test_default_press_actions(action):
    b = make_bridge()
    out = parse(b, "zigbee2mqtt/button", state(action=action, battery=97, linkquality=120))
    assert types(out) == ["panic.pressed", "device.heartbeat"]
    assert out[0].attrs == {"action": action}
    assert out[1].attrs == {"battery": 97, "linkquality": 120}


@pytest.mark.parametrize("action", ["", None, "hold", "release", "triple", "arm_all_zones", "disarm", "single_left", "SINGLE", 1, True, ["sos"]])
def test_other_actions_are_not_presses_but_still_heartbeats(action):
    out = parse(make_bridge(), "zigbee2mqtt/button", state(action=action, battery=80))
    assert types(out) == ["device.heartbeat"]
    assert out[0].attrs == {"battery": 80}


def test_state_report_without_action_is_a_heartbeat():
    out = parse(make_bridge(), "zigbee2mqtt/button", state(battery=64, device_temperature=24, linkquality=87, voltage=2985))
    assert types(out) == ["device.heartbeat"]
    assert out[0].attrs == {"battery": 64, "linkquality": 87}


def test_device_press_actions_override_the_defaults():
    b = make_bridge()
    assert types(parse(b, "zigbee2mqtt/remote", state(action="hold"))) == ["panic.pressed", "device.heartbeat"]
    for action in ("single", "emergency", "sos"):
        assert types(parse(b, "zigbee2mqtt/remote", state(action=action))) == ["device.heartbeat"]


def test_configured_press_actions_replace_the_defaults():
    b = make_bridge(press_actions=("triple",))
    assert types(parse(b, "zigbee2mqtt/button", state(action="triple"))) == ["panic.pressed", "device.heartbeat"]
    assert types(parse(b, "zigbee2mqtt/button", state(action="single"))) == ["device.heartbeat"]
    # a device's own list still wins
    assert types(parse(b, "zigbee2mqtt/remote", state(action="hold"))) == ["panic.pressed", "device.heartbeat"]


def test_non_panic_button_devices_never_press():
    b = make_bridge()
    for msg in (state(action="emergency"), state(action="single"), state(sos=True), state(alarm_1=True, alarm=True, alarm_2=True)):
        out = parse(b, "zigbee2mqtt/gate_contact", msg)
        assert types(out) == ["device.heartbeat"]
        assert out[0].kind == "fence" and out[0].device_id == "zx01-fence-1"


def test_non_panic_button_devices_still_report_tamper():
    b = make_bridge()
    assert types(parse(b, "zigbee2mqtt/gate_contact", state(contact=True, tamper=True))) == ["device.tamper", "device.heartbeat"]


@pytest.mark.parametrize("field", ["sos", "alarm", "alarm_1", "alarm_2"])
def test_alarm_booleans_press_on_the_rising_edge_only(field):
    b = make_bridge()
    seq = [True, True, False, True, None, True, False, False, True]
    presses = []
    for i, value in enumerate(seq):
        fields = {field: value, "battery": 90, "tamper": False}
        if value is None:
            del fields[field]
        out = parse(b, "zigbee2mqtt/library_sos", state(**fields), at=R + i)
        presses.append(types(out).count("panic.pressed"))
        assert types(out)[-1] == "device.heartbeat"
    assert presses == [1, 0, 0, 1, 0, 0, 0, 0, 1]


def test_sos_true_true_is_one_press_and_true_false_true_is_two():
    b = make_bridge()
    first = [parse(b, "zigbee2mqtt/library_sos", state(sos=True, battery=90), at=R + i) for i in range(2)]
    assert [types(r).count("panic.pressed") for r in first] == [1, 0]
    b = make_bridge()
    second = [parse(b, "zigbee2mqtt/library_sos", state(sos=v, battery=90), at=R + i) for i, v in enumerate((True, False, True))]
    presses = [e for r in second for e in r if e.type == "panic.pressed"]
    assert len(presses) == 2 and presses[0].event_id != presses[1].event_id
    assert presses[0].attrs == {"alarm": "sos"}


def test_alarm_edges_are_per_device():
    b = make_bridge()
    assert types(parse(b, "zigbee2mqtt/library_sos", state(sos=True)))[0] == "panic.pressed"
    assert types(parse(b, "zigbee2mqtt/button", state(sos=True)))[0] == "panic.pressed"


def test_alarm_and_press_action_in_one_message_is_one_press():
    out = parse(make_bridge(), "zigbee2mqtt/library_sos", state(action="emergency", sos=True))
    assert types(out) == ["panic.pressed", "device.heartbeat"]
    assert out[0].attrs == {"action": "emergency"}


@pytest.mark.parametrize("value", ["true", 1, "ON", [True]])
def test_non_boolean_alarm_values_are_not_presses(value):
    assert types(parse(make_bridge(), "zigbee2mqtt/library_sos", state(sos=value))) == ["device.heartbeat"]


def test_tamper_rising_edge():
    b = make_bridge()
    seq = [True, True, False, True]
    out = [parse(b, "zigbee2mqtt/library_sos", state(tamper=v, sos=False), at=R + i) for i, v in enumerate(seq)]
    assert [types(r) for r in out] == [
        ["device.tamper", "device.heartbeat"], ["device.heartbeat"], ["device.heartbeat"], ["device.tamper", "device.heartbeat"]
    ]
    assert out[0][0].attrs == {} and out[0][0].event_id.endswith("-tamper")


@pytest.mark.parametrize(
    "fields, attrs",
    [
        ({"battery": 100, "linkquality": 255}, {"battery": 100, "linkquality": 255}),
        ({"battery": 140}, {"battery": 100}),  # clamped
        ({"battery": -3}, {"battery": 0}),
        ({"battery": 55.5, "linkquality": 0}, {"battery": 55.5, "linkquality": 0}),
        ({"battery": "97", "linkquality": None}, {}),
        ({"battery": True, "linkquality": False}, {}),
        ({"battery_low": True, "voltage": 2900}, {}),
    ],
)
def test_heartbeat_attributes(fields, attrs):
    [hb] = parse(make_bridge(), "zigbee2mqtt/library_sos", state(**fields))
    assert hb.type == "device.heartbeat" and hb.attrs == attrs


# --- availability, ignored topics, names ---------------------------------------------------


@pytest.mark.parametrize("retained", [False, True])
@pytest.mark.parametrize(
    "payload, etype",
    [(b"online", "device.online"), (b"offline", "device.offline"), (b'{"state":"online"}', "device.online"),
     (b'{"state":"offline"}', "device.offline"), (b"Online", "device.online"), (b'{"state": "offline", "extra": 1}', "device.offline")],
)
def test_availability_both_formats(payload, etype, retained):
    [ev] = parse(make_bridge(), "zigbee2mqtt/button/availability", payload, retained=retained)
    assert ev == cev(event_id=f"z2m-zx01-sos-1-{etype.split('.')[1]}-1795909263250", type=etype, ts=R_ISO, device_id="zx01-sos-1",
                     school_id="zx-01", kind="panic_button", zone="office", mqtt_topic="zigbee2mqtt/button/availability",
                     attrs={"retained": True} if retained else {})


@pytest.mark.parametrize("payload", [b"", b"maybe", b'{"state":"unknown"}', b"{not json", b"\xff\xfe"])
def test_bad_availability_is_bad_status(payload):
    rejected(parse(make_bridge(), "zigbee2mqtt/button/availability", payload), "bad_status", "zx01-sos-1")


def test_availability_of_an_unknown_name_is_unknown_device():
    rej = rejected(parse(make_bridge(), "zigbee2mqtt/hallway_light/availability", b'{"state":"online"}', retained=True), "unknown_device")
    assert "hallway_light" in rej.reason


@pytest.mark.parametrize(
    "topic, payload",
    [
        ("zigbee2mqtt/bridge/state", b'{"state":"online"}'),
        ("zigbee2mqtt/bridge/info", b'{"version":"2.12.1"}'),
        ("zigbee2mqtt/bridge/devices", b"[]"),
        ("zigbee2mqtt/bridge/logging", b'{"level":"info","message":"x"}'),
        ("zigbee2mqtt/bridge/request/permit_join", b'{"time":254}'),
        ("zigbee2mqtt/bridge/response/permit_join", b'{"status":"ok"}'),
        ("zigbee2mqtt/bridge", b"online"),
        ("zigbee2mqtt/button/set", b'{"state":"ON"}'),
        ("zigbee2mqtt/button/get", b'{"state":""}'),
        ("zigbee2mqtt/button/set/state", b"ON"),
        ("zigbee2mqtt/button/action", b"single"),
        ("zigbee2mqtt/school/room101/sos/action", b"emergency"),
        ("zigbee2mqtt/school/room101/sos/set", b'{"state":"ON"}'),
        ("zigbee2mqtt/unknown_device/set", b"{}"),
    ],
)
def test_bridge_and_command_topics_are_ignored(topic, payload):
    for retained in (False, True):
        assert parse(make_bridge(), topic, payload, retained=retained) == []


@pytest.mark.parametrize("topic", ["zigbee2mqtt/button/get/state", "zigbee2mqtt/school/room101/sos/get/battery"])
def test_get_with_an_attribute_is_a_command_too(topic):
    # Zigbee2MQTT's command topics are <name>[/<endpoint>]/(get|set)[/<attribute>]
    # (lib/extension/publish.ts); /set/<attribute> is ignored, /get/<attribute> must be too.
    assert parse(make_bridge(), topic, b"") == []


def test_friendly_names_with_slashes():
    b = make_bridge()
    out = parse(b, "zigbee2mqtt/school/room101/sos", state(action="emergency", battery=76))
    assert types(out) == ["panic.pressed", "device.heartbeat"]
    assert {(e.device_id, e.zone, e.mqtt_topic) for e in out} == {("zx01-sos-3", "room-101", "zigbee2mqtt/school/room101/sos")}
    [up] = parse(b, "zigbee2mqtt/school/room101/sos/availability", b'{"state":"online"}', retained=True)
    assert (up.device_id, up.type) == ("zx01-sos-3", "device.online")
    # a prefix or extension of the name is another (unknown) name
    rejected(parse(b, "zigbee2mqtt/school/room101", state(action="emergency")), "unknown_device")
    rejected(parse(b, "zigbee2mqtt/school/room101/sos/extra", state(action="emergency")), "unknown_device")


def test_unknown_names_are_unknown_device():
    b = make_bridge()
    rej = rejected(parse(b, "zigbee2mqtt/0x90fd9ffffe6494fc", state(action="single")), "unknown_device")
    assert "0x90fd9ffffe6494fc" in rej.reason
    # a registry device without a zigbee2mqtt name is not reachable by its id
    rejected(parse(b, "zigbee2mqtt/zx01-btn-1", state(action="single")), "unknown_device")
    # unknown devices: even a retained message is reported as unknown, not as a replay
    rejected(parse(b, "zigbee2mqtt/0x90fd9ffffe6494fc", state(action="single"), retained=True), "unknown_device")


def test_retained_state_is_a_replay_and_not_a_press():
    b = make_bridge()
    rejected(parse(b, "zigbee2mqtt/button", state(action="emergency"), retained=True), "retained_replay", "zx01-sos-1")
    rejected(parse(b, "zigbee2mqtt/library_sos", state(sos=True), retained=True), "retained_replay", "zx01-sos-4")


@pytest.mark.parametrize("payload, code", [(b"single", "bad_json"), (b"{", "bad_json"), (b"", "bad_json"), (b"\xff", "bad_json"),
                                           (b"[]", "not_an_object"), (b'"single"', "not_an_object"), (b"42", "not_an_object")])
def test_unparseable_state_is_rejected(payload, code):
    rejected(parse(make_bridge(), "zigbee2mqtt/button", payload), code, "zx01-sos-1")


def test_several_base_topics():
    b = make_bridge(base_topics=("zigbee2mqtt", "z2m_east"))
    assert {"zigbee2mqtt/#", "z2m_east/#"} <= set(b.subscriptions)
    out = parse(b, "z2m_east/hall_sos", state(action="sos"))
    assert types(out) == ["panic.pressed", "device.heartbeat"] and out[0].device_id == "zx01-sos-5"
    # plain names resolve under any base
    assert parse(b, "z2m_east/button", state(action="sos"))[0].device_id == "zx01-sos-1"
    assert parse(b, "z2m_east/bridge/state", b"online") == []
    [up] = parse(b, "z2m_east/hall_sos/availability", b"online", retained=True)
    assert up.device_id == "zx01-sos-5"
    # not a configured base: no parser
    assert types(parse(make_bridge(), "z2m_east/hall_sos", state(action="sos"))) == ["rejected:bad_topic"]


def test_disabled_adapter_parses_nothing():
    b = make_bridge(enabled=False)
    assert "zigbee2mqtt/#" not in b.subscriptions
    assert types(parse(b, "zigbee2mqtt/button", state(action="sos"))) == ["rejected:bad_topic"]


# --- event ids and redelivery ------------------------------------------------------------------


@pytest.mark.parametrize("last_seen", ["2026-11-28T23:41:02.917Z", 1795909262917, "2026-11-29T07:41:02+08:00", 1795909262.917])
def test_with_last_seen_the_id_is_stable_across_deliveries(last_seen):
    msg = state(action="single", battery=90, last_seen=last_seen, linkquality=99)
    b = make_bridge()
    first = parse(b, "zigbee2mqtt/button", msg)
    assert [e.event_id for e in first] == [f"z2m-zx01-sos-1-{last_seen}-press", f"z2m-zx01-sos-1-{last_seen}-hb"]
    # a redelivery (DUP) is the first result again; a late copy without DUP and another
    # bridge replica agree on the ids
    assert parse(b, "zigbee2mqtt/button", msg, dup=True, at=R + 2) == first
    assert [e.event_id for e in parse(b, "zigbee2mqtt/button", msg, at=R + 3600)] == [e.event_id for e in first]
    assert [e.event_id for e in parse(make_bridge(), "zigbee2mqtt/button", msg, at=R + 5)] == [e.event_id for e in first]


def test_with_last_seen_two_presses_have_two_ids():
    b = make_bridge()
    a = parse(b, "zigbee2mqtt/button", state(action="single", last_seen="2026-11-28T23:41:02.917Z"))
    c = parse(b, "zigbee2mqtt/button", state(action="single", last_seen="2026-11-28T23:41:03.402Z"), at=R + 0.5)
    assert a[0].event_id != c[0].event_id and a[0].type == c[0].type == "panic.pressed"


def test_without_last_seen_dup_redelivery_reuses_the_first_id():
    b = make_bridge()
    msg = state(action="emergency", battery=90)
    first = parse(b, "zigbee2mqtt/button", msg)
    assert first[0].event_id == f"z2m-zx01-sos-1-{digest('zigbee2mqtt/button', msg)}-{R_SECOND}-press"
    for delay in (1.0, 59.0, 599.0):
        again = parse(b, "zigbee2mqtt/button", msg, dup=True, at=R + delay)
        assert [e.event_id for e in again] == [e.event_id for e in first]
        assert types(again) == ["panic.pressed", "device.heartbeat"]


def test_without_last_seen_a_new_identical_press_a_second_later_is_new():
    b = make_bridge()
    msg = state(action="emergency", battery=90)
    first = parse(b, "zigbee2mqtt/button", msg)
    second = parse(b, "zigbee2mqtt/button", msg, at=R + 1)
    assert second[0].event_id == f"z2m-zx01-sos-1-{digest('zigbee2mqtt/button', msg)}-{R_SECOND + 1}-press"
    assert second[0].event_id != first[0].event_id
    # and a DUP copy of the second press now reuses the second's id
    assert parse(b, "zigbee2mqtt/button", msg, dup=True, at=R + 3)[0].event_id == second[0].event_id


def test_without_last_seen_dup_replay_memory_is_bounded():
    from pipeline.ingest.router import REPLAY_MEMORY

    b = make_bridge()
    msg = state(action="emergency")
    first = parse(b, "zigbee2mqtt/button", msg)
    for i in range(REPLAY_MEMORY):  # other messages push the first one out
        parse(b, "zigbee2mqtt/button", state(action="", linkquality=i), at=R + 1)
    late = parse(b, "zigbee2mqtt/button", msg, dup=True, at=R + 601)
    assert late[0].event_id == f"z2m-zx01-sos-1-{digest('zigbee2mqtt/button', msg)}-{R_SECOND + 601}-press" != first[0].event_id


def test_without_last_seen_different_payloads_or_devices_have_different_ids():
    b = make_bridge()
    a = parse(b, "zigbee2mqtt/button", state(action="emergency", battery=90))
    c = parse(b, "zigbee2mqtt/button", state(action="emergency", battery=89), dup=True)
    d = parse(b, "zigbee2mqtt/library_sos", state(action="emergency", battery=90), dup=True)
    assert len({a[0].event_id, c[0].event_id, d[0].event_id}) == 3


def test_press_heartbeat_and_tamper_ids_differ_within_a_message():
    out = parse(make_bridge(), "zigbee2mqtt/library_sos", state(sos=True, tamper=True, last_seen=1795909262917))
    assert types(out) == ["panic.pressed", "device.tamper", "device.heartbeat"]
    assert [e.event_id for e in out] == ["z2m-zx01-sos-4-1795909262917-press", "z2m-zx01-sos-4-1795909262917-tamper",
                                         "z2m-zx01-sos-4-1795909262917-hb"]


# The bridge acknowledges an MQTT message only once Kafka confirmed its records; when Kafka fails
# it reconnects and the broker redelivers the message with DUP set, to the same Bridge object.
# Downstream de-duplicates on (device_id, event_id), so a redelivered SOS message must give its
# press again (same id): otherwise the press whose Kafka record failed is lost.


@pytest.mark.parametrize("last_seen", [None, "2026-11-28T23:41:02.917Z"])
@pytest.mark.parametrize("field, etype", [("sos", "panic.pressed"), ("alarm_1", "panic.pressed"), ("tamper", "device.tamper")])
def test_dup_redelivery_of_an_alarm_edge_gives_it_again(field, etype, last_seen):
    b = make_bridge()
    fields = {field: True, "battery": 88}
    if last_seen:
        fields["last_seen"] = last_seen
    msg = state(**fields)
    first = parse(b, "zigbee2mqtt/library_sos", msg)
    assert types(first) == [etype, "device.heartbeat"]
    again = parse(b, "zigbee2mqtt/library_sos", msg, dup=True, at=R + 2)
    assert [(e.type, e.event_id) for e in again] == [(e.type, e.event_id) for e in first]


def test_dup_redelivery_of_an_action_press_gives_it_again():
    b = make_bridge()
    msg = state(action="emergency", battery=88)
    first = parse(b, "zigbee2mqtt/library_sos", msg)
    again = parse(b, "zigbee2mqtt/library_sos", msg, dup=True, at=R + 2)
    assert [(e.type, e.event_id) for e in again] == [(e.type, e.event_id) for e in first]


# --- timestamps from last_seen ----------------------------------------------------------------


@pytest.mark.parametrize(
    "device, last_seen, expected",
    [
        ("button", 1752745201.513, "2025-07-17T09:40:01.513Z"),  # float epoch seconds
        ("button", 1752745201513, "2025-07-17T09:40:01.513Z"),  # epoch ms (advanced.last_seen: epoch)
        ("button", 1752745201, "2025-07-17T09:40:01.000Z"),  # integer epoch seconds
        ("button", "2019-03-01T15:32:45.941Z", "2019-03-01T15:32:45.941Z"),  # ISO_8601
        ("button", "2024-09-02T07:45:10+08:00", "2024-09-01T23:45:10.000Z"),  # ISO_8601_local
        ("remote", "2024-09-02T07:45:10+08:00", "2024-09-01T23:45:10.000Z"),  # the offset wins over the school's zone
        ("button", "2024-09-02T07:45:10", "2024-09-01T23:45:10.000Z"),  # naive -> zx-01 Asia/Shanghai
        ("remote", "2024-09-02T07:45:10", "2024-09-02T06:45:10.000Z"),  # naive -> bh-02 Europe/London (BST)
        ("remote", "2024-12-02 07:45:10", "2024-12-02T07:45:10.000Z"),  # naive, space, London winter (GMT)
        ("button", "not a time", R_ISO),  # unparseable -> arrival
        ("button", None, R_ISO),
        ("button", True, R_ISO),
        ("button", -1, R_ISO),
        ("button", 10**15, R_ISO),
    ],
)
def test_ts_from_last_seen_in_every_format(device, last_seen, expected):
    out = parse(make_bridge(), f"zigbee2mqtt/{device}", state(action="hold" if device == "remote" else "single", last_seen=last_seen))
    assert types(out) == ["panic.pressed", "device.heartbeat"]
    assert [e.ts for e in out] == [expected, expected]
    assert all(e.received_at == R_ISO for e in out)


@pytest.mark.parametrize("last_seen", ["1970-01-01T00:00:05", "1900-01-01T00:00:00", "0001-01-01T00:00:00", "9999-12-31T23:59:59",
                                       -1e306, -0.0005])
def test_last_seen_out_of_range_falls_back_to_arrival(last_seen):
    # e.g. a device whose clock was never set; the press must survive with a usable ts
    out = parse(make_bridge(), "zigbee2mqtt/button", state(action="emergency", last_seen=last_seen))
    assert types(out) == ["panic.pressed", "device.heartbeat"]
    assert [e.ts for e in out] == [R_ISO, R_ISO]


# --- properties ------------------------------------------------------------------------------

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12)
)
json_values = st.recursive(
    json_leaf, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c, max_size=4)), max_leaves=10
)


def mostly(good, odd, tenths: int = 8):
    """`good` in `tenths`/10 of the draws, else `odd`."""
    return st.integers(0, 9).flatmap(lambda i: good if i < tenths else odd)


times = st.one_of(
    json_leaf,
    st.floats(0, 4e9, allow_nan=False),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(0, 10**14),
    st.datetimes().map(lambda d: d.isoformat()),  # naive local
    st.datetimes().map(lambda d: d.isoformat(timespec="milliseconds") + "Z"),
    st.datetimes().map(lambda d: d.isoformat(timespec="seconds") + "+08:00"),
)
NAMES = ("button", "remote", "school/room101/sos", "library_sos", "gate_contact", "z2m_east/hall_sos", "hallway_light", "zx01-btn-1")
ACTIONS = ("emergency", "sos", "panic", "single", "double", "long", "hold", "", None, "arm_all_zones", "single_left")
z2m_state = st.fixed_dictionaries(
    {},
    optional={
        "action": mostly(st.sampled_from(ACTIONS), json_values),
        "sos": mostly(st.booleans(), json_values),
        "alarm_1": mostly(st.booleans(), json_values),
        "tamper": mostly(st.booleans(), json_values),
        "battery": mostly(st.integers(-10, 150), json_values),
        "linkquality": mostly(st.integers(0, 255), json_values),
        "last_seen": times,
        "battery_low": json_values,
        "voltage": json_values,
    },
)
state_topic = st.sampled_from(NAMES).map(lambda n: f"zigbee2mqtt/{n}")
z2m_message = st.tuples(
    st.one_of(
        st.tuples(state_topic, mostly(z2m_state, json_values, 9).map(lambda b: orjson.dumps(b, option=orjson.OPT_SORT_KEYS))),
        st.tuples(state_topic, mostly(z2m_state, json_values, 9).map(lambda b: orjson.dumps(b, option=orjson.OPT_SORT_KEYS))),
        st.tuples(st.sampled_from(NAMES).map(lambda n: f"zigbee2mqtt/{n}/availability"),
                  st.one_of(st.sampled_from([b"online", b"offline", b'{"state":"online"}', b'{"state":"offline"}']),
                            json_values.map(orjson.dumps), st.binary(max_size=16))),
        st.tuples(st.sampled_from(("zigbee2mqtt/bridge/state", "zigbee2mqtt/bridge/event", "zigbee2mqtt/button/set", "zigbee2mqtt/button/get",
                                   "zigbee2mqtt/button/action", "zigbee2mqtt/", "zigbee2mqtt/bridge")),
                  st.one_of(json_values.map(orjson.dumps), st.binary(max_size=32))),
        st.tuples(st.one_of(state_topic, st.text(max_size=20).map(lambda t: f"zigbee2mqtt/{t}")),
                  st.one_of(json_values.map(orjson.dumps), st.binary(max_size=64))),
    ),
    mostly(st.just(False), st.just(True)),  # retained
    st.booleans(),  # dup
    st.floats(0, 1200, allow_nan=False),  # arrival offset
)


# Inputs hypothesis found, kept as explicit examples so the failure is immediate and certain:
# a naive last_seen before 1970 (unparseable ts), in year 1 (ValueError from iso_utc), and a huge
# negative epoch (OverflowError from any_ts).
@example([(("zigbee2mqtt/button", state(action="sos", last_seen="1969-12-31T23:00:00")), False, False, 0.0)])
@example([(("zigbee2mqtt/button", state(last_seen="0001-01-01T00:00:00")), False, False, 0.0)])
@example([(("zigbee2mqtt/button", state(last_seen=-1e306)), False, False, 0.0)])
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(z2m_message, min_size=1, max_size=5))
def test_random_input_on_zigbee2mqtt_topics_never_raises_and_is_well_formed(messages):
    b = make_bridge(base_topics=("zigbee2mqtt", "z2m_east"))
    for (topic, payload), retained, dup, offset in sorted(messages, key=lambda m: m[3]):
        results = b.parse(topic, payload, retained, dup, R + offset)
        assert_well_formed(results, topic, R + offset)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(NAMES + ("bridge/state", "button/availability", "button/set")), st.booleans(), st.booleans())
def test_random_bytes_never_raise(payload, name, retained, dup):
    topic = f"zigbee2mqtt/{name}"
    assert_well_formed(make_bridge().parse(topic, payload, retained, dup, R), topic)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from((True, False, None, "absent", "true", 1)), st.sampled_from((True, False, "absent"))),
                min_size=1, max_size=15))
def test_random_alarm_sequences_press_once_per_rising_edge(steps):
    """Model: a press for each false/absent->true transition of the boolean `sos`
    (non-booleans leave the remembered value alone), same for tamper; ids never repeat."""
    b = make_bridge()
    last = {"sos": False, "tamper": False}
    ids: set[str] = set()
    for i, (sos, tamper) in enumerate(steps):
        fields = {k: v for k, v in (("sos", sos), ("tamper", tamper)) if v != "absent"}
        fields["battery"] = 90
        out = parse(b, "zigbee2mqtt/library_sos", state(**fields), at=R + i)
        expected = []
        if isinstance(sos, bool):
            if sos and not last["sos"]:
                expected.append("panic.pressed")
            last["sos"] = sos
        if isinstance(tamper, bool):
            if tamper and not last["tamper"]:
                expected.append("device.tamper")
            last["tamper"] = tamper
        assert types(out) == expected + ["device.heartbeat"]
        for e in out:
            assert e.event_id not in ids
            ids.add(e.event_id)


@settings(max_examples=200, deadline=None)
@given(z2m_state, st.floats(0, 599, allow_nan=False), st.booleans())
def test_redelivered_copies_keep_their_ids(body, delay, has_last_seen):
    """A DUP copy within 10 minutes gives the first copy's ids (heartbeat and any action press)."""
    body = dict(body)
    body.pop("sos", None), body.pop("alarm_1", None), body.pop("tamper", None)  # edges: see the redelivery tests above
    if has_last_seen:
        body["last_seen"] = "2026-11-28T23:41:02.917Z"
    else:
        body.pop("last_seen", None)
    msg = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    b = make_bridge()
    first = parse(b, "zigbee2mqtt/button", msg)
    again = parse(b, "zigbee2mqtt/button", msg, dup=True, at=R + delay)
    assert [(e.type, e.event_id, e.ts if has_last_seen else None) for e in again] == [
        (e.type, e.event_id, e.ts if has_last_seen else None) for e in first
    ]
