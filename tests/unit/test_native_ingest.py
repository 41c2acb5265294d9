"""pipeline/ingest/native.py: native MQTT message -> canonical event or rejection."""

from __future__ import annotations

from datetime import datetime

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.ingest.native import SUBSCRIPTIONS, TOPIC, parse_message
from pipeline.records import EVENT_TYPES, CanonicalEvent, Rejection, parse_ts
from pipeline.registry import load_registry
from unit_helpers import build_registry

RECEIVED = parse_ts("2026-11-28T23:41:03.300Z")
REG = build_registry()


def topic(device_id="zx01-btn-1", channel="events"):
    return f"huxue/v1/devices/{device_id}/{channel}"


def parse(payload, *, device_id="zx01-btn-1", channel="events", retained=False, registry=REG, **kw):
    if not isinstance(payload, (bytes, bytearray)):
        payload = orjson.dumps(payload)
    return parse_message(topic(device_id, channel), payload, retained=retained, received_at=RECEIVED, registry=registry, **kw)


def good(**kw):
    body = {"event_id": "b7c1-0001", "type": "panic.pressed", "ts": "2026-11-29T07:41:03.250+08:00", "attrs": {}, "exercise": False}
    body.update(kw)
    return body


def rejected(result, code, device_id="zx01-btn-1"):
    assert isinstance(result, Rejection), result
    assert result.reason_code == code, result
    assert result.reason  # always a human reason
    assert result.device_id == device_id
    return result


# --- good events ----------------------------------------------------------------------


def test_contract_example_becomes_a_canonical_event():
    body = good(media={"snapshot_url": "https://nvr.local/s/1.jpg"})
    ev = parse(body, device_id="zx01-btn-3")
    assert ev == CanonicalEvent(
        event_id="b7c1-0001",
        type="panic.pressed",
        ts="2026-11-28T23:41:03.250Z",
        device_id="zx01-btn-3",
        school_id="zx-01",
        kind="panic_button",
        zone="office",
        source="native",
        mqtt_topic="huxue/v1/devices/zx01-btn-3/events",
        received_at="2026-11-28T23:41:03.300Z",
        attrs={},
        media={"snapshot_url": "https://nvr.local/s/1.jpg"},
        exercise=False,
    )


def test_registry_from_yaml_file_works_the_same(registry_file):
    reg = load_registry(registry_file)
    assert parse(good(), registry=reg) == parse(good())


@pytest.mark.parametrize(
    "ts, expected",
    [
        ("2026-11-29T07:41:03.250+08:00", "2026-11-28T23:41:03.250Z"),
        ("2026-11-28T18:41:03.250-05:00", "2026-11-28T23:41:03.250Z"),
        ("2026-11-28T23:41:03.250Z", "2026-11-28T23:41:03.250Z"),
        ("2026-11-28T23:41:03Z", "2026-11-28T23:41:03.000Z"),
        (1795909263250, "2026-11-28T23:41:03.250Z"),
    ],
)
def test_ts_normalised_to_utc_z(ts, expected):
    ev = parse(good(ts=ts))
    assert isinstance(ev, CanonicalEvent)
    assert ev.ts == expected


def test_zone_from_attrs_overrides_registry():
    ev = parse({"event_id": "v1", "type": "video.intrusion", "ts": 1795909263250, "attrs": {"zone": "playground"}}, device_id="zx01-cam-7")
    assert ev.zone == "playground"
    assert ev.kind == "video_analytics"
    assert ev.attrs == {"zone": "playground"}


@pytest.mark.parametrize("attrs", [{}, {"zone": ""}, {"zone": 5}, None])
def test_zone_falls_back_to_registry(attrs):
    body = {"event_id": "v1", "type": "video.intrusion", "ts": 1795909263250}
    if attrs is not None:
        body["attrs"] = attrs
    ev = parse(body, device_id="zx01-cam-7")
    assert isinstance(ev, CanonicalEvent)
    assert ev.zone == "gate-north"


def test_missing_optional_fields_default():
    ev = parse({"event_id": "e", "type": "panic.pressed", "ts": 1795909263250})
    assert ev.attrs == {} and ev.media is None and ev.exercise is False
    assert "media" not in ev.to_dict()
    ev = parse({"event_id": "e", "type": "panic.pressed", "ts": 1795909263250, "attrs": None, "exercise": None})
    assert ev.attrs == {} and ev.exercise is False


def test_exercise_flag_is_carried():
    assert parse(good(exercise=True)).exercise is True
    assert parse(good(exercise=False)).exercise is False


