"""pipeline/records.py: timestamps, commands, alerts, dead-letter entries."""

from __future__ import annotations

import base64
import dataclasses
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.records import (
    COMMANDS,
    INCIDENT_COMMANDS,
    SCHOOL_COMMANDS,
    Alert,
    CanonicalEvent,
    Command,
    Rejection,
    dlq_entry,
    dumps,
    iso_utc,
    loads,
    parse_ts,
)

EXAMPLE_EPOCH = datetime(2026, 11, 28, 23, 41, 3, 250000, tzinfo=timezone.utc).timestamp()


# --- parse_ts -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-29T07:41:03.250+08:00",
        "2026-11-28T23:41:03.250Z",
        "2026-11-28T23:41:03.250z",
        "2026-11-28T23:41:03.250+00:00",
        "2026-11-28T18:41:03.250-05:00",
        "2026-11-28 23:41:03.250Z",  # RFC 3339 allows a space for the T
        "  2026-11-28T23:41:03.250Z ",
    ],
)
def test_parse_ts_accepts_rfc3339_with_offset(value):
    assert parse_ts(value) == pytest.approx(EXAMPLE_EPOCH, abs=1e-6)


def test_parse_ts_offset_is_applied_not_ignored():
    assert parse_ts("2026-11-29T07:41:03+08:00") == parse_ts("2026-11-28T23:41:03Z")
    assert parse_ts("2026-11-29T07:41:03+08:00") != parse_ts("2026-11-29T07:41:03Z")


@pytest.mark.parametrize("ms", [0, 1, 1795909263250, 10**14 - 1])
def test_parse_ts_accepts_integer_epoch_ms(ms):
    assert parse_ts(ms) == ms / 1000.0


def test_parse_ts_epoch_ms_matches_the_same_instant_as_text():
    assert parse_ts(1795909263250) == pytest.approx(parse_ts("2026-11-28T23:41:03.250Z"), abs=1e-6)


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-29T07:41:03",  # naive
        "2026-11-29T07:41:03.250",  # naive with fraction
        "2026-11-29",  # date only
        "07:41:03+08:00",  # time only
        "not a time",
        "",
        "   ",
        "2026-13-01T00:00:00Z",
        "2026-11-29T25:00:00Z",
        "1795909263250",  # epoch ms as a string is not an integer
        1795909263250.0,  # float
        1.5,
        float("nan"),
        True,
        False,
        None,
        -1,
        10**14,
        [],
        {},
        b"2026-11-29T07:41:03Z",
    ],
)
def test_parse_ts_rejects(value):
    with pytest.raises(ValueError):
        parse_ts(value)


def test_parse_ts_reason_names_the_problem():
    with pytest.raises(ValueError, match="offset"):
        parse_ts("2026-11-29T07:41:03")
    with pytest.raises(ValueError, match="boolean"):
        parse_ts(True)
    with pytest.raises(ValueError, match="float"):
        parse_ts(1.0)


# --- iso_utc ------------------------------------------------------------------------


def test_iso_utc_format():
    assert iso_utc(EXAMPLE_EPOCH) == "2026-11-28T23:41:03.250Z"
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(1.5) == "1970-01-01T00:00:01.500Z"
    # milliseconds, truncated (never rounded up into the next second)
    assert iso_utc(1.9999) == "1970-01-01T00:00:01.999Z"


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=946684800000, max_value=4102444800000))  # 2000..2100, ms
def test_iso_utc_round_trips_epoch_ms(ms):
    text = iso_utc(parse_ts(ms))
    assert text.endswith("Z") and len(text) == len("2026-11-28T23:41:03.250Z")
    assert round(parse_ts(text) * 1000) == ms
    assert iso_utc(parse_ts(text)) == text


