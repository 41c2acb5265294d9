"""pipeline/ingest/shape.py and its use by native.py: hostile attrs become reasons, never exceptions."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.ingest import shape
from pipeline.ingest.native import parse_message
from pipeline.records import CanonicalEvent, Rejection, dumps, parse_ts
from unit_helpers import build_registry

REG = build_registry()
RECEIVED = parse_ts("2026-11-28T23:41:03.300Z")
TOPIC = "huxue/v1/devices/zx01-cam-8/events"


def nested(depth: int) -> dict:
    """attrs with `depth` containers: {"x": [[...]]} ({} alone is depth 1)."""
    inner: list | dict = []
    for _ in range(depth - 2):
        inner = [inner]
    return {"x": inner} if depth >= 2 else {}


def raw_nested(depth: int) -> bytes:
    return b'{"x":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


def event(attrs: object = None, media: object = None, raw_attrs: bytes | None = None) -> bytes:
    body = {"event_id": "e1", "type": "video.fall", "ts": "2026-11-28T23:41:03.250Z"}
    if media is not None:
        body["media"] = media
    if raw_attrs is not None:
        return dumps(body)[:-1] + b',"attrs":' + raw_attrs + b"}"
    if attrs is not None:
        body["attrs"] = attrs
    return dumps(body)


def parse(payload: bytes, limits: shape.Limits = shape.DEFAULT):
    return parse_message(TOPIC, payload, retained=False, received_at=RECEIVED, registry=REG, limits=limits)


def code(result) -> str:
    assert isinstance(result, Rejection), result
    assert result.reason and result.device_id == "zx01-cam-8"
    return result.reason_code


# --- the module -----------------------------------------------------------------------


def test_depth_is_counted_in_containers():
    assert shape.check({}) is None
    assert shape.check(nested(16)) is None
    assert shape.check(nested(17)).reason_code == "too_deep"
    assert shape.check(nested(3), shape.Limits(max_depth=2)).reason_code == "too_deep"


def test_items_are_counted_over_the_whole_value():
    assert shape.check({"a": list(range(999))}) is None  # 1 key + 999 items
    assert shape.check({"a": list(range(1000))}).reason_code == "too_many_items"
    assert shape.check({f"k{i}": {"x": 1} for i in range(500)}) is None
    assert shape.check({f"k{i}": {"x": 1} for i in range(501)}).reason_code == "too_many_items"


def test_strings_and_keys_are_limited():
    assert shape.check({"s": "x" * 4096}) is None
    assert shape.check({"s": "x" * 4097}).reason_code == "string_too_long"
    assert shape.check({"k" * 4097: 1}).reason_code == "string_too_long"
    assert shape.check({"s": ["ok", "y" * 11]}, shape.Limits(max_string_chars=10)).reason_code == "string_too_long"


@pytest.mark.parametrize("n", [2**53, -(2**53), 0, 1.5, -1e15, 2.0**53])
def test_numbers_within_2_53_pass(n):
    assert shape.check({"n": n}) is None


@pytest.mark.parametrize("n", [2**53 + 1, -(2**53) - 1, 2**64, 2**70, 1e16, -1e300, math.inf, -math.inf, math.nan])
def test_numbers_beyond_2_53_or_not_finite_are_out_of_range(n):
    assert shape.check({"n": [n]}).reason_code == "number_out_of_range"


def test_values_json_cannot_carry_are_unserialisable():
    assert shape.check({"b": b"bytes"}).reason_code == "unserialisable"
    assert shape.check({1: "non-string key"}).reason_code == "unserialisable"
    assert shape.check({"o": object()}).reason_code == "unserialisable"


def test_deep_values_are_inspected_without_recursion():
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert shape.check(deep).reason_code == "too_deep"


# --- native events --------------------------------------------------------------------


def test_300_deep_attrs_are_too_deep_not_a_crash():
    assert code(parse(event(raw_attrs=raw_nested(300)))) == "too_deep"


def test_16_deep_attrs_pass_17_do_not():
    ok = parse(event(nested(16)))
    assert isinstance(ok, CanonicalEvent)
    dumps(ok.to_dict())  # and it serialises
    assert code(parse(event(nested(17)))) == "too_deep"


def test_media_is_limited_too():
    assert code(parse(event(media={"u": "x" * 5000}))) == "string_too_long"
    assert code(parse(event(media={"u": [{}] * 2000}))) == "too_many_items"


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"9007199254740993", "number_out_of_range"),  # 2^53 + 1: an int orjson keeps
        (b"18446744073709551615", "number_out_of_range"),  # 2^64 - 1: still an int
        (b"18446744073709551616", "number_out_of_range"),  # 2^64: orjson reads it as a float
        (b"-9223372036854775809", "number_out_of_range"),  # below int64: a float too
        (b"100000000000000000000000000000000000000000", "number_out_of_range"),
        (b"1e400", "bad_json"),  # orjson refuses infinity
        (b"NaN", "bad_json"),
        (b"Infinity", "bad_json"),
        (b"-Infinity", "bad_json"),
    ],
)
def test_huge_and_non_finite_numbers_end_in_the_dlq_with_a_reason(raw, reason):
    assert code(parse(event(raw_attrs=b'{"n":' + raw + b"}"))) == reason


def test_limits_are_configurable():
    tight = shape.Limits(max_depth=3, max_items=5, max_string_chars=8)
    assert isinstance(parse(event({"a": {"b": 1}}), tight), CanonicalEvent)
    assert isinstance(parse(event({"a": {"b": [1]}}), tight), CanonicalEvent)  # 3 containers
    assert code(parse(event({"a": {"b": [[1]]}}), tight)) == "too_deep"
    assert code(parse(event({"a": [1, 2, 3, 4, 5]}), tight)) == "too_many_items"
    assert code(parse(event({"a": "123456789"}), tight)) == "string_too_long"


# --- any JSON: an event or a rejection, never an exception ------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=60,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(attrs=json_values, media=json_values, wrap=st.integers(min_value=0, max_value=40))
def test_any_nested_json_becomes_an_event_or_a_rejection(attrs, media, wrap):
    for _ in range(wrap):  # extra nesting around generated values
        attrs = [attrs]
    try:
        payload = orjson.dumps({"event_id": "e1", "type": "video.fall", "ts": 1795909263250, "attrs": {"v": attrs}, "media": {"m": media}})
    except (TypeError, orjson.JSONEncodeError):
        payload = b'{"event_id": "e1", "type": "video.fall", "ts": 1795909263250, "attrs": ' + b"[" * 300 + b"]" * 300 + b"}"
    result = parse(payload)
    assert isinstance(result, (CanonicalEvent, Rejection))
    if isinstance(result, CanonicalEvent):
        assert orjson.loads(dumps(result.to_dict()))["attrs"] == result.attrs


@settings(max_examples=200)
@given(raw=st.binary(max_size=200) | st.text(alphabet="[]{}\":,0123456789.eE-+ntrufalsNIy", max_size=200).map(str.encode))
def test_any_bytes_become_an_event_or_a_rejection(raw):
    assert isinstance(parse(event(raw_attrs=raw)), (CanonicalEvent, Rejection))
    assert isinstance(parse(raw), (CanonicalEvent, Rejection))
