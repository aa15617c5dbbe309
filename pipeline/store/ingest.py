"""Consumes the result topics into DuckDB, exactly once per row.

The store assigns itself every partition (no consumer group) and keeps its
own offsets in DuckDB, in the same transaction as the rows they produced. A
restart resumes from there; anything replayed is dropped by leaf index or
primary key, so the tables never change on replay.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from pipeline import metrics
from pipeline.core import wire
from pipeline.errors import BrokerError, InvalidChallenge
from pipeline.settings import Settings
from pipeline.store.db import Database, IngestBatch, IngestResult

log = logging.getLogger(__name__)


@dataclass
class IngestStats(IngestResult):
    """Totals since the store started."""

    polls: int = 0
    replayed: int = 0
    malformed: int = 0
    lag: dict[str, int] = field(default_factory=dict)


class Ingestor:
    """Polls ledger.entries, ledger.blocks, events.dead-letter and ledger.checkpoints into the database."""

    def __init__(self, settings: Settings, db: Database) -> None:
        t = settings.topics
        self.settings = settings
        self.db = db
        self.entries_topic = t.name(t.entries)
        self.blocks_topic = t.name(t.blocks)
        self.dead_topic = t.name(t.dead_letter)
        self.checkpoints_topic = t.name(t.checkpoints)
        self.cosignatures_topic = t.name(t.cosignatures)
        self.anomalies_topic = t.name(t.anomalies)
        self.topics = [self.entries_topic, self.blocks_topic, self.dead_topic, self.checkpoints_topic,
                       self.cosignatures_topic, self.anomalies_topic]
        self.consumer: AIOKafkaConsumer | None = None
        self.stats = IngestStats()
        self.next_leaf: dict[str, int] = {}
        self.committed: dict[tuple[str, int], int] = {}
        self.listeners: list[Any] = []  # callables(batch) run after each committed batch
        self.preprocessors: list[Any] = []  # callables(batch) run before a batch is written
        self.produced: list[float] = []  # produced times of the entries bundles in the current poll
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", client_id="provenance-store",
            max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
        )
        try:
            await consumer.start()
        except KafkaError as exc:
            await consumer.stop()
            raise BrokerError(f"store cannot reach Kafka at {self.settings.kafka}: {exc}") from None
        partitions: list[TopicPartition] = []
        for topic in self.topics:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                await consumer.stop()
                raise BrokerError(
                    f"topic {topic!r} does not exist on {self.settings.kafka}: "
                    "create the topics (`provenance broker` does) before starting the store"
                )
            partitions += [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(partitions)
        stored = await asyncio.to_thread(self.db.offsets)
        self.committed = dict(stored)
        for tp in partitions:
            offset = stored.get((tp.topic, tp.partition))
            if offset is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, offset)
        for (topic, p), offset in stored.items():
            metrics.STORE_POSITIONS.advance(topic, p, offset, None)
        self.next_leaf = await asyncio.to_thread(self.db.next_leaf_indices)
        self.consumer = consumer

    async def stop(self) -> None:
        self._stopping.set()
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None

    async def run(self) -> None:
        """Poll, decode, write; until stopped.

        DuckDB writes in a thread while the next polls gather: a batch holds
        whatever arrived during the previous write (up to `batch_rows` records),
        so batches grow with the load and each transaction's cost is shared by
        more rows, without waiting for a batch to fill when the load is light.
        """
        assert self.consumer is not None
        rows = self.settings.store.batch_rows
        timeout_ms = int(self.settings.store.flush_interval * 1000)
        writing: asyncio.Future[IngestResult] | None = None
        written: IngestBatch | None = None
        gathered: dict[TopicPartition, list[Any]] = {}
        count = 0
        while not self._stopping.is_set():
            try:
                polled = await self.consumer.getmany(timeout_ms=20 if writing else timeout_ms,
                                                     max_records=max(1, rows - count))
            except KafkaError as exc:
                log.warning("store poll failed, retrying: %s", exc)
                await asyncio.sleep(1)
                continue
            for tp, messages in polled.items():
                gathered.setdefault(tp, []).extend(messages)
                count += len(messages)
            if writing is not None:
                if not writing.done() and count < rows:
                    continue
                assert written is not None
                self._written(written, await writing)
                writing = written = None
            if not gathered:
                continue
            batch = self.decode(gathered)
            gathered, count = {}, 0
            for pre in self.preprocessors:
                pre(batch)
            writing, written = asyncio.ensure_future(asyncio.to_thread(self.db.ingest, batch)), batch
        if writing is not None and written is not None:
            self._written(written, await writing)

    def _written(self, batch: IngestBatch, result: IngestResult) -> None:
        """After a batch's transaction committed."""
        self.committed.update(batch.offsets)
        self.stats.polls += 1
        self.stats.add(result)
        metrics.store_committed(asdict(result), self.produced)
        if result.conflicts:
            log.error("FORK: %d block(s) conflict with recorded blocks at the same height", result.conflicts)
        for listener in self.listeners:
            listener(batch)

    def decode(self, polled: dict[TopicPartition, list[Any]]) -> IngestBatch:
        batch = IngestBatch()
        self.produced = []
        for tp, messages in polled.items():
            if not messages:
                continue
            last = messages[-1]
            metrics.store_poll(tp.topic, tp.partition, len(messages), last.offset + 1,
                               last.timestamp / 1000 if last.timestamp else None)
            for msg in messages:
                try:
                    self._decode_one(tp.topic, msg, batch)
                except (InvalidChallenge, ValueError, KeyError, TypeError) as exc:
                    self.stats.malformed += 1
                    log.error("skipping malformed record %s[%d]@%d: %s", tp.topic, tp.partition, msg.offset, exc)
            batch.offsets[(tp.topic, tp.partition)] = messages[-1].offset + 1
        return batch

    def _decode_one(self, topic: str, msg: Any, batch: IngestBatch) -> None:
        if topic == self.entries_topic:
            produced = metrics.produced_at(msg.headers)
            if produced is not None:
                self.produced.append(produced)
            for entry in wire.decode_entries(msg.value):
                log_id = entry["log_id"]
                expected = self.next_leaf.get(log_id, 0)
                index = entry["leaf_index"]
                if index < expected:
                    self.stats.replayed += 1
                    continue
                if index > expected:
                    log.error("%s: leaf %d arrived, expected %d (a gap in ledger.entries)", log_id, index, expected)
                self.next_leaf[log_id] = index + 1
                batch.entries.append(entry)
        elif topic == self.blocks_topic:
            batch.blocks.append(wire.decode_block(msg.value).header)
        elif topic == self.dead_topic:
            headers = wire.read_headers(msg.headers)
            batch.dead_letters.append({
                "source_topic": headers.get("source.topic", "?"),
                "source_partition": int(headers.get("source.partition", -1)),
                "source_offset": int(headers.get("source.offset", msg.offset)),
                "key": msg.key,
                "value": msg.value or b"",
                "error": headers.get("error", "unknown error"),
                "error_fields": headers.get("error.fields") or "[]",
            })
        elif topic == self.checkpoints_topic:
            batch.checkpoints.append(json.loads(msg.value))
        elif topic == self.cosignatures_topic:
            batch.cosignatures.append(json.loads(msg.value))
        elif topic == self.anomalies_topic:
            row = json.loads(msg.value)
            if not isinstance(row, dict) or not isinstance(row.get("revision"), int) or "anomaly_id" not in row:
                raise ValueError("an anomaly row needs anomaly_id and an integer revision")
            batch.anomalies.append(row)

    async def lag(self) -> dict[str, int]:
        """Records on the broker not yet in DuckDB, per topic."""
        consumer = self.consumer
        if consumer is None:
            return {}
        tps = list(consumer.assignment())
        ends = await consumer.end_offsets(tps)
        metrics.STORE_POSITIONS.known_ends = {(tp.topic, tp.partition): end for tp, end in ends.items()}
        out: dict[str, int] = {}
        for tp in tps:
            done = self.committed.get((tp.topic, tp.partition), 0)
            out[tp.topic] = out.get(tp.topic, 0) + max(0, ends[tp] - done)
        self.stats.lag = out
        return out
