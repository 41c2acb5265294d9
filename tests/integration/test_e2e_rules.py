"""Every correlation rule end to end: events over MQTT -> bridge -> Kafka -> worker -> alerts.

One bridge + worker for the module, with a registry made for it: schools r01..r12 with
every kind of device, calendars relative to the test run (always open, never open, a
drop-off window around now), and rule settings tuned per school. Each test uses its own
school(s). Near-miss tests end with a sentinel (a drill press at the same school, same
partition): once its alert is out, everything before it was processed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from harness import Pipeline, wait_for

pytestmark = pytest.mark.integration

TZ = "Asia/Shanghai"
ALWAYS_OPEN = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "open": "00:00", "close": "00:00"}
NEVER_OPEN = {"days": [], "open": "07:30", "close": "17:30"}


def hhmmss(dt: datetime) -> str:
    return dt.strftime("%H:%M:%S")


def devices(sid: str) -> list[dict]:
    d = lambda suffix, kind, zone: {"id": f"{sid}-{suffix}", "school": sid, "kind": kind, "zone": zone}  # noqa: E731
    return [
        d("btn-1", "panic_button", "gate"),
        d("btn-2", "panic_button", "office"),
        d("cam-gate", "video_analytics", "gate"),
        d("cam-yard", "video_analytics", "yard"),
        d("cam-yard2", "video_analytics", "yard"),
        d("fence-yard", "fence", "yard"),
        d("door-yard", "access_control", "yard"),
        d("mic-yard", "audio_sensor", "yard"),
        d("face-gate", "face_camera", "gate"),
        d("lpr-gate", "plate_camera", "gate"),
        d("post-1", "guard_terminal", "gate"),
    ]


def rules_registry() -> dict:
    now = datetime.now(ZoneInfo(TZ))
    around_now = {"start": hhmmss(now - timedelta(hours=1)), "end": hhmmss(now + timedelta(hours=2))}
    schools = []
    for i in range(1, 13):
        sid = f"r{i:02d}"
        school = {"id": sid, "name": f"Rules School {i}", "timezone": TZ, "hours": ALWAYS_OPEN}
        if sid == "r02":
            school["hours"] = NEVER_OPEN
        if sid == "r05":
            school["windows"] = [around_now]
        schools.append(school)
    return {"schools": schools, "devices": [dev for s in schools for dev in devices(s["id"])]}


RULES = {
    "corroboration": {"window_seconds": 60, "zone_window_seconds": 60},
    "plate_watchlist": {"plates": {"京A12345": "Severe"}},
    "vehicle_loitering": {"min_reads": 3, "window_seconds": 120},
    # quiet elsewhere: only r09 watches heartbeats, with a short timeout
    "device_health": {"enabled": False, "schools": {"r09": {"enabled": True, "heartbeat_timeout_seconds": 4}}},
    "post_staffing": {"enabled": False},
    "flood": {"schools": {"r08": {"max_incidents": 3, "window_seconds": 20}}},
}


@pytest.fixture(scope="module")
def pipe(stack, tmp_path_factory):
    p = Pipeline(stack, tmp_path_factory.mktemp("rules"), registry=rules_registry(), rules=RULES, probe_device="r12-cam-gate")
    try:
        yield p.start()
    finally:
        p.close()


def of(pipe: Pipeline, school: str, rule: str | None = None) -> list[dict]:
    return [a for a in pipe.alerts_of(school) if rule in (None, a["rule"])]


def incidents(pipe: Pipeline, school: str, rule: str) -> dict[str, list[dict]]:
    by: dict[str, list[dict]] = {}
    for a in of(pipe, school, rule):
        by.setdefault(a["incident_id"], []).append(a)
    return by


# --- 1. corroboration --------------------------------------------------------------


def test_panic_corroborated_by_a_sensor_in_either_order(pipe):
    pipe.press("r11-btn-1")
    pipe.wait_stage("r11", "opened", rule="panic")
    scream = pipe.emit("r11-mic-yard", "sound.scream", level_db=97)
    up = pipe.wait_stage("r11", "corroborated", rule="panic")
    assert up["certainty"] == "Observed" and up["msgType"] == "Update"
    assert scream["event_id"] in [e["event_id"] for e in up["evidence"]]

    door = pipe.emit("r12-door-yard", "door.forced", door="east")  # the sensor first
    pipe.wait_stage("r12", "opened", rule="perimeter")
    pipe.press("r12-btn-1")
    up = pipe.wait_stage("r12", "corroborated", rule="panic")
    assert door["event_id"] in [e["event_id"] for e in up["evidence"]]
    merged = pipe.wait_stage("r12", "superseded", rule="perimeter")
    assert merged["msgType"] == "Cancel" and merged["superseded_by"] == up["incident_id"]


def test_two_sensors_of_two_kinds_in_one_zone_open_a_severe_incident(pipe):
    pipe.emit("r01-fence-yard", "fence.breach")
    pipe.wait_stage("r01", "opened", rule="perimeter")
    pipe.emit("r01-cam-yard", "video.intrusion")
    opened = pipe.wait_stage("r01", "opened", rule="corroborated")
    assert opened["severity"] == "Severe" and opened["certainty"] == "Observed" and opened["zone"] == "yard"
    assert {e["device_id"] for e in opened["evidence"]} == {"r01-fence-yard", "r01-cam-yard"}
    assert pipe.wait_stage("r01", "superseded", rule="perimeter")["superseded_by"] == opened["incident_id"]


def test_corroboration_near_misses_raise_nothing(pipe):
    pipe.emit("r10-fence-yard", "fence.breach", zone="north")
    pipe.emit("r10-fence-yard", "fence.breach", zone="north")  # the same sensor twice
    pipe.emit("r10-cam-yard", "video.intrusion", zone="south")
    pipe.emit("r10-cam-yard2", "video.intrusion", zone="south")  # two sensors of one kind
    pipe.emit("r10-door-yard", "door.forced", zone="east")
    pipe.emit("r10-cam-gate", "video.intrusion", zone="west")  # two kinds, two zones
    pipe.emit("r10-door-yard", "door.forced", zone="pond", exercise=True)
    pipe.emit("r10-cam-yard", "video.intrusion", zone="pond")  # a drill does not confirm a real event
    pipe.sentinel("r10", "r10-btn-2")
    assert not of(pipe, "r10", "corroborated")
    # each zone still raises on its own, drills apart: north, south, east, west, pond, pond (drill)
    assert len(incidents(pipe, "r10", "perimeter")) == 6


# --- 2. watchlist faces ------------------------------------------------------------


def test_watchlist_face_opens_and_repeats_join(pipe):
    first = pipe.emit("r03-face-gate", "face.match", watchlist="wanted", person_ref="P-77", similarity=0.92)
    opened = pipe.wait_stage("r03", "opened", rule="face_watchlist")
    assert opened["severity"] == "Extreme" and first["event_id"] == opened["evidence"][0]["event_id"]
    pipe.emit("r03-face-gate", "face.match", watchlist="wanted", person_ref="P-77", similarity=0.95)
    joined = pipe.wait_stage("r03", "joined-2", rule="face_watchlist")
    assert joined["incident_id"] == opened["incident_id"]
    pipe.emit("r03-face-gate", "face.match", watchlist="restraining_order", person_ref="P-12", similarity=0.9)
    other = pipe.alerts.wait(lambda rs: [a for a in rs if a["school_id"] == "r03" and a["severity"] == "Severe" and a["rule"] == "face_watchlist"], 20, "restraining order")
    assert other[0]["incident_id"] != opened["incident_id"]


def test_face_near_misses_raise_nothing(pipe):
    pipe.emit("r10-face-gate", "face.match", watchlist="staff", person_ref="T-1", similarity=0.99)
    pipe.emit("r10-face-gate", "face.match", watchlist="wanted", person_ref="P-1", similarity=0.84)
    pipe.sentinel("r10", "r10-btn-2")
    assert not of(pipe, "r10", "face_watchlist")


# --- 3. vehicles --------------------------------------------------------------------


def test_watchlist_plate_and_loitering_vehicle(pipe):
    pipe.emit("r04-lpr-gate", "plate.read", plate="京a 123·45")  # normalised before comparison
    listed = pipe.wait_stage("r04", "opened", rule="plate_watchlist")
    assert listed["severity"] == "Severe" and "京A12345" in listed["headline"]
    for _ in range(3):
        pipe.emit("r04-lpr-gate", "plate.read", plate="沪B77777")
    loiter = pipe.wait_stage("r04", "opened", rule="vehicle_loitering")
    assert loiter["severity"] == "Moderate"  # r04 has no drop-off window
    assert len(loiter["evidence"]) == 3


def test_vehicle_near_misses_raise_nothing(pipe):
    for plate in ("浙C11111", "浙C11111", "浙C22222", "浙C33333"):
        pipe.emit("r10-lpr-gate", "plate.read", plate=plate)
    pipe.sentinel("r10", "r10-btn-2")
    assert not of(pipe, "r10", "vehicle_loitering") and not of(pipe, "r10", "plate_watchlist")


# --- 4. perimeter -------------------------------------------------------------------


def test_perimeter_severity_follows_school_hours(pipe):
    pipe.emit("r02-door-yard", "door.forced")  # r02 is never open: after hours
    after = pipe.wait_stage("r02", "opened", rule="perimeter")
    assert after["severity"] == "Severe" and after["headline"].startswith("After hours")
    pipe.emit("r07-fence-yard", "fence.breach")  # r07 is always open
    during = pipe.wait_stage("r07", "opened", rule="perimeter")
    assert during["severity"] == "Moderate"
    pipe.emit("r07-fence-yard", "fence.breach")
    assert pipe.wait_stage("r07", "joined-2", rule="perimeter")["incident_id"] == during["incident_id"]


# --- 5. crowds and fights -----------------------------------------------------------


def test_video_behaviour(pipe):
    pipe.emit("r05-cam-yard", "video.fight")
    assert pipe.wait_stage("r05", "opened", rule="video_behaviour")["severity"] == "Severe"
    pipe.emit("r05-cam-gate", "video.crowd", count=45)  # gate zone, inside r05's window
    crowd = pipe.alerts.wait(lambda rs: [a for a in rs if a["school_id"] == "r05" and a["rule"] == "video_behaviour" and a["severity"] == "Moderate"], 20, "crowd")
    assert "Crowd of 45" in crowd[0]["headline"]
    pipe.emit("r05-cam-yard2", "video.fall")
    pipe.emit("r05-cam-yard", "video.loiter", duration_s=120)
    minor = pipe.alerts.wait(lambda rs: [a for a in rs if a["school_id"] == "r05" and a["severity"] == "Minor"] if len([a for a in rs if a["school_id"] == "r05" and a["severity"] == "Minor"]) >= 2 else None, 20, "minor group")
    assert minor[0]["stage"] == "opened" and minor[1]["stage"] == "joined-2"
    assert minor[0]["incident_id"] == minor[1]["incident_id"]  # grouped per zone


def test_video_near_misses_raise_nothing(pipe):
    pipe.emit("r10-cam-gate", "video.crowd", count=45)  # r10 has no drop-off window
    pipe.emit("r06-cam-gate", "video.crowd", count=12)
    pipe.sentinel("r10", "r10-btn-2")
    pipe.sentinel("r06", "r06-btn-2")
    assert not of(pipe, "r10", "video_behaviour") and not of(pipe, "r06", "video_behaviour")


# --- 6. device health ---------------------------------------------------------------


def test_silent_panic_button_is_reported_without_traffic_and_recovers(pipe):
    # r09 watches heartbeats with a 4 s timeout; nothing is published for its buttons
    absent = pipe.alerts.wait(
        lambda rs: (m := [a for a in rs if a["school_id"] == "r09" and a["rule"] == "device_health" and a["stage"] == "opened"]) and len(m) == 2 and m, 30, "both buttons absent"
    )
    assert {a["severity"] for a in absent} == {"Moderate"}
    assert {a["evidence"][0]["device_id"] for a in absent} == {"r09-btn-1", "r09-btn-2"}
    pipe.emit("r09-btn-1", "device.heartbeat", battery=80)
    back = pipe.wait_stage("r09", "recovered", rule="device_health")
    assert back["msgType"] == "Cancel" and back["evidence"][0]["device_id"] == "r09-btn-1"
    pipe.publish("r09-cam-yard", b"offline", channel="status")
    offline = pipe.alerts.wait(lambda rs: [a for a in rs if a["school_id"] == "r09" and "offline" in a["headline"]], 20, "camera offline")
    assert offline[0]["severity"] == "Minor"
    pipe.emit("r09-cam-gate", "device.tamper")
    assert pipe.alerts.wait(lambda rs: [a for a in rs if a["school_id"] == "r09" and "tampered" in a["headline"]], 20, "tamper")[0]["severity"] == "Severe"
    pipe.emit("r09-cam-yard2", "device.heartbeat", battery=12)
    assert pipe.alerts.wait(lambda rs: [a for a in rs if a["school_id"] == "r09" and "battery low" in a["headline"]], 20, "battery")[0]["severity"] == "Minor"
    # absence fired once per button, however many ticks went by
    assert len([a for a in of(pipe, "r09", "device_health") if a["stage"] == "opened" and "no heartbeat" in a["headline"]]) == 2


def test_device_health_near_misses_raise_nothing(pipe):
    pipe.emit("r09-cam-yard2", "device.heartbeat", battery=55)  # healthy battery
    pipe.publish("r09-cam-gate", b"online", channel="status")  # online is not a problem
    pipe.emit("r04-btn-1", "device.tamper", exercise=True)  # r04 does not watch device health
    pipe.sentinel("r09", "r09-btn-2")
    pipe.sentinel("r04", "r04-btn-2")
    assert not [a for a in of(pipe, "r09", "device_health") if "r09-cam-yard2" in str(a["evidence"]) and "battery" in a["headline"] and a["stage"] == "opened" and a["evidence"][0].get("attrs", {}).get("battery") == 55]
    assert not [a for a in of(pipe, "r09", "device_health") if a["evidence"][0]["device_id"] == "r09-cam-gate" and "offline" in a["headline"]]
    assert not of(pipe, "r04", "device_health")


def test_flood_near_miss_below_the_limit(pipe):
    for zone in ("a1", "a2", "a3"):  # three Minor incidents: under the default limit of 10
        pipe.emit("r03-cam-yard", "video.fall", zone=zone)
    pipe.sentinel("r03", "r03-btn-2")
    assert len([a for a in of(pipe, "r03", "video_behaviour") if a["stage"] == "opened"]) == 3
    assert not of(pipe, "r03", "flood")


# --- 8. silences --------------------------------------------------------------------


def test_silences(pipe):
    yard = pipe.command("silence", "", school_id="r06", scope={"zone": "yard"}, duration_seconds=60, reason="fence repair")
    notice = pipe.silences.wait(lambda rs: [r for r in rs if r["command_id"] == yard["command_id"]], 20, "silence notice")[0]
    assert notice["state"] == "active" and notice["scope"] == {"zone": "yard"}
    pipe.emit("r06-fence-yard", "fence.breach")  # silenced zone: no incident ...
    pipe.emit("r06-door-yard", "door.forced")
    gate = pipe.emit("r06-cam-gate", "video.fight")  # ... other zones still raise
    pipe.wait_stage("r06", "opened", rule="video_behaviour")
    button = pipe.command("silence", "", school_id="r06", scope={"device": "r06-btn-1"}, duration_seconds=60, reason="annoying")
    whole = pipe.command("silence", "", school_id="r06", duration_seconds=60, reason="inspection")
    pipe.press("r06-btn-1")  # panic is never silenced
    pipe.wait_stage("r06", "opened", rule="panic")
    rej = pipe.rejected.wait(lambda rs: [r for r in rs if r.get("command", {}).get("command_id") == button["command_id"]], 20, "rejection")[0]
    assert rej["reason_code"] == "panic_never_silenced"
    whole_notice = pipe.silences.wait(lambda rs: [r for r in rs if r["command_id"] == whole["command_id"]], 20, "school silence")[0]
    pipe.command("unsilence", "", school_id="r06", silence_id=notice["silence_id"])
    ended = pipe.silences.wait(lambda rs: [r for r in rs if r["silence_id"] == notice["silence_id"] and r["state"] == "ended"], 20, "unsilenced")[0]
    assert ended["suppressed"] >= 2 and ended["ended_by"] == "tester"
    pipe.command("unsilence", "", school_id="r06", silence_id=whole_notice["silence_id"])
    pipe.silences.wait(lambda rs: [r for r in rs if r["silence_id"] == whole_notice["silence_id"] and r["state"] == "ended"], 20, "school unsilenced")
    assert not [a for a in of(pipe, "r06") if a["rule"] in ("perimeter", "corroborated")]
    assert gate["event_id"] in [e["event_id"] for a in of(pipe, "r06", "video_behaviour") for e in a["evidence"]]
    # events from silenced sources still reached huxue.events
    assert len([e for e in pipe.events.records if e["device_id"] in ("r06-fence-yard", "r06-door-yard")]) >= 2


# --- 9. lockdown --------------------------------------------------------------------


def test_lockdown_holds_back_low_priority_incidents(pipe):
    cmd = pipe.command("lockdown", "", school_id="r07", reason="armed person reported nearby")
    lock = pipe.wait_stage("r07", "opened", rule="lockdown")
    assert lock["severity"] == "Severe" and lock["command_id"] == cmd["command_id"] and lock["notify"]
    pipe.emit("r07-cam-yard", "video.fall")  # Minor: held back
    held = pipe.alerts.wait(lambda rs: [a for a in rs if a["school_id"] == "r07" and a["severity"] == "Minor"], 20, "held incident")[0]
    assert held["notify"] == [] and held["held"] == "lockdown"
    pipe.emit("r07-cam-gate", "video.fight")  # Severe: goes out
    fight = pipe.alerts.wait(lambda rs: [a for a in rs if a["school_id"] == "r07" and a["rule"] == "video_behaviour" and a["severity"] == "Severe"], 20, "fight")[0]
    assert fight["notify"] and not fight.get("held")
    pipe.command("lift_lockdown", "", school_id="r07")
    lifted = pipe.wait_stage("r07", "lifted", rule="lockdown")
    assert lifted["msgType"] == "Cancel"
    pipe.emit("r07-cam-gate", "video.loiter", duration_s=90)  # after the lift: notified again
    after = pipe.alerts.wait(lambda rs: [a for a in rs if a["school_id"] == "r07" and a["severity"] == "Minor" and a["zone"] == "gate"], 20, "after lift")[0]
    assert after["notify"] and not after.get("held")


# --- 10. flood control ---------------------------------------------------------------


def test_flood_folds_low_priority_incidents_until_the_rate_drops(pipe):
    # r08: more than 3 non-panic incidents within 20 s is a flood
    for zone in ("z1", "z2", "z3", "z4", "z5"):
        pipe.emit("r08-cam-yard", "video.fall", zone=zone)
    pipe.emit("r08-cam-gate", "video.fight")  # Severe: never folded
    pipe.wait_processed()  # the press takes the priority lanes: it must not corroborate the fight instead
    pipe.press("r08-btn-1")  # panic: never folded
    summary = pipe.wait_stage("r08", "opened", rule="flood")
    pipe.wait_stage("r08", "joined-2", rule="flood")
    opened_minor = [a for a in of(pipe, "r08", "video_behaviour") if a["stage"] == "opened" and a["severity"] == "Minor"]
    assert len(opened_minor) == 3
    assert {e["zone"] for e in pipe.wait_stage("r08", "joined-2", rule="flood")["evidence"]} == {"z4", "z5"}
    assert pipe.wait_stage("r08", "opened", rule="panic")
    assert [a for a in of(pipe, "r08", "video_behaviour") if a["severity"] == "Severe"]
    ended = pipe.wait_stage("r08", "ended", rule="flood", timeout=40)  # timer-driven, no traffic needed
    assert ended["incident_id"] == summary["incident_id"] and ended["msgType"] == "Cancel"


def test_each_stage_once_per_incident(pipe):
    """Across everything this module raised: no incident emitted a stage twice."""
    wait_for(lambda: pipe.alerts.records, 5, "alerts")
    seen: dict[tuple[str, str], int] = {}
    for a in pipe.alerts.records:
        seen[(a["incident_id"], a["stage"])] = seen.get((a["incident_id"], a["stage"]), 0) + 1
    assert all(n == 1 for n in seen.values()), [k for k, n in seen.items() if n > 1]
    ids = [a["identifier"] for a in pipe.alerts.records]
    assert len(ids) == len(set(ids))