def test_unknown_fields_are_ignored():
    ev = parse(good(extra={"x": 1}, version=2))
    assert isinstance(ev, CanonicalEvent)
    assert "extra" not in ev.to_dict()


@pytest.mark.parametrize("device_id", ["zx01-btn-1", "zx01-cam-7", "zx01-face-1", "zx01-guard-1"])
def test_any_kind_may_send_tamper_and_heartbeat(device_id):
    assert isinstance(parse({"event_id": "h", "type": "device.heartbeat", "ts": 0, "attrs": {"battery": 87}}, device_id=device_id), CanonicalEvent)
    assert isinstance(parse({"event_id": "t", "type": "device.tamper", "ts": 0}, device_id=device_id), CanonicalEvent)


@pytest.mark.parametrize(
    "device_id, etype, attrs",
    [
        ("zx01-face-1", "face.match", {"watchlist": "w", "person_ref": "p", "similarity": 0.93}),
        ("zx01-face-1", "face.match", {"similarity": 1}),
        ("zx01-lpr-1", "plate.read", {"plate": "苏A12345", "direction": "in"}),
        ("zx01-lpr-1", "plate.read", {"plate": "A1"}),
        ("zx01-guard-1", "guard.checkin", {"post_id": "zx01-gate-n", "officer_id": "o-1"}),
        ("zx01-guard-1", "guard.checkout", {"post_id": "zx01-gate-n", "officer_id": "o-1"}),
        ("zx01-cam-7", "video.crowd", {"count": 0}),
        ("zx01-cam-7", "video.loiter", {"duration_s": 12.5}),
        ("zx01-cam-7", "video.fight", {}),
    ],
)
def test_valid_typed_attrs(device_id, etype, attrs):
    ev = parse({"event_id": "x", "type": etype, "ts": 1795909263250, "attrs": attrs}, device_id=device_id)
    assert isinstance(ev, CanonicalEvent), ev
    assert ev.type == etype and ev.attrs == attrs


# --- status -----------------------------------------------------------------------------


@pytest.mark.parametrize("payload, state", [(b"online", "online"), (b"offline", "offline"), (b" Online\n", "online"), (b"OFFLINE", "offline")])
def test_status_becomes_device_online_offline(payload, state):
    ev = parse(payload, channel="status")
    assert isinstance(ev, CanonicalEvent)
    assert ev.type == f"device.{state}"
    assert ev.ts == ev.received_at == "2026-11-28T23:41:03.300Z"
    assert ev.event_id == f"status-{state}-{int(RECEIVED * 1000)}"
    assert ev.mqtt_topic == topic(channel="status")
    assert ev.school_id == "zx-01" and ev.kind == "panic_button" and ev.zone == "gate-north"
    assert ev.attrs == {}


def test_retained_status_is_accepted_and_marked():
    ev = parse(b"offline", channel="status", retained=True)
    assert isinstance(ev, CanonicalEvent)
    assert ev.type == "device.offline"
    assert ev.attrs == {"retained": True}


@pytest.mark.parametrize("payload", [b"", b"on", b"1", b'{"state":"online"}', b"\xff\xfe"])
def test_bad_status(payload):
    rejected(parse(payload, channel="status"), "bad_status")


# --- rejections ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "t",
    [
        "huxue/v1/devices/zx01-btn-1/other",
        "huxue/v1/devices/zx01-btn-1/events/extra",
        "huxue/v1/devices//events",
        "huxue/v2/devices/zx01-btn-1/events",
        "huxue/v1/devices/bad id/events",
        "huxue/v1/devices/" + "a" * 65 + "/events",
        "frigate/events",
        "",
    ],
)
def test_bad_topic(t):
    r = parse_message(t, orjson.dumps(good()), retained=False, received_at=RECEIVED, registry=REG)
    assert isinstance(r, Rejection) and r.reason_code == "bad_topic"
    assert r.device_id is None


def test_subscriptions_match_the_topic_pattern():
    for sub in SUBSCRIPTIONS:
        assert TOPIC.match(sub.replace("+", "dev-1"))


def test_unknown_device():
    rejected(parse(good(), device_id="zx99-btn-1"), "unknown_device", "zx99-btn-1")
    rejected(parse(b"online", device_id="zx99-btn-1", channel="status"), "unknown_device", "zx99-btn-1")


