"""Rule `face_watchlist` (pipeline/rules/face_watchlist.py): watchlist faces at a school,
severity from the category, a minimum similarity, repeated matches of one person join."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.rules.state import SchoolState
from unit_helpers import (
    OMIT,
    OTHER_SCHOOL,
    SCHOOL,
    SCHOOL_NAME,
    T0,
    Driver,
    RestartingDriver,
    event,
    face,
    plate,
    round_trip,
    rules_ctx,
)

ALL = ["onsite", "mobile", "command"]
LOCAL = ["onsite", "command"]
JOIN = 600


def driver(**face_watchlist) -> Driver:
    return Driver(rules_ctx(face_watchlist=face_watchlist))


def match(d: Driver, now: float, event_id: str = "fm-1", **kw) -> list:
    kw.setdefault("ts", now)
    return d.event(face(event_id=event_id, **kw), now)


def ev_ids(alert) -> list[str]:
    return [e["event_id"] for e in alert.evidence]


# --- what raises, and what it emits -------------------------------------------------------------


def test_wanted_person_is_extreme_immediate_and_tells_everyone():
    d = driver()
    [a] = match(d, T0, person_ref="p-17", similarity=0.913)
    assert (a.rule, a.stage, a.msgType, a.status) == ("face_watchlist", "opened", "Alert", "Actual")
    assert (a.severity, a.urgency, a.certainty, a.zone) == ("Extreme", "Immediate", "Likely", "gate-north")
    assert a.notify == ALL
    assert a.headline == f"Watchlist face (wanted: p-17, similarity 0.91) at {SCHOOL_NAME} (gate-north)"
    assert ev_ids(a) == ["fm-1"] and a.evidence[0]["device_id"] == "zx01-face-1"
    assert a.evidence[0]["attrs"]["person_ref"] == "p-17"
    inc = d.state.incidents[a.incident_id]
    assert inc.key == "wanted/p-17"
    assert inc.deadlines == {"expired": T0 + JOIN}


@pytest.mark.parametrize(
    "category, severity, urgency, notify",
    [
        ("wanted", "Extreme", "Immediate", ALL),
        ("restraining_order", "Severe", "Immediate", LOCAL),
        ("missing_student", "Severe", "Immediate", LOCAL),
    ],
)
def test_default_categories_map_to_severities(category, severity, urgency, notify):
    d = driver()
    [a] = match(d, T0, category=category)
    assert (a.severity, a.urgency, a.notify) == (severity, urgency, notify)
    assert f"({category}: p-1," in a.headline


def test_the_category_map_is_configurable():
    d = driver(categories={"banned_visitor": "Moderate", "wanted": "Severe"})
    [a] = match(d, T0, category="banned_visitor")
    assert (a.severity, a.urgency, a.notify) == ("Moderate", "Expected", LOCAL)
    [b] = match(d, T0 + 1, "fm-2", category="wanted", person_ref="p-2")
    assert (b.severity, b.urgency, b.notify) == ("Severe", "Immediate", LOCAL)
    # the map replaces the default one: missing_student is not listed any more
    assert match(d, T0 + 2, "fm-3", category="missing_student", person_ref="p-3") == []


@pytest.mark.parametrize("category", ["staff", "visitor", "WANTED", "", None, 7, ["wanted"], OMIT])
def test_categories_without_a_severity_raise_nothing(category):
    d = driver()
    assert match(d, T0, category=category, similarity=0.99) == []
    assert d.state.incidents == {} and d.state.applied == {}


def test_staff_faces_all_day_raise_nothing():
    d = driver()
    for i in range(50):
        assert match(d, T0 + 30 * i, f"fm-{i}", category="staff", person_ref=f"staff-{i % 7:03d}", similarity=0.99) == []
    assert d.state.incidents == {} and d.state.next_seq == 1


def test_other_event_types_raise_nothing():
    d = driver()
    assert d.event(plate(ts=T0), T0) == []
    assert d.event(event("face.detected", "zx01-face-1", attrs={"watchlist": "wanted", "person_ref": "p-1"}), T0) == []
    assert d.state.incidents == {}


def test_disabled_rule_raises_nothing():
    d = Driver(rules_ctx())
    assert match(d, T0, similarity=0.99) == []


# --- similarity ------------------------------------------------------------------------------------


@pytest.mark.parametrize("similarity, raises", [(0.0, False), (0.5, False), (0.8499, False), (0.85, True), (0.8501, True), (1.0, True), (1, True)])
def test_minimum_similarity_is_inclusive(similarity, raises):
    d = driver()
    assert len(match(d, T0, similarity=similarity)) == (1 if raises else 0)


def test_a_match_without_similarity_is_the_cameras_own_decision():
    d = driver(min_similarity=0.99)
    [a] = match(d, T0, similarity=OMIT)
    assert a.severity == "Extreme"
    assert "similarity 1.00" in a.headline


@settings(max_examples=100, deadline=None)
@example(similarity=0.9, threshold=0.9)
@example(similarity=0.0, threshold=0.0)
@given(st.floats(0, 1), st.floats(0, 1))
def test_raises_iff_similarity_reaches_the_threshold(similarity, threshold):
    d = driver(min_similarity=threshold)
    alerts = match(d, T0, similarity=similarity)
    assert len(alerts) == (1 if similarity >= threshold else 0)


# --- joining and closing ------------------------------------------------------------------------


def test_repeated_matches_of_one_person_join_then_it_closes_when_quiet():
    d = driver()
    [a] = match(d, T0, "fm-1")
    [j] = match(d, T0 + 300, "fm-2", device_id="zx01-face-1")
    assert (j.incident_id, j.rule, j.msgType, j.stage) == (a.incident_id, "face_watchlist", "Update", "joined-2")
    assert ev_ids(j) == ["fm-1", "fm-2"] and "2 reports" in j.headline
    assert (j.severity, j.notify) == ("Extreme", ALL)
    [j3] = match(d, T0 + 300 + JOIN - 1, "fm-3")
    assert j3.stage == "joined-3"
    last = T0 + 300 + JOIN - 1
    assert d.state.incidents[a.incident_id].deadlines == {"expired": last + JOIN}
    assert d.tick(last + JOIN - 0.001) == []
    [c] = d.tick(last + JOIN)
    assert (c.incident_id, c.msgType, c.stage) == (a.incident_id, "Cancel", "expired")
    assert "quiet, closed" in c.headline
    assert d.state.incidents == {} and d.state.closed[a.incident_id] == ["expired", last + JOIN]
    # after that: a new incident
    [b] = match(d, last + JOIN + 5, "fm-4")
    assert b.stage == "opened" and b.incident_id != a.incident_id


def test_a_match_exactly_the_join_time_later_opens_a_new_incident_even_without_a_tick():
    d = driver()
    [a] = match(d, T0, "fm-1")
    out = match(d, T0 + JOIN, "fm-2")
    assert [(x.incident_id == a.incident_id, x.stage) for x in out] == [(True, "expired"), (False, "opened")]


def test_different_people_get_their_own_incidents():
    d = driver()
    [a] = match(d, T0, "fm-1", person_ref="p-1")
    [b] = match(d, T0 + 1, "fm-2", person_ref="p-2")
    [c] = match(d, T0 + 2, "fm-3", person_ref="p-1", category="restraining_order")
    assert len({a.incident_id, b.incident_id, c.incident_id}) == 3
    assert [x.stage for x in (a, b, c)] == ["opened"] * 3
    [j] = match(d, T0 + 3, "fm-4", person_ref="p-2")
    assert (j.incident_id, j.stage) == (b.incident_id, "joined-2")


def test_join_time_is_configurable():
    d = driver(join_seconds=60)
    [a] = match(d, T0, "fm-1")
    assert d.state.incidents[a.incident_id].deadlines == {"expired": T0 + 60}
    [c] = d.tick(T0 + 60)
    assert c.stage == "expired"


def test_an_operator_can_resolve_it_and_a_later_match_opens_a_new_one():
    d = driver()
    [a] = match(d, T0, "fm-1")
    [r] = d.command(T0 + 10, "resolve", a.incident_id).alerts
    assert r.stage == "resolved"
    [b] = match(d, T0 + 20, "fm-2")
    assert b.stage == "opened" and b.incident_id != a.incident_id


# --- drills, schools, redelivery, restarts -------------------------------------------------------


def test_drills_are_kept_apart_from_real_matches():
    d = driver()
    [x] = match(d, T0, "fm-1", exercise=True)
    assert (x.status, x.severity) == ("Exercise", "Extreme") and x.headline.startswith("[DRILL] Watchlist face")
    [a] = match(d, T0 + 10, "fm-2")
    assert (a.status, a.stage) == ("Actual", "opened") and a.incident_id != x.incident_id
    [xj] = match(d, T0 + 20, "fm-3", exercise=True)
    assert (xj.incident_id, xj.stage, xj.status) == (x.incident_id, "joined-2", "Exercise")
    [aj] = match(d, T0 + 30, "fm-4")
    assert (aj.incident_id, aj.stage, aj.status) == (a.incident_id, "joined-2", "Actual")
    assert [e["event_id"] for e in d.state.incidents[a.incident_id].evidence] == ["fm-2", "fm-4"]


def test_per_school_overrides_apply_to_that_school_only():
    ctx = rules_ctx(face_watchlist={"schools": {SCHOOL: {"min_similarity": 0.95, "categories": {"wanted": "Severe", "staff": "Minor"}}}})
    here = Driver(ctx)
    there = Driver(ctx, state=SchoolState(school_id=OTHER_SCHOOL))
    assert match(here, T0, "fm-1", similarity=0.9) == []
    [a] = match(here, T0 + 1, "fm-2", similarity=0.95)
    assert a.severity == "Severe"
    [s] = match(here, T0 + 2, "fm-3", category="staff", person_ref="s-1", similarity=0.99)
    assert (s.severity, s.urgency) == ("Minor", "Expected")
    [b] = match(there, T0, "fm-1", similarity=0.9, school_id=OTHER_SCHOOL)
    assert (b.severity, b.school_id) == ("Extreme", OTHER_SCHOOL)
    assert "Binhu Experimental Primary School" in b.headline
    assert match(there, T0 + 2, "fm-3", category="staff", person_ref="s-1", similarity=0.99) == []


def test_a_redelivered_match_is_not_counted_twice():
    d = driver()
    first = face(event_id="fm-1", ts=T0)
    [a] = d.event(first, T0)
    assert d.event(first, T0 + 1) == []
    [j] = match(d, T0 + 2, "fm-2")
    assert j.stage == "joined-2"
    assert d.event(first, T0 + 3) == [] and d.event(face(event_id="fm-2", ts=T0 + 2), T0 + 4) == []
    assert d.state.incidents[a.incident_id].evidence_total == 2
    # and after the incident closed, a late copy opens nothing
    d.tick(T0 + 2 + JOIN)
    assert d.event(first, T0 + 2 + JOIN + 1) == []
    assert d.state.incidents == {}


def test_state_round_trip_mid_way_behaves_the_same():
    def script(d: Driver) -> None:
        match(d, T0, "fm-1")
        match(d, T0 + 5, "fm-2", exercise=True)
        match(d, T0 + 10, "fm-3", person_ref="p-2", category="missing_student")
        match(d, T0 + 100, "fm-4")
        d.event(face(event_id="fm-1", ts=T0), T0 + 101)
        d.tick(T0 + 10 + JOIN)
        match(d, T0 + 200, "fm-5", similarity=0.5)
        d.tick(T0 + 100 + JOIN)
        match(d, T0 + 800, "fm-6", person_ref="p-2", category="missing_student")

    plain, restarted = driver(), RestartingDriver(rules_ctx(face_watchlist={}))
    script(plain)
    script(restarted)
    assert [a.to_dict() for a in restarted.alerts] == [a.to_dict() for a in plain.alerts]
    assert restarted.state == plain.state
    assert [a.stage for a in plain.alerts] == ["opened", "opened", "opened", "joined-2", "expired", "expired", "expired", "opened"]


def test_a_restored_state_still_joins_and_expires():
    d = driver()
    [a] = match(d, T0, "fm-1")
    d.state = round_trip(d.state)
    [j] = match(d, T0 + 30, "fm-2")
    assert (j.incident_id, j.stage) == (a.incident_id, "joined-2")
    d.state = round_trip(d.state)
    assert d.tick(T0 + 30 + JOIN - 1) == []
    assert [c.stage for c in d.tick(T0 + 30 + JOIN)] == ["expired"]
