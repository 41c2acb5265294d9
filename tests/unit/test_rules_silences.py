"""Silences (pipeline/rules/silences.py) through the engine: operators mute a device, a zone
or a school for a while, with a reason; panic buttons can never be silenced."""

from __future__ import annotations

import pytest

from pipeline.records import SilenceNotice, iso_utc
from pipeline.rules import engine
from pipeline.rules.state import SchoolState
from unit_helpers import (
    SCHOOL,
    T0,
    Driver,
    camera,
    fence,
    offline,
    online,
    rules_ctx,
    school_command,
    tamper,
)

MAX = 7 * 24 * 3600


def driver(**tuned) -> Driver:
    """device_health (offline / tamper; no heartbeat timers) and zone corroboration on."""
    tuned.setdefault("device_health", {"heartbeat_kinds": ()})
    tuned.setdefault("corroboration", {})
    return Driver(rules_ctx(**tuned))


def silence(d: Driver, now: float, scope: dict, seconds: float = 600, reason: str = "roadworks at the gate", **kw) -> engine.Outcome:
    return d.school_command(now, "silence", scope=scope, duration_seconds=seconds, reason=reason, **kw)


def silenced(d: Driver, now: float, scope: dict, seconds: float = 600, **kw) -> str:
    out = silence(d, now, scope, seconds, **kw)
    assert out.rejected == [] and out.alerts == []
    [n] = out.notices
    assert n.state == "active"
    return n.silence_id


def rejected(out: engine.Outcome) -> str:
    assert out.alerts == [] and out.notices == []
    [(_, why)] = out.rejected
    assert why.reason
    return why.reason_code


# --- silencing ------------------------------------------------------------------------------------


def test_silence_is_announced_with_a_notice():
    d = driver()
    out = silence(d, T0, {"device": "zx01-cam-7"}, 600, reason="lens cleaning", by="op-1", command_id="c-1")
    assert out.alerts == [] and out.rejected == []
    [n] = out.notices
    assert isinstance(n, SilenceNotice)
    assert (n.silence_id, n.school_id, n.state) == (f"sil-{SCHOOL}-0001", SCHOOL, "active")
    assert (n.scope, n.reason, n.by, n.command_id) == ({"device": "zx01-cam-7"}, "lens cleaning", "op-1", "c-1")
    assert (n.starts, n.ends, n.sent) == (iso_utc(T0), iso_utc(T0 + 600), iso_utc(T0))
    assert n.suppressed == 0 and n.ended_by == ""
    assert n.to_dict()["silence_id"] == n.silence_id
    assert d.state.memory["silence"]["due"] == T0 + 600


def test_device_silence_mutes_that_device_only():
    d = driver()
    silenced(d, T0, {"device": "zx01-cam-7"})
    assert d.event(offline("zx01-cam-7"), T0 + 1) == []
    assert d.event(tamper("zx01-cam-7"), T0 + 2) == []  # every severity: the source is muted
    assert d.state.incidents == {}
    [a] = d.event(offline("zx01-cam-8"), T0 + 3)
    assert (a.rule, a.stage, a.severity) == ("device_health", "opened", "Minor")
    assert a.evidence[0]["device_id"] == "zx01-cam-8"


def test_zone_silence_mutes_every_device_of_the_zone():
    d = driver()
    silenced(d, T0, {"zone": "gate-north"})
    assert d.event(offline("zx01-cam-7"), T0 + 1) == []
    assert d.event(tamper("zx01-fence-1"), T0 + 2) == []
    [a] = d.event(offline("zx01-cam-9"), T0 + 3)  # zone "field"
    assert a.zone == "field" and a.rule == "device_health"


def test_zone_silence_mutes_zone_corroboration_incidents():
    d = driver()
    silenced(d, T0, {"zone": "gate-north"})
    assert d.event(camera("video.intrusion", "zx01-cam-7", "v-1", ts=T0 + 1), T0 + 1) == []
    assert d.event(fence("zx01-fence-1", "f-1", ts=T0 + 5), T0 + 5) == []
    assert d.state.incidents == {}
    # the same pattern in another zone opens its Severe incident
    d.event(camera("video.intrusion", "zx01-cam-9", "v-2", ts=T0 + 6), T0 + 6)
    [a] = d.event(fence("zx01-fence-2", "f-2", ts=T0 + 7), T0 + 7)
    assert (a.rule, a.severity, a.zone) == ("corroborated", "Severe", "field")


def test_school_silence_mutes_everything_but_panic():
    d = driver()
    silenced(d, T0, {})
    assert d.event(offline("zx01-cam-7"), T0 + 1) == []
    assert d.event(tamper("zx01-door-1"), T0 + 2) == []
    # panic presses still open the ladder
    [p] = d.press(T0 + 3)
    assert (p.rule, p.stage, p.severity, p.notify) == ("panic", "opened", "Extreme", ["onsite", "mobile", "command"])
    # and a dead panic button is still a safety hole
    [h] = d.event(offline("zx01-btn-3"), T0 + 4)
    assert (h.rule, h.severity, h.stage) == ("device_health", "Moderate", "opened")
    assert h.evidence[0]["device_id"] == "zx01-btn-3"
    [t] = d.event(tamper("zx01-sos-2"), T0 + 5)
    assert (t.rule, t.severity) == ("device_health", "Severe")
    assert d.state.memory["silence"]["active"][0]["suppressed"] == 2


