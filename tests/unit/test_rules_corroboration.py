"""Rule `corroborated` (pipeline/rules/corroboration.py): a panic press confirmed by a sensor,
and k-of-n sensor confirmation within one zone."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.rules.state import SchoolState
from unit_helpers import OTHER_SCHOOL, T0, Driver, camera, door, fence, press, rules_ctx, scream

ALL = ["onsite", "mobile", "command"]


def driver(**corroboration) -> Driver:
    return Driver(rules_ctx(corroboration=corroboration))


LADDER = ("onsite_overdue", "mobile_late", "mobile_overdue")


def no_ladder(alerts):
    """Leave out the panic ladder's deadline stages (they fire on any input once due)."""
    return [a for a in alerts if a.stage not in LADDER]


def ev_ids(alert) -> list[tuple[str, str]]:
    return [(e["device_id"], e["event_id"]) for e in alert.evidence]


# --- a press confirmed by a sensor -----------------------------------------------------------------


@pytest.mark.parametrize(
    "sensor",
    [
        lambda t: camera("video.fight", "zx01-cam-7", "v-1", ts=t),
        lambda t: camera("video.intrusion", "zx01-cam-9", "v-1", ts=t),
        lambda t: scream("zx01-mic-1", "a-1", ts=t),
        lambda t: door("zx01-door-1", "d-1", ts=t),
        lambda t: fence("zx01-fence-2", "f-1", ts=t),
    ],
)
def test_press_then_sensor_corroborates(sensor):
    d = driver()
    [p] = d.press(T0)
    assert p.certainty == "Likely"
    ev = sensor(T0 + 30)
    [u] = d.event(ev, T0 + 30)
    assert (u.incident_id, u.rule, u.msgType, u.stage) == (p.incident_id, "panic", "Update", "corroborated")
    assert u.certainty == "Observed" and u.severity == "Extreme"
    assert ev_ids(u) == [("zx01-btn-1", "e-1"), (ev.device_id, ev.event_id)]
    assert "corroborated" in u.headline
    assert d.state.incidents[p.incident_id].certainty == "Observed"
    # the ladder is unchanged
    assert [a.stage for a in d.tick(T0 + 60)] == ["onsite_overdue"]


def test_sensor_then_press_corroborates():
    d = driver()
    assert d.event(camera("video.fight", "zx01-cam-7", "v-1", ts=T0), T0) == []
    alerts = d.press(T0 + 90)
    assert [(a.stage, a.msgType, a.certainty) for a in alerts] == [("opened", "Alert", "Likely"), ("corroborated", "Update", "Observed")]
    assert alerts[0].incident_id == alerts[1].incident_id
    assert ("zx01-cam-7", "v-1") in ev_ids(alerts[1])


@pytest.mark.parametrize("gap, corroborates", [(119, True), (120, True), (121, False), (600, False)])
def test_window_either_order(gap, corroborates):
    d1 = driver()
    d1.press(T0)
    late = d1.event(camera("video.fight", ts=T0 + gap), T0 + gap)
    d2 = driver()
    d2.event(camera("video.fight", ts=T0), T0)
    after = d2.press(T0 + gap)
    assert [a.stage for a in no_ladder(late)] == (["corroborated"] if corroborates else [])
    assert [a.stage for a in after] == (["opened", "corroborated"] if corroborates else ["opened"])


def test_window_is_configurable():
    d = driver(window_seconds=10)
    d.press(T0)
    assert d.event(camera("video.fight", ts=T0 + 11), T0 + 11) == []
    assert [a.stage for a in d.event(camera("video.fight", "zx01-cam-8", "v-2", ts=T0 + 9), T0 + 12)] == ["corroborated"]


def test_window_is_measured_on_event_times():
    d = driver()
    d.press(T0)
    # happened 30 s after the press, arrived 200 s after it (a slow uplink)
    [u] = no_ladder(d.event(camera("video.fight", ts=T0 + 30, received=T0 + 200), T0 + 200))
    assert u.stage == "corroborated"


