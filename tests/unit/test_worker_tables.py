"""worker/tables.py: per-school state in two byte-valued tables, encoded before it is sent."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from pipeline.rules.incident import Incident
from pipeline.rules.state import SchoolState
from pipeline.worker.tables import SchoolTables

KEYS = ("corroboration", "silence")


def tables() -> tuple[SchoolTables, dict, dict]:
    schools: dict = {}
    memory: dict = {}
    return SchoolTables(schools, memory, KEYS), schools, memory


def incident(iid: str = "inc-20261201-s1-0001-abcdef") -> Incident:
    return Incident(iid, "s1", "panic", "Actual", "Extreme", "Immediate", "Likely", "gate", 1000.0, deadlines={"onsite_overdue": 1060.0})


def test_first_save_writes_the_core_even_without_changes():
    t, schools, _ = tables()
    before = t.load("s1", 2)
    t.save(t.prepare("s1", before, before))
    assert orjson.loads(schools["s1"])["partition"] == 2


def test_only_changed_values_are_written_and_deleted_memories_removed():
    t, schools, memory = tables()
    s0 = t.load("s1", 0)
    s1 = s0.put(incident()).remember("corroboration", {"recent": [1]})
    t.save(t.prepare("s1", s0, s1))
    core_before = schools["s1"]
    assert orjson.loads(memory["s1|corroboration"]) == {"recent": [1]}

    s2 = s1.remember("silence", {"active": {}})
    w = t.prepare("s1", s1, s2)
    assert w.core is None and set(w.memory) == {"silence"}
    t.save(w)
    assert schools["s1"] is core_before

    s3 = s2.remember("corroboration", None)
    t.save(t.prepare("s1", s2, s3))
    assert "s1|corroboration" not in memory and "s1|silence" in memory


def test_load_reuses_the_saved_state_until_forget():
    t, schools, memory = tables()
    s0 = t.load("s1", 0)
    s1 = s0.put(incident())
    t.save(t.prepare("s1", s0, s1))
    assert t.load("s1", 0) is s1
    # a changelog recovery (after a partition assignment) replaces the stored bytes
    schools["s1"] = orjson.dumps(orjson.loads(schools["s1"]))
    memory["s1|silence"] = orjson.dumps({"active": {"x": 1}})
    t.forget()
    again = t.load("s1", 0)
    assert again is not s1 and again.incidents.keys() == s1.incidents.keys() and again.memory["silence"] == {"active": {"x": 1}}


def test_round_trip_through_bytes_keeps_the_state():
    t, schools, memory = tables()
    s0 = t.load("s1", 1)
    s1 = s0.put(incident()).remember("corroboration", {"recent": [{"event_id": "e1", "ts": 3.5}]}).mark_applied("d/e1", 1000.0)
    t.save(t.prepare("s1", s0, s1))
    fresh = SchoolTables(schools, memory, KEYS).load("s1", 1)
    assert fresh.core_dict() == s1.core_dict() and fresh.memory == s1.memory


def test_an_unencodable_state_raises_before_anything_is_written():
    t, schools, memory = tables()
    s0 = t.load("s1", 0)
    deep: list = []
    for _ in range(600):  # deeper than orjson's recursion limit
        deep = [deep]
    bad = s0.remember("corroboration", {"x": deep})
    with pytest.raises(TypeError):
        t.prepare("s1", s0, bad)
    assert schools == {} and memory == {}
    assert t.load("s1", 0) is s0


def test_old_changelog_values_decoded_as_json_text_are_read():
    t, schools, memory = tables()
    s = replace(SchoolState("s1", partition=0), next_seq=7)
    schools["s1"] = orjson.dumps(s.core_dict()).decode()  # what Faust's json codec wrote
    assert t.load("s1", 0).next_seq == 7
