"""pipeline/ingest/adapters/common.py: any_ts (every producer's time format) and availability."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from pipeline.ingest.adapters.common import DOWN, UP, any_ts, availability
from pipeline.records import iso_utc, parse_ts

MAX_EPOCH = 253370764800.0  # records._MAX_EPOCH: what iso_utc/parse_ts can represent


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


# --- any_ts: the six formats (devices.md §5; #6, the PHP DateTime object, is not an adapter input yet) ---


@pytest.mark.parametrize(
    "value, tz, expected",
    [
        # 1. epoch seconds, float, UTC (Frigate, Shelly Gen2)
        (1607123958.748393, "Asia/Shanghai", 1607123958.748393),
        (0.5, "UTC", 0.5),
        # 2. epoch integer milliseconds (Z2M `last_seen: epoch`, Dahua UTCMS) or seconds (Dahua UTC)
        (1752745201513, "Asia/Shanghai", 1752745201.513),
        (1752745201, "Asia/Shanghai", 1752745201.0),
        (1752745201513.0, "UTC", 1752745201.513),
        # 3. ISO 8601 UTC with ms and Z
        ("2019-03-01T15:32:45.941Z", "Asia/Shanghai", utc("2019-03-01T15:32:45.941")),
        ("2019-03-01T15:32:45.941z", "Asia/Shanghai", utc("2019-03-01T15:32:45.941")),
        # 4. ISO 8601 with a numeric offset, no ms (Z2M ISO_8601_local, Hikvision)
        ("2024-09-02T07:45:10+08:00", "Europe/London", utc("2024-09-01T23:45:10")),
        ("2024-09-02T07:45:10-05:00", "Asia/Shanghai", utc("2024-09-02T12:45:10")),
        (" 2024-09-02T07:45:10+08:00\n", "UTC", utc("2024-09-01T23:45:10")),
    ],
)
def test_zoned_formats(value, tz, expected):
    seconds, assumed = any_ts(value, tz)
    assert seconds == pytest.approx(expected, abs=1e-6)
    assert assumed is False


@pytest.mark.parametrize(
    "value, tz, expected",
    [
        # 5. local wall time without zone -> the school's zone, flagged
        ("2021-01-01T00:00:00", "Asia/Shanghai", utc("2020-12-31T16:00:00")),
        ("2021-11-05 10:00:00", "Asia/Shanghai", utc("2021-11-05T02:00:00")),
        ("2021-11-05 10:00:00", "Europe/London", utc("2021-11-05T10:00:00")),  # GMT
        ("2021-07-05T10:00:00", "Europe/London", utc("2021-07-05T09:00:00")),  # BST
        ("2021-07-05T10:00:00.250", "America/New_York", utc("2021-07-05T14:00:00.250")),
        ("2021-07-05T10:00:00", "UTC", utc("2021-07-05T10:00:00")),
    ],
)
def test_local_time_without_zone_uses_the_school_zone(value, tz, expected):
    seconds, assumed = any_ts(value, tz)
    assert seconds == pytest.approx(expected, abs=1e-6)
    assert assumed is True


def test_the_same_local_time_differs_by_school():
    shanghai, _ = any_ts("2024-09-02T07:45:10", "Asia/Shanghai")
    london, _ = any_ts("2024-09-02T07:45:10", "Europe/London")
    assert london - shanghai == 7 * 3600


def test_local_time_on_dst_days():
    # the hour that does not exist (spring forward) and the one that exists twice (fall back) still give a time
    gap, _ = any_ts("2024-03-31T01:30:00", "Europe/London")
    fold, _ = any_ts("2024-10-27T01:30:00", "Europe/London")
    assert iso_utc(gap) in ("2024-03-31T00:30:00.000Z", "2024-03-31T01:30:00.000Z")
    assert iso_utc(fold) in ("2024-10-27T00:30:00.000Z", "2024-10-27T01:30:00.000Z")


@pytest.mark.parametrize(
    "value",
    [None, True, False, "", "   ", "not a time", "2024-13-01T00:00:00", "1607123958.748393", [], {}, [1607123958], {"ts": 1},
     -1, -0.5, 10**14 * 1000, 1e20, "2024-09-02T07:45:10+25:00"],
)
def test_not_a_time_raises_value_error(value):
    with pytest.raises(ValueError):
        any_ts(value, "Asia/Shanghai")


@pytest.mark.parametrize(
    "value",
    [
        "1970-01-01T00:00:05",  # a device clock never set, local time east of UTC -> before 1970
        "1969-12-31T23:00:00",
        "1900-01-01T00:00:00",
        "0001-01-01T00:00:00",  # iso_utc cannot even write it (year 0 in UTC)
        "9999-12-31T23:59:59",  # beyond what huxue can write back
    ],
)
def test_local_time_out_of_range_raises_like_every_other_format(value):
    # Offsets and numbers are range-checked (parse_ts); a naive local time must be too,
    # otherwise callers get an epoch that iso_utc cannot write or parse_ts cannot read.
    with pytest.raises(ValueError):
        any_ts(value, "Asia/Shanghai")


def test_epoch_range_boundaries():
    # seconds/milliseconds switch at 1e11 (year 5138 in seconds, 1973 in ms)
    assert any_ts(99_999_999_999, "UTC")[0] == 99_999_999_999
    assert any_ts(100_000_000_001, "UTC")[0] == pytest.approx(100_000_000.001)
    assert any_ts(0, "UTC") == (0.0, False)
    with pytest.raises(ValueError):
        any_ts(10**18, "UTC")  # past year 9998 read either way


@pytest.mark.parametrize("value", [-1e306, -1.7976931348623157e308, -0.0005, -1e-9])
def test_negative_epochs_raise_value_error(value):
    # Both reach any_ts from JSON (orjson reads them as floats). The range check
    # `parse_ts(int(seconds * 1000))` overflows for the first two (OverflowError: cannot
    # convert float infinity to integer) and truncates the last two to 0 (accepted: an
    # epoch of -0.0005 s becomes ts "1969-12-31T23:59:59.999Z", which parse_ts rejects).
    with pytest.raises(ValueError):
        any_ts(value, "UTC")


# --- any_ts properties -------------------------------------------------------------------------

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30)
)
json_values = st.recursive(json_leaf, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=5), c, max_size=3)),
                           max_leaves=6)
offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
time_like = st.one_of(
    json_values,
    st.floats(0, 2e14, allow_nan=False),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-10, 2 * 10**14),
    st.datetimes().map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat(sep=" ", timespec="seconds")),
    st.datetimes(timezones=offsets).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat(timespec="milliseconds") + "Z"),
)
zones = st.sampled_from(("Asia/Shanghai", "Europe/London", "America/New_York", "Pacific/Kiritimati", "Pacific/Pago_Pago", "UTC"))


# Found by this property; kept as explicit examples so the failure is immediate and certain:
@example("1970-01-01T00:00:05", "Asia/Shanghai")  # naive local time before 1970 accepted
@example("0001-01-01T00:00:00", "Asia/Shanghai")  # naive local time iso_utc cannot write
@example(-1e306, "UTC")  # OverflowError, not ValueError
@example(-0.0005, "UTC")  # accepted, yet iso_utc gives a time before 1970
@settings(max_examples=400, deadline=None)
@given(time_like, zones)
def test_any_ts_raises_only_value_error_and_returns_representable_times(value, tz):
    try:
        seconds, assumed = any_ts(value, tz)
    except ValueError:
        return
    assert isinstance(assumed, bool)
    assert 0 <= seconds < MAX_EPOCH, (value, seconds)
    assert parse_ts(iso_utc(seconds)) == pytest.approx(seconds, abs=0.002)  # iso_utc floors to the ms


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)).map(lambda d: d.replace(microsecond=0)), zones)
def test_naive_local_times_round_trip_through_the_zone(naive, tz):
    zone = ZoneInfo(tz)
    # skip wall times that do not exist in the zone (the spring-forward gap)
    assume(naive.replace(tzinfo=zone).astimezone(timezone.utc).astimezone(zone).replace(tzinfo=None) == naive)
    seconds, assumed = any_ts(naive.isoformat(), tz)
    assert assumed is True
    assert datetime.fromtimestamp(seconds, zone).replace(tzinfo=None) == naive


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=offsets), zones)
def test_zoned_times_ignore_the_school_zone(aware, tz):
    seconds, assumed = any_ts(aware.isoformat(), tz)
    assert assumed is False
    assert seconds == pytest.approx(aware.timestamp(), abs=1e-6)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 99_999_999_999), zones)
def test_epoch_seconds_and_their_milliseconds_agree(seconds, tz):
    in_ms = seconds * 1000
    if in_ms > 1e11:  # below that, an integer is read as seconds (the switch is documented)
        assert any_ts(in_ms, tz)[0] == pytest.approx(seconds)
    assert any_ts(seconds, tz) == (float(seconds), False)


# --- availability ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload, expected",
    [
        (b"online", "online"), (b"offline", "offline"),  # Frigate, Z2M 1.x
        (b"Online", "online"), (b"Offline", "offline"),  # Tasmota LWT
        (b"ON", "online"), (b"OFF", "offline"), (b"true", "online"), (b"false", "offline"), (b"1", "online"), (b"0", "offline"),
        (b"stopped", "offline"),  # Frigate 0.18 clean shutdown
        (b'{"state":"online"}', "online"), (b'{"state":"offline"}', "offline"),  # Z2M 2.x
        (b'{"state": "Online"}', "online"), (b'  {"state":"offline"}\n', "offline"), (b"online\n", "online"), (b" OFFLINE ", "offline"),
        (b'{"state":true}', "online"), (b'{"state":"offline","reason":"timeout"}', "offline"),
        (b"", None), (b"maybe", None), (b"onl", None), (b"{", None), (b"{}", None), (b'{"status":"online"}', None), (b'{"state":null}', None),
        (b'"online"', None), (b"[]", None), (b"\xff\xfe", None), (b"online offline", None),
    ],
)
def test_availability_vocabulary(payload, expected):
    assert availability(payload) == expected


def test_availability_vocabulary_matches_the_notes():
    # devices.md §6: up = online|Online|true|ON|{"state":"online"}; down = offline|Offline|false|OFF|stopped|{"state":"offline"}
    assert {"online", "true", "on"} <= UP and {"offline", "false", "off", "stopped"} <= DOWN
    assert not UP & DOWN


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=40), json_values.map(orjson.dumps), st.text(max_size=20).map(str.encode)))
def test_availability_never_raises(payload):
    assert availability(payload) in ("online", "offline", None)