def test_other_event_types_do_not_corroborate():
    d = driver()
    d.press(T0)
    for i, etype in enumerate(["video.fall", "video.loiter", "video.crowd", "device.heartbeat", "device.tamper"]):
        assert d.event(camera(etype, event_id=f"x-{i}", ts=T0 + i), T0 + i) == []
    assert d.state.incidents[d.alerts[0].incident_id].certainty == "Likely"


def test_drills_and_real_events_never_corroborate_each_other():
    d = driver()
    d.press(T0, exercise=True)
    assert d.event(camera("video.fight", "zx01-cam-7", "v-1", ts=T0 + 5), T0 + 5) == []
    d2 = driver()
    d2.press(T0)
    assert d2.event(camera("video.fight", "zx01-cam-7", "v-1", ts=T0 + 5, exercise=True), T0 + 5) == []
    d3 = driver()
    d3.event(camera("video.fight", "zx01-cam-7", "v-1", ts=T0, exercise=True), T0)
    assert [a.stage for a in d3.press(T0 + 5)] == ["opened"]
    # a drill confirms a drill
    [u] = d.event(camera("video.fight", "zx01-cam-8", "v-2", ts=T0 + 6, exercise=True), T0 + 6)
    assert (u.stage, u.status) == ("corroborated", "Exercise")


def test_a_press_at_another_school_is_not_corroborated():
    ctx = rules_ctx(corroboration={})
    here = Driver(ctx)
    there = Driver(ctx, state=SchoolState(school_id=OTHER_SCHOOL))
    [p] = there.event(press("e-1", device_id="bh02-btn-1", school_id=OTHER_SCHOOL, zone=""), T0)
    assert here.event(camera("video.fight", ts=T0 + 5), T0 + 5) == []
    assert there.state.incidents[p.incident_id].certainty == "Likely"


def test_corroboration_happens_once_then_further_sensors_join():
    d = driver()
    d.press(T0)
    [u1] = d.event(camera("video.fight", "zx01-cam-7", "v-1", ts=T0 + 5), T0 + 5)
    [u2] = d.event(scream("zx01-mic-1", "a-1", ts=T0 + 6), T0 + 6)
    assert u1.stage == "corroborated"
    assert u2.stage == "joined-3" and u2.certainty == "Observed"
    assert len(set(d.stages())) == len(d.stages())


def test_several_earlier_sensors_all_join_the_press():
    d = driver()
    d.event(camera("video.fight", "zx01-cam-7", "v-1", ts=T0), T0)
    d.event(scream("zx01-mic-1", "a-1", ts=T0 + 1), T0 + 1)
    alerts = d.press(T0 + 2)
    # one Update carries everything that confirmed the press
    assert [a.stage for a in alerts] == ["opened", "corroborated"]
    assert set(ev_ids(alerts[-1])) == {("zx01-btn-1", "e-1"), ("zx01-cam-7", "v-1"), ("zx01-mic-1", "a-1")}
    assert d.state.incidents[alerts[0].incident_id].evidence_total == 3


def test_a_redelivered_sensor_event_does_not_count_twice():
    d = driver()
    v = camera("video.fight", "zx01-cam-7", "v-1", ts=T0)
    d.event(v, T0)
    assert d.event(v, T0 + 1) == []  # the same message again
    alerts = d.press(T0 + 2)
    assert [a.stage for a in alerts] == ["opened", "corroborated"]
    assert ev_ids(alerts[-1]).count(("zx01-cam-7", "v-1")) == 1
    # and after the corroboration, a copy adds nothing
    assert d.event(v, T0 + 3) == []
    assert d.press(T0 + 4, event_id="e-1") == []


