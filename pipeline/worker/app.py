"""The faust app: each poll of a sequenced topic goes straight to that topic's ledger sequencer.

`provenance worker` runs it. Sequenced topics take the batch path of
`pipeline.worker.transport` (no per-record stream, no faust acks); each
sequencer commits its consumer offsets once its blocks are delivered. Delivery is at-least-once with idempotent writes
downstream; faust's exactly-once mode is not used (see docs/design.md).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline import fatal, metrics
from pipeline.broker import ClusterProbe, check_ledger_partitions, exit_when_lost, session_timeout
from pipeline.core import wire
from pipeline.core.ledger import AcceptRecord, accept_shipment
from pipeline.errors import BrokerError, LedgerError
from pipeline.settings import Settings
from pipeline.worker import transport
from pipeline.worker.commit_points import CommitPoints
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

    def __init__(self, bootstrap: str, topic: str, cluster_id: str | None = None) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.cluster_id = cluster_id
        self.consumer: AIOKafkaConsumer | None = None
        self.lock = asyncio.Lock()  # one consumer, shared by every topic's sequencer

    async def __call__(self, partition: int) -> wire.BlockMessage | None:
        async with self.lock:
            return await self._read(partition)

    async def _read(self, partition: int) -> wire.BlockMessage | None:
        if self.consumer is None:
            # A fetch parked at a log's end waits up to fetch_max_wait_ms, and the broker answers one
            # connection's requests in order: a reader of a few records never needs a long poll.
            self.consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None,
                client_id="provenance-block-reader", fetch_max_wait_ms=50,
            )
            await self.consumer.start()
        tp = TopicPartition(self.topic, partition)
        # Asked before the partition is assigned, with the seek right after the assignment: the
        # consumer's first fetch is for the last block, not a long poll at the log's end (0.5 s).
        end = (await self.consumer.end_offsets([tp]))[tp]
        if end == 0:
            return None
        self.consumer.assign([tp])
        # Some brokers report the end of a multi-record batch as one past its first
        # record, so read forward from there to the real end and keep the last block.
        self.consumer.seek(tp, end - 1)
        try:
            last = await self._last_record(tp, end)
        finally:
            self.consumer.pause(tp)  # no fetching in the background until the next read
        if last is None:
            return None
        written_for = wire.written_for(last.headers)
        if written_for is not None and self.cluster_id is not None and written_for != self.cluster_id:
            # Only resent writes lead here (a new cluster's blocks follow them): the log has no commit point yet.
            log.warning("%s[%d]: the last block was written for cluster %s, not this one (%s): it was resent "
                        "to a broker that lost its data; no commit point", self.topic, partition, written_for,
                        self.cluster_id)
            return None
        return wire.decode_block(last.value)

    async def _last_record(self, tp: TopicPartition, end: int) -> Any:
        """The last record of `tp` from the position sought; None if the broker lists records it does not serve."""
        assert self.consumer is not None
        last = None
        # The first fetch can take longer than one poll on a loaded machine: keep asking for a while.
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            batch = await self.consumer.getmany(tp, timeout_ms=1000)
            messages = batch.get(tp, [])
            if messages:
                last = messages[-1]
                # The fetch's high watermark is the real end (ListOffsets may be short): no need to wait
                # for an empty poll to know this is the last block.
                highwater = self.consumer.highwater(tp)
                if highwater is not None and last.offset + 1 >= highwater:
                    return last
            elif last is not None:
                return last
            elif asyncio.get_running_loop().time() > deadline:
                raise LedgerError(f"{tp.topic}[{tp.partition}] reports {end} records but none could be read in 30 s")
            elif self.consumer.highwater(tp) == 0:
                # After an in-memory broker restarted, writes resent to it can be listed but not served.
                log.warning("%s[%d]: the broker lists %d records but serves none: no commit point", tp.topic,
                            tp.partition, end)
                return None

    async def close(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None


class _Dispatcher:
    """The transport's batch handler: each partition's records to the sequencer of its topic."""

    def __init__(self, sequencers: dict[str, LedgerSequencer], highwater: Callable[[Any], int | None]) -> None:
        self.sequencers = sequencers
        self.topics = frozenset(sequencers)
        self.highwater = highwater  # a partition's end offset, from the consumer's last fetch of it

    async def handle_poll(self, polled: Mapping[Any, Sequence[Any]], generation: int) -> None:
        for tp, records in polled.items():
            if records:
                end = self.highwater(tp)
                caught_up = end is not None and records[-1].offset + 1 >= end
                await self.sequencers[tp.topic].handle_partition(tp.partition, records, generation, caught_up)

    def on_fatal(self, exc: BaseException) -> None:
        fatal.crash("the ledger batch path", exc)


def build_app(settings: Settings, cluster_id: str | None = None, vouched: Mapping[str, int] | None = None) -> faust.App:
    """The worker app: the ledger's batch path on the sequenced topics, its timers and rebalance hooks.

    `cluster_id`: the Kafka cluster it starts against; its ledger records say so, and a new cluster
    (a broker that lost its data) stops it. `vouched`: block heights per log of the store's latest
    checkpoint (`latest_checkpoint_heights`), which the worker never writes again.
    """
    topics = settings.topics
    w = settings.worker
    session = session_timeout(w.session_timeout, cluster_id)
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
        broker_session_timeout=session,
        broker_heartbeat_interval=min(1.0, session / 3),
        broker_request_timeout=max(40.0, session),
        consumer_group_instance_id=w.instance_id,
        broker_max_poll_records=w.batch_size,
        consumer_max_fetch_size=8 * 1024 * 1024,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger=0.005,
        producer_max_request_size=4 * 1024 * 1024,
        broker_commit_interval=1.0,
        stream_wait_empty=False,
        TableManager=transport.TableManager,
    )
    reader = _BlockReader(settings.kafka, topics.name(topics.blocks), cluster_id)
    publisher = _FaustPublisher(app)
    committer = OffsetCommitter(lambda offsets: transport.commit(app, offsets), w.commit_interval)
    commit_points = CommitPoints(settings.data_dir / "worker" / "commit-points")
    commit_points.vouch(dict(vouched or {}))
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
            committer=committer,
            load_block=reader,
            max_events=settings.ledger.max_events,
            max_age=settings.ledger.max_age,
            caught_up_age=settings.ledger.caught_up_age,
            bundle_size=settings.ledger.bundle_size,
            accept=accept,
            ledger_partition_base=topics.ledger_partition(topic, 0),
            # A failed publish leaves the in-memory log ahead of its commit point: only a restart is exact.
            on_fatal=lambda: fatal.crash("publishing a block"),
            current_generation=lambda: transport.generation(app),
            commit_points=commit_points,
            cluster_id=cluster_id,
        )
    app.sequencer = sequencers[topics.name(topics.events)]  # type: ignore[attr-defined]
    app.sequencers = sequencers  # type: ignore[attr-defined]
    transport.attach(app, _Dispatcher(sequencers, lambda tp: app.consumer.highwater(tp)), fetch_wait=w.fetch_wait)

    async def seal_forever() -> None:
        async for _ in app.itertimer(min(settings.ledger.max_age / 4, settings.ledger.caught_up_age / 2, 0.5),
                                     name="seal_due"):
            for sequencer in sequencers.values():
                await sequencer.seal_due()

    async def seal_due() -> None:
        await fatal.guarded("the seal timer", seal_forever)

    async def commit_forever() -> None:
        while True:
            await asyncio.sleep(committer.interval)
            await committer.flush()
            commit_points.save()

    async def commit_offsets() -> None:
        await fatal.guarded("the offset committer", commit_forever)

    probe = ClusterProbe(settings.kafka)

    async def watch_broker() -> None:
        # The in-memory state (offset gates, trees) describes the cluster it was loaded from; on a
        # new one the offsets start again at 0 and would read as replays. Only a restart is exact.
        first = cluster_id
        while True:
            found = await asyncio.to_thread(probe.cluster_id)
            if found and first is None:
                first = found
            elif found and found != first:
                commit_points.save()
                raise BrokerError(f"the broker at {settings.kafka} is a new cluster ({found}, was {first}): it "
                                  "lost its data (an in-memory broker restarted?); a restarted worker continues "
                                  "each log whose commit point was lost in a new epoch")
            await asyncio.sleep(2.0)

    async def broker_watch() -> None:
        await fatal.guarded("the broker watch", watch_broker)

    transport.start_with(app, seal_due, commit_offsets, broker_watch)

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
            for p in mine:
                committer.forget(name, p)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        for name, sequencer in sequencers.items():
            sequencer.assign(tp.partition for tp in assigned if tp.topic == name)

    @app.on_before_shutdown.connect
    async def on_shutdown(sender: Any, **kwargs: Any) -> None:
        await reader.close()

    return app


def _cluster_id(settings: Settings) -> str:
    probe = ClusterProbe(settings.kafka)
    try:
        for _ in range(20):
            found = probe.cluster_id()
            if found:
                return found
            time.sleep(0.5)
    finally:
        probe.close()
    raise BrokerError(f"the broker at {settings.kafka} does not say which cluster it is")


def latest_checkpoint_heights(settings: Settings, timeout: float = 5.0) -> dict[str, int]:
    """Block height per log in the newest checkpoint on `ledger.checkpoints` ({} if there is none).

    The store signs every checkpoint over the blocks it recorded and publishes its latest
    again at each start, so after a broker lost its data this is what the store holds:
    logs a worker with an empty data folder must continue in a new epoch, not restart.
    """
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KafkaPartition
    from kafka.errors import KafkaError

    topic = settings.topics.name(settings.topics.checkpoints)
    try:
        consumer = KafkaConsumer(bootstrap_servers=settings.kafka, group_id=None, enable_auto_commit=False,
                                 client_id="provenance-checkpoint-reader", consumer_timeout_ms=int(timeout * 1000))
    except (KafkaError, OSError) as exc:
        raise BrokerError(f"cannot reach Kafka at {settings.kafka}: {exc}") from None
    newest: dict[str, Any] | None = None
    try:
        parts = [KafkaPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        ends = consumer.end_offsets(parts) if parts else {}
        for tp, end in ends.items():
            if end:
                consumer.assign([tp])
                consumer.seek(tp, max(0, end - 5))  # a multi-record batch may report its end short
                for record in consumer.poll(timeout_ms=int(timeout * 1000), max_records=1000).get(tp, []):
                    row = _checkpoint_row(record.value)
                    if row is not None and (newest is None or row["sequence"] > newest["sequence"]):
                        newest = row
    finally:
        consumer.close()
    if newest is None:
        return {}
    return {str(log_id): int(head["height"]) for log_id, head in newest["logs"].items()}


def _checkpoint_row(value: bytes) -> dict[str, Any] | None:
    try:
        row = json.loads(value)
        if isinstance(row.get("sequence"), int) and all(isinstance(h["height"], int) for h in row["logs"].values()):
            return dict(row)
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    log.warning("ignoring a malformed message on ledger.checkpoints")
    return None


def _accept_functions(settings: Settings) -> dict[str, AcceptRecord]:
    """Each sequenced topic (unprefixed) with the function turning its records into leaves."""
    topics = settings.topics
    return {topics.events: functools.partial(accept_shipment, limits=settings.limits.record()),
            topics.epcis: _accept_epcis}


def _accept_epcis(raw: bytes) -> Sequence[tuple[Any, bytes]]:
    """`accept_epcis_record`, imported at the first EPCIS record: its parsing, hashing and views cost
    about 25 ms of CPU to import, on the path of every restart of a worker that may never see one."""
    from pipeline.core.epcis.record import accept_epcis_record

    return accept_epcis_record(raw)


def run_worker(settings: Settings, loglevel: str = "warning") -> None:
    """Run the worker until SIGINT/SIGTERM."""
    check_ledger_partitions(settings)
    cluster_id = _cluster_id(settings)
    exit_when_lost(cluster_id, "the worker")
    app = build_app(settings, cluster_id, latest_checkpoint_heights(settings))
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
