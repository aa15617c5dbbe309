"""The ledger sequencer: turns a partition's records into sealed, published blocks.

It owns the at-least-once discipline that keeps the ledger exact across
crashes and rebalances (see docs/design.md):

1. The consumer offset of a partition is committed (`Committer.mark`) only past
   records that are in a block the broker confirmed, or whose dead letter was
   delivered with every accepted record below it sealed: the committed offset
   never passes an unsealed record.
2. Each partition's state is loaded from its commit point, the last message of
   `ledger.blocks` partition p, before any of its records is handled; records
   below that block's `last_offset` are replays and are skipped.
3. On revocation the partition's state is dropped under its lock, so a revoked
   worker never seals another block for it; records fetched under an earlier
   consumer generation are left for a re-read.

Records arrive one poll at a time, per partition, straight from the consumer
(`handle_poll`). Kafka is reached through the small protocols of `ports` so tests drive it
without a broker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pipeline import metrics
from pipeline.core import wire
from pipeline.core.log_ids import log_id as make_log_id
from pipeline.core.log_ids import parse_log_id
from pipeline.core.ledger import AcceptRecord, PartitionLog, SealedBlock, accept_shipment
from pipeline.errors import InvalidEvent, LedgerError
from pipeline.worker.commit_points import CommitPoints
from pipeline.worker.ports import BlockLoader, Committer, Publisher, Record, TopicPartition

log = logging.getLogger(__name__)




@dataclass
class Counters:
    accepted: int = 0
    rejected: int = 0
    replayed: int = 0
    blocks: int = 0
    resumed_ahead: int = 0
    stale: int = 0  # records fetched under an earlier consumer generation, left for a re-read


@dataclass
class _Partition:
    log: PartitionLog
    pending_since: float | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    publishing: deque[asyncio.Task[None]] = field(default_factory=deque)
    delivered_through: int = -1  # highest offset the committed offset may pass (delivered blocks, dead letters)
    held: list[Awaitable[Any]] = field(default_factory=list)  # dead letters waiting for the next block
    first_timestamp: float | None = None  # Kafka time (s) of the first pending record, for metrics
    caught_up: bool = False  # the last poll held every record the broker had for the partition


def _seconds(record: Record) -> float | None:
    """A record's Kafka timestamp (aiokafka gives milliseconds) in seconds, if it has one."""
    ts = getattr(record, "timestamp", None)
    return ts / 1000 if ts else None


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class LedgerSequencer:
    """Validates records, appends accepted ones to their partition's log, seals and publishes blocks."""

    def __init__(
        self,
        *,
        source_topic: str,
        entries_topic: str,
        blocks_topic: str,
        dead_letter_topic: str,
        publisher: Publisher,
        committer: Committer,
        load_block: BlockLoader,
        max_events: int,
        max_age: float,
        bundle_size: int,
        caught_up_age: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_in_flight: int = 8,
        on_fatal: Callable[[], None] | None = None,
        current_generation: Callable[[], int | None] = lambda: None,
        accept: AcceptRecord = accept_shipment,
        ledger_partition_base: int = 0,
        commit_points: CommitPoints | None = None,
        cluster_id: str | None = None,
    ) -> None:
        """`accept` turns one record into its leaves; log `<source_topic>/p` is published to
        partition `ledger_partition_base + p` of the entries and blocks topics (its commit point).

        A block is cut at `max_events`; once its oldest event is `max_age` old; and, when the
        worker has read every record the broker had for the partition (no more can come with
        this poll), once its oldest event is `caught_up_age` old (None: max_age)."""
        self.source_topic = source_topic
        self.topics = frozenset({source_topic})
        self.entries_topic = entries_topic
        self.blocks_topic = blocks_topic
        self.dead_letter_topic = dead_letter_topic
        self.publisher = publisher
        self.committer = committer
        self.load_block = load_block
        self.max_events = max_events
        self.max_age = max_age
        self.caught_up_age = max_age if caught_up_age is None else caught_up_age
        self.bundle_size = bundle_size
        self.clock = clock
        self.max_in_flight = max_in_flight
        self.on_fatal = on_fatal or (lambda: os.kill(os.getpid(), signal.SIGTERM))
        self.current_generation = current_generation
        self.accept = accept
        self.ledger_partition_base = ledger_partition_base
        self.commit_points = commit_points
        # Every ledger record says which cluster it was written for: see wire.written_for.
        self.tag = [] if cluster_id is None else [(wire.CLUSTER_HEADER, cluster_id.encode())]
        self.partitions: dict[int, _Partition] = {}
        self._loading: dict[int, asyncio.Task[_Partition]] = {}
        self.revoked: set[int] = set()
        self.counters = Counters()

    def assign(self, partitions: Iterable[int]) -> None:
        """Partitions this worker owns again after a rebalance."""
        self.revoked -= set(partitions)

    def log_id(self, partition: int) -> str:  # of its current epoch, once loaded
        state = self.partitions.get(partition)
        return state.log.log_id if state is not None else make_log_id(self.source_topic, partition)

    async def partition(self, p: int) -> _Partition:
        """The partition's state, loaded from its commit point on first use."""
        state = self.partitions.get(p)
        if state is not None:
            return state
        task = self._loading.get(p)
        if task is None:
            task = self._loading[p] = asyncio.ensure_future(self._load(p))
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._loading.pop(p, None)

    async def _load(self, p: int) -> _Partition:
        message = await self.load_block(self.ledger_partition_base + p)
        points = self.commit_points
        if message is None:  # a new log, or (the broker lost its data) the next epoch of one
            plog = PartitionLog(points.fresh_log(self.source_topic, p) if points else make_log_id(self.source_topic, p))
        else:
            header = message.header
            name = parse_log_id(header.log_id)
            if name is None or (name.topic, name.partition) != (self.source_topic, p):
                raise LedgerError(f"the commit point of {self.source_topic}/{p} is a block of {header.log_id!r}")
            if points is not None:
                points.check(header.log_id, header.height, self.source_topic, p, name.epoch)
            plog = PartitionLog.restore(header, message.frontier, header.log_id)
            log.info("%s resumes after block %d (tree_size %d, offset %d)", header.log_id,
                     header.height, header.tree_size, header.last_offset)
        state = _Partition(plog, delivered_through=plog.sealed_through)
        if p not in self.revoked:  # revoked while loading: keep no state for it
            self.partitions[p] = state
        return state

    async def handle_poll(self, polled: Mapping[TopicPartition, Sequence[Record]], generation: int | None) -> None:
        """One poll of the consumer: each partition's records in offset order, fetched in `generation`."""
        for tp, records in polled.items():
            if tp.topic == self.source_topic and records:
                await self.handle_partition(tp.partition, records, generation)

    async def handle(self, records: Sequence[Record], generation: int | None = None) -> None:
        """Handle records of any partitions (in offset order per partition)."""
        by_partition: dict[int, list[Record]] = {}
        for r in records:
            by_partition.setdefault(r.partition, []).append(r)
        for p, batch in by_partition.items():
            await self.handle_partition(p, batch, generation)

    async def handle_partition(self, p: int, batch: Sequence[Record], generation: int | None = None,
                               caught_up: bool = False) -> None:
        """One poll's records of partition p; `caught_up`: the poll held all the broker had for it."""
        if p in self.revoked:
            return  # fetched before revocation: the new owner reads them from the committed offset
        state = await self.partition(p)
        async with state.lock:
            if p in self.revoked or self.partitions.get(p) is not state:
                return  # revoked while waiting: the new owner reads these from the committed offset
            if generation is not None and generation != self.current_generation():
                # Fetched before a rebalance; the consumer seeks back to the committed offset.
                self.counters.stale += len(batch)
                return
            c = self.counters
            before = (c.accepted, c.rejected, c.replayed)
            await self._handle_partition(p, state, batch)
            state.caught_up = caught_up
            if self._due(state, self.clock()):
                await self._seal(p, state)
            last = batch[-1]
            metrics.worker_batch(self.source_topic, p, len(batch), c.accepted - before[0],
                                 c.rejected - before[1], c.replayed - before[2], last.offset, _seconds(last))

    async def _handle_partition(self, p: int, state: _Partition, batch: Sequence[Record]) -> None:
        plog = state.log
        dead: list[Awaitable[Any]] = []
        for r in batch:
            if not plog.admit(r.offset):
                self.counters.replayed += 1
                continue
            if plog.gaps:
                gap = plog.gaps.pop()
                self.counters.resumed_ahead += 1
                # The committed offset passes the last block only over dead-lettered records
                # (or offsets Kafka never filled, such as transaction markers).
                log.info("%s: resuming at offset %d, not %d: the records in between were dead-lettered "
                         "before a restart or are not data", plog.log_id, gap[1], gap[0])
            try:
                leaves = self.accept(r.value)
                if not leaves:
                    raise InvalidEvent("the record holds no event")
            except Exception as error:  # whatever the bytes, a verdict: never a crashed worker
                exc = error if isinstance(error, InvalidEvent) else InvalidEvent(
                    f"could not be validated: {type(error).__name__}: {str(error)[:200]}")
                self.counters.rejected += 1
                # Named as the log is (`<topic>@<epoch>` after a broker lost the topic): offsets restart.
                headers = wire.dead_letter_headers(exc, plog.log_id.rpartition("/")[0], p, r.offset) + self.tag
                dead.append(await self.publisher.send(self.dead_letter_topic, r.key, r.value, None, headers))
                continue
            # All leaves of one record go into one block: the commit point is a record offset.
            for event, payload in leaves:
                plog.append(r.offset, event, payload)
            self.counters.accepted += 1
            if state.pending_since is None:
                state.pending_since = self.clock()
                state.first_timestamp = _seconds(r)
            if len(plog.pending) >= self.max_events:
                state.held += dead
                dead = []
                await self._seal(p, state)
        if dead:
            if plog.pending:
                state.held += dead  # committed with the block that seals the accepted records below them
            else:
                self._chain(state, self._commit_after(p, state, dead, self._next_offset(plog) - 1,
                                                      state.publishing[-1] if state.publishing else None))

    @staticmethod
    def _next_offset(plog: PartitionLog) -> int:
        return -1 if plog.next_offset is None else plog.next_offset

    def _chain(self, state: _Partition, step: Coroutine[Any, Any, None]) -> None:
        state.publishing.append(asyncio.ensure_future(step))
        while state.publishing and state.publishing[0].done():
            state.publishing.popleft().result()

    async def _commit_after(self, p: int, state: _Partition, deliveries: list[Awaitable[Any]], through: int,
                            previous: asyncio.Task[None] | None) -> None:
        """Dead letters past every sealed record: commit past them once they (and earlier blocks) are delivered."""
        try:
            if previous is not None:
                await previous
            for delivery in deliveries:
                await delivery
        except Exception:
            log.critical("a dead letter of %s could not be delivered; stopping", self.log_id(p), exc_info=True)
            self.on_fatal()
            raise
        self._committed(p, state, through)

    def _committed(self, p: int, state: _Partition, through: int) -> None:
        state.delivered_through = max(state.delivered_through, through)
        self.committer.mark(self.source_topic, p, state.delivered_through + 1)

    async def _seal(self, p: int, state: _Partition) -> None:
        """Seal the pending entries, send them, and publish the block in the background, in chain order."""
        # Every admitted offset is in this block, in an earlier one, or a dead letter held for it.
        through = self._next_offset(state.log) - 1
        sealed = state.log.seal(now_utc())
        if sealed is None:
            return
        held, state.held, state.pending_since = state.held, [], None
        first_ts, state.first_timestamp = state.first_timestamp, None
        log_id = sealed.header.log_id
        lp = self.ledger_partition_base + p
        headers = (metrics.produced_headers(first_ts) or []) + self.tag or None
        try:
            # Sent here, under the partition's lock, so entries reach the topic in leaf order
            # however the background publishes interleave.
            entries = [
                await self.publisher.send(self.entries_topic, log_id.encode(), value, lp, headers)
                for value in wire.encode_entries(log_id, sealed.entries, self.bundle_size)
            ]
        except Exception:
            log.critical("sending the entries of block %d of %s failed; stopping", sealed.header.height, log_id,
                         exc_info=True)
            self.on_fatal()
            raise
        previous = state.publishing[-1] if state.publishing else None
        self._chain(state, self._publish(p, state, sealed, entries, held, through, previous, first_ts))
        if len(state.publishing) > self.max_in_flight:
            await state.publishing.popleft()

    async def _publish(self, p: int, state: _Partition, sealed: SealedBlock, entries: list[Awaitable[Any]],
                       held: list[Awaitable[Any]], through: int, previous: asyncio.Task[None] | None,
                       first_ts: float | None = None) -> None:
        """After its entries and the previous block are delivered, the block; then commit past it.

        Once the block is delivered it is the commit point, so it must never
        land before its entries or before the block it links to.
        """
        try:
            log_id = sealed.header.log_id
            if previous is not None:
                await previous
            for delivery in entries:
                await delivery
            lp = self.ledger_partition_base + p
            await (await self.publisher.send(self.blocks_topic, log_id.encode(), wire.encode_block(sealed), lp,
                                             self.tag or None))
            for delivery in held:
                await delivery
        except Exception:
            # The in-memory log is now ahead of its commit point: only a restart
            # from the last delivered block keeps the chain exact.
            log.critical("publishing block %d of %s failed; stopping so a restart resumes from the "
                         "last delivered block", sealed.header.height, sealed.header.log_id, exc_info=True)
            self.on_fatal()
            raise
        self.counters.blocks += 1
        metrics.block_delivered(log_id, len(sealed.entries), first_ts)
        if self.commit_points is not None:
            self.commit_points.note(log_id, sealed.header.height)
        self._committed(p, state, through)

    async def flush(self, state: _Partition) -> None:
        """Wait until every block sealed for the partition is delivered."""
        while state.publishing:
            await state.publishing.popleft()

    def _due(self, state: _Partition, now: float) -> bool:
        """Whether the pending events are old enough for their block: max_age, or caught_up_age when caught up."""
        if state.pending_since is None:
            return False
        age = now - state.pending_since
        return age >= self.max_age or (state.caught_up and age >= self.caught_up_age)

    async def seal_due(self) -> None:
        """Seal every partition whose pending events are old enough (timer): see `_due`."""
        now = self.clock()
        for p, state in list(self.partitions.items()):
            if self._due(state, now):
                async with state.lock:
                    if self.partitions.get(p) is state:
                        await self._seal(p, state)

    async def revoke(self, partitions: Iterable[int]) -> None:
        """Drop the state of revoked partitions; their unsealed records are replayed by the next owner."""
        partitions = set(partitions)
        self.revoked |= partitions
        for p in partitions:
            state = self.partitions.get(p)
            if state is None:
                continue
            async with state.lock:
                self.partitions.pop(p, None)
                # The next owner starts from the last block in ledger.blocks: ours must all be there.
                await self.flush(state)
                if state.log.pending:
                    log.info("%s revoked with %d unsealed events: the next owner replays them",
                             state.log.log_id, len(state.log.pending))
        await self.committer.flush()  # the next owner starts from our commits

    async def drain(self) -> None:
        """Seal everything pending (clean shutdown)."""
        for p, state in list(self.partitions.items()):
            async with state.lock:
                if self.partitions.get(p) is state:
                    try:
                        await self._seal(p, state)
                        await self.flush(state)
                    except LedgerError:
                        log.exception("could not seal %s on shutdown", state.log.log_id)
        await self.committer.flush()
