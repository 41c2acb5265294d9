"""Rule `plate_watchlist` (pipeline/rules/plate_watchlist.py): a listed vehicle at a school;
plates compared normalised (case, spaces, separators)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.rules.settings import normalise_plate
from pipeline.rules.state import SchoolState
from unit_helpers import OTHER_SCHOOL, SCHOOL, SCHOOL_NAME, T0, Driver, RestartingDriver, face, plate, rules_ctx

ALL = ["onsite", "mobile", "command"]
LOCAL = ["onsite", "command"]
JOIN = 600
LISTED = {"京A12345": "Severe", "沪B 00001": "Extreme", "粤c-777·88": "Moderate"}


def driver(**plate_watchlist) -> Driver:
    plate_watchlist.setdefault("plates", LISTED)
    return Driver(rules_ctx(plate_watchlist=plate_watchlist))


def read(d: Driver, now: float, number: str = "京A12345", event_id: str = "pl-1", **kw) -> list:
    kw.setdefault("ts", now)
    return d.event(plate(number, event_id, **kw), now)


# --- what raises, and what it emits -------------------------------------------------------------


def test_listed_plate_raises_with_its_severity():
    d = driver()
    [a] = read(d, T0)
    assert (a.rule, a.stage, a.msgType, a.status) == ("plate_watchlist", "opened", "Alert", "Actual")
    assert (a.severity, a.urgency, a.certainty, a.zone) == ("Severe", "Immediate", "Likely", "gate-south")
    assert a.notify == LOCAL
    assert a.headline == f"Watchlist plate 京A12345 at {SCHOOL_NAME} (gate-south)"
    assert [(e["device_id"], e["event_id"]) for e in a.evidence] == [("zx01-lpr-1", "pl-1")]
    inc = d.state.incidents[a.incident_id]
    assert inc.key == "京A12345" and inc.deadlines == {"expired": T0 + JOIN}


@pytest.mark.parametrize(
    "number, severity, urgency, notify",
    [("沪B00001", "Extreme", "Immediate", ALL), ("粤C77788", "Moderate", "Expected", LOCAL)],
)
def test_each_listed_severity(number, severity, urgency, notify):
    d = driver()
    [a] = read(d, T0, number)
    assert (a.severity, a.urgency, a.notify) == (severity, urgency, notify)
    assert f"Watchlist plate {number} " in a.headline


@pytest.mark.parametrize("number", ["京A12345", "京a12345", "京A 12345", " 京A 123 45 ", "京A·12345", "京A-12345", "京a·123-45", "京A.12345", "京A\t12345"])
def test_plates_are_normalised_before_comparison(number):
    d = driver()
    [a] = read(d, T0, number)
    assert (a.severity, d.state.incidents[a.incident_id].key) == ("Severe", "京A12345")
    assert "Watchlist plate 京A12345 " in a.headline
    assert a.evidence[0]["attrs"]["plate"] == number  # the evidence keeps what the camera read


def test_listed_plates_are_normalised_too():
    d = driver(plates={"沪b·000-01": "Extreme"})
    [a] = read(d, T0, "沪B00001")
    assert a.severity == "Extreme"


@pytest.mark.parametrize("number", ["京A12346", "京A1234", "京A123456", "京B12345", "A12345", "", "   ", "··-"])
def test_other_plates_raise_nothing(number):
    d = driver()
    assert read(d, T0, number) == []
    assert d.state.incidents == {} and d.state.applied == {}


def test_no_plates_listed_by_default():
    d = Driver(rules_ctx("plate_watchlist"))
    for i, number in enumerate(LISTED):
        assert read(d, T0 + i, number, f"pl-{i}") == []


def test_other_event_types_and_a_disabled_rule_raise_nothing():
    d = driver()
    assert d.event(face(ts=T0), T0) == []
    off = Driver(rules_ctx(plate_watchlist={"plates": LISTED, "enabled": False}))
    assert read(off, T0) == []


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["", " ", "·", "-", ".", "_", "\u3000"]), min_size=8, max_size=8), st.lists(st.booleans(), min_size=7, max_size=7))
def test_any_spelling_of_a_listed_plate_raises(separators, lower):
    chars = [c.lower() if low else c for c, low in zip("京A12345", lower)]
    spelled = separators[0] + "".join(c + sep for c, sep in zip(chars, separators[1:]))
    assert normalise_plate(spelled) == "京A12345"
    d = driver()
    [a] = read(d, T0, spelled)
    assert a.severity == "Severe"


# --- joining and closing ------------------------------------------------------------------------


def test_reads_of_one_plate_join_whatever_the_spelling_then_it_closes_when_quiet():
    d = driver()
    [a] = read(d, T0, "京A12345", "pl-1")
    [j] = read(d, T0 + 60, "京a 123·45", "pl-2")
    assert (j.incident_id, j.msgType, j.stage) == (a.incident_id, "Update", "joined-2")
    [j3] = read(d, T0 + 60 + JOIN - 1, "京A-12345", "pl-3", device_id="zx01-lpr-1")
    assert j3.stage == "joined-3"
    last = T0 + 60 + JOIN - 1
    assert d.tick(last + JOIN - 0.5) == []
    [c] = d.tick(last + JOIN)
    assert (c.incident_id, c.msgType, c.stage) == (a.incident_id, "Cancel", "expired")
    [b] = read(d, last + JOIN + 1, "京A12345", "pl-4")
    assert b.stage == "opened" and b.incident_id != a.incident_id


def test_different_listed_plates_get_their_own_incidents():
    d = driver()
    [a] = read(d, T0, "京A12345", "pl-1")
    [b] = read(d, T0 + 1, "沪B00001", "pl-2")
    assert a.incident_id != b.incident_id and b.stage == "opened"
    assert read(d, T0 + 2, "京A99999", "pl-3") == []
    [j] = read(d, T0 + 3, "沪B 00001", "pl-4")
    assert (j.incident_id, j.stage) == (b.incident_id, "joined-2")


def test_join_time_is_configurable():
    d = driver(join_seconds=120)
    [a] = read(d, T0)
    assert d.tick(T0 + 119) == []
    [c] = d.tick(T0 + 120)
    assert (c.incident_id, c.stage) == (a.incident_id, "expired")


# --- drills, schools, redelivery, restarts -------------------------------------------------------


def test_drills_are_kept_apart_from_real_reads():
    d = driver()
    [x] = read(d, T0, event_id="pl-1", exercise=True)
    assert x.status == "Exercise" and x.headline.startswith("[DRILL] Watchlist plate")
    [a] = read(d, T0 + 1, event_id="pl-2")
    assert (a.status, a.stage) == ("Actual", "opened") and a.incident_id != x.incident_id
    [xj] = read(d, T0 + 2, event_id="pl-3", exercise=True)
    assert (xj.incident_id, xj.stage) == (x.incident_id, "joined-2")
    assert d.state.incidents[a.incident_id].evidence_total == 1


def test_per_school_plates_apply_to_that_school_only():
    ctx = rules_ctx(plate_watchlist={"plates": LISTED, "schools": {OTHER_SCHOOL: {"plates": {"AB12CDE": "Extreme"}}}})
    here = Driver(ctx)
    there = Driver(ctx, state=SchoolState(school_id=OTHER_SCHOOL))
    assert read(here, T0, "AB12 CDE") == []
    [a] = read(here, T0, "京A12345", "pl-2")
    assert a.severity == "Severe"
    [b] = read(there, T0, "ab12 cde", "pl-1", school_id=OTHER_SCHOOL)
    assert (b.severity, b.school_id, b.notify) == ("Extreme", OTHER_SCHOOL, ALL)
    assert read(there, T0, "京A12345", "pl-2", school_id=OTHER_SCHOOL) == []  # the override replaces the list


def test_per_school_join_time():
    ctx = rules_ctx(plate_watchlist={"plates": LISTED, "schools": {SCHOOL: {"join_seconds": 30}}})
    d = Driver(ctx)
    [a] = read(d, T0)
    assert [c.stage for c in d.tick(T0 + 30)] == ["expired"]


def test_a_redelivered_read_is_not_counted_twice():
    d = driver()
    first = plate("京A12345", "pl-1", ts=T0)
    [a] = d.event(first, T0)
    assert d.event(first, T0 + 1) == []
    [j] = read(d, T0 + 2, "京A12345", "pl-2")
    assert j.stage == "joined-2"
    assert d.event(first, T0 + 3) == []
    assert d.state.incidents[a.incident_id].evidence_total == 2
    d.tick(T0 + 2 + JOIN)
    assert d.event(first, T0 + 2 + JOIN + 1) == []
    assert d.state.incidents == {}


def test_state_round_trip_mid_way_behaves_the_same():
    def script(d: Driver) -> None:
        read(d, T0, "京A12345", "pl-1")
        read(d, T0 + 1, "沪B00001", "pl-2", exercise=True)
        read(d, T0 + 50, "京a 12345", "pl-3")
        d.event(plate("京A12345", "pl-1", ts=T0), T0 + 51)
        read(d, T0 + 52, "京A00000", "pl-4")
        d.tick(T0 + 1 + JOIN)
        d.tick(T0 + 50 + JOIN)
        read(d, T0 + 50 + JOIN + 1, "京A12345", "pl-5")

    plain, restarted = driver(), RestartingDriver(rules_ctx(plate_watchlist={"plates": LISTED}))
    script(plain)
    script(restarted)
    assert [a.to_dict() for a in restarted.alerts] == [a.to_dict() for a in plain.alerts]
    assert restarted.state == plain.state
    assert [a.stage for a in plain.alerts] == ["opened", "opened", "joined-2", "expired", "expired", "opened"]
