"""pipeline/ingest/acker.py: PUBACKs in arrival order, confirmations in any order."""

from __future__ import annotations

import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ingest.acker import InOrderAcker


class Recorder:
    def __init__(self):
        self.acks: list[tuple[int, int]] = []

    def __call__(self, mid: int, qos: int) -> None:
        self.acks.append((mid, qos))


def make():
    rec = Recorder()
    return InOrderAcker(rec), rec


def test_in_order_confirmations_ack_at_once():
    acker, rec = make()
    a, b = acker.register(1, 1), acker.register(2, 1)
    acker.done(a)
    assert rec.acks == [(1, 1)]
    acker.done(b)
    assert rec.acks == [(1, 1), (2, 1)]
    assert acker.acked == 2 and acker.depth() == 0


def test_out_of_order_confirmations_wait_for_the_head():
    acker, rec = make()
    s1, s2, s3 = acker.register(10, 1), acker.register(11, 2), acker.register(12, 1)
    acker.done(s3)
    acker.done(s2)
    assert rec.acks == []
    assert acker.depth() == 3
    acker.done(s1)
    assert rec.acks == [(10, 1), (11, 2), (12, 1)]
    assert acker.depth() == 0


def test_partial_release():
    acker, rec = make()
    s = [acker.register(m, 1) for m in range(1, 6)]
    acker.done(s[1])
    acker.done(s[0])
    assert [m for m, _ in rec.acks] == [1, 2]
    acker.done(s[3])
    assert [m for m, _ in rec.acks] == [1, 2]
    acker.done(s[2])
    assert [m for m, _ in rec.acks] == [1, 2, 3, 4]
    assert acker.depth() == 1


def test_qos0_is_never_acked_but_does_not_block():
    acker, rec = make()
    s0, s1 = acker.register(0, 0), acker.register(7, 1)
    acker.done(s1)
    assert rec.acks == []  # still behind the unconfirmed qos 0 slot
    acker.done(s0)
    assert rec.acks == [(7, 1)]
    assert acker.acked == 1 and acker.depth() == 0


def test_old_epoch_slots_are_never_acked_after_reconnect():
    acker, rec = make()
    old1, old2 = acker.register(1, 1), acker.register(2, 1)
    acker.done(old1)
    assert rec.acks == [(1, 1)]
    acker.new_connection()
    assert acker.depth() == 0 and acker.epoch == 1
    # Packet ids are reused on the new connection.
    new2 = acker.register(2, 1)
    acker.done(old2)  # late confirmation from the old connection
    assert rec.acks == [(1, 1)]
    assert acker.depth() == 1
    acker.done(new2)
    assert rec.acks == [(1, 1), (2, 1)]


def test_old_epoch_confirmation_does_not_release_new_slots_early():
    acker, rec = make()
    old = acker.register(1, 1)
    acker.new_connection()
    n1, n2 = acker.register(1, 1), acker.register(2, 1)
    acker.done(n2)
    acker.done(old)
    assert rec.acks == []
    acker.done(n1)
    assert rec.acks == [(1, 1), (2, 1)]


def test_double_confirmation_acks_once():
    acker, rec = make()
    s = acker.register(3, 1)
    acker.done(s)
    acker.done(s)
    assert rec.acks == [(3, 1)] and acker.acked == 1


def test_oldest_age_and_drained():
    acker, _ = make()
    assert acker.oldest_age() == 0.0
    assert acker.depth() == 0
    s = acker.register(1, 1)
    assert acker.oldest_age() >= 0.0
    assert acker.depth() == 1
    acker.done(s)
    assert acker.depth() == 0


def test_confirmation_from_another_thread_acks():
    acker, rec = make()
    s = acker.register(1, 1)
    t = threading.Thread(target=acker.done, args=(s,))
    t.start()
    t.join()
    assert rec.acks == [(1, 1)] and acker.depth() == 0


def test_new_connection_drains():
    acker, _ = make()
    acker.register(1, 1)
    acker.new_connection()
    assert acker.depth() == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2), min_size=1, max_size=40).flatmap(lambda qos: st.tuples(st.just(qos), st.permutations(range(len(qos))))))
def test_acks_are_always_a_prefix_of_arrival_order(case):
    qos, order = case
    acker, rec = make()
    slots = [acker.register(mid, q) for mid, q in enumerate(qos, start=1)]
    expected = [(mid, q) for mid, q in enumerate(qos, start=1) if q > 0]
    confirmed: set[int] = set()
    for i in order:
        acker.done(slots[i])
        confirmed.add(i)
        # everything up to the first unconfirmed slot, and nothing past it
        head = next((j for j in range(len(slots)) if j not in confirmed), len(slots))
        assert rec.acks == [(mid, q) for mid, q in enumerate(qos[:head], start=1) if q > 0]
        assert rec.acks == expected[: len(rec.acks)]
        assert acker.depth() == len(slots) - head
    assert rec.acks == expected
    assert acker.acked == len(expected)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=15),
    st.integers(min_value=0, max_value=15),
    st.randoms(use_true_random=False),
)
def test_reconnect_mid_stream_never_acks_the_old_epoch(n_old, n_new, rnd):
    acker, rec = make()
    old = [acker.register(m, 1) for m in range(1, n_old + 1)]
    cut = rnd.randint(0, n_old)
    early = list(range(n_old))
    rnd.shuffle(early)
    for i in early[:cut]:
        acker.done(old[i])
    acked_before = list(rec.acks)
    acker.new_connection()
    new = [acker.register(m, 1) for m in range(1, n_new + 1)]  # same packet ids reused
    rest = [("old", i) for i in early[cut:]] + [("new", i) for i in range(n_new)]
    rnd.shuffle(rest)
    for which, i in rest:
        acker.done(old[i] if which == "old" else new[i])
    assert rec.acks[: len(acked_before)] == acked_before
    assert rec.acks[len(acked_before):] == [(m, 1) for m in range(1, n_new + 1)]
    assert acker.depth() == 0
