"""The 1-3-5 panic ladder end to end: MQTT -> bridge -> Kafka -> Faust worker -> alerts.

Real Mosquitto and Kafka; ladder compressed to 2/4/6 s. Each test uses its own school,
so they share one bridge + worker (module scope).
"""

from __future__ import annotations


import pytest

from harness import Pipeline, wait_until
from pipeline.records import loads, parse_ts

pytestmark = pytest.mark.integration

LADDER = ["opened", "onsite_overdue", "mobile_late", "mobile_overdue"]


@pytest.fixture(scope="module")
def pipe(stack, tmp_path_factory):
    p = Pipeline(stack, tmp_path_factory.mktemp("ladder"))
    try:
        yield p.start()
    finally:
        p.close()


def stages(pipe: Pipeline, school: str) -> list[str]:
    return [a["stage"] for a in pipe.alerts_of(school)]


def test_press_opens_incident_with_contract_fields(pipe):
    press = pipe.press("t01-btn-1")
    alert = pipe.wait_stage("t01", "opened")
    assert alert["msgType"] == "Alert"
    assert alert["status"] == "Actual"
    assert alert["rule"] == "panic"
    assert alert["severity"] == "Extreme" and alert["urgency"] == "Immediate"
    assert alert["notify"] == ["onsite", "mobile", "command"]
    assert alert["identifier"] == f"{alert['incident_id']}/opened"
    assert alert["incident_id"].startswith("inc-") and "-t01-" in alert["incident_id"]
    assert [e["event_id"] for e in alert["evidence"]] == [press["event_id"]]
    assert alert["evidence"][0]["device_id"] == "t01-btn-1"
    opened = parse_ts(press["ts"])
    assert parse_ts(alert["deadlines"]["ack_by"]) == pytest.approx(opened + 2, abs=0.01)
    assert parse_ts(alert["deadlines"]["arrive_by"]) == pytest.approx(opened + 6, abs=0.01)
    # keyed by school for downstream co-partitioning
    raw = next(r for r in pipe.alerts.raw if r.value and b'"opened"' in r.value and b"t01" in r.value)
    assert raw.key == b"t01"


def test_full_ladder_fires_in_order_without_other_traffic(pipe):
    pipe.press("t02-btn-1")
    last = pipe.wait_stage("t02", "mobile_overdue", timeout=30)
    assert stages(pipe, "t02") == LADDER
    # time-driven: each deadline fired close to its due time although nothing else arrived
    # (`sent` is the deadline itself; the record's Kafka timestamp is when it was fired)
    fired = {loads(r.value)["identifier"]: r.timestamp / 1000 for r in list(pipe.alerts.raw)}
    for a in pipe.alerts_of("t02")[1:]:
        assert a["sent"] == a["due"]
        lateness = fired[a["identifier"]] - parse_ts(a["due"])
        assert 0 <= lateness < 2.5, (a["stage"], lateness)
    assert last["msgType"] == "Update"


def test_ack_stops_onsite_overdue_only(pipe):
    pipe.press("t03-btn-1")
    opened = pipe.wait_stage("t03", "opened")
    pipe.command("ack", opened["incident_id"], by="guard-t03")
    ack = pipe.wait_stage("t03", "acknowledged")
    assert ack["by"] == "guard-t03"
    pipe.wait_stage("t03", "mobile_overdue", timeout=30)
    assert stages(pipe, "t03") == ["opened", "acknowledged", "mobile_late", "mobile_overdue"]


def test_arrive_stops_the_later_stages(pipe):
    pipe.press("t04-btn-1")
    opened = pipe.wait_stage("t04", "opened")
    pipe.wait_stage("t04", "onsite_overdue")
    pipe.command("arrive", opened["incident_id"], by="patrol-9")
    pipe.wait_stage("t04", "arrived")
    # Past the arrive limit, any input makes due deadlines fire first; none may be left.
    wait_until(parse_ts(opened["deadlines"]["arrive_by"]) + 0.5)
    pipe.command("resolve", opened["incident_id"], by="duty-1")
    pipe.wait_stage("t04", "resolved")
    assert stages(pipe, "t04") == ["opened", "onsite_overdue", "arrived", "resolved"]


