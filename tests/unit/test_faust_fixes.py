"""The Faust offset patches (pipeline/worker/faust_fixes.py) and the OffsetGuard (offsets.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from types import SimpleNamespace

import faust
import pytest
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP
from intervaltree import IntervalTree

from pipeline.worker import faust_fixes, offsets
from pipeline.worker.offsets import Gap, OffsetGuard

CMD = TP("huxue.commands", 0)


@pytest.fixture(scope="module", autouse=True)
def patched():
    faust_fixes.apply()
    yield


# -- apply() ---------------------------------------------------------------------------


def test_apply_patches_every_target_and_is_idempotent():
    faust_fixes.apply()
    faust_fixes.apply()
    assert faust_fixes.applied()
    assert Consumer._new_offset is faust_fixes._new_offset
    assert Consumer.perform_seek is faust_fixes.perform_seek
    assert Recovery.on_recovery_completed is faust_fixes.on_recovery_completed
    assert Recovery._resume_streams is faust_fixes._resume_streams
    assert AIOKafkaConsumerThread._fetch_records is faust_fixes._fetch_records
    assert faust_fixes.check() == []


def test_the_replaced_functions_are_the_upstream_code_the_patches_were_written_for():
    assert faust.__version__ == faust_fixes.FAUST_VERSION
    assert set(faust_fixes.REPLACED) == set(faust_fixes.ORIGINALS)
    for name, fn in faust_fixes.REPLACED.items():
        assert faust_fixes.source_digest(fn) == faust_fixes.ORIGINALS[name], name


def test_apply_refuses_when_the_patched_code_moved(monkeypatch):
    def _new_offset(self, tp):  # an upstream change we have not reviewed
        return None

    monkeypatch.setattr(Consumer, "_new_offset", _new_offset)
    assert any("Consumer._new_offset changed" in p for p in faust_fixes.check())
    with pytest.raises(faust_fixes.FaustFixError, match="Consumer._new_offset changed"):
        faust_fixes.apply()


def test_apply_refuses_another_faust_version(monkeypatch):
    monkeypatch.setattr(faust, "__version__", "0.16.0")
    with pytest.raises(faust_fixes.FaustFixError, match="0.16.0"):
        faust_fixes.apply()


# -- Consumer._new_offset --------------------------------------------------------------


def consumer_stub(committed, acked, gap=()):
    c = SimpleNamespace(
        _acked=defaultdict(list), _acked_index=defaultdict(set), _gap=defaultdict(IntervalTree), _committed_offset=defaultdict(lambda: None)
    )
    c._committed_offset[CMD] = committed
    c._acked[CMD] = list(acked)
    c._acked_index[CMD] = set(acked)
    for begin, end in gap:
        c._gap[CMD].addi(begin, end)
    return c


def both(committed, acked, gap=()):
    """(upstream result, patched result) on identical consumer state."""
    upstream = faust_fixes.REPLACED["Consumer._new_offset"]
    return upstream(consumer_stub(committed, acked, gap), CMD), faust_fixes._new_offset(consumer_stub(committed, acked, gap), CMD)


@pytest.mark.parametrize(
    "committed, acked, gap, upstream, patched",
    [
        (10, [11, 12], (), 13, None),  # one record missing at the head: upstream commits past it
        (0, [1, 2], (), 3, None),  # committed 0: upstream skips the check entirely
        (10, [12, 13], (), None, None),  # two missing: both hold
        # the start-up drop: the fetcher re-reads offset 10 (read offset reset to 10 by the
        # seek), records 10..13 were cleared, 14 arrives, _add_gap(11, 14) fills 11..14
        (10, [14], ((11, 15),), 15, None),
        (10, [10, 11, 13], (), 12, 12),  # a normal hole in the middle: both stop before it
        (10, [10, 13], ((11, 13),), 14, 14),  # a real gap (e.g. compaction) after an acked head
        (None, [5, 6], (), 7, 7),  # nothing committed yet: no head to check
        (10, [], (), None, None),
    ],
)
def test_new_offset_never_commits_past_an_unacked_head(committed, acked, gap, upstream, patched):
    assert both(committed, acked, gap) == (upstream, patched)


def test_new_offset_consumes_the_committed_batch():
    c = consumer_stub(10, [10, 11, 12, 14])
    assert faust_fixes._new_offset(c, CMD) == 13
    assert c._acked[CMD] == [14] and c._acked_index[CMD] == {14}


# -- Consumer.perform_seek / start positions ---------------------------------------------


def test_perform_seek_keeps_a_committed_zero():
    a, b, c = TP("huxue.commands", 0), TP("huxue.commands", 1), TP("huxue.commands", 2)

    async def seek_to_committed():
        return {a: 0, b: None, c: 7}

    stub = SimpleNamespace(_read_offset=defaultdict(lambda: None), _committed_offset=defaultdict(lambda: None), seek_to_committed=seek_to_committed)
    asyncio.run(faust_fixes.perform_seek(stub))
    assert dict(stub._committed_offset) == {a: 0, c: 7}  # upstream: {a: None, c: 7}
    assert dict(stub._read_offset) == {a: 0, b: None, c: 7}


def start_stub(committed: dict, position=42, earliest=None, reset="earliest"):
    asked = []

    async def position_of(tp):
        asked.append(tp)
        return position

    async def earliest_offsets(*tps):
        return {tp: (earliest or {}).get(tp, 0) for tp in tps}

    stub = SimpleNamespace(
        app=SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: "changelog" not in topic), conf=SimpleNamespace(consumer_auto_offset_reset=reset)),
        _committed_offset=defaultdict(lambda: None, committed),
        _acked=defaultdict(list),
        position=position_of,
        earliest_offsets=earliest_offsets,
    )
    return stub, asked


def test_start_positions_only_for_uncommitted_acked_topics():
    new, old, changelog_like = TP("huxue.commands", 0), TP("huxue.commands", 1), TP("app-schools-changelog", 0)
    stub, asked = start_stub({old: 5})
    asyncio.run(faust_fixes.record_start_positions(stub, [new, old, changelog_like]))
    assert asked == [new]
    assert stub._committed_offset[new] == 42 and stub._committed_offset[old] == 5
    assert stub._committed_offset.get(changelog_like) is None


def test_a_commit_below_the_log_start_is_the_log_start():
    expired, fine = TP("huxue.ticks", 0), TP("huxue.ticks", 1)
    stub, _ = start_stub({expired: 5, fine: 50}, earliest={expired: 40, fine: 40})
    asyncio.run(faust_fixes.record_start_positions(stub, [expired, fine]))
    assert stub._committed_offset[expired] == 40 and stub._committed_offset[fine] == 50
    stub, _ = start_stub({expired: 5}, earliest={expired: 40}, reset="latest")  # where it resets to is not known here
    asyncio.run(faust_fixes.record_start_positions(stub, [expired]))
    assert stub._committed_offset[expired] == 5


# -- Recovery: seek before resume, resume with the flow ----------------------------------


class FakeRecovery:
    """Just what on_recovery_completed / _resume_streams touch; records the order of calls."""

    def __init__(self):
        self.calls: list[str] = []
        calls = self.calls
        stream_tp, changelog_tp = TP("huxue.commands", 0), TP("app-schools-changelog", 0)

        class FakeConsumer:
            _committed_offset = defaultdict(lambda: None, {stream_tp: 3})
            _acked = defaultdict(list)
            app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True), conf=SimpleNamespace(consumer_auto_offset_reset="earliest"))

            async def earliest_offsets(self, *tps):
                return {tp: 0 for tp in tps}

            def assignment(self):
                return {stream_tp, changelog_tp}

            async def perform_seek(self):
                calls.append("seek:start")
                await asyncio.sleep(0.01)  # the fetcher runs meanwhile
                calls.append("seek:end")

            def resume_partitions(self, tps):
                calls.append(f"resume_partitions:{sorted(tp.topic for tp in tps)}")

            def resume_flow(self):
                calls.append("consumer.resume_flow")

        async def send():
            calls.append("on_rebalance_complete")

        async def maybe_start():
            calls.append("fetcher.maybe_start")

        self.consumer = FakeConsumer()
        self.app = SimpleNamespace(
            consumer=self.consumer,
            consumer_generation_id=1,
            on_rebalance_complete=SimpleNamespace(send=send),
            conf=SimpleNamespace(broker_request_timeout=5),
            flow_control=SimpleNamespace(resume=lambda: calls.append("flow_control.resume")),
            _fetcher=SimpleNamespace(maybe_start=maybe_start),
            assignor=SimpleNamespace(assigned_standbys=lambda: set()),
            on_rebalance_end=lambda: calls.append("on_rebalance_end"),
        )
        self.tables = SimpleNamespace(values=lambda: [], on_actives_ready=lambda: None, on_standbys_ready=lambda: None)
        self.completed = asyncio.Event()
        self.log = SimpleNamespace(info=lambda *a: None, dev=lambda *a: None, warning=lambda *a: None)

    def _set_recovery_ended(self):
        pass

    def _is_changelog_tp(self, tp):
        return tp.topic.endswith("-changelog")

    async def _wait(self, coro, timeout=None):
        await coro


@pytest.mark.parametrize("method", [faust_fixes.on_recovery_completed, faust_fixes._resume_streams])
def test_recovery_seeks_before_resuming_and_resumes_with_the_flow(method):
    async def scenario():
        rec = FakeRecovery()
        stop = asyncio.Event()

        async def fetcher():  # any other task that gets the loop: the drain loop would fetch now
            while not stop.is_set():
                rec.calls.append("fetcher ran")
                await asyncio.sleep(0.001)

        task = asyncio.create_task(fetcher())
        await asyncio.sleep(0.002)
        await method(rec, 1)
        stop.set()
        await task
        return rec.calls

    calls = asyncio.run(scenario())
    assert "fetcher ran" in calls[calls.index("seek:start") : calls.index("seek:end")]  # the seek did yield
    resume = calls.index("resume_partitions:['huxue.commands']")
    assert calls.index("seek:end") < resume
    # nothing else ran between resuming the partitions and resuming (clearing) the flow
    assert calls[resume : resume + 3] == ["resume_partitions:['huxue.commands']", "flow_control.resume", "consumer.resume_flow"]


def test_recovery_does_not_resume_when_a_rebalance_started_during_the_seek():
    async def scenario():
        rec = FakeRecovery()

        async def seek_then_rebalance():
            rec.calls.append("seek")
            rec.app.consumer_generation_id = 2

        rec.consumer.perform_seek = seek_then_rebalance
        await faust_fixes.on_recovery_completed(rec, 1)
        return rec.calls

    calls = asyncio.run(scenario())
    assert "seek" in calls and not [c for c in calls if c.startswith("resume_partitions")] and "flow_control.resume" not in calls


# -- OffsetGuard -----------------------------------------------------------------------


def test_guard_accepts_dense_offsets_and_redeliveries():
    g = OffsetGuard(["commands"])
    assert g.observe(1, "commands", 0, 5, start=5) is None
    assert g.observe(1, "commands", 0, 6) is None
    assert g.observe(1, "commands", 0, 4) is None  # re-delivered after a seek back
    assert g.observe(1, "commands", 0, 5) is None
    assert g.observe(1, "ticks", 0, 99) is None  # not guarded


def test_guard_reports_a_hole_and_does_not_record_past_it():
    g = OffsetGuard(["commands"])
    assert g.observe(1, "commands", 0, 5, start=5) is None
    assert g.observe(1, "commands", 0, 8) == Gap("commands", 0, 6, 8, False)
    assert g.observe(1, "commands", 0, 6) is None  # still expecting 6


def test_guard_reports_a_missing_head():
    g = OffsetGuard(["commands"])
    assert g.observe(1, "commands", 1, 12, start=10) == Gap("commands", 1, 10, 12, True)
    assert g.observe(1, "commands", 2, 12, start=None) is None  # start unknown: taken as is


def test_guard_starts_over_with_each_generation():
    g = OffsetGuard(["commands"])
    g.observe(1, "commands", 0, 5, start=5)
    assert g.is_first(2, "commands", 0)
    assert g.observe(2, "commands", 0, 3, start=3) is None  # the new assignment re-reads from the commit


def fake_app(committed, earliest=None):
    async def earliest_offsets(*tps):
        return {tp: earliest for tp in tps}

    consumer = SimpleNamespace(_committed_offset=defaultdict(lambda: None, committed), earliest_offsets=earliest_offsets)
    return SimpleNamespace(consumer=consumer, consumer_generation_id=1)


def msg(tp, offset):
    return SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=offset, tp=tp)


def test_check_calls_on_gap_and_blocks_the_record():
    app, gaps = fake_app({CMD: 10}), []
    assert asyncio.run(offsets.check(app, msg(CMD, 10), [CMD.topic], on_gap=gaps.append))
    assert asyncio.run(offsets.check(app, msg(CMD, 11), [CMD.topic], on_gap=gaps.append))
    assert not asyncio.run(offsets.check(app, msg(CMD, 13), [CMD.topic], on_gap=gaps.append))
    assert gaps == [Gap(CMD.topic, 0, 12, 13, False)]


def test_check_missing_head_unless_retention_deleted_it():
    gaps = []
    assert not asyncio.run(offsets.check(fake_app({CMD: 10}, earliest=0), msg(CMD, 12), [CMD.topic], on_gap=gaps.append))
    assert gaps == [Gap(CMD.topic, 0, 10, 12, True)]
    assert asyncio.run(offsets.check(fake_app({CMD: 10}, earliest=12), msg(CMD, 12), [CMD.topic], on_gap=gaps.append))
    assert len(gaps) == 1


def test_exit_worker_exits_with_its_own_code(monkeypatch):
    codes = []
    monkeypatch.setattr(offsets.os, "_exit", codes.append)
    monkeypatch.setattr(offsets.logging, "shutdown", lambda: None)
    offsets.exit_worker(Gap(CMD.topic, 0, 10, 12, True))
    assert codes == [offsets.EXIT_OFFSET_GAP]


# -- AIOKafkaConsumerThread._fetch_records ---------------------------------------------


def fetch_with(fetch_records, live: set) -> dict:
    """Run `fetch_records` against a fake aiokafka fetcher whose partitions get paused
    while it waits (as `pause_partitions` does from the main thread)."""
    buffered = {TP("huxue.commands", 0): ["r135", "r136"], TP("app-schools-changelog", 0): ["c1"]}

    class FakeFetcher:
        _closed = False
        _subscriptions = SimpleNamespace(fetch_context=contextlib.nullcontext)

        async def fetched_records(self, partitions, timeout=0, max_records=None):
            live.clear()  # every partition paused while aiokafka waits
            # aiokafka 0.14 Fetcher.fetched_records: `if partitions and tp not in partitions: continue`
            return {tp: rs for tp, rs in buffered.items() if not (partitions and tp not in partitions)}

    thread = SimpleNamespace(consumer=SimpleNamespace(flow_active=True))
    consumer = SimpleNamespace(_fetcher=FakeFetcher(), _closed=False)
    return asyncio.run(fetch_records(thread, consumer, live, timeout=1, max_records=10))


def test_fetch_records_never_drains_paused_partitions():
    upstream = faust_fixes.REPLACED["AIOKafkaConsumerThread._fetch_records"]
    assert fetch_with(upstream, {TP("app-schools-changelog", 0)}) != {}  # upstream: everything, positions moved on
    assert fetch_with(faust_fixes._fetch_records, {TP("app-schools-changelog", 0)}) == {}


def test_active_partitions_view_is_live_and_never_false():
    tps = {CMD}
    view = faust_fixes.ActivePartitions(tps)
    assert view and CMD in view and list(view) == [CMD] and len(view) == 1
    tps.clear()
    assert view and CMD not in view and len(view) == 0


def test_fetched_records_of_priority_topics_go_first():
    """aiokafka hands out buffered fetch results in arrival order: a camera partition's
    thousands of records would come before a press fetched after them."""
    events, urgent = TP("huxue.events", 0), TP("huxue.urgent", 0)
    live = {events, urgent}
    calls = []

    class FakeFetcher:
        _closed = False
        _subscriptions = SimpleNamespace(fetch_context=contextlib.nullcontext)

        async def fetched_records(self, partitions, timeout=0, max_records=None):
            calls.append(timeout)
            buffered = {events: ["camera"] * 3, urgent: ["press"]}  # events arrived first
            return {tp: rs for tp, rs in buffered.items() if tp in partitions}

    thread = SimpleNamespace(consumer=SimpleNamespace(flow_active=True))
    consumer = SimpleNamespace(_fetcher=FakeFetcher(), _closed=False)
    before = faust_fixes.PRIORITY_TOPICS
    try:
        faust_fixes.prioritise({"huxue.urgent"})
        assert asyncio.run(faust_fixes._fetch_records(thread, consumer, live, timeout=1, max_records=10)) == {urgent: ["press"]}
        assert calls == [0], "the priority topics are asked without waiting"
        live.discard(urgent)  # nothing buffered or assigned for them: the rest, as before
        assert asyncio.run(faust_fixes._fetch_records(thread, consumer, live, timeout=1, max_records=10)) == {events: ["camera"] * 3}
    finally:
        faust_fixes.PRIORITY_TOPICS = before


def test_priority_partitions_view_is_live_and_never_false():
    a, b = TP("huxue.urgent", 1), TP("huxue.events", 1)
    tps = {a, b}
    view = faust_fixes.PriorityPartitions(tps, frozenset({"huxue.urgent"}))
    assert view and a in view and b not in view and list(view) == [a] and len(view) == 1
    tps.clear()
    assert view and a not in view and len(view) == 0
