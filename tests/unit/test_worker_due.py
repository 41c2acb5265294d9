"""The worker's due-time index: a tick visits only the schools that are due."""

from pipeline.worker.due import NOW, DueIndex


def test_a_partition_is_listed_once_then_kept_by_updates():
    index = DueIndex()
    listed = []

    def schools():
        listed.append(1)
        return [("a", 10.0), ("b", None), ("c", NOW), ("d", 30.0)]

    assert index.due(0, 5.0, schools) == ["c"], "a school that never ran is due at once"
    assert index.due(0, 10.0, schools) == ["a", "c"]
    index.update(0, "c", 50.0)  # it ran: its timers are set
    index.update(0, "a", None)  # its deadlines are done
    index.update(0, "b", 20.0)  # an input gave it a deadline
    assert index.due(0, 25.0, schools) == ["b"]
    assert index.due(0, 60.0, schools) == ["b", "c", "d"]
    assert len(listed) == 1, "the partition's schools are listed at its first tick only"


def test_updates_before_the_first_tick_are_left_to_the_listing_and_clear_relists():
    index = DueIndex()
    index.update(1, "x", 1.0)  # not indexed yet: the listing will have it
    assert index.due(1, 100.0, lambda: [("y", 2.0)]) == ["y"]
    index.update(1, "y", 500.0)
    assert index.due(1, 100.0, lambda: [("y", 2.0)]) == []
    index.clear()  # a rebalance: states may have changed behind the index
    assert index.due(1, 100.0, lambda: [("y", 2.0)]) == ["y"]
    assert index.due(2, 100.0, lambda: []) == [], "partitions are apart"
