"""Rule `device_health` (pipeline/rules/device_health.py): offline, tampered, flat and silent
devices; absence is timer-driven and survives restarts."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.rules import engine
from pipeline.rules.state import SchoolState
from unit_helpers import BUTTONS, SCHOOL, T0, Driver, camera, heartbeat, offline, online, rules_ctx, tamper

TIMEOUT = 180


def driver(**device_health) -> Driver:
    return Driver(rules_ctx(device_health=device_health))


def quiet() -> Driver:
    """Offline / tamper / battery only: no heartbeat timers."""
    return driver(heartbeat_kinds=())


def key_of(d: Driver, iid: str) -> str:
    return d.state.incidents[iid].key


# --- offline, recovery ------------------------------------------------------------------------------


def test_offline_panic_button_is_moderate_and_recovers_on_a_heartbeat():
    d = quiet()
    [a] = d.event(offline("zx01-btn-3"), T0)
    assert (a.rule, a.stage, a.msgType, a.status) == ("device_health", "opened", "Alert", "Actual")
    assert (a.severity, a.certainty, a.zone) == ("Moderate", "Observed", "office")
    assert a.notify == ["onsite", "command"]
    assert a.evidence[0]["device_id"] == "zx01-btn-3" and a.evidence[0]["type"] == "device.offline"
    assert "zx01-btn-3" in a.headline and "offline" in a.headline
    assert key_of(d, a.incident_id) == "zx01-btn-3/offline"
    assert d.event(offline("zx01-btn-3", "off-2"), T0 + 5) == []  # already open: no second incident
    [c] = d.event(heartbeat("zx01-btn-3"), T0 + 10)
    assert (c.incident_id, c.stage, c.msgType) == (a.incident_id, "recovered", "Cancel")
    assert d.state.incidents == {} and d.state.closed[a.incident_id] == ["recovered", T0 + 10]


def test_offline_camera_is_minor_and_recovers_on_any_later_event():
    for later in (online("zx01-cam-7"), camera("video.loiter", "zx01-cam-7", "v-9"), heartbeat("zx01-cam-7")):
        d = quiet()
        [a] = d.event(offline("zx01-cam-7"), T0)
        assert (a.severity, a.zone) == ("Minor", "gate-north")
        [c] = d.event(later, T0 + 30)
        assert (c.incident_id, c.stage) == (a.incident_id, "recovered")
        # offline again later: a new incident
        [b] = d.event(offline("zx01-cam-7", "off-2"), T0 + 60)
        assert b.stage == "opened" and b.incident_id != a.incident_id


def test_only_the_device_itself_recovers_its_incident():
    d = quiet()
    d.event(offline("zx01-cam-7"), T0)
    assert d.event(heartbeat("zx01-cam-8"), T0 + 1) == []
    assert len(d.state.incidents) == 1


def test_severities_are_configurable():
    d = driver(heartbeat_kinds=(), severity_panic_button="Severe", severity_other="Moderate", severity_tamper="Extreme")
    assert d.event(offline("zx01-btn-1"), T0)[0].severity == "Severe"
    assert d.event(offline("zx01-cam-7"), T0)[0].severity == "Moderate"
    assert d.event(tamper("zx01-cam-8"), T0)[0].severity == "Extreme"


def test_drill_offline_is_an_exercise_incident():
    d = quiet()
    [a] = d.event(offline("zx01-cam-7", exercise=True), T0)
    assert a.status == "Exercise" and a.headline.startswith("[DRILL] ")


# --- tamper, battery ------------------------------------------------------------------------------------


def test_tamper_is_severe_and_is_not_closed_by_a_heartbeat():
    d = quiet()
    [a] = d.event(tamper("zx01-cam-7"), T0)
    assert (a.rule, a.severity, a.stage) == ("device_health", "Severe", "opened")
    assert "tampered" in a.headline
    assert d.event(tamper("zx01-cam-7", "t-2"), T0 + 1) == []
    assert d.event(heartbeat("zx01-cam-7", battery=90), T0 + 2) == []
    assert d.state.incidents[a.incident_id].is_open
    [c] = d.command(T0 + 3, "resolve", a.incident_id).alerts
    assert c.stage == "resolved"


def test_tamper_of_a_panic_button_is_severe_too():
    d = quiet()
    [a] = d.event(tamper("zx01-sos-2"), T0)
    assert a.severity == "Severe"


def test_low_battery_is_minor_and_closes_when_back_above():
    d = quiet()
    assert d.event(heartbeat("zx01-btn-1", "hb-1", battery=20), T0) == []  # 20 is not below 20
    [a] = d.event(heartbeat("zx01-btn-1", "hb-2", battery=19.5), T0 + 1)
    assert (a.rule, a.severity, a.stage) == ("device_health", "Minor", "opened")  # even on a panic button
    assert "battery" in a.headline
    assert d.event(heartbeat("zx01-btn-1", "hb-3", battery=5), T0 + 2) == []
    assert d.event(heartbeat("zx01-btn-1", "hb-4"), T0 + 3) == []  # no battery reading: no news
    assert d.event(camera("video.fight", "zx01-cam-7"), T0 + 4) == []
    [c] = d.event(heartbeat("zx01-btn-1", "hb-5", battery=80), T0 + 5)
    assert (c.incident_id, c.stage, c.msgType) == (a.incident_id, "recovered", "Cancel")


def test_battery_threshold_is_configurable():
    d = driver(heartbeat_kinds=(), battery_low_percent=50)
    assert [a.severity for a in d.event(heartbeat("zx01-cam-7", battery=45), T0)] == ["Minor"]


def test_devices_of_other_schools_and_unknown_devices_are_ignored():
    d = quiet()
    assert d.event(offline("bh02-btn-1"), T0) == []
    assert d.event(offline("zx01-nope"), T0) == []
    assert d.state.incidents == {}


def test_disabled_device_health_does_nothing():
    d = Driver(rules_ctx())
    assert d.event(offline("zx01-btn-1"), T0) == []
    assert d.tick(T0 + 10_000) == []
    assert "device_health" not in d.state.memory


# --- absence (timer-driven) ---------------------------------------------------------------------------


def beat(d: Driver, devices, now: float) -> list:
    out = []
    for dev in devices:
        out += d.event(heartbeat(dev, f"hb-{dev}-{now}"), now)
    return out


def test_silent_panic_button_raises_once_at_the_timeout_with_no_other_traffic():
    d = driver()
    assert d.tick(T0) == []  # the school is first seen: the clock starts
    assert d.state.memory["device_health"]["due"] == T0 + TIMEOUT
    beat(d, ["zx01-btn-1", "zx01-btn-3"], T0 + 100)
    assert d.state.memory["device_health"]["due"] == T0 + TIMEOUT  # sos-2 never reported
    assert d.tick(T0 + TIMEOUT - 0.001) == []
    [a] = d.tick(T0 + TIMEOUT)
    assert (a.rule, a.stage, a.severity, a.status) == ("device_health", "opened", "Moderate", "Actual")
    assert a.evidence[0]["device_id"] == "zx01-sos-2" and a.evidence[0]["type"] == "device.absent"
    assert "no heartbeat" in a.headline
    assert key_of(d, a.incident_id) == "zx01-sos-2/absent"
    # next due: the other two buttons' timeouts; the absent one is not re-armed
    assert d.state.memory["device_health"]["due"] == T0 + 100 + TIMEOUT
    for t in (T0 + TIMEOUT, T0 + TIMEOUT + 0.5, T0 + 200, T0 + 279):
        assert d.tick(t) == []
    beat(d, ["zx01-btn-1", "zx01-btn-3"], T0 + 250)
    [c] = d.event(heartbeat("zx01-sos-2", "hb-back"), T0 + 260)
    assert (c.incident_id, c.stage, c.msgType) == (a.incident_id, "recovered", "Cancel")
    assert d.state.memory["device_health"]["due"] == T0 + 250 + TIMEOUT  # sos-2 is watched again
    assert d.tick(T0 + 250 + TIMEOUT - 1) == []
    # silent again: a new incident
    beat(d, ["zx01-btn-1", "zx01-btn-3"], T0 + 400)
    [b] = d.tick(T0 + 260 + TIMEOUT)
    assert b.incident_id != a.incident_id and b.evidence[0]["device_id"] == "zx01-sos-2"


def test_all_silent_buttons_raise_together_on_one_late_tick():
    d = driver()
    d.tick(T0)
    alerts = d.tick(T0 + 5000)
    assert sorted(a.evidence[0]["device_id"] for a in alerts) == sorted(BUTTONS)
    assert d.state.memory["device_health"]["due"] is None  # nothing left to watch
    assert d.tick(T0 + 10_000) == []


def test_any_event_of_a_button_counts_as_a_sign_of_life():
    d = driver()
    d.tick(T0)
    beat(d, BUTTONS, T0 + 10)
    d.press(T0 + 100, device_id="zx01-sos-2")
    alerts = d.tick(T0 + 10 + TIMEOUT)
    assert sorted(a.evidence[0]["device_id"] for a in alerts if a.rule == "device_health") == ["zx01-btn-1", "zx01-btn-3"]


def test_cameras_are_not_watched_unless_configured():
    d = driver(heartbeat_timeout_seconds=60)
    d.tick(T0)
    alerts = d.tick(T0 + 60)
    assert sorted(a.evidence[0]["device_id"] for a in alerts) == sorted(BUTTONS)  # by default
    d2 = driver(heartbeat_kinds=("panic_button", "video_analytics"), heartbeat_timeout_seconds=60)
    d2.tick(T0)
    alerts = d2.tick(T0 + 60)
    watched = sorted(a.evidence[0]["device_id"] for a in alerts)
    assert watched == sorted([*BUTTONS, "zx01-cam-7", "zx01-cam-8", "zx01-cam-9"])
    assert {a.severity for a in alerts if "cam" in a.evidence[0]["device_id"]} == {"Minor"}


def test_timeout_is_configurable_per_school():
    d = driver(schools={SCHOOL: {"heartbeat_timeout_seconds": 30}})
    d.tick(T0)
    assert len(d.tick(T0 + 30)) == len(BUTTONS)


def test_absence_survives_a_restart_mid_way():
    """Round-trip the two stored values after every input: the same alerts, the same state."""

    def script(d: Driver) -> None:
        d.tick(T0)
        beat(d, ["zx01-btn-1", "zx01-btn-3"], T0 + 100)
        d.tick(T0 + 150)
        d.event(offline("zx01-cam-7"), T0 + 160)
        d.tick(T0 + TIMEOUT)
        d.tick(T0 + TIMEOUT + 1)
        d.event(heartbeat("zx01-btn-1", "low", battery=10), T0 + 200)
        d.event(heartbeat("zx01-sos-2", "back"), T0 + 260)
        d.tick(T0 + 100 + TIMEOUT)
        d.tick(T0 + 1000)

    class Restarting(Driver):
        def _take(self, outcome):
            alerts = super()._take(outcome)
            core = orjson.loads(orjson.dumps(self.state.core_dict()))
            memory = orjson.loads(orjson.dumps(self.state.memory))
            self.state = SchoolState.from_dicts(core, memory)
            return alerts

    plain, restarted = driver(), Restarting(rules_ctx(device_health={}))
    script(plain)
    script(restarted)
    assert [a.to_dict() for a in restarted.alerts] == [a.to_dict() for a in plain.alerts]
    assert restarted.state == plain.state
    assert len(plain.alerts) >= 6


def test_restored_state_fires_at_the_stored_due_time():
    d = driver()
    d.tick(T0)
    beat(d, BUTTONS, T0 + 50)
    core, memory = d.state.core_dict(), d.state.memory
    assert d.state.memory_due() == memory["device_health"]["due"] == T0 + 50 + TIMEOUT
    back = SchoolState.from_dicts(core, memory)
    assert engine.on_tick(back, T0 + 50 + TIMEOUT - 1, d.ctx).alerts == []
    assert len(engine.on_tick(back, T0 + 50 + TIMEOUT, d.ctx).alerts) == len(BUTTONS)


def test_an_absent_button_during_a_flood_is_raised_once():
    """A silent panic button is raised once, not on every tick, also while the school is
    flooding (its Moderate incident is folded into the flood summary then)."""
    d = Driver(rules_ctx(device_health={}, flood={"max_incidents": 2}))
    d.tick(T0)
    beat(d, ["zx01-btn-1", "zx01-btn-3"], T0 + 100)
    for i, cam in enumerate(["zx01-cam-7", "zx01-cam-8", "zx01-cam-9"]):
        d.event(offline(cam), T0 + 101 + i)
    before = len(d.alerts)
    d.tick(T0 + TIMEOUT)  # sos-2 is absent: folded
    d.tick(T0 + TIMEOUT + 0.5)
    d.tick(T0 + TIMEOUT + 1)
    d.tick(T0 + TIMEOUT + 1.5)
    later = d.alerts[before:]
    assert len(later) == 1, [(a.rule, a.stage) for a in later]
    assert later[0].rule == "flood" and later[0].evidence[-1]["device_id"] == "zx01-sos-2"


# --- property: the absence timer ---------------------------------------------------------------------

actions = st.lists(
    st.tuples(st.sampled_from([0, 0.5, 1, 30, 60, 90, 179, 180, 181, 400]), st.sampled_from([None, *BUTTONS])),  # None: a tick
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(actions)
def test_absence_timer_properties(script):
    """For random heartbeats and ticks of the three buttons: an absent incident opens only
    after a full timeout of silence, at most one per button is open, every button silent
    for a timeout has one after a tick, and the memory's due is the earliest next absence."""
    d = driver()
    now = T0
    d.tick(now)
    last = {b: T0 for b in BUTTONS}
    for dt, who in script:
        now += dt
        if who is None:
            alerts = d.tick(now)
        else:
            alerts = d.event(heartbeat(who, f"hb-{now}"), now)
        for a in alerts:
            dev = a.evidence[0]["device_id"]
            if a.stage == "opened":
                assert now - last[dev] >= TIMEOUT - 1e-6, (dev, now - last[dev])
        if who is not None:
            last[who] = now
        absent = {i.key.split("/")[0] for i in d.state.incidents.values() if i.key.endswith("/absent")}
        keys = [i.key for i in d.state.incidents.values()]
        assert len(keys) == len(set(keys))
        for b in BUTTONS:
            assert (b in absent) == (now - last[b] >= TIMEOUT), (b, now - last[b])
        watched = [last[b] + TIMEOUT for b in BUTTONS if b not in absent]
        assert d.state.memory["device_health"]["due"] == (min(watched) if watched else None)
