"""When each school next needs a tick, per partition: a tick visits the due schools only.

The worker fills a partition's entries at its first tick after an assignment (one pass over
its schools) and keeps each school's entry as it saves the school's state; an assignment
empties the index, since table recovery may have changed states behind its back. Cost per
tick: one pass over the partition's float entries, no state decoded for a school that is
not due (was: every school of the partition loaded at every tick).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

NOW = float("-inf")  # due at once: a school that never ran (its timers have not started)


class DueIndex:
    def __init__(self) -> None:
        self._by_partition: dict[int, dict[str, float | None]] = {}

    def clear(self) -> None:
        self._by_partition.clear()

    def due(self, partition: int, now: float, schools: Callable[[], Iterable[tuple[str, float | None]]]) -> list[str]:
        """Schools of `partition` due by `now`, sorted; `schools()` lists (school, next due)
        when the partition is not indexed yet."""
        entries = self._by_partition.get(partition)
        if entries is None:
            entries = self._by_partition[partition] = dict(schools())
        return sorted(s for s, at in entries.items() if at is not None and at <= now)

    def update(self, partition: int, school_id: str, next_due: float | None) -> None:
        """The school's state was saved: remember when it is next due (None: not until an
        input changes it). Ignored for a partition not indexed yet (its first tick lists it)."""
        entries = self._by_partition.get(partition)
        if entries is not None:
            entries[school_id] = next_due
