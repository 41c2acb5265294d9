"""Hostile device input through the whole bridge -> Kafka -> worker path.

Registered devices publish payloads made to hurt: deep and wide nesting in `attrs` and
`media`, integers past 2^53 and 2^64, 1e308, NaN / Infinity literals, lone surrogates
escaped in JSON, control characters, raw NUL and non-UTF-8 bytes, strings up to and past
the 64 KiB payload limit, every field with a wrong type. What must hold: each input ends
as exactly one canonical event or one DLQ entry with a reason code, the processes stay
up, and panic presses — at another school and at the hostile school itself — still open
incidents and run the ladder.

How the batch is generated. Running a pipeline per hypothesis example is far too slow,
and `@settings(max_examples=1) @given(st.lists(...))` is unsound here: hypothesis's
first example is the *simplest* one (every draw minimal), so one example is a list of
identical trivial payloads. Instead `draw_batch` runs a throw-away `@given` function for
`n` examples with only the generate phase (no shrinking, no example database, `@seed`
from HUXUE_HOSTILE_SEED) and collects what it was given: hypothesis's normal search —
the simplest case first, then its full distribution with boundary values — becomes the
batch that one pipeline run publishes. (Hypothesis also adapts to how the run goes, so
two runs may draw different batches: each run writes its batch to
`<workdir>/hostile-batch.jsonl`, one base64 payload per line, to replay a failure.)
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from harness import Pipeline, wait_for
from pipeline.records import iso_utc

pytestmark = pytest.mark.integration

TZ = "Asia/Shanghai"
ALWAYS_OPEN = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "open": "00:00", "close": "00:00"}
SEED = int(os.environ.get("HUXUE_HOSTILE_SEED", "20261201"))
BATCH = 240
MIB = 1024 * 1024

KINDS = {
    "btn-1": ("panic_button", "gate"),
    "btn-2": ("panic_button", "office"),
    "cam-gate": ("video_analytics", "gate"),
    "cam-yard": ("video_analytics", "yard"),
    "fence-yard": ("fence", "yard"),
    "door-yard": ("access_control", "yard"),
    "mic-yard": ("audio_sensor", "yard"),
    "face-gate": ("face_camera", "gate"),
    "lpr-gate": ("plate_camera", "gate"),
    "post-1": ("guard_terminal", "gate"),
}
TYPES_FOR = {
    "panic_button": ["panic.pressed"],
    "video_analytics": ["video.intrusion", "video.fight", "video.fall", "video.crowd", "video.loiter"],
    "fence": ["fence.breach"],
    "access_control": ["door.forced"],
    "audio_sensor": ["sound.scream"],
    "face_camera": ["face.match"],
    "plate_camera": ["plate.read"],
    "guard_terminal": ["guard.checkin", "guard.checkout"],
}
ANY_KIND = ["device.heartbeat", "device.tamper"]
ALL_TYPES = sorted({t for ts in TYPES_FOR.values() for t in ts} | set(ANY_KIND))


def hostile_registry(n: int = 8) -> dict:
    schools = [{"id": f"x{i:02d}", "name": f"Hostile School {i}", "timezone": TZ, "hours": ALWAYS_OPEN} for i in range(1, n + 1)]
    devices = [{"id": f"{s['id']}-{suffix}", "school": s["id"], "kind": kind, "zone": zone} for s in schools for suffix, (kind, zone) in KINDS.items()]
    return {"schools": schools, "devices": devices}


# Every rule on (defaults), tuned so the rules that read attrs have something to match.
RULES = {
    "corroboration": {"enabled": True},
    "video_behaviour": {"enabled": True},
    "plate_watchlist": {"plates": {"京A12345": "Severe"}},
}


def hostile_pipeline(stack, workdir) -> Pipeline:
    return Pipeline(stack, workdir, registry=hostile_registry(), rules=RULES, probe_device="x08-cam-gate")


# --- a JSON writer that can also write what JSON forbids ------------------------------------


@dataclass(frozen=True)
class Lit:
    """Raw bytes put into the payload as they are (NaN, 1e309, raw NUL, bad UTF-8, deep nesting)."""

    raw: bytes


@dataclass(frozen=True)
class Mark:
    """The input's unique marker (a string), followed by a hostile suffix."""

    suffix: str = ""


