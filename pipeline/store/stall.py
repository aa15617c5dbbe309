"""Stalled consumers: a topic with records waiting whose consumer has not moved for a while.

A live process that consumes nothing is the failure nothing else reports, so
`GET /health` says `degraded` and names the topic when it happens. The store
watches the topics it consumes itself (its committed offsets) and the topics the
worker consumes, whose progress it sees in what the worker produced: the last
sealed block and the last dead letter of each partition.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.core.log_ids import parse_log_id


@dataclass
class _Seen:
    position: int
    since: float


@dataclass(frozen=True)
class Progress:
    """One consumed topic: where its consumer is (summed over partitions), what is left, and who consumes it."""

    topic: str
    position: int
    lag: int
    consumer: str


class StallWatch:
    """Remembers when each topic's position last moved; reports the topics stuck behind their lag.

    >>> clock = iter([0.0, 10.0, 40.0]).__next__
    >>> watch = StallWatch(after=30.0, clock=clock)
    >>> watch.observe([Progress("t", 5, 3, "the worker")])
    []
    >>> watch.observe([Progress("t", 5, 3, "the worker")])
    []
    >>> watch.observe([Progress("t", 5, 3, "the worker")])
    ['t: 3 records waiting and the worker has not advanced for 40 s']
    """

    def __init__(self, after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.after = after
        self.clock = clock
        self.seen: dict[str, _Seen] = {}

    def observe(self, progress: list[Progress]) -> list[str]:
        """Record the latest positions; the reasons for every topic stalled now."""
        now = self.clock()
        reasons = []
        for p in progress:
            seen = self.seen.get(p.topic)
            if seen is None or seen.position != p.position or p.lag <= 0:
                self.seen[p.topic] = _Seen(p.position, now)  # moved, or nothing waits: the clock restarts
                continue
            idle = now - seen.since
            if idle >= self.after:
                reasons.append(f"{p.topic}: {p.lag} records waiting and {p.consumer} has not advanced "
                               f"for {idle:.0f} s")
        return reasons


def worker_progress(rows_blocks: list[tuple[str, int]], rows_dead: list[tuple[str, int, int]],
                    ends: dict[tuple[str, int], int]) -> list[Progress]:
    """The worker's progress per source topic, as the store sees it in what the worker produced.

    `rows_blocks`: (log_id `<topic>/<partition>`, highest sealed offset); `rows_dead`: (source topic,
    partition, highest dead-lettered offset); `ends`: the source partitions' end offsets.

    >>> worker_progress([("ev/0", 9)], [("ev", 0, 11), ("ev", 1, 4)], {("ev", 0): 20, ("ev", 1): 5})
    [Progress(topic='ev', position=17, lag=8, consumer='the worker')]
    >>> worker_progress([("ev/0", 900), ("ev@1/0", 2)], [], {("ev", 0): 5})  # the broker lost ev: epoch 1
    [Progress(topic='ev', position=3, lag=2, consumer='the worker')]
    """
    # Only a partition's latest epoch counts: an older one numbered offsets the broker has since lost.
    # A dead letter names its source as its log does (`<topic>@<epoch>`).
    marks = [(log_id, offset) for log_id, offset in rows_blocks]
    marks += [(f"{topic}/{partition}", offset) for topic, partition, offset in rows_dead if partition is not None]
    latest: dict[tuple[str, int], tuple[int, int]] = {}
    for log_id, offset in marks:
        name = parse_log_id(log_id)
        if name is not None and offset is not None:
            key = (name.topic, name.partition)
            latest[key] = max(latest.get(key, (-1, -1)), (name.epoch, int(offset)))
    done = {key: offset for key, (_, offset) in latest.items()}
    totals: dict[str, list[int]] = {}
    for (topic, partition), end in ends.items():
        position = done.get((topic, partition), -1) + 1
        total = totals.setdefault(topic, [0, 0])
        total[0] += position
        total[1] += max(0, end - position)
    return [Progress(topic, position, lag, "the worker") for topic, (position, lag) in sorted(totals.items())]
