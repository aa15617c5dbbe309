"""The faust app: agents are thin loops that hand batches to the ledger sequencer.

`provenance worker` runs it. Delivery is at-least-once with idempotent writes
downstream; faust's exactly-once mode is not used (see docs/design.md).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline import fatal, metrics
from pipeline.broker import check_ledger_partitions
from pipeline.core import wire
from pipeline.core.epcis.record import accept_epcis_record
from pipeline.core.ledger import AcceptRecord, accept_shipment
from pipeline.errors import LedgerError
from pipeline.settings import Settings
from pipeline.worker.sequencer import LedgerSequencer

log = logging.getLogger(__name__)


class _FaustRecord:
    """Adapts a faust event to the sequencer's Record protocol."""

    __slots__ = ("event", "partition", "offset", "key", "value", "headers")

    def __init__(self, event: Any) -> None:
        message = event.message
        # take_events acks every buffered event when the batch is handed back;
        # one extra reference keeps the final ack for after the block is sealed.
        message.incref()
        self.event = event
        self.partition = message.partition
        self.offset = message.offset
        self.key = message.key
        self.value = message.value
        self.headers = message.headers

    @property
    def timestamp(self) -> float | None:
        """The record's Kafka timestamp in seconds (read per batch or block, for metrics)."""
        ts = self.event.message.timestamp
        return float(ts) if ts else None

    def ack(self) -> None:
        self.event.ack()


class _FaustPublisher:
    def __init__(self, app: faust.App) -> None:
        self.app = app

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None,
                   headers: list[tuple[str, bytes]] | None = None) -> Any:
        return await self.app.producer.send(topic, key, value, partition, None, headers)


