"""Patches to faust-streaming 0.15.3 so a worker restart can never skip an input record
(and so fetched alarms go before telemetry).

The bug (a command "applied nowhere and rejected nowhere" after a restart), in Faust's code:

1. Resume before seek. When table recovery ends, `Recovery.on_recovery_completed`
   (faust/tables/recovery.py; `Recovery._resume_streams` for apps without tables) does
   `consumer.resume_partitions(<input partitions>)`, then `await consumer.perform_seek()`,
   then `app.flow_control.resume()`. The fetcher is already running (it was started for
   the changelogs), so while the seek is awaited it fetches the resumed input partitions
   and `Conductor.on_message` puts the records into the agents' stream queues.
2. Resuming flow clears the stream queues. `mode.utils.queues.FlowControlEvent.resume()`
   calls `clear()` on every queue created with `clear_on_resume=True` - every channel
   queue (faust/channels.py `Channel.queue`). Records fetched *before* the seek come back
   (the seek rewinds), but records fetched *after* the seek of their partition are gone:
   never processed, never acked, and the fetch position is already past them.
3. The commit then skips them. `Consumer.perform_seek` resets `_read_offset[tp]` to the
   committed offset C (the *next* offset to read), while `Consumer._drain_messages` treats
   it as the *last* offset read, so the next record C+k+1 registers a "gap" C+1..C+k+1
   (`Consumer._add_gap`) that `Consumer._new_offset` fills in as if acked. Only C is left
   missing, and the head check `if committed_offset: if min(acked) - committed_offset > 1:
   return None` lets exactly one missing head record through (committed offsets are the
   next offset to read: `min(acked) > committed` already means a missing head). With C == 0
   (`perform_seek` maps a committed 0 to None) or no commit at all, the check never runs.

4. An empty partition set means "all". `Consumer._wait_next_records` hands the live
   `_active_partitions` set to the consumer thread, and aiokafka's
   `Fetcher.fetched_records(partitions)` keeps testing `if partitions and tp not in
   partitions` while it waits. When every partition is paused meanwhile (end of recovery:
   `pause_partitions(<changelogs>)` before the input partitions are resumed), the empty set
   lets the records of all partitions through: aiokafka advances their positions and
   `Consumer.getmany` silently drops them (`tp in active_partitions` fails). Upstream the
   seek after it hides this; once the seek comes first (below) it does not, so it is fixed too.

What `apply()` patches (each original is identified by a hash of its source and apply()
raises at start-up if the code moved, rather than silently not patching):

- `Recovery.on_recovery_completed`, `Recovery._resume_streams`: seek first, while the input
  partitions are still paused, and resume them in the same synchronous step as
  `flow_control.resume()` / `consumer.resume_flow()`; nothing fetched from them can be
  queued before the clear (fixes 1+2, the root cause). Otherwise the upstream code.
- `AIOKafkaConsumerThread._fetch_records`: gives aiokafka a never-false live view of the
  active partitions (`ActivePartitions`), so paused partitions are never drained (fixes 4);
  and, once `prioritise(topics)` was called, hands out records already fetched for those
  topics before any other's (see `prioritise`: alarms never queue behind telemetry).
- `Consumer._new_offset`: `if committed is not None and min(acked) > committed: return None`
  - a commit never moves past a record that was not acked (fixes 3; upstream otherwise).
- `Consumer.perform_seek`: keeps a committed offset of 0 as 0 (not None); and after the
  seek at the end of recovery the fetch position of input partitions that have no committed
  offset yet is recorded as their start, so the head check above also covers new consumer
  groups. Otherwise the upstream code.

The agent keeps a last line of defence (pipeline/worker/offsets.py OffsetGuard): a hole in
the offsets it sees makes the worker exit rather than move on.

Target: faust-streaming 0.15.3 (== upstream 181b1840) with mode-streaming 0.7.x, aiokafka 0.14.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
from typing import Any, Callable, List, Optional

log = logging.getLogger("huxue.worker.faust_fixes")

FAUST_VERSION = "0.15.3"

# sha256 (first 16 hex digits) of inspect.getsource() of each function we replace.
ORIGINALS = {
    "Consumer._new_offset": "1d2c7ea89a7ad4f1",
    "Consumer.perform_seek": "0e8c130ff4b0afd8",
    "Recovery.on_recovery_completed": "6ef567acf072e46d",
    "Recovery._resume_streams": "d986a6710c1aca98",
    "AIOKafkaConsumerThread._fetch_records": "39a2c6c79fc1455a",
}

MARK = "__huxue_faust_fix__"

#: The replaced upstream functions, by name (filled by apply(); for tests and debugging).
REPLACED: dict[str, Callable[..., Any]] = {}


class FaustFixError(RuntimeError):
    """The installed Faust is not the code these patches were written for."""


def source_digest(fn: Callable[..., Any]) -> str:
    return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:16]


# -- the patched functions -------------------------------------------------------------


def _new_offset(self: Any, tp: Any) -> Optional[int]:
    """`faust.transport.consumer.Consumer._new_offset` with a correct head-gap check."""
    from intervaltree import IntervalTree

    from faust.utils.functional import consecutive_numbers

    acked = self._acked[tp]
    if acked:
        max_offset = max(acked)
        gap_for_tp: IntervalTree = self._gap[tp]
        if gap_for_tp:
            candidates = gap_for_tp.overlap(0, max_offset)
            sorted_candidates = sorted(candidates, key=lambda x: x.begin)
            if sorted_candidates:
                stuff_to_add: List[int] = []
                for entry in sorted_candidates:
                    stuff_to_add.extend(range(entry.begin, entry.end))
                new_max_offset = max(stuff_to_add[-1], max_offset + 1)
                acked.extend(stuff_to_add)
                gap_for_tp.chop(0, new_max_offset)
        acked.sort()
        # FIX: the committed offset is the next offset to read, so any acked head above it
        # means the record at the committed offset was never acked: do not commit past it.
        # (Upstream: `if committed_offset: if min(acked) - committed_offset > 1`, which lets
        # one missing record through and skips the check when the committed offset is 0.)
        committed_offset = self._committed_offset[tp]
        if committed_offset is not None and acked[0] > committed_offset:
            return None
        batch = next(consecutive_numbers(acked))
        acked[: len(batch)] = []
        self._acked_index[tp].difference_update(batch)
        return batch[-1] + 1
    return None


async def perform_seek(self: Any) -> None:
    """`Consumer.perform_seek`, keeping a committed offset of 0 as 0."""
    read_offset = self._read_offset
    _committed_offsets = await self.seek_to_committed()
    read_offset.update({tp: offset if offset is not None and offset >= 0 else None for tp, offset in _committed_offsets.items()})
    # FIX: upstream stores `offset if offset else None`: a committed 0 became "unknown".
    committed_offsets = {_ensure_tp(tp): offset for tp, offset in _committed_offsets.items() if offset is not None and offset >= 0}
    self._committed_offset.update(committed_offsets)


async def record_start_positions(consumer: Any, tps: Any) -> None:
    """Where each input partition really starts, as its committed offset for `_new_offset`.

    Only called right after the seek, with the partitions still paused. A partition without
    a committed offset starts at its reset position (auto_offset_reset): record that, so a
    missing head is seen there too. With auto_offset_reset="earliest", a committed offset
    below the log start (retention deleted those records) is the log start: raise it, or
    the head check would hold that partition's commits forever.
    """
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    mine = [tp for tp in tps if acks_enabled_for(tp.topic) and not consumer._acked.get(tp)]
    for tp in mine:
        if consumer._committed_offset.get(tp) is None:
            try:
                position = await consumer.position(tp)
            except Exception as exc:  # noqa: BLE001 - best effort: without it the check is skipped, as upstream
                log.warning("no start position for %s: %r", tp, exc)
                continue
            if position is not None and position >= 0 and consumer._committed_offset.get(tp) is None:
                consumer._committed_offset[tp] = position
    if mine and consumer.app.conf.consumer_auto_offset_reset == "earliest":
        try:
            earliest = await consumer.earliest_offsets(*mine)
        except Exception as exc:  # noqa: BLE001 - best effort
            log.warning("no log start offsets: %r", exc)
            return
        for tp in mine:
            committed, start = consumer._committed_offset.get(tp), earliest.get(tp)
            if committed is not None and start is not None and committed < start:
                consumer._committed_offset[tp] = start


def _ensure_tp(tp: Any) -> Any:
    from faust.transport.consumer import ensure_TP

    return ensure_TP(tp)


async def on_recovery_completed(self: Any, generation_id: int = 0) -> None:
    """`Recovery.on_recovery_completed`, seeking the stream partitions before resuming them."""
    consumer = self.app.consumer
    self.log.info("Restore complete!")
    await self.app.on_rebalance_complete.send()
    self._set_recovery_ended()
    callback_coros = [
        asyncio.ensure_future(table.on_recovery_completed(self.actives_for_table[table], self.standbys_for_table[table])) for table in self.tables.values()
    ]
    if callback_coros:
        await asyncio.wait(callback_coros)
    assignment = consumer.assignment()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning(f"Recovery rebalancing again app id {self.app.consumer_generation_id} param {generation_id}")
        return
    # FIX: seek while the stream partitions are still paused (upstream resumed them first,
    # and the running fetcher queued records that the flow resume below then cleared).
    if assignment:
        await _seek_streams(self, consumer, assignment)
    if self.app.consumer_generation_id != generation_id:
        self.log.warning(f"Recovery rebalancing again app id {self.app.consumer_generation_id} param {generation_id}")
        return
    # FIX: resume the stream partitions and the flow in one synchronous step, so nothing
    # from them is queued before `flow_control.resume()` clears the stream queues.
    consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
    self.completed.set()
    self.log.dev("Resume stream partitions")
    self.app.flow_control.resume()
    consumer.resume_flow()
    await self.app._fetcher.maybe_start()
    self.tables.on_actives_ready()
    if not self.app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    self.app.on_rebalance_end()
    self.log.info("Worker ready")


async def _seek_streams(self: Any, consumer: Any, assignment: Any) -> None:
    """Seek the (still paused) stream partitions to their committed offsets and record
    where partitions without a commit start."""
    self.log.info("Seek stream partitions to committed offsets.")
    await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
    streams = {tp for tp in assignment if not self._is_changelog_tp(tp)}
    await self._wait(record_start_positions(consumer, streams), timeout=self.app.conf.broker_request_timeout)


async def _resume_streams(self: Any, generation_id: int = 0) -> None:
    """`Recovery._resume_streams` (apps without tables), seeking before resuming."""
    app = self.app
    consumer = app.consumer
    await app.on_rebalance_complete.send()
    assignment = consumer.assignment()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning("Recovery rebalancing again")
        return
    if assignment:
        await _seek_streams(self, consumer, assignment)
        if self.app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again")
            return
        self.log.dev("Resume stream partitions")
        consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
    else:
        self.log.info("Resuming streams with empty assignment")
    self.completed.set()
    self.log.info("Resuming flow...")
    app.flow_control.resume()
    consumer.resume_flow()
    await app._fetcher.maybe_start()
    self.tables.on_actives_ready()
    self.tables.on_standbys_ready()
    app.on_rebalance_end()
    self.log.info("Worker ready")


class ActivePartitions:
    """A live view of the consumer's active partitions that is never false.

    `Consumer._wait_next_records` hands the live `_active_partitions` set to the consumer
    thread, where aiokafka's `Fetcher.fetched_records(partitions)` tests
    `if partitions and tp not in partitions` on every pass of its wait loop. When the set
    becomes empty meanwhile (all partitions paused: `pause_partitions(assigned)` at a
    rebalance, `pause_partitions(<changelogs>)` at the end of recovery) that test lets the
    records of *every* partition through; aiokafka moves their positions on, and
    `Consumer.getmany` then drops them (`tp in active_partitions` fails). Through this view
    an empty set means "none".
    """

    __slots__ = ("tps",)

    def __init__(self, tps: Any):
        self.tps = tps

    def __bool__(self) -> bool:
        return True

    def __contains__(self, tp: Any) -> bool:
        return tp in self.tps

    def __iter__(self) -> Any:
        return iter(list(self.tps))

    def __len__(self) -> int:
        return len(self.tps)


#: Topics whose fetched records are handed out before any other's (set by prioritise()).
PRIORITY_TOPICS: frozenset[str] = frozenset()


def prioritise(topics: Any) -> None:
    """Hand out fetched records of `topics` before those of other topics.

    aiokafka's `Fetcher.fetched_records` drains its buffered fetch results in the order they
    arrived, up to `max_records`; Faust's fetch loop then puts each record into its
    agent's queue, waiting while a queue is full. Under load the buffered results of the
    busy topic (a full fetch per partition, thousands of records) come first, and a record
    of a quiet topic waits until its agent's slow neighbour has worked through all of them:
    panic presses waited 5-15 s behind camera events at 2,000 msg/s. With priority topics,
    each fetch first takes what is buffered for them (without waiting), and only when there
    is none the rest."""
    global PRIORITY_TOPICS
    PRIORITY_TOPICS = frozenset(topics)


class PriorityPartitions(ActivePartitions):
    """The active partitions of the priority topics only (a live view, never false)."""

    __slots__ = ("topics",)

    def __init__(self, tps: Any, topics: frozenset[str]):
        super().__init__(tps)
        self.topics = topics

    def __contains__(self, tp: Any) -> bool:
        return tp.topic in self.topics and tp in self.tps

    def __iter__(self) -> Any:
        return iter([tp for tp in list(self.tps) if tp.topic in self.topics])

    def __len__(self) -> int:
        return sum(1 for tp in list(self.tps) if tp.topic in self.topics)


async def _fetch_records(self: Any, consumer: Any, active_partitions: Any, timeout: Optional[float] = None, max_records: Optional[int] = None) -> Any:
    """`AIOKafkaConsumerThread._fetch_records`, passing aiokafka a never-false view of the partitions."""
    from aiokafka.errors import ConsumerStoppedError

    if not self.consumer.flow_active:
        return {}
    fetcher = consumer._fetcher
    if consumer._closed or fetcher._closed:
        raise ConsumerStoppedError()
    with fetcher._subscriptions.fetch_context():
        # FIX: upstream passes `active_partitions` itself (see ActivePartitions).
        partitions = ActivePartitions(active_partitions) if active_partitions is not None else None
        if PRIORITY_TOPICS and partitions is not None:
            # Records already fetched for the priority topics go first (PriorityPartitions).
            first = await fetcher.fetched_records(PriorityPartitions(active_partitions, PRIORITY_TOPICS), timeout=0, max_records=max_records)
            if first:
                return first
        return await fetcher.fetched_records(partitions, timeout=timeout, max_records=max_records)


# -- applying them -----------------------------------------------------------------------


def _targets() -> list[tuple[str, type, str, Callable[..., Any]]]:
    from faust.tables.recovery import Recovery
    from faust.transport.consumer import Consumer
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    return [
        ("Consumer._new_offset", Consumer, "_new_offset", _new_offset),
        ("Consumer.perform_seek", Consumer, "perform_seek", perform_seek),
        ("Recovery.on_recovery_completed", Recovery, "on_recovery_completed", on_recovery_completed),
        ("Recovery._resume_streams", Recovery, "_resume_streams", _resume_streams),
        ("AIOKafkaConsumerThread._fetch_records", AIOKafkaConsumerThread, "_fetch_records", _fetch_records),
    ]


def check() -> list[str]:
    """What is wrong with the installed Faust for these patches (empty: all good or applied)."""
    import faust

    problems = []
    if faust.__version__ != FAUST_VERSION:
        problems.append(f"faust-streaming {faust.__version__} installed, patches written for {FAUST_VERSION}")
    for name, cls, attr, _ in _targets():
        current = cls.__dict__.get(attr)
        if current is None:
            problems.append(f"{name} not found")
        elif getattr(current, MARK, False):
            continue
        elif source_digest(current) != ORIGINALS[name]:
            problems.append(f"{name} changed (source sha256 {source_digest(current)}, expected {ORIGINALS[name]})")
    return problems


def applied() -> bool:
    return all(getattr(cls.__dict__.get(attr), MARK, False) for _, cls, attr, _ in _targets())


def apply() -> None:
    """Patch Faust (idempotent). Raises FaustFixError if the patched code is not the expected one."""
    problems = check()
    if problems:
        raise FaustFixError("refusing to start: the Faust offset fixes (pipeline/worker/faust_fixes.py) do not match the installed Faust: " + "; ".join(problems))
    for name, cls, attr, fn in _targets():
        if not getattr(cls.__dict__[attr], MARK, False):
            REPLACED[name] = cls.__dict__[attr]
            setattr(fn, MARK, True)
            setattr(cls, attr, fn)
    log.debug("faust offset fixes applied: %s", ", ".join(REPLACED))