def test_payload_too_large():
    body = orjson.dumps(good(attrs={"pad": "x" * 200}))
    rejected(parse(body, max_payload_bytes=100), "payload_too_large")
    assert isinstance(parse(body, max_payload_bytes=len(body)), CanonicalEvent)
    rejected(parse(b"online" + b" " * 200, channel="status", max_payload_bytes=100), "payload_too_large")


def test_retained_event_is_a_replay():
    rejected(parse(good(), retained=True), "retained_replay")


@pytest.mark.parametrize("payload", [b"", b"{", b"not json", b'{"a":1,}', b"\xff\xfe{}", b"{'a': 1}", b"[" * 2000 + b"]" * 2000])
def test_bad_json(payload):
    rejected(parse(payload), "bad_json")


@pytest.mark.parametrize("payload", [b"[]", b"[1,2]", b'"x"', b"1", b"null", b"true"])
def test_not_an_object(payload):
    rejected(parse(payload), "not_an_object")


@pytest.mark.parametrize(
    "body",
    [
        {"type": "panic.pressed", "ts": 0},
        {"event_id": None, "type": "panic.pressed", "ts": 0},
        {"event_id": "e", "ts": 0},
        {"event_id": "e", "type": "panic.pressed"},
        {"event_id": "v", "type": "plate.read", "ts": 0, "attrs": {"direction": "in"}},
        {"event_id": "v", "type": "guard.checkin", "ts": 0, "attrs": {"post_id": "p"}},
        {"event_id": "v", "type": "guard.checkout", "ts": 0, "attrs": {"officer_id": "o"}},
    ],
)
def test_missing_field(body):
    device = {"plate.read": "zx01-lpr-1", "guard.checkin": "zx01-guard-1", "guard.checkout": "zx01-guard-1"}.get(body.get("type"), "zx01-btn-1")
    rejected(parse(body, device_id=device), "missing_field", device)


@pytest.mark.parametrize(
    "changes",
    [
        {"event_id": ""},
        {"event_id": "x" * 129},
        {"event_id": 7},
        {"event_id": ["a"]},
        {"ts": "2026-11-29T07:41:03"},  # naive
        {"ts": 1795909263250.0},  # float
        {"ts": True},
        {"ts": None},
        {"ts": "soon"},
        {"ts": -5},
        {"attrs": []},
        {"attrs": "zone"},
        {"media": "https://x"},
        {"media": []},
        {"exercise": "true"},
        {"exercise": 1},
    ],
)
def test_invalid_field(changes):
    rejected(parse(good(**changes)), "invalid_field")


def test_event_id_bounds():
    assert isinstance(parse(good(event_id="x")), CanonicalEvent)
    assert isinstance(parse(good(event_id="x" * 128)), CanonicalEvent)


@pytest.mark.parametrize(
    "device_id, etype, attrs",
    [
        ("zx01-face-1", "face.match", {"similarity": 1.5}),
        ("zx01-face-1", "face.match", {"similarity": True}),
        ("zx01-face-1", "face.match", {"watchlist": 3}),
        ("zx01-lpr-1", "plate.read", {"plate": ""}),
        ("zx01-lpr-1", "plate.read", {"plate": "   "}),
        ("zx01-lpr-1", "plate.read", {"plate": "x" * 33}),
        ("zx01-lpr-1", "plate.read", {"plate": "A1", "direction": "up"}),
        ("zx01-guard-1", "guard.checkin", {"post_id": "", "officer_id": "o"}),
        ("zx01-cam-7", "video.crowd", {"count": -1}),
        ("zx01-cam-7", "video.crowd", {"count": 2.5}),
        ("zx01-cam-7", "video.crowd", {"count": True}),
        ("zx01-cam-7", "video.loiter", {"duration_s": "10"}),
        ("zx01-btn-1", "device.heartbeat", {"battery": 101}),
        ("zx01-btn-1", "device.heartbeat", {"battery": -1}),
    ],
)
def test_invalid_attrs(device_id, etype, attrs):
    r = rejected(parse({"event_id": "x", "type": etype, "ts": 0, "attrs": attrs}, device_id=device_id), "invalid_field", device_id)
    assert "attrs." in r.reason


@pytest.mark.parametrize("etype", ["panic", "PANIC.PRESSED", "device.online", "device.offline", "", 5, "device.unknown", ["panic.pressed"]])
def test_unknown_type(etype):
    rejected(parse(good(type=etype)), "unknown_type")