def test_zone_silence_does_not_mute_the_panic_buttons_in_it():
    d = driver()
    silenced(d, T0, {"zone": "gate-north"})
    assert [a.rule for a in d.event(offline("zx01-btn-1"), T0 + 1)] == ["device_health"]
    # a press is a sign of life too: the offline incident recovers
    assert [(a.rule, a.stage) for a in d.press(T0 + 2, device_id="zx01-btn-1")] == [("panic", "opened"), ("device_health", "recovered")]


def test_panic_button_absence_is_never_silenced():
    d = Driver(rules_ctx(device_health={"heartbeat_timeout_seconds": 100}))
    d.tick(T0)
    silenced(d, T0 + 1, {})
    alerts = d.tick(T0 + 100)
    assert sorted(a.evidence[0]["device_id"] for a in alerts) == ["zx01-btn-1", "zx01-btn-3", "zx01-sos-2"]
    assert {(a.rule, a.severity) for a in alerts} == {("device_health", "Moderate")}


# --- rejections -----------------------------------------------------------------------------------


@pytest.mark.parametrize("button", ["zx01-btn-1", "zx01-btn-3", "zx01-sos-2"])
def test_a_panic_button_can_never_be_silenced(button):
    d = driver()
    before = d.state
    out = silence(d, T0, {"device": button}, 60, reason="it keeps going off")
    assert rejected(out) == "panic_never_silenced"
    assert button in out.rejected[0][1].reason
    assert d.state.memory.get("silence") == before.memory.get("silence")
    assert [a.rule for a in d.event(offline(button), T0 + 1)] == ["device_health"]


def test_silence_needs_a_reason():
    d = driver()
    assert rejected(silence(d, T0, {"device": "zx01-cam-7"}, reason="")) == "missing_reason"
    assert rejected(silence(d, T0, {}, reason="")) == "missing_reason"
    assert d.event(offline("zx01-cam-7"), T0 + 1) != []  # nothing was silenced


@pytest.mark.parametrize(
    "kw",
    [
        {"duration_seconds": 0},  # neither a duration nor an end
        {"duration_seconds": MAX + 1},  # beyond silence.max_seconds
        {"duration_seconds": -5},
        {"until": T0 - 1},  # already over
        {"until": T0},
        {"until": T0 + MAX + 60},
    ],
)
def test_silence_needs_a_sensible_duration(kw):
    d = driver()
    out = d.school_command(T0, "silence", scope={"device": "zx01-cam-7"}, reason="r", **kw)
    assert rejected(out) == "invalid_duration"


def test_silence_max_seconds_is_configurable_per_school():
    d = driver(silence={"schools": {SCHOOL: {"max_seconds": 3600}}})
    assert rejected(silence(d, T0, {}, 3601)) == "invalid_duration"
    assert silenced(d, T0, {}, 3600)


def test_silence_until_a_time():
    d = driver()
    out = d.school_command(T0, "silence", scope={"zone": "gate-north"}, until=T0 + 90, reason="drill")
    [n] = out.notices
    assert n.ends == iso_utc(T0 + 90)
    assert d.event(offline("zx01-cam-7"), T0 + 89) == []
    assert [a.rule for a in d.event(offline("zx01-cam-8"), T0 + 90)] == ["device_health"]


@pytest.mark.parametrize("device", ["zx01-nope", "bh02-btn-1"])
def test_silence_of_a_device_not_at_the_school_is_rejected(device):
    d = driver()
    assert rejected(silence(d, T0, {"device": device})) == "unknown_device"


def test_unknown_silence_cannot_be_lifted():
    d = driver()
    out = d.school_command(T0, "unsilence", silence_id="sil-zx-01-0042")
    assert rejected(out) == "unknown_silence"
    assert "sil-zx-01-0042" in out.rejected[0][1].reason


# --- ending -----------------------------------------------------------------------------------------


def test_silence_expires_at_its_end_by_tick():
    d = driver()
    sid = silenced(d, T0, {"device": "zx01-cam-7"}, 600)
    d.event(offline("zx01-cam-7", "off-1"), T0 + 10)
    d.event(online("zx01-cam-7", "on-1"), T0 + 20)
    d.event(offline("zx01-cam-7", "off-2"), T0 + 30)
    assert d.tick(T0 + 599.999) == [] and len(d.notices) == 1
    out = engine.on_tick(d.state, T0 + 600, d.ctx)
    [n] = out.notices
    assert (n.silence_id, n.state, n.ended_by, n.suppressed) == (sid, "ended", "expiry", 2)
    assert (n.starts, n.ends, n.sent) == (iso_utc(T0), iso_utc(T0 + 600), iso_utc(T0 + 600))
    assert out.alerts == []
    d._take(out)
    assert d.state.memory["silence"]["active"] == [] and d.state.memory["silence"]["due"] is None
    assert d.tick(T0 + 601) == [] and len(d.notices) == 2  # ended once
    [a] = d.event(offline("zx01-cam-7", "off-3"), T0 + 602)
    assert a.rule == "device_health"


