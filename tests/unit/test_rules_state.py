"""pipeline/rules/state.py and pipeline/rules/incident.py: per-school state, incidents."""

from __future__ import annotations

import dataclasses
import hashlib

import orjson
import pytest

from pipeline.rules import engine
from pipeline.rules.evidence import MAX_EVIDENCE
from pipeline.rules.incident import Incident, incident_id_for, school_of
from pipeline.rules.state import KEEP_APPLIED_SECONDS, KEEP_CLOSED_SECONDS, MAX_APPLIED, Context, SchoolState
from pipeline.registry import Registry
from unit_helpers import ESC, SCHOOL, SCHOOL_NAME, T0, Driver, command, make_ctx, press

DAY = 24 * 3600


def make_incident(**kw) -> Incident:
    base = dict(
        incident_id="inc-20261129-zx-01-0001",
        school_id=SCHOOL,
        rule="panic",
        status="Actual",
        severity="Extreme",
        urgency="Immediate",
        certainty="Likely",
        zone="gate-north",
        opened_at=T0,
    )
    base.update(kw)
    return Incident(**base)


# --- incident ids -------------------------------------------------------------------------------


def test_incident_id_uses_the_school_local_date_and_a_digest_of_its_cause():
    # T0 is 2026-11-28 23:41 UTC: already the 29th in Shanghai, still the 28th in London
    digest = hashlib.sha1(b"cause").hexdigest()[:6]
    assert incident_id_for("zx-01", 7, T0, "Asia/Shanghai", "cause") == f"inc-20261129-zx-01-0007-{digest}"
    assert incident_id_for("bh-02", 7, T0, "Europe/London", "cause") == f"inc-20261128-bh-02-0007-{digest}"
    assert incident_id_for("s", 12345, T0, "UTC", "cause") == f"inc-20261128-s-12345-{digest}"


def test_a_reused_sequence_number_names_a_different_incident_for_a_different_cause():
    a = incident_id_for("zx-01", 1, T0, "UTC", "panic|panic|Actual|1.0|zx01-btn-1/e-1")
    b = incident_id_for("zx-01", 1, T0, "UTC", "panic|panic|Actual|1.0|zx01-btn-1/e-2")
    assert a != b and a[:-7] == b[:-7]
    assert a == incident_id_for("zx-01", 1, T0, "UTC", "panic|panic|Actual|1.0|zx01-btn-1/e-1")  # replay: the same id


@pytest.mark.parametrize("school", ["zx-01", "a", "x-y-z-0001", "s.1_2", "abcdef", "zx-01-0001-abcdef"])
@pytest.mark.parametrize("seq", [3, 12345])
def test_school_of_reads_the_school_back(school, seq):
    assert school_of(incident_id_for(school, seq, T0, "UTC", "c")) == school


@pytest.mark.parametrize(
    ("old", "school"),
    [("inc-20261129-zx-01-0001", "zx-01"), ("inc-20261128-s-12345", "s"), ("inc-20261129-x-y-z-0001-0003", "x-y-z-0001")],
)
def test_school_of_reads_ids_of_the_old_format(old, school):
    assert school_of(old) == school  # commands may name incidents opened before the change


@pytest.mark.parametrize(
    "text",
    ["", "inc-20261129-0007", "incident-20261129-zx-01-0001", "inc-2026112-zx-01-0001", "inc-20261129-zx-01-01", "inc-20261129-zx-01-01-abcdef"],
)
def test_school_of_rejects_other_text(text):
    assert school_of(text) is None


# --- incident --------------------------------------------------------------------------------------


def test_emit_names_alerts_by_stage_and_records_stages():
    inc = make_incident(evidence=({"event_id": "e-1"},))
    inc2, a1 = inc.emit("opened", "Alert", T0, "h1", deadlines={"ack_by": "x"})
    inc3, a2 = inc2.emit("onsite_overdue", "Update", T0 + 60, "h2", due=T0 + 60)
    assert (a1.identifier, a2.identifier) == (f"{inc.incident_id}/opened", f"{inc.incident_id}/onsite_overdue")
    assert inc3.stages == ("opened", "onsite_overdue") and inc3.messages == 2
    assert inc.messages == 0 and inc.stages == ()  # immutable
    assert a2.due == "2026-11-28T23:42:03.250Z" and a1.due == ""
    assert a1.evidence == [{"event_id": "e-1"}]
    assert a1.deadlines == {"ack_by": "x"}


def test_exercise_headlines_are_marked():
    _, a = make_incident(status="Exercise").emit("opened", "Alert", T0, "Panic")
    assert a.headline == "[DRILL] Panic" and a.status == "Exercise"


def test_with_evidence_keeps_first_and_latest():
    inc = make_incident()
    for i in range(MAX_EVIDENCE + 20):
        inc = inc.with_evidence({"event_id": f"e-{i}"}, T0 + i)
    assert len(inc.evidence) == MAX_EVIDENCE
    assert inc.evidence[0] == {"event_id": "e-0"}
    assert inc.evidence[-1] == {"event_id": f"e-{MAX_EVIDENCE + 19}"}
    assert inc.evidence[1] == {"event_id": "e-21"}
    assert inc.evidence_total == 1 + MAX_EVIDENCE + 20  # counts trimmed items too
    assert inc.last_evidence_at == T0 + MAX_EVIDENCE + 19


