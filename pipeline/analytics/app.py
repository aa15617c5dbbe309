"""The analytics faust app: sealed events from `ledger.entries` to every model, their rows out.

`provenance analytics` runs it. It has its own consumer group and reads only
`ledger.entries`, never the raw events topic, so every model input is already
in the ledger. The agent is a thin loop: group a batch by partition, hand the
sealed events to each handler, send what they drained; a newly assigned
partition is first replayed from offset 0 to its end (see `feed.py`). The
worker is not involved: a slow model delays only this process.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

import faust

from pipeline import fatal, metrics
from pipeline.analytics.anomalies import DelayAnomalies
from pipeline.analytics.feed import Output, PartitionReplay, SealedHandler, decode_messages
from pipeline.analytics.forecasts import DemandForecasts
from pipeline.broker import current_cluster_id, exit_when_lost, watch_cluster
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def build_handlers(settings: Settings) -> list[SealedHandler]:
    """Every model the analytics process runs, each fed the same sealed batches."""
    return [DelayAnomalies(settings), DemandForecasts(settings)]


class Feeder:
    """Per-partition bookkeeping: which partitions are replayed, the next offset each expects.

    A newly assigned partition is replayed from offset 0 to its end at once
    (`catch_up`, a task of its own), so its handlers have their state even if
    no live message ever comes; live messages below that end were replayed and
    are skipped. Should a live message get there first, it replays up to itself.
    """

    def __init__(self, handlers: list[SealedHandler], replay: PartitionReplay, send: Any) -> None:
        self.handlers = handlers
        self.replay = replay
        self.send = send
        self.next_offset: dict[int, int] = {}
        self.assigned: set[int] = set()
        self.epoch: dict[int, int] = defaultdict(int)  # moves on at every assign and revoke of a partition
        self.locks: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.tasks: set[asyncio.Task[bool]] = set()

    def assign(self, partitions: list[int]) -> list[int]:
        """Fresh handler state for partitions not yet held; returns them (they need a `catch_up`)."""
        new = []
        for p in partitions:
            if p not in self.assigned:
                self.assigned.add(p)
                self.epoch[p] += 1
                self.next_offset.pop(p, None)
                for h in self.handlers:
                    h.assign(p)
                new.append(p)
        return new

    def revoke(self, partitions: list[int]) -> None:
        for p in partitions:
            self.assigned.discard(p)
            self.epoch[p] += 1
            self.next_offset.pop(p, None)
            for h in self.handlers:
                h.revoke(p)

    def catch_up_soon(self, partitions: list[int], retry: float = 1.0) -> None:
        """Start replaying each partition to its end in the background (retried until it is done or revoked)."""
        loop = asyncio.get_running_loop()

        async def run(p: int, epoch: int) -> bool:
            while self.epoch[p] == epoch:
                try:
                    return await self.catch_up(p)
                except Exception:  # a broker hiccup: a quiet partition would otherwise never be replayed
                    log.exception("replay of ledger.entries[%d] failed; retrying", p)
                    await asyncio.sleep(retry)
            return False

        for p in partitions:
            task = loop.create_task(run(p, self.epoch[p]))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def catch_up(self, partition: int, until: int | None = None) -> bool:
        """Replay the partition from 0 below `until` (None: its end now) unless that was done since it was
        assigned; False if it is no longer held."""
        async with self.locks[partition]:
            if partition not in self.assigned or partition in self.next_offset:
                return partition in self.assigned
            epoch = self.epoch[partition]

            async def replayed(values: list[bytes]) -> None:
                if self.epoch[partition] == epoch:
                    self.handle(partition, values, replay=True)

            log.info("replaying ledger.entries[%d] from 0 to %s", partition, "its end" if until is None else until)
            end = await self.replay(partition, until, replayed)
            if self.epoch[partition] != epoch:
                return False
            self.next_offset[partition] = end
            await self.flush(partition)
            return True

    async def feed(self, partition: int, messages: list[tuple[int, bytes]]) -> None:
        """Live messages of one partition (offset, value), in offset order."""
        if partition not in self.assigned or not await self.catch_up(partition, messages[0][0]):
            return
        fresh = [v for off, v in messages if off >= self.next_offset[partition]]
        if not fresh:
            return
        self.next_offset[partition] = messages[-1][0] + 1
        self.handle(partition, fresh, replay=False)
        await self.flush(partition)

    def handle(self, partition: int, values: list[bytes], replay: bool) -> None:
        events = decode_messages(values, f"ledger.entries[{partition}]")
        for h in self.handlers:
            h.handle(partition, events, replay)

    async def flush(self, partition: int) -> None:
        outputs: list[Output] = []
        for h in self.handlers:
            outputs.extend(h.drain(partition))
        futures = [await self.send(o) for o in outputs]
        for f in futures:
            await f


def build_app(settings: Settings, handlers: list[SealedHandler] | None = None,
              cluster_id: str | None = None) -> faust.App:
    """The analytics app with its agent and rebalance hooks.

    `cluster_id`: the Kafka cluster it starts against; once the broker answers as another
    (an in-memory broker restarted empty), the process exits 70 (see `run_analytics`).
    """
    topics = settings.topics
    a = settings.analytics
    (settings.data_dir / "analytics").mkdir(parents=True, exist_ok=True)
    app = faust.App(
        a.group_id,
        broker=f"kafka://{settings.kafka}",
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        datadir=str(settings.data_dir / "analytics"),
        web_enabled=a.web_port != 0,
        web_port=a.web_port or 6066,
        topic_partitions=topics.partitions,
        topic_allow_declare=False,
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger=0.01,
        broker_commit_interval=1.0,
        stream_wait_empty=False,
    )
    source = app.topic(topics.name(topics.entries), key_type=bytes, value_type=bytes)
    entries = source.get_topic_name()

    async def send(o: Output) -> Any:
        return await app.producer.send(o.topic, o.key, o.value, None, None, None)

    feeder = Feeder(handlers if handlers is not None else build_handlers(settings),
                    PartitionReplay(settings.kafka, entries), send)
    app.feeder = feeder  # type: ignore[attr-defined]
    for handler in feeder.handlers:  # handlers that send later, from work of their own (forecast rounds)
        if hasattr(handler, "bind"):
            handler.bind(send)

    @app.agent(source)
    async def sealed(stream: Any) -> None:
        """Group by partition, replay on first sight, feed every handler, send their rows."""
        async for events in stream.take_events(a.batch_size, a.batch_within):
            generation = app.consumer_generation_id
            by_partition: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
            for e in events:
                m = e.message
                if m.generation_id == generation:
                    by_partition[m.partition].append((m.offset, m.value))
            for partition in sorted(by_partition):
                await feeder.feed(partition, by_partition[partition])

    if cluster_id is not None:
        @app.task
        async def broker_watch() -> None:
            await fatal.guarded("the broker watch", lambda: watch_cluster(settings.kafka, cluster_id))

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        feeder.revoke([tp.partition for tp in revoked if tp.topic == entries])

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        feeder.catch_up_soon(feeder.assign([tp.partition for tp in assigned if tp.topic == entries]))

    return app


def run_analytics(settings: Settings, loglevel: str = "warning") -> None:
    """Run the analytics process until SIGINT/SIGTERM; exit 70 when the in-memory broker it reads is lost.

    Such a broker comes back empty: the rows derived from it describe a ledger the new
    cluster does not have, and a consumer that reconnected would wait on topics that
    were recreated from nothing. Exiting lets a supervisor restart the process, which
    then replays the new cluster's `ledger.entries` from offset 0 like any start.
    """
    cluster_id = current_cluster_id(settings.kafka)
    exit_when_lost(cluster_id, "the analytics process")
    app = build_app(settings, cluster_id=cluster_id)
    metrics.serve(settings.metrics.analytics_port, settings.metrics.host, "analytics")
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
