"""Per-school state in the worker's two tables: load, encode, save (no Faust here).

The tables hold orjson bytes (Faust's `raw` serializer), one core value per school and
one value per (school, rule memory) under the key "<school>|<memory>" (rules/state.py).
Saving is split in two so that nothing is sent before the new state is known to be
writable: `prepare` encodes every changed value (and raises if one cannot be encoded),
the caller delivers the alerts, then `save` writes the prepared values.

Decoded states are cached per school: `save` keeps the state it wrote, and `load` returns
it without reading the tables (a school has 20-odd values: reading them all for every input
cost more than the rules). The worker is the tables' only writer except Faust's changelog
recovery, which happens only after a partition assignment: the worker calls `forget()` then.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from pipeline.records import dumps, loads
from pipeline.rules.state import SchoolState

CORE_FIELDS = ("incidents", "closed", "applied", "next_seq", "partition")


@dataclass(frozen=True)
class Writes:
    """Encoded changes of one school, ready to be written."""

    school_id: str
    core: bytes | None  # None: unchanged
    memory: dict[str, bytes | None]  # memory key -> new value (None: delete)
    state: SchoolState


class SchoolTables:
    def __init__(self, schools: MutableMapping[str, Any], memory: MutableMapping[str, Any], memory_keys: tuple[str, ...]):
        self.schools = schools
        self.memory = memory
        self.memory_keys = memory_keys
        self._cache: dict[str, SchoolState] = {}

    def _stored(self, school_id: str) -> tuple[Any, tuple]:
        return self.schools.get(school_id), tuple(self.memory.get(f"{school_id}|{k}") for k in self.memory_keys)

    def has_core(self, school_id: str) -> bool:
        return self.schools.get(school_id) is not None

    def load(self, school_id: str, partition: int) -> SchoolState:
        """The school's state: as last saved, or decoded from the tables."""
        hit = self._cache.get(school_id)
        if hit is not None:
            return hit
        core, mems = self._stored(school_id)
        memory = {k: _decode(v) for k, v in zip(self.memory_keys, mems) if v is not None}
        state = SchoolState.from_dicts(_decode(core) if core is not None else None, memory, school_id, partition)
        self._cache[school_id] = state
        return state

    def forget(self) -> None:
        """Drop the decoded states: the tables may change behind us (changelog recovery)."""
        self._cache.clear()

    def prepare(self, school_id: str, before: SchoolState, after: SchoolState) -> Writes:
        """Encode what changed from `before` to `after` (states are immutable: identity
        tells). A school seen for the first time gets its core written, so ticks know it
        started. Raises TypeError/ValueError when a value cannot be encoded."""
        core = None
        if not self.has_core(school_id) or any(getattr(after, f) is not getattr(before, f) for f in CORE_FIELDS):
            core = dumps(after.core_dict())
        memory: dict[str, bytes | None] = {}
        for key in set(before.memory) | set(after.memory):
            if after.memory.get(key) is not before.memory.get(key):
                memory[key] = dumps(after.memory[key]) if key in after.memory else None
        return Writes(school_id, core, memory, after)

    def save(self, w: Writes) -> None:
        if w.core is not None:
            self.schools[w.school_id] = w.core
        for key, value in w.memory.items():
            name = f"{w.school_id}|{key}"
            if value is not None:
                self.memory[name] = value
            elif self.memory.get(name) is not None:
                del self.memory[name]
        self._cache[w.school_id] = w.state

    def cached(self) -> list[SchoolState]:
        """States decoded so far (for gauges: no decoding)."""
        return list(self._cache.values())


def _decode(value: Any) -> Any:
    # Changelogs written before the tables held bytes carry the same JSON.
    return loads(value) if isinstance(value, (bytes, bytearray, memoryview, str)) else value
