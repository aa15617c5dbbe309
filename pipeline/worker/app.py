"""The faust app: each poll of the source topic goes straight to the ledger sequencer.

`provenance worker` runs it. The source topic takes the batch path of
`pipeline.worker.transport` (no per-record stream, no faust acks); the
sequencer commits the consumer offsets itself once blocks are delivered. Delivery is at-least-once with idempotent writes
downstream; faust's exactly-once mode is not used (see docs/design.md).
"""

from __future__ import annotations

import logging
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.core import wire
from pipeline.errors import LedgerError
from pipeline.settings import Settings
from pipeline.worker import transport
from pipeline.worker.commits import OffsetCommitter
from pipeline.worker.sequencer import LedgerSequencer

log = logging.getLogger(__name__)


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

    async def __call__(self, partition: int) -> wire.BlockMessage | None:
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
    """The worker app: the ledger's batch path on the source topic, its timer and rebalance hooks."""
    topics = settings.topics
    w = settings.worker
    # faust creates its data folder without parents; the worker may start before anything else did.
    (settings.data_dir / "worker").mkdir(parents=True, exist_ok=True)
    app = faust.App(
        w.group_id,
        broker=transport.broker_url(settings.kafka),
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        datadir=str(settings.data_dir / "worker"),
        web_enabled=w.web_port != 0,
        web_port=w.web_port or 6066,
        topic_partitions=topics.partitions,
        topic_allow_declare=False,
        # A killed member holds its partitions until its session expires (or, with static
        # membership, until it rejoins under the same instance id).
        broker_session_timeout=w.session_timeout,
        broker_heartbeat_interval=min(1.0, w.session_timeout / 3),
        broker_request_timeout=max(40.0, w.session_timeout),
        consumer_group_instance_id=w.instance_id,
        broker_max_poll_records=w.batch_size,
        consumer_max_fetch_size=8 * 1024 * 1024,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger=0.005,
        producer_max_request_size=4 * 1024 * 1024,
        broker_commit_interval=1.0,
        stream_wait_empty=False,
    )
    reader = _BlockReader(settings.kafka, topics.name(topics.blocks))
    committer = OffsetCommitter(lambda offsets: transport.commit(app, offsets), w.commit_interval)
    sequencer = LedgerSequencer(
        source_topic=topics.name(topics.events),
        entries_topic=topics.name(topics.entries),
        blocks_topic=topics.name(topics.blocks),
        dead_letter_topic=topics.name(topics.dead_letter),
        publisher=_FaustPublisher(app),
        committer=committer,
        load_block=reader,
        max_events=settings.ledger.max_events,
        max_age=settings.ledger.max_age,
        bundle_size=settings.ledger.bundle_size,
        current_generation=lambda: transport.generation(app),
    )
    app.sequencer = sequencer  # type: ignore[attr-defined]
    source_topics = transport.attach(app, sequencer)
    source_names = {t.get_topic_name() for t in source_topics}

    @app.timer(interval=min(settings.ledger.max_age / 4, 0.5))
    async def seal_due() -> None:
        await sequencer.seal_due()

    @app.task
    async def commit_offsets() -> None:
        await committer.run()

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        mine = [tp for tp in revoked if tp.topic in source_names]
        await sequencer.revoke(tp.partition for tp in mine)
        for tp in mine:
            committer.forget(tp.topic, tp.partition)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        sequencer.assign(tp.partition for tp in assigned if tp.topic in source_names)

    @app.on_before_shutdown.connect
    async def on_shutdown(sender: Any, **kwargs: Any) -> None:
        await reader.close()

    return app


def run_worker(settings: Settings, loglevel: str = "warning") -> None:
    """Run the worker until SIGINT/SIGTERM; exit 1 if the ledger path failed."""
    app = build_app(settings)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if app.sequencer.failed is not None:  # type: ignore[attr-defined]
            raise SystemExit(1) from None
        raise exc