@dataclass(frozen=True)
class Now:
    """The publish time, as RFC 3339 or as epoch milliseconds."""

    millis: bool = False


def render(value: Any, marker: str) -> bytes:
    if isinstance(value, Lit):
        return value.raw
    if isinstance(value, Mark):
        return json.dumps(marker + value.suffix).encode()
    if isinstance(value, Now):
        return str(int(time.time() * 1000)).encode() if value.millis else json.dumps(iso_utc(time.time())).encode()
    if value is None:
        return b"null"
    if value is True:
        return b"true"
    if value is False:
        return b"false"
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        return repr(value).encode()
    if isinstance(value, str):
        return json.dumps(value).encode()  # ensure_ascii: a lone surrogate is written "\ud800"
    if isinstance(value, list):
        return b"[" + b",".join(render(v, marker) for v in value) + b"]"
    if isinstance(value, dict):
        return b"{" + b",".join(render(str(k), marker) + b":" + render(v, marker) for k, v in value.items()) + b"}"
    raise TypeError(type(value))


def deep(depth: int, shape: str, leaf: bytes = b"0") -> Lit:
    """`depth` levels of nesting as raw text (no recursion to build it)."""
    if shape == "object":
        return Lit(b'{"d":' * depth + leaf + b"}" * depth)
    if shape == "array":
        return Lit(b"[" * depth + leaf + b"]" * depth)
    opens = b"".join(b'{"d":' if i % 2 else b"[" for i in range(depth))
    closes = b"".join(b"}" if i % 2 else b"]" for i in reversed(range(depth)))
    return Lit(opens + leaf + closes)


@dataclass(frozen=True)
class Case:
    """One hostile input: the device it is published as, and the payload around a marker."""

    device: str  # suffix, e.g. "cam-gate"; the school is chosen by the test
    body: Any  # a tree for `render`, or Lit for a whole raw payload
    profile: str

    def payload(self, marker: str) -> bytes:
        if self.profile == "raw":  # (head, garbage): raw bytes around the marker
            head, garbage = self.body
            return head + marker.encode() + garbage
        return render(self.body, marker)


# --- strategies -----------------------------------------------------------------------------

big_ints = st.one_of(
    st.integers(min_value=2**53 - 2, max_value=2**53 + 2),
    st.integers(min_value=2**63 - 2, max_value=2**64 + 2),
    st.integers(min_value=2**64, max_value=2**200),
    st.integers(min_value=-(2**200), max_value=-(2**53)),
)
ints = st.one_of(st.integers(), big_ints)
special_numbers = st.sampled_from(
    [Lit(b"NaN"), Lit(b"Infinity"), Lit(b"-Infinity"), Lit(b"1e309"), Lit(b"-1e309"), 1e308, -1e308, 5e-324, Lit(b"1E400"), Lit(b"-0"), Lit(b"01"), Lit(b"1.")]
)
floats = st.one_of(st.floats(allow_nan=False, allow_infinity=False), special_numbers)
# every code point, lone surrogates included (written as JSON escapes by `render`)
all_chars = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
texts = st.text(all_chars, max_size=40)
raw_strings = st.one_of(
    st.builds(lambda b: Lit(b'"' + b + b'"'), st.binary(max_size=24)),  # raw control chars, NUL, bad UTF-8 inside quotes
    st.sampled_from([Lit(b'"\x00"'), Lit(b'"a\x01\x1f"'), Lit(b'"\xff\xfe"'), Lit(b'"\xed\xa0\x80"'), Lit(b'"\\ud800"'), Lit(b'"\\udfff\\ud800"'), Lit(b'"\\u0000"')]),
)
big_strings = st.builds(lambda ch, n: ch * n, st.sampled_from(["x", "é", "汉", "\U0001f6a8", "\x00", "\\", '"']), st.integers(min_value=0, max_value=66_000))
scalars = st.one_of(st.none(), st.booleans(), ints, floats, texts, raw_strings)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=6), st.dictionaries(texts, inner, max_size=6)), max_leaves=25)
deep_values = st.builds(deep, st.integers(min_value=1, max_value=400), st.sampled_from(["object", "array", "mixed"]))
wide_values = st.builds(lambda n, v: {f"k{i}": v for i in range(n)}, st.integers(min_value=0, max_value=4000), st.one_of(st.none(), ints, st.text(max_size=4)))
wide_lists = st.builds(lambda n, v: [v] * n, st.integers(min_value=0, max_value=8000), st.one_of(st.integers(0, 9), st.just([])))
hostile_values = st.one_of(values, deep_values, wide_values, wide_lists, big_strings, big_ints, special_numbers)
# the attributes the rules read, with wrong types and hostile contents
attr_names = st.sampled_from(["zone", "count", "duration_s", "level_db", "battery", "plate", "direction", "watchlist", "person_ref", "similarity", "post_id", "officer_id", "door"])
hostile_objects = st.one_of(
    st.dictionaries(st.one_of(attr_names, texts), hostile_values, max_size=6),
    st.builds(lambda d: {"nested": d}, deep_values),
    wide_values,
    st.builds(lambda s: {"zone": "yard", "blob": s}, big_strings),
)


