"""pipeline/rules/evidence.py and the alert budget: nothing an input carries can make the
state or an alert unwritable (too deep, too large, or not JSON)."""

from __future__ import annotations

import dataclasses

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.records import CanonicalEvent
from pipeline.rules import engine
from pipeline.rules.evidence import MAX_EVIDENCE, MAX_KEYS, MAX_MEDIA_KEYS, MAX_TEXT, MAX_URL, evidence_of, fit, size
from pipeline.rules.incident import ALERT_BUDGET, EVIDENCE_BUDGET
from pipeline.rules.settings import RulesConfig
from pipeline.rules.state import SchoolState
from unit_helpers import SCHOOL, T0, Driver, event, face, make_ctx, plate, press, registry_with, school, window

BIG = "x" * 60_000


def deep(levels: int) -> dict:
    value: object = "bottom"
    for _ in range(levels):
        value = {"a": value}
    return value  # type: ignore[return-value]


def all_rules_ctx():
    """Every rule on, a school with a drop-off window and a gate post around T0."""
    registry = registry_with(school(windows=(window(-600, 3600),), posts={"zx01-gate-n": 2}))
    rules = RulesConfig()
    return make_ctx(rules=dataclasses.replace(rules, plate_watchlist=dataclasses.replace(rules.plate_watchlist, plates={"京A12345": "Severe"})), registry=registry)


def assert_writable(state: SchoolState, alerts) -> None:
    orjson.dumps(state.core_dict())
    for value in state.memory.values():
        orjson.dumps(value)
    for a in alerts:
        assert len(orjson.dumps(a.to_dict())) <= ALERT_BUDGET, (a.rule, a.stage)


# --- evidence_of ------------------------------------------------------------------------------


def test_evidence_keeps_identity_and_bounded_scalars():
    ev = event("fence.breach", "zx01-fence-1", "f-1", attrs={"zone": "gate-north", "deep": deep(249), "big": BIG, "list": [1, 2], "n": 7, "ok": True, "f": 0.5, "none": None})
    item = evidence_of(ev)
    assert {k: item[k] for k in ("event_id", "device_id", "type", "ts", "zone")} == {"event_id": "f-1", "device_id": "zx01-fence-1", "type": "fence.breach", "ts": ev.ts, "zone": "gate-north"}
    assert item["attrs"] == {"zone": "gate-north", "big": "x" * MAX_TEXT, "n": 7, "ok": True, "f": 0.5, "none": None}
    orjson.dumps(item)


def test_evidence_keeps_what_rules_and_people_read_first():
    known = {"person_ref": "p-1", "watchlist": "wanted", "similarity": 0.9, "plate": "京A12345", "post_id": "g", "officer_id": "o", "count": 3, "level_db": 90, "door": "d", "battery": 50, "frigate_id": "f"}
    noise = {f"k{i}": i for i in range(40)}
    item = evidence_of(event("face.match", "zx01-face-1", attrs={**noise, **known}))
    assert len(item["attrs"]) == MAX_KEYS
    assert known.items() <= item["attrs"].items()


def test_evidence_media_keeps_links_and_drops_the_rest():
    media = {"junk": {"nested": 1}, "snapshot_url": "https://nvr/s.jpg", "thumbnail_url": "https://nvr/t.jpg", "long": "u" * 5000, **{f"m{i}": "v" for i in range(10)}}
    item = evidence_of(press("e-1", media=media))
    assert len(item["media"]) == MAX_MEDIA_KEYS
    assert item["media"]["snapshot_url"] == "https://nvr/s.jpg" and item["media"]["thumbnail_url"] == "https://nvr/t.jpg"
    assert item["media"]["long"] == "u" * MAX_URL


def test_integers_json_cannot_carry_are_dropped():
    item = evidence_of(event("video.crowd", "zx01-cam-7", attrs={"count": 3, "huge": 2**70, "neg": -(2**64)}))
    assert item["attrs"] == {"count": 3}


def test_fit_keeps_the_first_and_the_latest():
    items = tuple({"n": i, "pad": "p" * 100} for i in range(100))
    kept = fit(items, 5_000)
    assert kept[0]["n"] == 0 and kept[-1]["n"] == 99
    assert [i["n"] for i in kept[1:]] == list(range(100 - len(kept) + 1, 100))
    assert size(list(kept)) <= 5_000
    assert len(fit(items, 10**9)) == MAX_EVIDENCE
    assert fit(items[:3], 10**9) == items[:3]


# --- the alert budget ---------------------------------------------------------------------------


def big_press(i: int) -> CanonicalEvent:
    attrs = {f"note{k}": BIG for k in range(30)}
    return press(f"e-{i}", device_id="zx01-btn-3", ts=T0 + i, media={f"url{k}": BIG for k in range(10)}) if i % 2 else dataclasses.replace(press(f"e-{i}", ts=T0 + i), attrs=attrs)