def test_a_sensor_event_near_a_later_press_of_the_same_incident_corroborates():
    """A press joins the open panic incident; a sensor event within the window of *that*
    press corroborates, as it would in the other order (issue 3: 'either order')."""
    d = driver()
    [p] = d.press(T0)
    [j] = no_ladder(d.press(T0 + 300, event_id="e-2", device_id="zx01-btn-3"))
    assert j.stage == "joined-2"
    [u] = no_ladder(d.event(camera("video.fight", ts=T0 + 310), T0 + 310))
    assert (u.incident_id, u.stage, u.certainty) == (p.incident_id, "corroborated", "Observed")


# --- k of n sensors in one zone -------------------------------------------------------------------


def test_two_kinds_of_sensor_in_one_zone_open_a_severe_incident():
    d = driver()
    assert d.event(camera("video.intrusion", "zx01-cam-7", "v-1", ts=T0), T0) == []
    [a] = d.event(fence("zx01-fence-1", "f-1", ts=T0 + 30), T0 + 30)
    assert (a.rule, a.stage, a.msgType, a.status) == ("corroborated", "opened", "Alert", "Actual")
    assert (a.severity, a.urgency, a.certainty, a.zone) == ("Severe", "Immediate", "Observed", "gate-north")
    assert a.notify == ALL
    assert ev_ids(a) == [("zx01-fence-1", "f-1"), ("zx01-cam-7", "v-1")]  # the trigger first
    assert "2 sensors" in a.headline and "fence" in a.headline and "video_analytics" in a.headline
    inc = d.state.incidents[a.incident_id]
    assert inc.key == "gate-north" and inc.deadlines == {"expired": T0 + 30 + 1800}


def test_later_reports_in_the_zone_join_and_quiet_closes_it():
    d = driver()
    d.event(camera("video.intrusion", "zx01-cam-7", "v-1", ts=T0), T0)
    [a] = d.event(fence("zx01-fence-1", "f-1", ts=T0 + 30), T0 + 30)
    [j] = d.event(camera("video.intrusion", "zx01-cam-8", "v-2", ts=T0 + 60), T0 + 60)
    assert (j.incident_id, j.stage, j.msgType) == (a.incident_id, "joined-3", "Update")
    assert d.tick(T0 + 60 + 1799) == []
    [c] = d.tick(T0 + 60 + 1800)
    assert (c.incident_id, c.stage, c.msgType) == (a.incident_id, "expired", "Cancel")


@pytest.mark.parametrize(
    "first, second",
    [
        # the same sensor twice
        (camera("video.intrusion", "zx01-cam-7", "v-1", ts=T0), camera("video.intrusion", "zx01-cam-7", "v-2", ts=T0 + 5)),
        # two sensors of the same kind
        (camera("video.intrusion", "zx01-cam-7", "v-1", ts=T0), camera("video.intrusion", "zx01-cam-8", "v-2", ts=T0 + 5)),
        # two kinds, different zones
        (camera("video.intrusion", "zx01-cam-7", "v-1", ts=T0), fence("zx01-fence-2", "f-1", ts=T0 + 5)),
        # too far apart
        (camera("video.intrusion", "zx01-cam-7", "v-1", ts=T0), fence("zx01-fence-1", "f-1", ts=T0 + 121)),
        # not intrusion-type events (a fight and a scream corroborate presses only)
        (camera("video.fight", "zx01-cam-7", "v-1", ts=T0), scream("zx01-mic-1", "a-1", ts=T0 + 5)),
        # one intrusion-type, one not
        (scream("zx01-mic-1", "a-1", ts=T0), camera("video.intrusion", "zx01-cam-7", "v-1", ts=T0 + 5)),
        # a drill and a real event
        (camera("video.intrusion", "zx01-cam-7", "v-1", ts=T0, exercise=True), fence("zx01-fence-1", "f-1", ts=T0 + 5)),
    ],
)
def test_near_misses_raise_nothing(first, second):
    d = driver()
    for ev in (first, second):
        now = max(ev.ts_epoch, ev.received_epoch)
        assert d.event(ev, now) == []
    assert d.state.incidents == {}


