"""Flood control (pipeline/rules/flood.py via dispatch.py): beyond `max_incidents` non-panic
incidents in `window_seconds`, further Minor/Moderate ones fold into one `flood` summary."""

from __future__ import annotations

from pipeline.rules import engine
from pipeline.rules.state import SchoolState
from unit_helpers import SCHOOL, T0, Driver, offline, rules_ctx, tamper

CAMS = ["zx01-cam-7", "zx01-cam-8", "zx01-cam-9", "zx01-fence-1", "zx01-fence-2", "zx01-mic-1", "zx01-door-1", "zx01-face-1", "zx01-lpr-1", "zx01-guard-1"]


def driver(max_incidents: int = 3, window: float = 600, **tuned) -> Driver:
    tuned.setdefault("device_health", {"heartbeat_kinds": ()})
    return Driver(rules_ctx(flood={"max_incidents": max_incidents, "window_seconds": window}, **tuned))


def down(d: Driver, device: str, now: float, **kw):
    return d.event(offline(device, f"off-{device}-{now}", ts=now, **kw), now)


def test_below_the_limit_everything_opens():
    d = driver()
    for i, cam in enumerate(CAMS[:3]):
        [a] = down(d, cam, T0 + i)
        assert (a.rule, a.stage) == ("device_health", "opened")
    assert "flood" not in {a.rule for a in d.alerts}
    assert d.state.memory["flood"]["due"] is None  # no summary open: no timer
    assert d.state.memory_due() is None


def test_beyond_the_limit_minor_and_moderate_fold_into_one_summary():
    d = driver()
    for i, cam in enumerate(CAMS[:3]):
        down(d, cam, T0 + i)
    [s] = down(d, CAMS[3], T0 + 3)
    assert (s.rule, s.stage, s.msgType, s.severity) == ("flood", "opened", "Alert", "Moderate")
    assert s.notify == ["command"]
    [item] = s.evidence
    assert (item["device_id"], item["rule"], item["severity"]) == (CAMS[3], "device_health", "Minor")
    assert "headline" in item
    assert not [i for i in d.state.incidents.values() if i.rule == "device_health" and i.key.startswith(CAMS[3])]
    # the next ones join the summary as Updates with their evidence (a Moderate one too)
    [u] = down(d, CAMS[4], T0 + 4)
    [v] = d.event(offline("zx01-btn-3", "off-btn"), T0 + 5)
    assert (u.incident_id, u.msgType, u.stage) == (s.incident_id, "Update", "joined-2")
    assert (v.incident_id, v.stage) == (s.incident_id, "joined-3")
    assert [e["device_id"] for e in v.evidence] == [CAMS[3], CAMS[4], "zx01-btn-3"]
    assert v.evidence[-1]["severity"] == "Moderate"
    assert [i.rule for i in d.state.incidents.values()].count("flood") == 1
    assert len([i for i in d.state.incidents.values() if i.rule == "device_health"]) == 3


def test_severe_still_opens_during_a_flood():
    d = driver()
    for i, cam in enumerate(CAMS[:4]):
        down(d, cam, T0 + i)
    [a] = d.event(tamper("zx01-mic-1", "t-1"), T0 + 10)  # a device with no open incident
    assert (a.rule, a.severity, a.stage, a.notify) == ("device_health", "Severe", "opened", ["onsite", "command"])


def test_panic_is_never_folded_nor_counted():
    d = driver()
    down(d, CAMS[0], T0)
    down(d, CAMS[1], T0 + 1)
    [p] = d.press(T0 + 2)
    assert p.rule == "panic"
    [a] = down(d, CAMS[2], T0 + 3)  # the third non-panic incident: still under the limit
    assert a.rule == "device_health"
    [f] = down(d, CAMS[3], T0 + 4)
    assert f.rule == "flood"
    # during the flood a press still opens its own Extreme incident and escalates
    [x] = d.press(T0 + 5, event_id="drill-1", exercise=True)
    assert (x.rule, x.stage, x.status) == ("panic", "opened", "Exercise")
    [j] = d.press(T0 + 6, event_id="e-2", device_id="zx01-btn-3")
    assert (j.rule, j.incident_id, j.stage) == ("panic", p.incident_id, "joined-2")
    assert {a.rule for a in d.tick(T0 + 70)} == {"panic"}


def test_the_summary_ends_when_the_rate_drops():
    d = driver()
    for i, cam in enumerate(CAMS[:5]):  # T0..T0+4: three open, two folded
        down(d, cam, T0 + i)
    summary = d.alerts[3].incident_id
    assert d.state.memory["flood"]["due"] == T0 + 600  # when the oldest leaves the window
    assert d.tick(T0 + 599.999) == []
    assert d.tick(T0 + 600) == []  # four left in the window: still flooding
    assert d.state.memory["flood"]["due"] == T0 + 601
    [end] = d.tick(T0 + 601)  # three left: back at the limit
    assert (end.incident_id, end.rule, end.stage, end.msgType) == (summary, "flood", "ended", "Cancel")
    assert summary not in d.state.incidents and d.state.closed[summary][0] == "ended"
    assert d.tick(T0 + 700) == []
    # later, at a normal rate, incidents open on their own again
    [a] = down(d, CAMS[5], T0 + 1300)
    assert (a.rule, a.stage) == ("device_health", "opened")


def test_the_summary_ends_on_the_next_input_if_no_tick_came():
    d = driver()
    for i, cam in enumerate(CAMS[:4]):
        down(d, cam, T0 + i)
    alerts = down(d, CAMS[4], T0 + 2000)
    assert [(a.rule, a.stage) for a in alerts] == [("flood", "ended"), ("device_health", "opened")]


def test_flood_disabled_never_folds():
    d = Driver(rules_ctx(device_health={"heartbeat_kinds": ()}))
    for i, cam in enumerate(CAMS):
        [a] = down(d, cam, T0 + i)
        assert a.rule == "device_health"


def test_flood_limits_are_per_school_settings():
    d = Driver(rules_ctx(device_health={"heartbeat_kinds": ()}, flood={"max_incidents": 10, "schools": {SCHOOL: {"max_incidents": 1}}}))
    down(d, CAMS[0], T0)
    [f] = down(d, CAMS[1], T0 + 1)
    assert f.rule == "flood"


def test_flood_state_round_trips_and_still_ends():
    d = driver()
    for i, cam in enumerate(CAMS[:4]):
        down(d, cam, T0 + i)
    back = SchoolState.from_dicts(d.state.core_dict(), d.state.memory)
    assert back == d.state
    assert d.state.memory_due() == T0 + 600
    out = engine.on_tick(back, T0 + 600, d.ctx)
    assert [(a.rule, a.stage) for a in out.alerts] == [("flood", "ended")]


def test_drills_flood_on_their_own():
    d = driver()
    for i, cam in enumerate(CAMS[:4]):
        down(d, cam, T0 + i, exercise=True)
    assert [(a.rule, a.status) for a in d.alerts][-1] == ("flood", "Exercise")


def test_drill_incidents_do_not_fold_real_ones():
    """Drills never mix with Actual incidents (issue 3): a burst of drill incidents must not
    fold the next real incident into a flood summary."""
    d = driver()
    for i, cam in enumerate(CAMS[:4]):
        down(d, cam, T0 + i, exercise=True)
    [real] = down(d, CAMS[5], T0 + 10)
    assert (real.rule, real.status, real.stage) == ("device_health", "Actual", "opened")
