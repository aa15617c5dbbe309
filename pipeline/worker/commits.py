"""Consumer offset commits, coalesced: many blocks a second, one commit request per interval.

The sequencer marks a partition's next offset once the block (or dead letter)
below it was delivered; this sends the highest mark of each partition at most
every `interval` seconds, and at once when asked (`flush`, on revocation and
shutdown). A commit lags the ledger by at most one interval, never leads it:
what is marked is already durable, so a crash in between only replays records
the offset gate skips.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

log = logging.getLogger(__name__)

CommitFn = Callable[[Mapping[tuple[str, int], int]], Awaitable[bool]]


class OffsetCommitter:
    """Collects next-offsets per (topic, partition) and commits them through `commit`."""

    def __init__(self, commit: CommitFn, interval: float = 0.25) -> None:
        self.commit = commit
        self.interval = interval
        self.marked: dict[tuple[str, int], int] = {}
        self.committed: dict[tuple[str, int], int] = {}
        self.refused = 0
        self._lock = asyncio.Lock()

    def mark(self, topic: str, partition: int, next_offset: int) -> None:
        key = (topic, partition)
        if next_offset > self.marked.get(key, -1):
            self.marked[key] = next_offset

    def forget(self, topic: str, partition: int) -> None:
        """A revoked partition: its next owner commits from now on."""
        self.marked.pop((topic, partition), None)
        self.committed.pop((topic, partition), None)

    async def flush(self) -> None:
        """Commit every mark not committed yet; returns when the broker answered."""
        async with self._lock:
            due = {k: o for k, o in self.marked.items() if o > self.committed.get(k, -1)}
            if not due:
                return
            if await self.commit(due):
                self.committed.update(due)
            else:
                # A rebalance refused it: the partitions' next owner resumes from the ledger.
                self.refused += 1
                log.info("commit of %d partition(s) refused during a rebalance", len(due))