def test_resolve_closes_and_later_commands_are_rejected(pipe):
    pipe.press("t05-btn-1")
    opened = pipe.wait_stage("t05", "opened")
    iid = opened["incident_id"]
    pipe.command("resolve", iid, by="duty-1", note="drill misunderstood")
    closed = pipe.wait_stage("t05", "resolved")
    assert closed["msgType"] == "Cancel" and closed["note"] == "drill misunderstood"
    late = pipe.command("ack", iid, by="guard-late")
    unknown = pipe.command("ack", "inc-20260101-t05-0999", by="guard-typo")
    ids = {late["command_id"], unknown["command_id"]}
    got = pipe.rejected.wait(lambda rs: (m := [r for r in rs if r.get("command", {}).get("command_id") in ids]) and len(m) == 2 and m, 20, "two rejections")
    reasons = {r["command"]["command_id"]: r["reason_code"] for r in got}
    assert reasons[late["command_id"]] == "incident_closed"
    assert reasons[unknown["command_id"]] == "unknown_incident"
    # no stage after closing: the ladder stopped
    wait_until(parse_ts(opened["deadlines"]["arrive_by"]) + 0.5)
    pipe.press("t05-btn-2")  # a new press after closing opens a new incident
    reopened = pipe.alerts.wait(lambda rs: [a for a in rs if a["school_id"] == "t05" and a["stage"] == "opened" and a["incident_id"] != iid], 20, "a new incident")
    assert [a["stage"] for a in pipe.alerts_of("t05") if a["incident_id"] == iid] == ["opened", "resolved"]
    assert reopened


def test_second_press_joins_the_open_incident(pipe):
    first = pipe.press("t06-btn-1")
    opened = pipe.wait_stage("t06", "opened")
    second = pipe.press("t06-btn-2")
    joined = pipe.wait_stage("t06", "joined-2")
    assert joined["incident_id"] == opened["incident_id"]
    assert joined["msgType"] == "Update"
    assert [e["event_id"] for e in joined["evidence"]] == [first["event_id"], second["event_id"]]
    assert len({a["incident_id"] for a in pipe.alerts_of("t06")}) == 1


def test_duplicate_event_opens_one_incident(pipe):
    body = pipe.press("t07-btn-1")
    pipe.press("t07-btn-1", event_id=body["event_id"])  # MQTT redelivery / device retry
    pipe.wait_stage("t07", "opened")
    # a later, different press proves both copies were processed before it
    pipe.press("t07-btn-2")
    pipe.wait_stage("t07", "joined-2")
    dup_copies = [e for e in pipe.events.records if e.get("event_id") == body["event_id"]]
    assert len(dup_copies) == 2, "both copies reached huxue.events"
    assert [a["stage"] for a in pipe.alerts_of("t07")] == ["opened", "joined-2"]


def test_exercise_press_is_an_exercise_incident_apart_from_real_ones(pipe):
    pipe.press("t08-btn-1", exercise=True)
    drill = pipe.wait_stage("t08", "opened")
    assert drill["status"] == "Exercise" and drill["headline"].startswith("[DRILL]")
    pipe.press("t08-btn-2")
    real = pipe.alerts.wait(lambda rs: [a for a in rs if a["school_id"] == "t08" and a["status"] == "Actual"], 20, "the real incident")[0]
    assert real["stage"] == "opened" and real["incident_id"] != drill["incident_id"]


def test_ack_arriving_after_its_deadline_still_reports_the_overdue_stage(pipe):
    pipe.press("t09-btn-1")
    opened = pipe.wait_stage("t09", "opened")
    wait_until(parse_ts(opened["deadlines"]["ack_by"]) + 0.2)
    pipe.command("ack", opened["incident_id"], by="slow-guard")
    pipe.wait_stage("t09", "acknowledged")
    s = stages(pipe, "t09")
    assert s.index("onsite_overdue") < s.index("acknowledged")
    assert s.count("onsite_overdue") == 1
