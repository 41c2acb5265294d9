"""OffsetGuard: the agent notices when an input record was skipped, and does not move on.

Belt and braces for pipeline/worker/faust_fixes.py. Within one consumer generation (one
assignment) the records of an input partition must reach the agent in offset order
without holes: the first at the partition's start (its committed offset), every later one
at last + 1 (or at or below last: a re-delivery after a seek, which is harmless). Events
and commands are plain, non-compacted topics written by non-transactional producers, so
their offsets are dense. (A transactional producer leaves commit markers between records:
do not guard such a topic. Ticks are not guarded: a lost tick is harmless.)

A hole means a record would be skipped. Seeking back from inside the agent is not safe
(the records already buffered behind the hole would be processed out of order, and acked
before their refetched copies are processed), so the guard logs one error line and exits
the worker with EXIT_OFFSET_GAP; the supervisor restarts it, and it resumes from the
committed offset, which faust_fixes keeps from ever passing a record that was not acked.
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

log = logging.getLogger("huxue.worker")

EXIT_OFFSET_GAP = 72


@dataclass(frozen=True)
class Gap:
    topic: str
    partition: int
    expected: int
    got: int
    first: bool  # the first record of the partition in this assignment

    def describe(self) -> str:
        where = "first record after the assignment" if self.first else "record"
        return f"{self.topic}[{self.partition}]: {where} has offset {self.got}, expected {self.expected}: {self.got - self.expected} record(s) would be skipped"


class OffsetGuard:
    """Pure bookkeeping: the last offset processed per (topic, partition) in one generation."""

    def __init__(self, topics: Iterable[str]):
        self.topics = frozenset(topics)
        self.generation: Any = None
        self.last: dict[tuple[str, int], int] = {}

    def guards(self, topic: str) -> bool:
        return topic in self.topics

    def is_first(self, generation: Any, topic: str, partition: int) -> bool:
        """Whether the next record of this partition is its first in `generation`."""
        return generation != self.generation or (topic, partition) not in self.last

    def observe(self, generation: Any, topic: str, partition: int, offset: int, start: Optional[int] = None) -> Optional[Gap]:
        """Record that `offset` is being processed; a Gap if records before it were skipped.

        `start` is the partition's committed offset (the next to read) when this is its first
        record in `generation`; None when unknown (then the first record is taken as is).
        After a Gap nothing is recorded: the caller must not process the record.
        """
        if topic not in self.topics:
            return None
        if generation != self.generation:
            self.generation = generation
            self.last.clear()
        key = (topic, partition)
        last = self.last.get(key)
        if last is None:
            if start is not None and offset > start:
                return Gap(topic, partition, start, offset, True)
        elif offset > last + 1:
            return Gap(topic, partition, last + 1, offset, False)
        self.last[key] = offset
        return None

    def accept(self, topic: str, partition: int, offset: int) -> None:
        """Take `offset` as processed (e.g. the records before it were deleted by retention)."""
        self.last[(topic, partition)] = offset


def exit_worker(gap: Gap) -> None:
    log.critical("offset guard: %s; exiting so the worker restarts from the committed offset", gap.describe())
    logging.shutdown()
    os._exit(EXIT_OFFSET_GAP)


async def check(app: Any, msg: Any, topics: Iterable[str], on_gap: Callable[[Gap], Any] = exit_worker) -> bool:
    """Guard `msg` (a faust Message) of `app`'s agent; True when it may be processed.

    On a hole `on_gap(gap)` is called (by default: log and exit the process).
    """
    guard: Optional[OffsetGuard] = getattr(app, "_huxue_offset_guard", None)
    if guard is None:
        guard = OffsetGuard(topics)
        app._huxue_offset_guard = guard
    if not guard.guards(msg.topic):
        return True
    generation = app.consumer_generation_id
    start = None
    if guard.is_first(generation, msg.topic, msg.partition):
        start = app.consumer._committed_offset.get(msg.tp)
    gap = guard.observe(generation, msg.topic, msg.partition, msg.offset, start)
    if gap is not None and gap.first:
        # Records before it may have been deleted (retention) since the commit.
        earliest = await _earliest(app, msg.tp)
        if earliest is not None and msg.offset <= earliest:
            guard.accept(msg.topic, msg.partition, msg.offset)
            gap = None
    if gap is None:
        return True
    result = on_gap(gap)
    if inspect.isawaitable(result):
        await result
    return False


async def _earliest(app: Any, tp: Any) -> Optional[int]:
    try:
        return (await app.consumer.earliest_offsets(tp)).get(tp)
    except Exception as exc:  # noqa: BLE001 - unknown: treat the gap as real
        log.warning("offset guard: earliest offset of %s unknown: %r", tp, exc)
        return None