def test_zone_window_is_symmetric_in_event_time():
    """Two sensors whose events happened 300 s apart (> zone_window 120 s) are not a
    confirmation, whichever of them arrives first."""
    early_first = driver()
    early_first.event(camera("video.intrusion", "zx01-cam-7", "v-1", ts=T0, received=T0 + 250), T0 + 250)
    assert early_first.event(fence("zx01-fence-1", "f-1", ts=T0 + 300), T0 + 300) == []
    late_first = driver()
    late_first.event(fence("zx01-fence-1", "f-1", ts=T0 + 300), T0 + 300)
    # arrives after the fence's report, but its (credible, within max skew) clock says T0
    assert late_first.event(camera("video.intrusion", "zx01-cam-7", "v-1", ts=T0, received=T0 + 310), T0 + 310) == []
    assert late_first.state.incidents == {}


def test_a_redelivered_zone_event_does_not_count_twice():
    d = driver(min_sensors=3, min_kinds=2)
    v = camera("video.intrusion", "zx01-cam-7", "v-1", ts=T0)
    f = fence("zx01-fence-1", "f-1", ts=T0 + 1)
    for ev, now in ((v, T0), (v, T0 + 1), (f, T0 + 2), (f, T0 + 3)):
        assert d.event(ev, now) == []
    [a] = d.event(camera("video.intrusion", "zx01-cam-8", "v-2", ts=T0 + 4), T0 + 4)
    assert sorted(ev_ids(a)) == [("zx01-cam-7", "v-1"), ("zx01-cam-8", "v-2"), ("zx01-fence-1", "f-1")]
    assert d.event(f, T0 + 5) == [] and d.event(v, T0 + 6) == []


def test_a_late_redelivered_copy_does_not_open_an_incident():
    """CONTRACT §1: redelivery of the same (device_id, event_id) never produces an incident.
    The camera's event and the fence's are 121 s apart: no confirmation, and a copy of the
    camera's event delivered again later must not make one."""
    d = driver()
    v = camera("video.intrusion", "zx01-cam-7", "v-1", ts=T0)
    assert d.event(v, T0) == []
    assert d.event(fence("zx01-fence-1", "f-1", ts=T0 + 121), T0 + 121) == []
    copy = camera("video.intrusion", "zx01-cam-7", "v-1", ts=T0, received=T0 + 122)
    assert d.event(copy, T0 + 122) == []
    assert d.state.incidents == {}


def test_k_of_n_is_configurable():
    d = driver(min_sensors=3, min_kinds=1)
    d.event(camera("video.intrusion", "zx01-cam-7", "v-1", ts=T0), T0)
    assert d.event(camera("video.intrusion", "zx01-cam-8", "v-2", ts=T0 + 1), T0 + 1) == []
    [a] = d.event(fence("zx01-fence-1", "f-1", ts=T0 + 2), T0 + 2)
    assert a.rule == "corroborated"
    d2 = driver(severity="Extreme")
    d2.event(camera("video.intrusion", "zx01-cam-7", "v-1", ts=T0), T0)
    [b] = d2.event(door("zx01-door-1", "d-1", ts=T0 + 1, zone="gate-north"), T0 + 1)
    assert b.severity == "Extreme"


def test_zone_drills_open_exercise_incidents():
    d = driver()
    d.event(camera("video.intrusion", "zx01-cam-7", "v-1", ts=T0, exercise=True), T0)
    [a] = d.event(fence("zx01-fence-1", "f-1", ts=T0 + 1, exercise=True), T0 + 1)
    assert (a.rule, a.status) == ("corroborated", "Exercise")
    # a real pair in the same zone gets its own Actual incident
    d.event(camera("video.intrusion", "zx01-cam-8", "v-2", ts=T0 + 2), T0 + 2)
    [b] = d.event(fence("zx01-fence-1", "f-2", ts=T0 + 3), T0 + 3)
    assert (b.rule, b.status, b.stage) == ("corroborated", "Actual", "opened") and b.incident_id != a.incident_id