def event_type_for(kind: str) -> st.SearchStrategy[str]:
    return st.sampled_from(TYPES_FOR[kind] + ANY_KIND)


@st.composite
def cases(draw) -> Case:
    device = draw(st.sampled_from(sorted(KINDS)))
    kind = KINDS[device][0]
    profile = draw(st.sampled_from(["valid_shape", "valid_shape", "wrong_types", "raw", "not_an_object"]))
    if profile == "raw":
        garbage = draw(st.one_of(st.binary(max_size=600), st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=4), st.integers(1, 17_000))))
        # the marker first (unique bytes), then anything: bad UTF-8, NUL, truncated JSON
        head = draw(st.sampled_from([b"", b"{", b'{"event_id":', b"\xef\xbb\xbf{", b"\x00"]))
        return Case(device, (head, garbage), profile)
    if profile == "not_an_object":
        inner = draw(st.one_of(values, deep_values, big_ints))
        shape = draw(st.sampled_from(["array", "string", "number_then_marker"]))
        body = [Mark(), inner] if shape == "array" else Mark(draw(texts)) if shape == "string" else [Mark()]
        return Case(device, body, profile)
    body: dict[str, Any] = {}
    if profile == "valid_shape":
        body["event_id"] = Mark(draw(st.one_of(st.just(""), st.text(all_chars, max_size=20))))
        body["type"] = draw(event_type_for(kind))
        body["ts"] = draw(st.one_of(st.builds(Now, st.booleans()), st.just(Now())))
        body["attrs"] = draw(hostile_objects)
        if draw(st.booleans()):
            body["media"] = draw(st.one_of(hostile_objects, st.just({"snapshot_url": "https://nvr.local/s/1.jpg"})))
        if draw(st.booleans()):
            body["exercise"] = draw(st.booleans())
    else:
        wrong = st.one_of(hostile_values, st.just(None))
        marked = draw(st.booleans())
        body["event_id"] = Mark(draw(st.one_of(st.text(all_chars, max_size=8), st.builds(lambda n: "e" * n, st.integers(100, 300))))) if marked else draw(wrong)
        if not marked:
            body["x_marker"] = Mark()
        for name, good in (
            ("type", st.one_of(event_type_for(kind), st.sampled_from(ALL_TYPES), texts)),
            ("ts", st.one_of(st.builds(Now, st.booleans()), st.sampled_from(["yesterday", "2026-11-29T07:41:03", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", -1, 10**14, 1.5e12, True]))),
            ("attrs", hostile_objects),
            ("media", hostile_objects),
            ("exercise", st.booleans()),
        ):
            choice = draw(st.sampled_from(["good", "wrong", "absent"]))
            if choice == "good":
                body[name] = draw(good)
            elif choice == "wrong":
                body[name] = draw(wrong)
        extra = draw(st.dictionaries(texts.filter(lambda k: k not in ("event_id", "type", "ts", "attrs", "media", "exercise", "x_marker")), hostile_values, max_size=3))
        body.update(extra)
    return Case(device, body, profile)


def draw_batch(n: int = BATCH) -> list[Case]:
    """`n` hypothesis examples of `cases()` (see the module docstring for why this way)."""
    drawn: list[Case] = []

    @seed(SEED)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(cases())
    def collect(case: Case) -> None:
        drawn.append(case)

    collect()
    return drawn


# --- matching inputs to outcomes ----------------------------------------------------------


def dlq_bytes(entry: dict) -> bytes | None:
    if "payload_b64" in entry:
        return base64.b64decode(entry["payload_b64"])
    if isinstance(entry.get("payload"), str):
        return entry["payload"].encode("utf-8", "surrogatepass")
    return None


def alive(p: Pipeline) -> list[str]:
    dead = []
    for proc in (p.bridge, p.worker):
        if proc.proc is None or proc.proc.poll() is not None:
            dead.append(f"{proc.name} exited with {proc.proc.returncode if proc.proc else '?'}; log tail:\n{proc.output()[-2500:]}")
    return dead


def report(title: str, p: Pipeline, inputs: int) -> None:
    """Counts: inputs, events, DLQ by reason_code, alerts (and the largest alert, commands DLQ, stages)."""
    dlq = Counter(e.get("reason_code", "?") for e in p.dlq.records)
    stages = Counter(f"{a['rule']}/{a['stage'].split('-')[0]}" for a in p.alerts.records)
    big = max((len(r.value) for r in p.alerts.raw), default=0)
    print(
        f"\n[{title}] inputs={inputs} events={len(p.events.records)} dlq={sum(dlq.values())} {dict(sorted(dlq.items()))} "
        f"alerts={len(p.alerts.records)} distinct_identifiers={len({a['identifier'] for a in p.alerts.records})} largest_alert={big} B "
        f"commands_dlq={dict(Counter(e.get('reason_code') for e in p.rejected.records))} stages={dict(sorted(stages.items()))}"
    )


def evidence_ids(alert: dict) -> set[str]:
    return {e.get("event_id") for e in alert.get("evidence", [])}


def wait_press_alert(p: Pipeline, press: dict, timeout: float, what: str) -> dict:
    """The first alert carrying the press `press` as evidence (opened, or joined an open one)."""
    return p.alerts.wait(lambda rs: [a for a in rs if press["event_id"] in evidence_ids(a)], timeout, what)[0]


# --- the batch -------------------------------------------------------------------------------


def test_hypothesis_hostile_batch_each_input_one_outcome_and_panics_still_work(stack, workdir):
    batch = draw_batch()
    assert len(batch) >= 150, f"hypothesis produced only {len(batch)} examples"
    tag = uuid.uuid4().hex[:6]
    school, other = "x01", "x02"
    p = hostile_pipeline(stack, workdir)
    try:
        p.start()
        inputs: list[tuple[str, str, bytes, str]] = []  # (marker, topic, payload, profile)
        for i, case in enumerate(batch):
            marker = f"hx{tag}-{i:04d}~"
            payload = case.payload(marker)
            device = f"{school}-{case.device}"
            topic = f"huxue/v1/devices/{device}/events"
            inputs.append((marker, topic, payload, case.profile))
            p.publish(device, payload)
        with open(workdir / "hostile-batch.jsonl", "w") as f:
            for marker, topic, payload, profile in inputs:
                f.write(json.dumps({"marker": marker, "topic": topic, "profile": profile, "payload_b64": base64.b64encode(payload).decode()}) + "\n")
        sizes = [len(x[2]) for x in inputs]
        print(f"\n[batch] seed={SEED} (written to {workdir / 'hostile-batch.jsonl'}) {len(inputs)} payloads, {sum(sizes)} bytes, largest {max(sizes)} B, profiles {dict(Counter(x[3] for x in inputs))}")

        # a press at ANOTHER school opens its incident
        press_other = p.press(f"{other}-btn-1")
        opened = p.alerts.wait(lambda rs: [a for a in rs if a["school_id"] == other and a["stage"] == "opened" and press_other["event_id"] in evidence_ids(a)], 90, f"the press at {other} to open")[0]
        assert opened["rule"] == "panic" and opened["msgType"] == "Alert"

        # every input: exactly one canonical event or one DLQ entry with a reason code
        prefix = f"hx{tag}-"
        by_bytes = {(topic, payload): marker for marker, topic, payload, _ in inputs}

        def truncated_match(d: dict, body: bytes) -> str | None:
            """A DLQ entry cut at 256 KiB (`payload_truncated`): the one input it is the head of."""
            if not d.get("payload_truncated"):
                return None
            found = [m for m, topic, pl, _ in inputs if topic == d.get("mqtt_topic") and len(pl) == d.get("payload_size") and pl.startswith(body)]
            return found[0] if len(found) == 1 else None

        def outcomes() -> tuple[Counter, Counter, list, list]:
            ev, dl = Counter(), Counter()
            stray_events, stray_dlq = [], []
            for e in list(p.events.records):
                eid = e.get("event_id", "")
                if isinstance(eid, str) and eid.startswith(prefix):
                    ev[eid[: len(prefix) + 5]] += 1
                    if e.get("school_id") != school:
                        stray_events.append(e)
            for d in list(p.dlq.records):
                if d.get("reason_code") in ("worker_rejected", "worker_error"):
                    continue  # the worker's entries, reported apart below
                body = dlq_bytes(d)
                marker = (by_bytes.get((d.get("mqtt_topic"), body)) or truncated_match(d, body)) if body is not None else None
                if marker is None:
                    if body is not None and prefix.encode() in body:
                        stray_dlq.append(d)
                    continue
                if not d.get("reason_code"):
                    stray_dlq.append(d)
                dl[marker] += 1
            return ev, dl, stray_events, stray_dlq

        def settled() -> bool:
            ev, dl, _, _ = outcomes()
            return all(ev[m] + dl[m] >= 1 for m, *_ in inputs)

        try:
            wait_for(settled, 180, "an outcome for every hostile input", interval=0.5)
        except AssertionError:
            pass  # reported precisely below
        ev, dl, stray_events, stray_dlq = outcomes()
        missing = [(m, prof, len(pl), pl[:120]) for m, _, pl, prof in inputs if ev[m] + dl[m] == 0]
        multiple = [(m, ev[m], dl[m]) for m, *_ in inputs if ev[m] + dl[m] > 1]
        worker_dlq = Counter(d.get("reason_code") for d in p.dlq.records if d.get("reason_code") in ("worker_rejected", "worker_error"))
        report("hostile batch", p, len(inputs))
        print(f"[hostile batch] as events={sum(1 for m, *_ in inputs if ev[m])} as DLQ={sum(1 for m, *_ in inputs if dl[m])} no outcome={len(missing)} several={len(multiple)} worker DLQ={dict(worker_dlq)}")
        dead = alive(p)
        assert not dead, "\n".join(dead)
        assert not missing, f"{len(missing)} of {len(inputs)} inputs have neither a canonical event nor a DLQ entry, e.g. {missing[:5]}"
        assert not multiple, f"inputs with more than one outcome (marker, events, dlq): {multiple[:10]}"
        assert not stray_events, f"events of the batch under another school: {stray_events[:3]}"
        assert not stray_dlq, f"DLQ entries carrying a marker but not byte-equal to an input, or without reason_code: {[{k: str(v)[:200] for k, v in d.items()} for d in stray_dlq[:3]]}"

        # a panic at the SAME school as the hostile traffic still works: its press is
        # taken up (opens, or joins a panic incident a hostile press opened) ...
        press_same = p.press(f"{school}-btn-1")
        first = wait_press_alert(p, press_same, 90, f"the press at {school} to be taken up")
        assert first["rule"] == "panic" and (first["stage"] == "opened" or first["stage"].startswith("joined")), first
        # ... and the ladder runs and commands are answered there
        p.alerts.wait(lambda rs: [a for a in rs if a["incident_id"] == first["incident_id"] and a["stage"] == "onsite_overdue"], 60, f"onsite_overdue at {school}")
        cmd = p.command("ack", first["incident_id"], by="guard-hostile")
        acked = p.alerts.wait(lambda rs: [a for a in rs if a.get("command_id") == cmd["command_id"]], 60, f"the ack at {school}")[0]
        assert acked["stage"] == "acknowledged", acked
        dead = alive(p)
        assert not dead, "\n".join(dead)
        report("hostile batch, end", p, len(inputs))
    finally:
        report("hostile batch: final counts", p, len(batch))
        p.close()


# --- the specific findings ----------------------------------------------------------------


def test_300_deep_attrs_goes_to_dlq_and_a_press_afterwards_opens(stack, workdir):
    p = hostile_pipeline(stack, workdir)
    try:
        p.start()
        eid = p.event_id()
        nested = b'{"d":' * 300 + b"1" + b"}" * 300
        payload = b'{"event_id":"%s","type":"video.fall","ts":"%s","attrs":%s}' % (eid.encode(), iso_utc(time.time()).encode(), nested)
        p.publish("x03-cam-yard", payload)
        press = p.press("x03-btn-1")
        entry = p.dlq.wait(lambda rs: [d for d in rs if dlq_bytes(d) == payload], 60, "the 300-deep event in the DLQ")[0]
        opened = p.alerts.wait(lambda rs: [a for a in rs if a["school_id"] == "x03" and a["stage"] == "opened" and press["event_id"] in evidence_ids(a)], 60, "the press afterwards to open")[0]
        report("300 deep", p, 2)
        assert entry.get("reason_code"), entry
        assert entry["mqtt_topic"] == "huxue/v1/devices/x03-cam-yard/events"
        assert not [e for e in p.events.records if e.get("event_id") == eid], "the 300-deep event also reached the events topic"
        assert opened["rule"] == "panic"
        dead = alive(p)
        assert not dead, "\n".join(dead)
    finally:
        report("300 deep: final counts", p, 2)
        p.close()


def test_fat_fight_evidence_does_not_wedge_the_worker_and_alerts_stay_under_1_mib(stack, workdir):
    p = hostile_pipeline(stack, workdir)
    try:
        p.start()
        fat: list[str] = []
        for i in range(20):
            eid = p.event_id()
            fat.append(eid)
            # ~60 KB of attrs, under the 64 KiB payload limit: 15 strings of 4,000 chars (each
            # within the bridge's per-string limit: what a chatty analytics box really sends)
            attrs = {"zone": "yard", **{f"track-{k:02d}": f"{i:03d}{k:02d}" + "x" * 3995 for k in range(15)}}
            body = {"event_id": eid, "type": "video.fight", "ts": iso_utc(time.time()), "attrs": attrs}
            p.publish("x05-cam-yard", body)
        events = p.events.wait(lambda rs: (got := [e for e in rs if e.get("event_id") in set(fat)]) and len(got) >= len(fat) and got, 90, "the 20 fat fights on the events topic")
        assert {e["event_id"] for e in events} == set(fat)
        t0 = time.monotonic()
        press = p.press("x06-btn-1")  # ANOTHER school
        opened = p.alerts.wait(lambda rs: [a for a in rs if a["school_id"] == "x06" and a["stage"] == "opened" and press["event_id"] in evidence_ids(a)], 90, "a press at another school to open")[0]
        print(f"\n[fat] press at x06 opened {time.monotonic() - t0:.1f} s after it was published")
        assert opened["rule"] == "panic"
        # the fight incident at x05 was raised, and a press there still opens
        p.alerts.wait(lambda rs: [a for a in rs if a["school_id"] == "x05" and a["rule"] == "video_behaviour" and a["stage"] == "opened"], 60, "the fight incident at x05")
        same = p.press("x05-btn-1")
        p.alerts.wait(lambda rs: [a for a in rs if a["school_id"] == "x05" and a["rule"] == "panic" and a["stage"] == "opened" and same["event_id"] in evidence_ids(a)], 90, "a press at x05 to open")
        p.sentinel("x05", "x05-btn-2", timeout=90)  # everything published at x05 before it has been processed
        fat_set = set(fat)
        referencing = [(r, a) for r, a in zip(list(p.alerts.raw), list(p.alerts.records)) if evidence_ids(a) & fat_set]
        report("fat evidence", p, len(fat) + 3)
        sizes = sorted((len(r.value) for r, _ in referencing), reverse=True)
        print(f"[fat] {len(referencing)} alerts reference the fat events; largest {sizes[:3]} B")
        too_big = [(a["identifier"], a["stage"], len(r.value)) for r, a in referencing if len(r.value) >= MIB]
        assert not too_big, f"alerts of 1 MiB or more: {too_big}"
        assert referencing, "no alert references the fat events"
        # no fight was silently lost from the incident: the last one is in some alert
        assert fat[-1] in set().union(*(evidence_ids(a) for _, a in referencing)), "the last fat fight is in no alert"
        dead = alive(p)
        assert not dead, "\n".join(dead)
    finally:
        report("fat evidence: final counts", p, 23)
        p.close()


# attrs depth per school: 249 at x07 (the finding), and its neighbours up to orjson's limit
# (it writes at most 254 levels; evidence sits a few levels down in alerts and in the state)
DEPTHS = {"x07": 249, "x01": 245, "x02": 248, "x03": 250, "x04": 251, "x05": 252, "x06": 253, "x08": 254}


@pytest.mark.parametrize("via", ["mqtt", "events_topic"])
def test_249_deep_scream_then_a_press_opens_escalates_takes_an_ack_and_a_later_press_opens_anew(stack, workdir, via):
    """A scream with attrs nested 249 deep (and 245-254 at other schools), then a real press at
    the same school within the corroboration window: it opens, the ladder runs, a worker
    kill -9 and restart in the middle (the state must come back from the changelogs, where
    it is serialised), a guard's ack is accepted, the ladder continues, resolve closes it,
    and a second press opens a new incident under identifiers never seen before.

    `mqtt`: through the bridge (which may forward or dead-letter the scream). `events_topic`:
    the same scream as a canonical event produced straight to the events topic (an older
    bridge, another producer): the worker itself must survive evidence nested that deep.
    """
    p = hostile_pipeline(stack, workdir)
    failures: list[str] = []

    def wait_all(schools: list[str], find, timeout: float, what: str) -> dict[str, Any]:
        """`find(school)` for every school, waiting up to `timeout`; the missing ones are failures."""
        got: dict[str, Any] = {}
        end = time.monotonic() + timeout
        while True:
            for sid in schools:
                if sid not in got and (hit := find(sid)):
                    got[sid] = hit
            if len(got) == len(schools) or time.monotonic() > end:
                break
            time.sleep(0.1)
        for sid in schools:
            if sid not in got:
                failures.append(f"{sid} (attrs {DEPTHS[sid]} deep): timed out after {timeout:g} s waiting for {what}")
        return got

    def alert(pred) -> dict | None:
        return next((a for a in list(p.alerts.records) if pred(a)), None)

    def answer(cmd: dict) -> dict | None:
        return alert(lambda a: a.get("command_id") == cmd["command_id"]) or next((r for r in list(p.rejected.records) if (r.get("command") or {}).get("command_id") == cmd["command_id"]), None)

    try:
        p.start()
        schools = sorted(DEPTHS)
        screams: dict[str, tuple[str, bytes]] = {}
        scream_at = time.time()
        for sid in schools:
            eid = p.event_id()
            nested = b'{"d":' * DEPTHS[sid] + b"1" + b"}" * DEPTHS[sid]
            now = iso_utc(time.time()).encode()
            if via == "mqtt":
                payload = b'{"event_id":"%s","type":"sound.scream","ts":"%s","attrs":%s}' % (eid.encode(), now, nested)
                p.publish(f"{sid}-mic-yard", payload)
            else:
                payload = (
                    b'{"event_id":"%s","type":"sound.scream","ts":"%s","device_id":"%s-mic-yard","school_id":"%s","kind":"audio_sensor","zone":"yard",'
                    b'"source":"native","mqtt_topic":"huxue/v1/devices/%s-mic-yard/events","received_at":"%s","attrs":%s,"exercise":false}'
                ) % (eid.encode(), now, sid.encode(), sid.encode(), sid.encode(), now, nested)
                p.producer.send(p.cfg.topics.events, key=sid, value=payload).get(30)
            screams[sid] = (eid, payload)
        if via == "mqtt":  # forwarded or dead-lettered: either way past the bridge before the presses
            through = wait_all(
                schools,
                lambda sid: ("event" if any(e.get("event_id") == screams[sid][0] for e in list(p.events.records)) else None)
                or next((d.get("reason_code") for d in list(p.dlq.records) if dlq_bytes(d) == screams[sid][1]), None),
                60,
                "the scream through the bridge",
            )
            print(f"\n[deep screams via mqtt] bridge outcome by depth: {', '.join(f'{DEPTHS[s]}: {through.get(s)}' for s in schools)}")
        presses = {sid: p.press(f"{sid}-btn-1") for sid in schools}
        assert time.time() - scream_at < 120, "the presses must follow within the corroboration window"
        opened = wait_all(schools, lambda sid: alert(lambda a: a["school_id"] == sid and a["rule"] == "panic" and a["stage"] == "opened" and presses[sid]["event_id"] in evidence_ids(a)), 60, "the press to open")
        wait_all(list(opened), lambda sid: alert(lambda a: a["incident_id"] == opened[sid]["incident_id"] and a["stage"] == "onsite_overdue"), 60, "onsite_overdue (2 s ladder)")

        p.worker.kill()  # from here on the incidents exist only in the changelogs
        p.start_worker()

        acks = {sid: p.command("ack", opened[sid]["incident_id"], by=f"guard-{sid}") for sid in opened}
        answers = wait_all(list(acks), lambda sid: answer(acks[sid]), 60, "an answer to the ack")
        for sid, got in answers.items():
            if not ("identifier" in got and got["stage"] == "acknowledged"):
                failures.append(f"{sid} (attrs {DEPTHS[sid]} deep): the ack was not accepted: {got.get('reason_code') or got.get('stage')}: {str(got.get('reason', ''))[:200]}")
        wait_all(list(opened), lambda sid: alert(lambda a: a["incident_id"] == opened[sid]["incident_id"] and a["stage"] == "mobile_overdue"), 60, "mobile_overdue (the ladder continues)")
        resolves = {sid: p.command("resolve", opened[sid]["incident_id"], by=f"duty-{sid}") for sid in opened}
        closed = wait_all(list(resolves), lambda sid: answer(resolves[sid]), 60, "an answer to the resolve")
        for sid, got in closed.items():
            if not (got.get("stage") == "resolved" and got.get("msgType") == "Cancel"):
                failures.append(f"{sid} (attrs {DEPTHS[sid]} deep): the resolve was not accepted: {got.get('reason_code') or got.get('stage')}: {str(got.get('reason', ''))[:200]}")

        seen = {a["identifier"] for a in list(p.alerts.records)}
        seconds = {sid: p.press(f"{sid}-btn-2") for sid in schools}
        again = wait_all(schools, lambda sid: alert(lambda a: a["school_id"] == sid and a["rule"] == "panic" and seconds[sid]["event_id"] in evidence_ids(a)), 60, "the second press to be taken up")
        for sid, a in again.items():
            if a["stage"] != "opened" or (sid in opened and a["incident_id"] == opened[sid]["incident_id"]):
                failures.append(f"{sid} (attrs {DEPTHS[sid]} deep): the second press did not open a new incident: {a['stage']} of {a['incident_id']}")
        fresh = {sid: a for sid, a in again.items() if a["stage"] == "opened"}
        wait_all(list(fresh), lambda sid: alert(lambda a: a["incident_id"] == fresh[sid]["incident_id"] and a["stage"] == "onsite_overdue"), 60, "the second incident's ladder")
        for sid, a in fresh.items():
            reused = sorted({x["identifier"] for x in list(p.alerts.records) if x["incident_id"] == a["incident_id"]} & seen)
            if reused:
                failures.append(f"{sid} (attrs {DEPTHS[sid]} deep): the second incident reuses identifiers already seen: {reused}")
        unknown = [r for r in list(p.rejected.records) if r.get("reason_code") == "unknown_incident"]
        if unknown:
            failures.append(f"commands rejected unknown_incident: {[(r['command'].get('incident_id'), r['command'].get('command')) for r in unknown]}")
        failures += alive(p)
        worker_dlq = Counter(d.get("reason_code") for d in p.dlq.records if d.get("reason_code") in ("worker_rejected", "worker_error"))
        print(f"\n[deep screams via {via}] worker DLQ {dict(worker_dlq)}; failures by school: {dict(Counter(f.split(' ')[0] for f in failures))}")
        assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures)
    finally:
        report(f"deep screams via {via}: final counts", p, 3 * len(DEPTHS))
        p.close()