def test_with_evidence_never_moves_last_evidence_at_back():
    inc = make_incident().with_evidence({"event_id": "a"}, T0 + 10).with_evidence({"event_id": "b"}, T0 + 5)
    assert inc.last_evidence_at == T0 + 10


def test_incident_round_trip():
    inc = make_incident(
        evidence=({"event_id": "e", "media": {"u": 1}},),
        stages=("opened",),
        messages=1,
        deadlines={"mobile_late": T0 + 180},
        acked_at=T0 + 1,
        acked_by="g",
        title=SCHOOL_NAME,
    )
    assert Incident.from_dict(inc.to_dict()) == inc
    assert Incident.from_dict(orjson.loads(orjson.dumps(inc.to_dict()))) == inc


# --- school state ---------------------------------------------------------------------------------


def test_find_open_matches_rule_key_and_status():
    a = make_incident(key="panic")
    x = make_incident(incident_id="inc-20261129-zx-01-0002", status="Exercise", key="panic")
    closed = make_incident(incident_id="inc-20261129-zx-01-0003", closed_at=T0, closed_stage="resolved", key="panic")
    z = make_incident(incident_id="inc-20261129-zx-01-0004", rule="corroborated", key="gate-north", severity="Severe")
    s = SchoolState(SCHOOL).put(closed).put(a).put(x).put(z)
    assert s.find_open("panic", "panic", "Actual") is a
    assert s.find_open("panic", "panic", "Exercise") is x
    assert s.find_open("other", "panic", "Actual") is None
    assert s.find_open("panic", "other-key", "Actual") is None
    assert s.find_open("corroborated", "gate-north", "Actual") is z
    assert s.find_open("corroborated", "gate-south", "Actual") is None
    assert SchoolState(SCHOOL).put(closed).find_open("panic", "panic", "Actual") is None


def test_put_of_a_closed_incident_leaves_only_a_tombstone():
    a = make_incident()
    s = SchoolState(SCHOOL).put(a)
    assert s.incidents == {a.incident_id: a} and s.closed == {}
    done = dataclasses.replace(a, closed_at=T0 + 5, closed_stage="resolved")
    s2 = s.put(done)
    assert s2.incidents == {}
    assert s2.closed == {a.incident_id: ["resolved", T0 + 5]}
    assert s.incidents == {a.incident_id: a}  # immutable


def test_remember_replaces_and_forgets_a_rules_memory():
    s = SchoolState(SCHOOL).remember("flood", {"raised": [T0], "due": T0 + 600})
    s = s.remember("silence", {"active": [], "seq": 0})
    assert s.memory == {"flood": {"raised": [T0], "due": T0 + 600}, "silence": {"active": [], "seq": 0}}
    assert s.memory_due() == T0 + 600
    s2 = s.remember("flood", None)
    assert s2.memory == {"silence": {"active": [], "seq": 0}}
    assert s2.memory_due() is None


def test_new_incident_id_advances_the_sequence():
    s = SchoolState(SCHOOL)
    s2, iid = s.new_incident_id(T0, "Asia/Shanghai", "c")
    s3, iid2 = s2.new_incident_id(T0, "Asia/Shanghai", "c")
    assert (iid[:-7], iid2[:-7]) == ("inc-20261129-zx-01-0001", "inc-20261129-zx-01-0002")
    assert (s.next_seq, s2.next_seq, s3.next_seq) == (1, 2, 3)


def test_mark_applied_is_bounded_and_keeps_the_newest():
    s = SchoolState(SCHOOL)
    for i in range(MAX_APPLIED + 10):
        s = s.mark_applied(f"k{i}", T0 + i)
    assert len(s.applied) == MAX_APPLIED
    assert "k0" not in s.applied and f"k{MAX_APPLIED + 9}" in s.applied
    assert min(s.applied.values()) == T0 + 10


def test_pruned_forgets_closed_incidents_and_applied_keys_after_retention():
    open_inc = make_incident()
    closed = make_incident(incident_id="inc-20261129-zx-01-0002", closed_at=T0)
    s = SchoolState(SCHOOL).put(open_inc).put(closed).mark_applied("dev/e-1", T0)
    assert set(s.closed) == {closed.incident_id}
    assert s.pruned(T0 + min(KEEP_CLOSED_SECONDS, KEEP_APPLIED_SECONDS) - 1) is s
    p = s.pruned(T0 + max(KEEP_CLOSED_SECONDS, KEEP_APPLIED_SECONDS))
    assert set(p.incidents) == {open_inc.incident_id}  # open incidents are never pruned
    assert p.closed == {}
    assert p.applied == {}