@settings(max_examples=100, deadline=None)
@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_parse_ts_any_offset_same_instant(naive, offset_min):
    naive = naive.replace(microsecond=naive.microsecond // 1000 * 1000)
    tz = timezone(timedelta(minutes=offset_min))
    aware = naive.replace(tzinfo=tz)
    assert parse_ts(aware.isoformat()) == pytest.approx(aware.timestamp(), abs=1e-6)
    assert iso_utc(parse_ts(aware.isoformat())) == aware.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# --- CanonicalEvent ------------------------------------------------------------------


def _event(**kw):
    base = dict(
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
    )
    base.update(kw)
    return CanonicalEvent(**base)


def test_canonical_event_dict_round_trip_and_key():
    ev = _event(media={"snapshot_url": "https://nvr.local/s/1.jpg"}, attrs={"a": 1})
    d = orjson.loads(dumps(ev.to_dict()))
    assert CanonicalEvent.from_dict(d) == ev
    assert ev.key == "zx01-btn-3/b7c1-0001"
    assert ev.ts_epoch == pytest.approx(EXAMPLE_EPOCH)
    assert ev.received_epoch == pytest.approx(EXAMPLE_EPOCH + 0.05)


def test_canonical_event_without_media_omits_it_and_ignores_unknown_fields():
    ev = _event()
    d = ev.to_dict()
    assert "media" not in d
    for name in ("device_id", "school_id", "kind", "zone", "source", "mqtt_topic", "received_at", "ts", "event_id", "type"):
        assert name in d
    d["future_field"] = 1
    assert CanonicalEvent.from_dict(d) == ev


def test_dumps_loads_are_orjson():
    assert loads(dumps({"a": [1, "x"]})) == {"a": [1, "x"]}
    assert loads('{"a":1}') == {"a": 1}


# --- Command --------------------------------------------------------------------------


def test_command_from_dict_contract_example():
    d = {"command": "ack", "incident_id": "inc-20261129-0007", "by": "guard-zx01-02", "at": "2026-11-29T07:41:40Z", "note": ""}
    cmd = Command.from_dict(d)
    assert cmd == Command(command="ack", incident_id="inc-20261129-0007", by="guard-zx01-02", at="2026-11-29T07:41:40Z")
    assert Command.from_dict(cmd.to_dict()) == cmd


def test_commands_are_incident_and_school_commands():
    assert set(COMMANDS) == set(INCIDENT_COMMANDS) | set(SCHOOL_COMMANDS)
    assert not set(INCIDENT_COMMANDS) & set(SCHOOL_COMMANDS)


@pytest.mark.parametrize("name", INCIDENT_COMMANDS)
def test_command_from_dict_all_incident_commands(name):
    extra = {"unit": "car-1"} if name == "dispatch" else {}
    cmd = Command.from_dict({"command": name, "incident_id": "i", "by": "b", **extra})
    assert (cmd.command, cmd.incident_id, cmd.unit) == (name, "i", extra.get("unit", ""))
    with pytest.raises(ValueError, match="incident_id"):
        Command.from_dict({"command": name, "school_id": "zx-01", "by": "b", **extra})


def test_dispatch_needs_a_unit_and_a_unit_is_a_string():
    with pytest.raises(ValueError, match="dispatch needs 'unit'"):
        Command.from_dict({"command": "dispatch", "incident_id": "i", "by": "b"})
    with pytest.raises(ValueError, match="field 'unit'"):
        Command.from_dict({"command": "arrive", "incident_id": "i", "by": "b", "unit": 7})


@pytest.mark.parametrize("name", SCHOOL_COMMANDS)
def test_command_from_dict_all_school_commands(name):
    d = {"command": name, "school_id": "zx-01", "by": "b"}
    if name == "unsilence":
        d["silence_id"] = "sil-zx-01-0001"
    cmd = Command.from_dict(d)
    assert (cmd.command, cmd.school_id) == (name, "zx-01")
    assert Command.from_dict(cmd.to_dict()) == cmd
    with pytest.raises(ValueError, match="school_id"):
        Command.from_dict({k: v for k, v in d.items() if k != "school_id"} | {"incident_id": "i"})


def test_unsilence_needs_a_silence_id():
    with pytest.raises(ValueError, match="silence_id"):
        Command.from_dict({"command": "unsilence", "school_id": "zx-01", "by": "b"})


def test_silence_command_fields():
    cmd = Command.from_dict(
        {"command": "silence", "school_id": "zx-01", "by": "b", "scope": {"zone": "gate-north"}, "duration_seconds": 600, "reason": "  roadworks  ", "exercise": False}
    )
    assert (cmd.scope, cmd.duration_seconds, cmd.reason) == ({"zone": "gate-north"}, 600.0, "roadworks")
    assert Command.from_dict(cmd.to_dict()) == cmd


@pytest.mark.parametrize(
    "extra, match",
    [
        ({"scope": {"device": "a", "zone": "b"}}, "scope"),
        ({"scope": {"room": "a"}}, "scope"),
        ({"scope": {"device": ""}}, "scope"),
        ({"scope": "zx01-cam-7"}, "scope"),
        ({"duration_seconds": -1}, "duration_seconds"),
        ({"duration_seconds": True}, "duration_seconds"),
        ({"duration_seconds": "600"}, "duration_seconds"),
        ({"exercise": "yes"}, "exercise"),
        ({"until": "tomorrow"}, "until"),
    ],
)
def test_silence_command_rejects_bad_fields(extra, match):
    with pytest.raises(ValueError, match=match):
        Command.from_dict({"command": "silence", "school_id": "zx-01", "by": "b", "reason": "r", **extra})


def test_command_optional_fields():
    cmd = Command.from_dict({"command": "arrive", "incident_id": "i", "by": "b", "command_id": "c-1", "school_id": "zx-01", "note": "on scene"})
    assert (cmd.at, cmd.command_id, cmd.school_id, cmd.note) == ("", "c-1", "zx-01", "on scene")
    d = Command(command="ack", incident_id="i", by="b", at="").to_dict()
    assert d == {"command": "ack", "incident_id": "i", "by": "b", "note": ""}


@pytest.mark.parametrize(
    "d, match",
    [
        ([], "object"),
        ("ack", "object"),
        ({"incident_id": "i", "by": "b"}, "command"),
        ({"command": "ack", "by": "b"}, "incident_id"),
        ({"command": "ack", "incident_id": "i"}, "by"),
        ({"command": "ack", "incident_id": "", "by": "b"}, "incident_id"),
        ({"command": "ack", "incident_id": 7, "by": "b"}, "incident_id"),
        ({"command": "ack", "incident_id": "i", "by": None}, "by"),
        ({"command": "acknowledge", "incident_id": "i", "by": "b"}, "unknown command"),
        ({"command": "ack", "incident_id": "i", "by": "b", "at": "yesterday"}, "RFC 3339"),
        ({"command": "ack", "incident_id": "i", "by": "b", "at": "2026-11-29T07:41:40"}, "offset"),
        ({"command": "ack", "incident_id": "i", "by": "b", "at": True}, "boolean"),
        ({"command": "ack", "incident_id": "i", "by": "b", "at": 1.5}, "float"),
    ],
)
def test_command_from_dict_rejects(d, match):
    with pytest.raises(ValueError, match=match):
        Command.from_dict(d)


# `at` is validated only when truthy, and then stored as str(at): falsy non-strings
# (False, 0.0, [], {}) slip through as "False", "0.0", "[]", "{}", and integer epoch ms
# is accepted but stored as a digit string that parse_ts itself refuses. Whatever
# from_dict accepts must leave `at` empty or a timestamp parse_ts can read back.
@pytest.mark.parametrize("at", ["", "2026-11-29T07:41:40Z", False, 0.0, [], {}, 1795909263250])
def test_command_at_is_empty_or_a_readable_timestamp(at):
    try:
        cmd = Command.from_dict({"command": "ack", "incident_id": "i", "by": "b", "at": at})
    except ValueError:
        return
    assert cmd.at == "" or isinstance(parse_ts(cmd.at), float)


# --- Alert ------------------------------------------------------------------------------


def test_alert_to_dict_keeps_required_fields_even_when_empty():
    a = Alert(
        identifier="inc-x/opened",
        incident_id="inc-x",
        sent="2026-11-28T23:41:03.300Z",
        status="Actual",
        msgType="Alert",
        school_id="zx-01",
        rule="panic",
        stage="opened",
        severity="Extreme",
        urgency="Immediate",
        certainty="Likely",
        headline="h",
        notify=["onsite"],
        evidence=[],
    )
    d = a.to_dict()
    for name in ("identifier", "incident_id", "sent", "status", "msgType", "school_id", "rule", "stage", "severity", "evidence"):
        assert name in d
    assert d["sender"] == "huxue"
    assert "by" not in d and "due" not in d and "note" not in d and "evidence_omitted" not in d
    assert Alert.from_dict({**d, "unknown": 1}) == a
    trimmed = dataclasses.replace(a, evidence_omitted=3)
    assert trimmed.to_dict()["evidence_omitted"] == 3
    assert Alert.from_dict(trimmed.to_dict()) == trimmed


# --- dlq_entry --------------------------------------------------------------------------


def test_dlq_entry_text_payload():
    e = dlq_entry(Rejection("bad_json", "payload is not JSON", "zx01-btn-1"), "huxue/v1/devices/zx01-btn-1/events", "{nope ✓".encode(), EXAMPLE_EPOCH)
    assert e == {
        "reason_code": "bad_json",
        "reason": "payload is not JSON",
        "mqtt_topic": "huxue/v1/devices/zx01-btn-1/events",
        "received_at": "2026-11-28T23:41:03.250Z",
        "device_id": "zx01-btn-1",
        "payload": "{nope ✓",
    }
    orjson.dumps(e)  # serialisable as is


def test_dlq_entry_binary_payload_is_base64_and_byte_faithful():
    raw = b"\xff\xfe\x00binary\x80"
    e = dlq_entry(Rejection("bad_json", "x"), "t", raw, 0)
    assert "payload" not in e
    assert base64.b64decode(e["payload_b64"]) == raw
    assert "device_id" not in e
    assert "payload_truncated" not in e


def test_dlq_entry_empty_payload():
    e = dlq_entry(Rejection("bad_status", "x", "d"), "t", b"", 0)
    assert e["payload"] == ""


def test_dlq_entry_truncates_large_payloads_and_says_so():
    raw = b"a" * 1000
    e = dlq_entry(Rejection("payload_too_large", "big", "d"), "t", raw, 0, max_bytes=100)
    assert e["payload_truncated"] is True
    assert e["payload_size"] == 1000
    assert e["payload"] == "a" * 100


def test_dlq_entry_at_limit_is_not_truncated():
    e = dlq_entry(Rejection("x", "y"), "t", b"a" * 100, 0, max_bytes=100)
    assert "payload_truncated" not in e and "payload_size" not in e
    assert e["payload"] == "a" * 100


def test_dlq_entry_truncated_binary_keeps_the_head_bytes():
    raw = bytes(range(256)) * 4
    e = dlq_entry(Rejection("x", "y"), "t", raw, 0, max_bytes=300)
    assert base64.b64decode(e["payload_b64"]) == raw[:300]
    assert e["payload_size"] == 1024


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_dlq_entry_is_always_serialisable_and_faithful(raw):
    e = dlq_entry(Rejection("x", "y"), "t", raw, 0, max_bytes=512)
    back = orjson.loads(orjson.dumps(e))
    head = raw[:512]
    if "payload" in back:
        assert back["payload"].encode("utf-8") == head
    else:
        assert base64.b64decode(back["payload_b64"]) == head
    assert ("payload_truncated" in back) == (len(raw) > 512)
