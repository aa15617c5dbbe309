"""Stalled consumers: when /health turns degraded, and how the worker's progress is read from its output."""

from __future__ import annotations

from pipeline.store.stall import Progress, StallWatch, worker_progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_degraded_only_when_records_wait_and_nothing_moves_for_the_threshold() -> None:
    clock = Clock()
    watch = StallWatch(after=30, clock=clock)
    stuck = [Progress("shipment-events", 100, 5, "the worker")]
    assert watch.observe(stuck) == []
    clock.now = 29.9
    assert watch.observe(stuck) == []
    clock.now = 30.0
    assert watch.observe(stuck) == ["shipment-events: 5 records waiting and the worker has not advanced for 30 s"]
    clock.now = 31
    assert watch.observe([Progress("shipment-events", 101, 4, "the worker")]) == []  # it moved: ok again
    clock.now = 100
    assert watch.observe([Progress("shipment-events", 101, 0, "the worker")]) == []  # idle, nothing waits
    clock.now = 120
    assert watch.observe([Progress("shipment-events", 101, 3, "the worker")]) == []  # new records: clock restarts
    clock.now = 151
    assert len(watch.observe([Progress("shipment-events", 101, 3, "the worker")])) == 1


def test_topics_are_watched_independently() -> None:
    clock = Clock()
    watch = StallWatch(after=10, clock=clock)
    watch.observe([Progress("a", 1, 1, "the store"), Progress("b", 1, 1, "the store")])
    clock.now = 11
    assert watch.observe([Progress("a", 2, 1, "the store"), Progress("b", 1, 1, "the store")]) == [
        "b: 1 records waiting and the store has not advanced for 11 s"]


def test_worker_progress_takes_the_later_of_sealed_and_dead_lettered_per_partition() -> None:
    blocks = [("p.shipment-events/0", 9), ("p.shipment-events/1", 3), ("p.epcis-events/0", 0)]
    dead = [("p.shipment-events", 0, 4), ("p.shipment-events", 1, 7), ("p.shipment-events", 2, 0)]
    ends = {("p.shipment-events", 0): 10, ("p.shipment-events", 1): 10, ("p.shipment-events", 2): 1,
            ("p.shipment-events", 3): 2, ("p.epcis-events", 0): 1}
    assert worker_progress(blocks, dead, ends) == [
        Progress("p.epcis-events", 1, 0, "the worker"),
        Progress("p.shipment-events", 10 + 8 + 1 + 0, 0 + 2 + 0 + 2, "the worker"),
    ]