def test_silence_is_over_at_its_end_even_before_a_tick():
    d = driver()
    silenced(d, T0, {"device": "zx01-cam-7"}, 600)
    out = engine.on_event(d.state, offline("zx01-cam-7"), T0 + 600, d.ctx)
    assert [n.state for n in out.notices] == ["ended"]
    assert [a.rule for a in out.alerts] == ["device_health"]


def test_unsilence_ends_it_at_once():
    d = driver()
    sid = silenced(d, T0, {"zone": "gate-north"}, 3600)
    d.event(offline("zx01-cam-7"), T0 + 1)
    out = d.school_command(T0 + 10, "unsilence", silence_id=sid, by="op-2", command_id="c-9")
    assert out.alerts == [] and out.rejected == []
    [n] = out.notices
    assert (n.silence_id, n.state, n.ended_by, n.suppressed, n.sent) == (sid, "ended", "op-2", 1, iso_utc(T0 + 10))
    assert n.ends == iso_utc(T0 + 3600)  # what it was set to
    assert [a.rule for a in d.event(offline("zx01-cam-8"), T0 + 11)] == ["device_health"]
    assert rejected(d.school_command(T0 + 12, "unsilence", silence_id=sid, by="op-3")) == "unknown_silence"
    assert d.tick(T0 + 3600) == [] and len(d.notices) == 2  # no expiry notice for a lifted silence


def test_silences_are_independent():
    d = driver()
    s1 = silenced(d, T0, {"device": "zx01-cam-7"}, 600)
    s2 = silenced(d, T0 + 1, {"device": "zx01-cam-8"}, 300)
    assert (s1, s2) == (f"sil-{SCHOOL}-0001", f"sil-{SCHOOL}-0002")
    assert d.state.memory["silence"]["due"] == T0 + 301  # the earliest end
    d.tick(T0 + 301)
    assert [(n.silence_id, n.state) for n in d.notices[2:]] == [(s2, "ended")]
    assert d.state.memory["silence"]["due"] == T0 + 600
    assert d.event(offline("zx01-cam-7"), T0 + 302) == []
    assert [a.rule for a in d.event(offline("zx01-cam-8"), T0 + 303)] == ["device_health"]
    d.school_command(T0 + 304, "unsilence", silence_id=s1)
    s3 = silenced(d, T0 + 305, {}, 60)
    assert s3 == f"sil-{SCHOOL}-0003"  # ids are never reused


def test_suppressed_counts_each_muted_incident():
    d = driver()
    sid = silenced(d, T0, {})
    for i, dev in enumerate(["zx01-cam-7", "zx01-cam-8", "zx01-cam-9"]):
        d.event(offline(dev, f"off-{i}"), T0 + 1 + i)
    assert d.state.memory["silence"]["active"][0]["suppressed"] == 3
    out = d.school_command(T0 + 10, "unsilence", silence_id=sid)
    assert out.notices[0].suppressed == 3


def test_a_redelivered_silence_command_is_a_no_op():
    d = driver()
    cmd = school_command("silence", scope={"device": "zx01-cam-7"}, duration_seconds=600, reason="r", command_id="c-1", at=T0)
    first = engine.on_command(d.state, cmd, T0, d.ctx)
    again = engine.on_command(first.state, cmd, T0 + 1, d.ctx)
    assert len(first.notices) == 1
    assert again.notices == [] and again.rejected == [] and again.alerts == []
    assert len(again.state.memory["silence"]["active"]) == 1


def test_a_redelivered_suppressed_event_is_not_counted_twice():
    """Redelivery of the same (device, event) is a no-op (CONTRACT §1): the silence's count of
    incidents it kept back must not grow with a redelivered copy."""
    d = driver()
    sid = silenced(d, T0, {"device": "zx01-cam-7"})
    ev = offline("zx01-cam-7", "off-1", ts=T0 + 1)
    d.event(ev, T0 + 1)
    d.event(ev, T0 + 2)  # the same message again (e.g. after a worker crash)
    out = d.school_command(T0 + 3, "unsilence", silence_id=sid)
    assert out.notices[0].suppressed == 1


def test_silence_state_round_trips_and_still_expires():
    d = driver()
    sid = silenced(d, T0, {"zone": "gate-north"}, 600)
    d.event(offline("zx01-cam-7"), T0 + 1)
    back = SchoolState.from_dicts(d.state.core_dict(), d.state.memory)
    assert back == d.state
    assert d.state.memory_due() == T0 + 600
    out = engine.on_tick(back, T0 + 600, d.ctx)
    assert [(n.silence_id, n.ended_by, n.suppressed) for n in out.notices] == [(sid, "expiry", 1)]