def test_next_due_ignores_closed_incidents():
    a = make_incident(deadlines={"onsite_overdue": T0 + 60, "mobile_late": T0 + 180})
    b = make_incident(incident_id="inc-20261129-zx-01-0002", deadlines={"onsite_overdue": T0 + 5}, closed_at=T0)
    assert SchoolState(SCHOOL).next_due() is None
    assert SchoolState(SCHOOL).put(a).put(b).next_due() == T0 + 60


def test_next_due_is_the_earliest_of_incident_deadlines_and_rule_timers():
    a = make_incident(deadlines={"onsite_overdue": T0 + 60})
    s = SchoolState(SCHOOL).put(a)
    assert s.remember("device_health", {"due": T0 + 30}).next_due() == T0 + 30
    assert s.remember("device_health", {"due": T0 + 90}).next_due() == T0 + 60
    assert s.remember("device_health", {"due": None}).next_due() == T0 + 60
    only_memory = SchoolState(SCHOOL).remember("flood", {"due": T0 + 5})
    assert (only_memory.incidents_due(), only_memory.memory_due(), only_memory.next_due()) == (None, T0 + 5, T0 + 5)


def test_from_dicts_defaults():
    assert SchoolState.from_dicts({"school_id": SCHOOL}, None) == SchoolState(SCHOOL)
    assert SchoolState.from_dicts(None, None, school_id=SCHOOL, partition=3) == SchoolState(SCHOOL, partition=3)
    assert SchoolState.from_dicts({"school_id": SCHOOL}, {}) == SchoolState(SCHOOL)


def test_core_and_memory_dicts_round_trip_through_orjson():
    a = make_incident(deadlines={"onsite_overdue": T0 + 60}, key="panic", stages=("opened",), messages=1)
    done = make_incident(incident_id="inc-20261129-zx-01-0002", closed_at=T0 + 1, closed_stage="false_alarm")
    s = SchoolState(SCHOOL, partition=2, next_seq=3).put(a).put(done).mark_applied("dev/e-1", T0)
    s = s.remember("device_health", {"last_seen": {"zx01-btn-1": T0}, "since": T0, "due": T0 + 180})
    core, memory = s.core_dict(), s.memory
    assert core["next_due"] == T0 + 60 and s.memory_due() == memory["device_health"]["due"] == T0 + 180
    assert "memory" not in core and "incidents" not in memory  # stored apart: core, and one value per rule
    back = SchoolState.from_dicts(orjson.loads(orjson.dumps(core)), orjson.loads(orjson.dumps(memory)))
    assert back == s
    assert back.closed == {done.incident_id: ["false_alarm", T0 + 1]}


def test_context_lookups():
    ctx = make_ctx()
    assert ctx.school_name(SCHOOL) == SCHOOL_NAME
    assert ctx.school_tz(SCHOOL) == "Asia/Shanghai"
    assert ctx.school_name("nowhere") == "nowhere"
    assert ctx.school_tz("nowhere") == "UTC"


def test_school_missing_from_registry_still_works():
    ctx = Context(escalation=ESC, registry=Registry({}, {}, {}))
    d = Driver(ctx)
    [a] = d.press(T0)
    assert a.incident_id.startswith("inc-20261128-zx-01-0001-")  # UTC date
    assert SCHOOL in a.headline


# --- retention through the engine ------------------------------------------------------------------


def test_closed_incident_is_closed_for_a_day_then_unknown():
    d = Driver()
    [a] = d.press(T0)
    iid = a.incident_id
    d.command(T0 + 10, "resolve", iid)
    d.tick(T0 + 10 + DAY - 1)
    out = d.command(T0 + 10 + DAY - 0.5, "ack", iid)
    assert out.rejected[0][1].reason_code == "incident_closed"
    d.tick(T0 + 10 + DAY)
    assert iid not in d.state.incidents
    out = d.command(T0 + 10 + DAY + 1, "ack", iid)
    assert out.rejected[0][1].reason_code == "unknown_incident"


def stored_values_changed(before: SchoolState, after: SchoolState) -> tuple[bool, bool]:
    """(core changed, memory changed), judged as the worker does before writing its two
    table values (pipeline/worker/app.py `apply`: states are immutable, identity tells)."""
    core = any(getattr(after, f) is not getattr(before, f) for f in ("incidents", "closed", "applied", "next_seq", "partition"))
    return core, after.memory is not before.memory


def test_tick_without_changes_returns_the_same_state():
    d = Driver()
    before = d.state
    out = engine.on_tick(before, T0, d.ctx)
    assert out.alerts == [] and out.notices == []
    assert out.state == before
    assert stored_values_changed(before, out.state) == (False, False)
    out2 = engine.on_event(before, press("e"), T0, d.ctx)
    assert stored_values_changed(before, out2.state)[0]


def test_rejected_command_does_not_change_state():
    d = Driver()
    before = d.state
    out = engine.on_command(before, command("ack", "inc-x"), T0, d.ctx)
    assert out.rejected and out.state == before
    assert stored_values_changed(before, out.state) == (False, False)
