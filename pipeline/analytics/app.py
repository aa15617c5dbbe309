"""The analytics faust app: sealed events from `ledger.entries` to every model, their rows out.

`provenance analytics` runs it. It has its own consumer group and reads only
`ledger.entries`, never the raw events topic, so every model input is already
in the ledger. The agent is a thin loop: group a batch by partition, replay a
newly assigned partition from offset 0 first (see `feed.py`), hand the sealed
events to each handler, send what they drained. The worker is not involved: a
slow model delays only this process.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

import faust

from pipeline import metrics
from pipeline.analytics.anomalies import DelayAnomalies
from pipeline.analytics.feed import Output, PartitionReplay, SealedHandler, decode_messages
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def build_handlers(settings: Settings) -> list[SealedHandler]:
    """Every model the analytics process runs, each fed the same sealed batches."""
    return [DelayAnomalies(settings)]


class Feeder:
    """Per-partition bookkeeping: which partitions are replayed, the next offset each expects."""

    def __init__(self, handlers: list[SealedHandler], replay: PartitionReplay, send: Any) -> None:
        self.handlers = handlers
        self.replay = replay
        self.send = send
        self.next_offset: dict[int, int] = {}
        self.assigned: set[int] = set()
        self.lock = asyncio.Lock()

    def assign(self, partitions: list[int]) -> None:
        for p in partitions:
            if p not in self.assigned:
                self.assigned.add(p)
                self.next_offset.pop(p, None)
                for h in self.handlers:
                    h.assign(p)

    def revoke(self, partitions: list[int]) -> None:
        for p in partitions:
            self.assigned.discard(p)
            self.next_offset.pop(p, None)
            for h in self.handlers:
                h.revoke(p)

    async def feed(self, partition: int, messages: list[tuple[int, bytes]]) -> None:
        """Live messages of one partition (offset, value), in offset order."""
        if partition not in self.assigned:
            return
        if partition not in self.next_offset:
            first = messages[0][0]
            log.info("replaying ledger.entries[%d] from 0 to %d", partition, first)

            async def replayed(values: list[bytes]) -> None:
                self.handle(partition, values, replay=True)

            await self.replay(partition, first, replayed)
            self.next_offset[partition] = first
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


def build_app(settings: Settings, handlers: list[SealedHandler] | None = None) -> faust.App:
    """The analytics app with its agent and rebalance hooks."""
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

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        feeder.revoke([tp.partition for tp in revoked if tp.topic == entries])

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        feeder.assign([tp.partition for tp in assigned if tp.topic == entries])

    return app


def run_analytics(settings: Settings, loglevel: str = "warning") -> None:
    """Run the analytics process until SIGINT/SIGTERM."""
    app = build_app(settings)
    metrics.serve(settings.metrics.analytics_port, settings.metrics.host, "analytics")
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