@pytest.mark.parametrize(
    "device_id, etype",
    [
        ("zx01-cam-7", "panic.pressed"),
        ("zx01-btn-1", "face.match"),
        ("zx01-btn-1", "video.intrusion"),
        ("zx01-face-1", "plate.read"),
        ("zx01-lpr-1", "guard.checkin"),
    ],
)
def test_type_not_allowed(device_id, etype):
    r = rejected(parse({"event_id": "x", "type": etype, "ts": 0}, device_id=device_id), "type_not_allowed", device_id)
    assert etype in r.reason


def test_every_event_type_is_accepted_from_its_kind():
    from pipeline.registry import Device, Registry

    kinds = sorted({k for ks in EVENT_TYPES.values() if ks for k in ks})
    devices = {f"d-{k}": Device(f"d-{k}", "zx-01", k) for k in kinds}
    reg = Registry(schools=REG.schools, devices=devices, external={})
    required = {"plate.read": {"plate": "A1"}, "guard.checkin": {"post_id": "p", "officer_id": "o"}, "guard.checkout": {"post_id": "p", "officer_id": "o"},
                "unit.position": {"lat": 28.2, "lon": 112.9, "speed_kmh": 0, "heading": 0}, "unit.status": {"status": "available"}}
    for etype, allowed in EVENT_TYPES.items():
        for k in kinds:
            r = parse({"event_id": "x", "type": etype, "ts": 0, "attrs": required.get(etype, {})}, device_id=f"d-{k}", registry=reg)
            if allowed is None or k in allowed:
                assert isinstance(r, CanonicalEvent), (etype, k, r)
            else:
                assert isinstance(r, Rejection) and r.reason_code == "type_not_allowed", (etype, k, r)


def test_check_order_retained_before_json():
    # A retained replay is refused before its payload is even parsed.
    rejected(parse(b"garbage", retained=True), "retained_replay")
    # An unknown device is refused before the size check.
    rejected(parse(b"x" * 200, device_id="nobody", max_payload_bytes=10), "unknown_device", "nobody")


# Timestamps a device may send that parse as RFC 3339 with an offset but lie at the very
# edge of datetime's range: converting them to UTC leaves years 1..9999.
@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00+08:00", "9999-12-31T23:59:59-08:00"])
def test_out_of_range_ts_is_a_rejection_not_an_exception(ts):
    rejected(parse(good(ts=ts)), "invalid_field")


# --- property: never raises ------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
ts_values = st.one_of(
    st.integers(min_value=-(2**40), max_value=2**60),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.text(max_size=40),
    # Years 2..9998: the edge of datetime's range is covered by the explicit test above.
    st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(["2026-11-29T07:41:03.250+08:00", "2026-11-28T23:41:03Z", "2026-11-29T07:41:03"]),
)
event_bodies = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.one_of(st.text(max_size=130), json_values),
        "type": st.one_of(st.sampled_from(sorted(EVENT_TYPES) + ["device.online", "x"]), json_values),
        "ts": ts_values,
        "attrs": st.one_of(st.dictionaries(st.sampled_from(["zone", "plate", "battery", "similarity", "count", "post_id", "officer_id", "direction", "duration_s", "level_db"]), json_values, max_size=4), json_values),
        "media": json_values,
        "exercise": json_values,
    },
)
devices = st.sampled_from(sorted(REG.devices) + ["nobody"])


def _check(result):
    assert isinstance(result, (CanonicalEvent, Rejection))
    if isinstance(result, CanonicalEvent):
        assert result.ts.endswith("Z") and result.received_at == "2026-11-28T23:41:03.300Z"
        parse_ts(result.ts)
        orjson.dumps(result.to_dict())
    else:
        assert result.reason_code and result.reason


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=300), device_id=devices, channel=st.sampled_from(["events", "status"]), retained=st.booleans())
def test_arbitrary_bytes_never_raise(payload, device_id, channel, retained):
    _check(parse(payload, device_id=device_id, channel=channel, retained=retained))


@settings(max_examples=300, deadline=None)
@given(payload=json_values, device_id=devices)
def test_arbitrary_json_values_never_raise(payload, device_id):
    _check(parse(orjson.dumps(payload), device_id=device_id))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=event_bodies, device_id=devices)
def test_arbitrary_event_objects_never_raise(body, device_id):
    _check(parse(orjson.dumps(body), device_id=device_id))


@settings(max_examples=200, deadline=None)
@given(topic_text=st.text(max_size=80), payload=st.binary(max_size=50))
def test_arbitrary_topics_never_raise(topic_text, payload):
    result = parse_message(topic_text, payload, retained=False, received_at=RECEIVED, registry=REG)
    assert isinstance(result, (CanonicalEvent, Rejection))
