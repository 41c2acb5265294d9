"""pipeline/ingest/ratelimit.py: per-device token buckets on a fake clock."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ingest.ratelimit import LOG_EVERY_SECONDS, TokenBuckets


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


def test_burst_then_rate():
    clock = Clock()
    b = TokenBuckets(rate=20, burst=200, clock=clock)
    assert sum(b.allow("cam") for _ in range(500)) == 200  # the burst, at once
    clock.advance(1.0)
    assert sum(b.allow("cam") for _ in range(500)) == 20  # then the rate
    clock.advance(0.06)  # 1.2 tokens
    assert b.allow("cam") and not b.allow("cam")
    assert b.refused_total == 300 + 480 + 1


def test_devices_have_their_own_buckets():
    clock = Clock()
    b = TokenBuckets(rate=1, burst=2, clock=clock)
    assert [b.allow("a") for _ in range(3)] == [True, True, False]
    assert [b.allow("b") for _ in range(3)] == [True, True, False]


def test_tokens_never_exceed_the_burst():
    clock = Clock()
    b = TokenBuckets(rate=10, burst=5, clock=clock)
    b.allow("a")
    clock.advance(3600)
    assert sum(b.allow("a") for _ in range(100)) == 5


def test_rate_zero_is_off():
    b = TokenBuckets(rate=0, burst=1, clock=Clock())
    assert not b.enabled
    assert all(b.allow("a") for _ in range(10_000))
    assert len(b) == 0


def test_report_is_due_at_the_first_refusal_then_once_a_minute():
    clock = Clock()
    b = TokenBuckets(rate=1, burst=1, clock=clock)
    assert b.allow("cam") and b.report("cam") == 0  # nothing refused yet
    assert not b.allow("cam")
    assert b.report("cam") == 1
    reports = []
    for _ in range(200):  # 100 s of refusals, 2 a second
        clock.advance(0.5)
        b.allow("cam")
        b.allow("cam")
        reports.append((clock.t, b.report("cam")))
    due = [(t, n) for t, n in reports if n]
    assert len(due) == 1 and due[0][0] - 1000.0 >= LOG_EVERY_SECONDS  # one more line, a minute after the first
    assert due[0][1] > 50  # it counts everything refused since the last line


def test_idle_buckets_are_evicted():
    clock = Clock()
    b = TokenBuckets(rate=20, burst=200, clock=clock)
    for i in range(1000):
        b.allow(f"dev-{i}")
    assert len(b) == 1000
    clock.advance(LOG_EVERY_SECONDS + 1)  # all full again, and past the log interval
    b.allow("other")
    assert len(b) == 1


def test_memory_is_capped():
    clock = Clock()
    b = TokenBuckets(rate=20, burst=200, clock=clock, max_devices=100)
    for i in range(10_000):
        b.allow(f"dev-{i}")
    assert len(b) == 100


@settings(max_examples=100)
@given(rate=st.floats(0.1, 100), burst=st.integers(1, 500), gaps=st.lists(st.floats(0, 2), min_size=1, max_size=300))
def test_never_more_than_burst_plus_rate_times_elapsed(rate, burst, gaps):
    clock = Clock()
    b = TokenBuckets(rate=rate, burst=burst, clock=clock)
    start, allowed = clock.t, 0
    for gap in gaps:
        clock.advance(gap)
        allowed += b.allow("d")
    assert allowed <= burst + rate * (clock.t - start) + 1e-6