def test_an_incident_with_fifty_large_evidence_items_emits_an_alert_within_budget():
    d = Driver()
    [opened] = d.press(T0, event_id="e-0")
    inc = d.state.incidents[opened.incident_id]
    inc = dataclasses.replace(inc, evidence=tuple(evidence_of(big_press(i)) for i in range(50)), evidence_total=50)
    _, alert = inc.emit("joined-50", "Update", T0 + 50, "headline")
    encoded = orjson.dumps(alert.to_dict())
    assert len(encoded) <= ALERT_BUDGET
    assert alert.evidence[0]["event_id"] == "e-0" and alert.evidence[-1]["event_id"] == "e-49"
    assert alert.evidence_omitted == 50 - len(alert.evidence) > 0


def test_large_evidence_through_the_engine_stays_within_budgets():
    d = Driver()
    for i in range(60):
        d.event(big_press(i), T0 + i)
    inc = next(iter(d.state.incidents.values()))
    assert inc.evidence_total == 60
    assert size(list(inc.evidence)) <= EVIDENCE_BUDGET
    assert inc.evidence[0]["event_id"] == "e-0" and inc.evidence[-1]["event_id"] == "e-59"
    assert_writable(d.state, d.alerts)
    last = d.alerts[-1]
    assert last.evidence_omitted == 60 - len(last.evidence)


def test_deep_and_large_attrs_through_every_rule_stay_writable():
    d = Driver(all_rules_ctx())
    junk = {"deep": deep(249), "big": BIG, "zone": "gate-north"}
    inputs = [
        event("fence.breach", "zx01-fence-1", "f-1", attrs=junk),
        event("video.intrusion", "zx01-cam-7", "v-1", attrs=junk, media={"snapshot_url": BIG, "deep": deep(249)}),
        face(person_ref=BIG, attrs={**junk, "watchlist": "wanted", "person_ref": BIG, "similarity": 0.99}),
        plate(attrs={**junk, "plate": "京A12345"}),
        event("guard.checkout", "zx01-guard-1", "g-1", attrs={**junk, "post_id": "zx01-gate-n", "officer_id": BIG}),
        event("device.heartbeat", "zx01-btn-1", "h-1", attrs={**junk, "battery": 5}),
        press("e-1", media={"deep": deep(249), "snapshot_url": BIG}),
    ]
    for i, ev in enumerate(inputs):
        d.event(ev, T0 + i)
    d.tick(T0 + 3600)
    assert {a.rule for a in d.alerts} >= {"panic", "perimeter", "corroborated", "face_watchlist", "device_health"}
    assert_writable(d.state, d.alerts)


# --- any attrs at all ---------------------------------------------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80), st.floats(allow_nan=True), st.text(max_size=300))
json_like = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=80), inner, max_size=3)), max_leaves=12)
# the attrs rules read, often with values that make them act, merged into random ones
meaningful = st.fixed_dictionaries(
    {},
    optional={
        "watchlist": st.sampled_from(["wanted", "staff"]), "person_ref": st.text(max_size=300), "similarity": st.floats(0, 1),
        "plate": st.sampled_from(["京A12345", "沪B 00001"]), "post_id": st.just("zx01-gate-n"), "officer_id": st.text(max_size=300),
        "count": st.integers(0, 100), "battery": st.integers(0, 100), "zone": st.sampled_from(["gate-north", "field", "x" * 1000]),
    },
)
attrs = st.builds(lambda noise, known: {**noise, **known}, st.dictionaries(st.text(max_size=100), json_like, max_size=24), meaningful)
inputs = st.tuples(
    st.sampled_from([
        ("panic.pressed", "zx01-btn-1"), ("fence.breach", "zx01-fence-1"), ("video.intrusion", "zx01-cam-7"), ("video.fight", "zx01-cam-8"),
        ("video.crowd", "zx01-cam-7"), ("face.match", "zx01-face-1"), ("plate.read", "zx01-lpr-1"), ("guard.checkin", "zx01-guard-1"),
        ("guard.checkout", "zx01-guard-1"), ("device.heartbeat", "zx01-btn-3"), ("device.offline", "zx01-cam-9"), ("sound.scream", "zx01-mic-1"),
    ]),
    attrs,
    st.one_of(st.none(), attrs),
    st.sampled_from([0, 1, 30, 200]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(inputs, max_size=12))
def test_random_attrs_never_make_state_or_alerts_unwritable(script):
    ctx = all_rules_ctx()
    state = SchoolState(SCHOOL)
    now = T0
    for n, ((etype, device), a, media, dt) in enumerate(script):
        now += dt
        out = engine.on_event(state, event(etype, device, f"r-{n}", ts=now, attrs=a, media=media), now, ctx)
        assert_writable(out.state, out.alerts)
        assert {f.rule for f in out.failures} <= {r.name for r in engine.RULES} | {engine.LADDER}
        state = out.state
    out = engine.on_tick(state, now + 3600, ctx)
    assert_writable(out.state, out.alerts)
