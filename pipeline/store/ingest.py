"""Consumes the result topics into DuckDB, exactly once per row.

The store assigns itself every partition (no consumer group) and keeps its
own offsets in DuckDB, in the same transaction as the rows they produced. A
restart resumes from there; anything replayed is dropped by leaf index or
primary key, so the tables never change on replay.

An entry is recorded once a block vouches for it: entries reach ledger.entries
before their block reaches ledger.blocks, so they wait in memory (a block's
worth per log) and the entries offset stored is that of the first one waiting.
So `events` never holds a leaf without a block, even when the block was lost.

Those offsets belong to one Kafka cluster. A broker that comes back as a new
cluster (the embedded broker keeps topics in memory: a restart empties them)
holds none of what they point at, and reading on from them would skip what is
written to the new topics until they grow past the old positions. So the store
notes the cluster id beside its offsets; on a new one it drops them, reads
every topic again from its start, and reports degraded until a block arrives
(the workers continue each log in a new epoch: `pipeline.core.log_ids`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from pipeline import metrics
from pipeline.broker import ClusterProbe
from pipeline.core import wire
from pipeline.errors import BrokerError, InvalidChallenge
from pipeline.settings import Settings
from pipeline.store.db import Database, IngestBatch, IngestResult
from pipeline.store.waiting import Waiting, release, runs

log = logging.getLogger(__name__)


@dataclass
class IngestStats(IngestResult):
    """Totals since the store started."""

    polls: int = 0
    replayed: int = 0
    malformed: int = 0
    stale: int = 0  # ledger records written for another cluster (resent to a broker that lost its data)
    lag: dict[str, int] = field(default_factory=dict)


_FORECAST_FIELDS = ("series_key", "ds", "yhat", "yhat_lower", "yhat_upper", "yhat_lower_95", "yhat_upper_95",
                    "trained_at", "model", "input_ledger")


def _rows(value: bytes, required: tuple[str, ...]) -> list[dict[str, Any]]:
    """An analytics message: one JSON row or a list of them, each with every `required` field."""
    body = json.loads(value)
    rows = body if isinstance(body, list) else [body]
    for r in rows:
        missing = [f for f in required if f not in r]
        if missing:
            raise KeyError(f"row without {', '.join(missing)}")
    return rows


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
        self.demand_topic = t.name(t.demand)
        self.forecasts_topic = t.name(t.forecasts)
        self.topics = [self.entries_topic, self.blocks_topic, self.dead_topic, self.checkpoints_topic,
                       self.cosignatures_topic, self.anomalies_topic, self.demand_topic, self.forecasts_topic]
        self.ledger_topics = frozenset({self.entries_topic, self.blocks_topic, self.dead_topic})
        self.consumer: AIOKafkaConsumer | None = None
        self.stats = IngestStats()
        self.next_leaf: dict[str, int] = {}
        self.sealed: dict[str, int] = {}  # per log, the tree size of its highest block seen
        self.unsealed: dict[str, list[Waiting]] = {}  # per log, the entries no block covers yet
        self.committed: dict[tuple[str, int], int] = {}
        self.listeners: list[Any] = []  # callables(batch) run after each committed batch
        self.preprocessors: list[Any] = []  # callables(batch) run before a batch is written
        self.produced: list[float] = []  # produced times of the entries bundles in the current poll
        self._stopping = asyncio.Event()
        self.probe = ClusterProbe(settings.kafka)
        self.cluster: str | None = None  # the cluster id the offsets in `committed` belong to
        self.new_cluster: str | None = None  # seen by `check_cluster`, switched to by `run`
        self.reset: dict[str, Any] | None = None  # the last switch to a new cluster, for /health

    async def _cluster_id(self, attempts: int = 20) -> str:
        for _ in range(attempts):
            found = await asyncio.to_thread(self.probe.cluster_id)
            if found:
                return found
            await asyncio.sleep(0.5)
        raise BrokerError(f"the broker at {self.settings.kafka} does not say which cluster it is")

    async def check_cluster(self) -> None:
        """Ask the broker which cluster it is now; a new one is switched to by the ingest loop."""
        found = await asyncio.to_thread(self.probe.cluster_id)
        if found and self.cluster is not None and found != self.cluster and found != self.new_cluster:
            self.new_cluster = found
            self._log_new_cluster(found, self.cluster, ", events not yet in DuckDB are")

    def _log_new_cluster(self, found: str, was: str | None, lost: str = "") -> None:
        log.critical("the broker at %s is a new cluster (%s, was %s): it lost its data (an in-memory broker "
                     "restarted?). Nothing recorded is lost%s; reading every topic again from its start.",
                     self.settings.kafka, found, was, lost)

    async def _switch_cluster(self, cluster: str) -> dict[tuple[str, int], int]:
        """Drop the offsets of the old cluster (durably) and read every partition from its start."""
        old, dropped = self.cluster, await asyncio.to_thread(self.db.switch_broker_cluster, cluster)
        self.cluster, self.new_cluster, self.committed = cluster, None, {}
        for log_id, pending in self.unsealed.items():  # their block went with the old cluster
            log.error("%s: %d entries (leaves %d..) were never sealed: lost with the broker", log_id,
                      sum(len(w.entries) for w in pending), pending[0].entries[0]["leaf_index"])
            self.next_leaf[log_id] = self.sealed.get(log_id, 0)
        self.unsealed = {}
        if self.consumer is not None:
            for tp in self.consumer.assignment():
                await self.consumer.seek_to_beginning(tp)
        if old is not None:
            self.reset = {"from": old, "to": cluster, "at": datetime.now(timezone.utc).isoformat(),
                          "offsets_dropped": sum(dropped.values()), "blocks_before": self.stats.blocks}
        return dropped

    def degraded(self) -> str | None:
        """Why /health is degraded by a lost broker: until a block arrives from the new cluster."""
        r = self.reset
        if self.new_cluster is not None:
            return f"broker: a new cluster {self.new_cluster} (was {self.cluster}): the broker lost its data"
        if r is not None and self.stats.blocks == r["blocks_before"]:
            return (f"broker: a new cluster since {r['at']} (the broker lost its data); no block from it yet: "
                    "the workers have not resumed")
        return None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", client_id="provenance-store",
            max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
            fetch_max_wait_ms=int(self.settings.store.fetch_wait * 1000),
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
        self.consumer = consumer
        cluster = await self._cluster_id()
        known = await asyncio.to_thread(self.db.broker_cluster)
        if cluster != known:
            if known is not None:
                self._log_new_cluster(cluster, known)
            self.cluster = known
            await self._switch_cluster(cluster)
        self.cluster = cluster
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
        self.sealed = await asyncio.to_thread(self.db.sealed_sizes)

    async def stop(self) -> None:
        self._stopping.set()
        self.probe.close()
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
            if self.new_cluster is not None:
                # What was gathered came from either cluster at old positions: read again from the start.
                if writing is not None and written is not None:
                    self._written(written, await writing)
                writing = written = None
                gathered, count = {}, 0
                await self._switch_cluster(self.new_cluster)
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
        self._release(batch)
        return batch

    def _release(self, batch: IngestBatch) -> None:
        """Entries a block now covers join the batch; the entries offsets stop at the first still waiting."""
        for header in batch.blocks:
            self.sealed[header.log_id] = max(self.sealed.get(header.log_id, 0), header.tree_size)
        waiting: dict[int, int] = {}
        for log_id, pending in list(self.unsealed.items()):
            release(pending, self.sealed.get(log_id, 0), batch.entries, self.produced)
            if pending:
                w = pending[0]
                waiting[w.partition] = min(waiting.get(w.partition, w.offset), w.offset)
            else:
                del self.unsealed[log_id]
        for p, offset in waiting.items():
            batch.offsets[(self.entries_topic, p)] = offset

    def _decode_one(self, topic: str, msg: Any, batch: IngestBatch) -> None:
        if topic in self.ledger_topics:
            written_for = wire.written_for(msg.headers)
            if written_for is not None and written_for != self.cluster:
                if not self.stats.stale:
                    log.warning("%s[%d]@%d was written for cluster %s, not %s: resent to a broker that lost its "
                                "data, so part of no log here; skipped (and any more such)", topic, msg.partition,
                                msg.offset, written_for, self.cluster)
                self.stats.stale += 1
                return
        if topic == self.entries_topic:
            self._decode_entries(msg)
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
        elif topic == self.demand_topic:
            batch.demand += _rows(msg.value, ("series_key", "ds", "y"))
        elif topic == self.forecasts_topic:
            batch.forecasts += _rows(msg.value, _FORECAST_FIELDS)

    def _decode_entries(self, msg: Any) -> None:
        """Keep a bundle's new leaves until their block arrives; replayed leaves (below the next one) are dropped."""
        produced = metrics.produced_at(msg.headers)
        for log_id, run in runs(wire.decode_entries(msg.value)):
            expected = self.next_leaf.get(log_id, 0)
            index = run[0]["leaf_index"]
            if index < expected:
                seen = min(len(run), expected - index)
                self.stats.replayed += seen
                run = run[seen:]
                if not run:
                    continue
                index = expected
            if index > expected:
                log.error("%s: leaf %d arrived, expected %d (a gap in ledger.entries)", log_id, index, expected)
            self.next_leaf[log_id] = index + len(run)
            self.unsealed.setdefault(log_id, []).append(Waiting(msg.partition, msg.offset, produced, run))
            produced = None  # observed once per bundle, when its first entry is recorded

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