class _BlockReader:
    """Reads the last message of a `ledger.blocks` partition: the log's commit point."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.consumer: AIOKafkaConsumer | None = None
        self.lock = asyncio.Lock()  # one consumer, shared by every topic's sequencer

    async def __call__(self, partition: int) -> wire.BlockMessage | None:
        async with self.lock:
            return await self._read(partition)

    async def _read(self, partition: int) -> wire.BlockMessage | None:
        if self.consumer is None:
            self.consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None,
                client_id="provenance-block-reader",
            )
            await self.consumer.start()
        tp = TopicPartition(self.topic, partition)
        self.consumer.assign([tp])
        end = (await self.consumer.end_offsets([tp]))[tp]
        if end == 0:
            return None
        # Some brokers report the end of a multi-record batch as one past its first
        # record, so read forward from there to the real end and keep the last block.
        self.consumer.seek(tp, end - 1)
        last = None
        while True:
            batch = await self.consumer.getmany(tp, timeout_ms=1000)
            messages = batch.get(tp, [])
            if not messages:
                break
            last = messages[-1]
        if last is None:
            raise LedgerError(f"{self.topic}[{partition}] reports {end} records but none could be read")
        return wire.decode_block(last.value)

    async def close(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None


def build_app(settings: Settings) -> faust.App:
    """The worker app with its agents, timers and rebalance hooks."""
    topics = settings.topics
    # faust creates its data folder without parents; the worker may start before anything else did.
    (settings.data_dir / "worker").mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.worker.group_id,
        broker=f"kafka://{settings.kafka}",
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        datadir=str(settings.data_dir / "worker"),
        web_enabled=settings.worker.web_port != 0,
        web_port=settings.worker.web_port or 6066,
        topic_partitions=topics.partitions,
        topic_allow_declare=False,
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger=0.005,
        stream_buffer_maxsize=max(4096, settings.worker.batch_size * 2),
        broker_commit_interval=1.0,
        # Unsealed records stay unacked on shutdown: they are replayed, not waited for.
        stream_wait_empty=False,
    )
    reader = _BlockReader(settings.kafka, topics.name(topics.blocks))
    publisher = _FaustPublisher(app)
    # One sequencer per sequenced topic: same blocks, commit point and crash safety; each
    # topic has its own accept function and its own range of ledger partitions.
    sequencers: dict[str, LedgerSequencer] = {}
    for topic, accept in _accept_functions(settings).items():
        sequencers[topics.name(topic)] = LedgerSequencer(
            source_topic=topics.name(topic),
            entries_topic=topics.name(topics.entries),
            blocks_topic=topics.name(topics.blocks),
            dead_letter_topic=topics.name(topics.dead_letter),
            publisher=publisher,
            load_block=reader,
            max_events=settings.ledger.max_events,
            max_age=settings.ledger.max_age,
            bundle_size=settings.ledger.bundle_size,
            accept=accept,
            ledger_partition_base=topics.ledger_partition(topic, 0),
            # A failed publish leaves the in-memory log ahead of its commit point: only a restart is exact.
            on_fatal=lambda: fatal.crash("publishing a block"),
        )
    app.sequencer = sequencers[topics.name(topics.events)]  # type: ignore[attr-defined]
    app.sequencers = sequencers  # type: ignore[attr-defined]
    for name, sequencer in sequencers.items():
        _ledger_agent(app, app.topic(name, key_type=bytes, value_type=bytes), sequencer, settings)

    @app.timer(interval=min(settings.ledger.max_age / 4, 0.5))
    async def seal_due() -> None:
        async def seal_all() -> None:
            for sequencer in sequencers.values():
                await sequencer.seal_due()

        await fatal.guarded("the seal timer", seal_all)

    def end_offsets() -> dict[tuple[str, int], int]:
        consumer = app.consumer
        ends = ((tp, consumer.highwater(tp)) for tp in consumer.assignment() if tp.topic in sequencers)
        return {(tp.topic, tp.partition): end for tp, end in ends if end is not None}

    metrics.WORKER_POSITIONS.ends = end_offsets

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        for name, sequencer in sequencers.items():
            mine = [tp.partition for tp in revoked if tp.topic == name]
            metrics.WORKER_POSITIONS.forget(name, mine)
            await sequencer.revoke(mine)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        for name, sequencer in sequencers.items():
            sequencer.assign(tp.partition for tp in assigned if tp.topic == name)

    @app.on_before_shutdown.connect
    async def on_shutdown(sender: Any, **kwargs: Any) -> None:
        await reader.close()

    return app


def _accept_functions(settings: Settings) -> dict[str, AcceptRecord]:
    """Each sequenced topic (unprefixed) with the function turning its records into leaves."""
    topics = settings.topics
    return {topics.events: functools.partial(accept_shipment, limits=settings.limits.record()),
            topics.epcis: accept_epcis_record}


def _ledger_agent(app: faust.App, source: Any, sequencer: LedgerSequencer, settings: Settings) -> None:
    """Validate, dead-letter, append, seal: one batch at a time; any error ends the process."""

    async def consume(stream: Any) -> None:
        async for events in stream.noack().take_events(settings.worker.batch_size, settings.worker.batch_within):
            # Records fetched under an earlier assignment belong to whoever owns the
            # partition now: left unacked, they are read again from the committed offset.
            # (_FaustRecord holds a reference on every record, so take_events cannot ack them either.)
            records = [_FaustRecord(e) for e in events]
            generation = app.consumer_generation_id
            await sequencer.handle([r for r in records if r.event.message.generation_id == generation])

    async def ledger(stream: Any) -> None:
        # faust would restart a crashed agent with its batch lost and the partition stalled behind it.
        await fatal.guarded(f"the ledger agent of {source.get_topic_name()}", lambda: consume(stream))

    ledger.__name__ = ledger.__qualname__ = f"ledger_{source.get_topic_name().replace('-', '_').replace('.', '_')}"
    app.agent(source, name=f"ledger-{source.get_topic_name()}")(ledger)


def run_worker(settings: Settings, loglevel: str = "warning") -> None:
    """Run the worker until SIGINT/SIGTERM."""
    check_ledger_partitions(settings)
    app = build_app(settings)
    metrics.serve(settings.metrics.worker_port, settings.metrics.host, "worker")
    worker = _Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()


class _Worker(faust.Worker):
    """A faust worker that exits non-zero when one of its services crashed, instead of idling or exiting 0."""

    def on_worker_shutdown(self) -> None:
        reason = self.crash_reason or self.app.crash_reason
        if reason is not None:
            fatal.crash("the faust worker", reason)
        super().on_worker_shutdown()