def test_corroboration_disabled_does_nothing():
    d = Driver(rules_ctx())
    d.press(T0)
    assert d.event(camera("video.fight", ts=T0 + 5), T0 + 5) == []
    d.event(camera("video.intrusion", "zx01-cam-7", "v-1", ts=T0 + 6), T0 + 6)
    assert d.event(fence("zx01-fence-1", "f-1", ts=T0 + 7), T0 + 7) == []


def test_memory_round_trip_keeps_recent_sensor_events():
    d = driver()
    d.event(camera("video.fight", "zx01-cam-7", "v-1", ts=T0), T0)
    d.state = SchoolState.from_dicts(d.state.core_dict(), d.state.memory)
    assert [a.stage for a in d.press(T0 + 10)] == ["opened", "corroborated"]


# --- property: the zone rule over random sensor interleavings ----------------------------------------

ZONE_SENSORS = [("zx01-cam-7", "video.intrusion"), ("zx01-cam-8", "video.intrusion"), ("zx01-fence-1", "fence.breach"), ("zx01-cam-9", "video.intrusion"), ("zx01-fence-2", "fence.breach")]
ZONE = {"zx01-cam-7": "gate-north", "zx01-cam-8": "gate-north", "zx01-fence-1": "gate-north", "zx01-cam-9": "field", "zx01-fence-2": "field"}
KIND = {"zx01-cam-7": "cam", "zx01-cam-8": "cam", "zx01-fence-1": "fence", "zx01-cam-9": "cam", "zx01-fence-2": "fence"}


@settings(max_examples=150, deadline=None)
@example([(0, 0, 0), (2, 121, 0), (0, 0, 0)])  # cam-7 x-0; fence 121 s later; a copy of x-0
@example([(3, 0, 0), (4, 121, 0), (0, 119, 0), (0, 200, 0), (3, 200, 0), (4, 0, 0)])  # copies 640 s late
@given(st.lists(st.tuples(st.sampled_from(range(len(ZONE_SENSORS))), st.sampled_from([0, 1, 10, 60, 119, 121, 200]), st.integers(0, 3)), max_size=12))
def test_zone_incident_opens_exactly_when_two_kinds_meet_within_the_window(script):
    """Device clocks are right: an Actual zone incident opens in a zone the first time two
    sensors of different kinds of that zone reported within 120 s, and then only joins.
    A repeated (device, event id) is a redelivered copy (same ts) and never opens one."""
    d = driver()
    now = T0
    first_ts: dict[tuple[str, str], float] = {}
    seen: list[tuple[float, str]] = []  # (t, device) of distinct events
    opened: set[str] = set()
    for idx, dt, n in script:
        now += dt
        device, etype = ZONE_SENSORS[idx]
        ident = (device, f"x-{n}")
        copy = ident in first_ts
        ts = first_ts.setdefault(ident, now)
        ev = camera(etype, device, ident[1], ts=ts, received=now) if etype.startswith("video") else fence(device, ident[1], ts=ts, received=now)
        alerts = d.event(ev, now)
        stages = [a.stage for a in alerts if a.rule == "corroborated"]
        zone = ZONE[device]
        if copy:
            assert "opened" not in stages
            continue
        seen.append((now, device))

        def kinds_within(limit_ok) -> int:
            return len({KIND[dev] for t, dev in seen if ZONE[dev] == zone and limit_ok(now - t)})

        strict, inclusive = kinds_within(lambda x: x < 120) >= 2, kinds_within(lambda x: x <= 120) >= 2
        if zone not in opened and strict == inclusive:  # (exactly 120 s apart: see test_window_either_order)
            assert stages == (["opened"] if strict else []), (zone, seen)
        if "opened" in stages:
            opened.add(zone)
        elif zone in opened:
            assert len(stages) == 1 and stages[0].startswith("joined-")
