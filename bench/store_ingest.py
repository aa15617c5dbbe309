"""Store ingest CPU per event on a real DuckDB file, against a raw DuckDB Arrow insert of the same rows.

    .venv/bin/python bench/store_ingest.py [--events 200000] [--bundles-per-batch 20] [--partitions 4]
                                           [--records FILE] [--store-only]

The ledger.entries and ledger.blocks records are made the way the worker makes
them (simulated events through `accept`, one `PartitionLog` per partition,
blocks of `--block-events`, `wire.encode_entries` / `encode_block`), then fed
to the store's own code as polled records, a batch at a time: the ingestor's
decode (entries wait for their block), the tile maintainer and
`Database.ingest` (one transaction per batch). No broker: the Kafka fetch is
left out on both sides.

The peer, in the same run, is the least DuckDB work for the same rows: decode
the same bundles with orjson, one Arrow table per batch, one `INSERT INTO
events SELECT ...` into the same table definition with the store's DuckDB
settings, commit. Both measure the
process's CPU time (DuckDB's threads included), per event and per 100 k events,
so growth with the table size shows. The store's transaction is also broken
down by DuckDB statement (CPU per event and per call): the profile of where
the DuckDB write goes. `--records FILE` keeps the made records in FILE (made
once, read by every later run with the same arguments), so old and new code
can be run back to back on the same rows. Figures, not a test: on a shared
machine quote the CPU per event and the load average.
"""

from __future__ import annotations

import argparse
import collections
import pickle
import tempfile
import time
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import orjson
import pyarrow as pa
from aiokafka import TopicPartition

from pipeline.core import wire
from pipeline.core.ledger import PartitionLog, accept
from pipeline.core.simulator import Fleet
from pipeline.errors import InvalidEvent
from pipeline.settings import Settings
from pipeline.store.db import WRITE_SETTINGS, Database
from pipeline.store.ingest import Ingestor
from pipeline.store.ledger import TileMaintainer


class Record(NamedTuple):
    """What the store reads of an aiokafka ConsumerRecord."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    timestamp: int


def ledger_records(settings: Settings, n: int, partitions: int, block_events: int) -> tuple[list[Record], int]:
    """ledger.entries and ledger.blocks records for about `n` valid events, in the order the worker sends them."""
    t = settings.topics
    source, entries_topic, blocks_topic = t.name(t.events), t.name(t.entries), t.name(t.blocks)
    logs = [PartitionLog(f"{source}/{p}") for p in range(partitions)]
    next_offset = [0] * partitions
    produced_ms = int(time.time() * 1000)
    headers = [("produced.ms", str(produced_ms).encode())]
    out: list[Record] = []
    positions: collections.Counter[tuple[str, int]] = collections.Counter()

    def send(topic: str, p: int, value: bytes) -> None:
        out.append(Record(topic, p, positions[(topic, p)], None, value, headers, produced_ms))
        positions[(topic, p)] += 1

    def seal(p: int) -> None:
        sealed = logs[p].seal(datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"))
        if sealed is not None:
            for value in wire.encode_entries(logs[p].log_id, sealed.entries, settings.ledger.bundle_size):
                send(entries_topic, p, value)
            send(blocks_topic, p, wire.encode_block(sealed))

    events = 0
    for i, record in enumerate(Fleet(3, datetime(2026, 1, 5, tzinfo=timezone.utc)).records()):
        if events >= n:
            break
        p = i % partitions
        offset = next_offset[p]
        next_offset[p] += 1
        try:
            event, payload = accept(record.value)
        except InvalidEvent:
            continue  # a dead letter: its offset never reaches the log
        logs[p].admit(offset)
        logs[p].append(offset, event, payload)
        events += 1
        if len(logs[p].pending) >= block_events:
            seal(p)
    for p in range(partitions):
        seal(p)
    return out, events


def cached_records(path: Path | None, settings: Settings, args: argparse.Namespace) -> tuple[list[Record], int]:
    """`ledger_records` for the arguments, read from `path` when it holds them (written there otherwise)."""
    key = (args.events, args.partitions, args.block_events, settings.ledger.bundle_size)
    if path is not None and path.exists():
        saved_key, rows, events = pickle.loads(path.read_bytes())
        if saved_key == key:
            return [Record(*r) for r in rows], events
    records, events = ledger_records(settings, args.events, args.partitions, args.block_events)
    if path is not None:
        path.write_bytes(pickle.dumps((key, [tuple(r) for r in records], events)))
    return records, events


class Statements:
    """CPU per DuckDB statement kind (its first words) of the cursors `Database` hands out."""

    def __init__(self) -> None:
        self.cpu: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()

    def wrap(self, db: Database) -> None:
        cursor, meter = db.cursor, self

        class Timed:
            def __init__(self) -> None:
                self.cur = cursor()

            def __getattr__(self, name: str) -> Any:
                return getattr(self.cur, name)

            def execute(self, sql: str, *args: Any) -> Any:
                t = time.process_time()
                try:
                    return self.cur.execute(sql, *args)
                finally:
                    kind = " ".join(sql.split("(")[0].split()[:5])
                    meter.cpu[kind] += time.process_time() - t
                    meter.calls[kind] += 1

            def register(self, name: str, table: Any) -> Any:
                t = time.process_time()
                try:
                    return self.cur.register(name, table)
                finally:
                    meter.cpu["(register an Arrow table)"] += time.process_time() - t
                    meter.calls["(register an Arrow table)"] += 1

        db.cursor = Timed  # type: ignore[method-assign,assignment]

    def report(self, events: int) -> None:
        for kind, seconds in self.cpu.most_common():
            print(f"    {seconds / events * 1e6:5.2f} µs/event, {seconds / self.calls[kind] * 1e3:5.2f} ms/call"
                  f" x {self.calls[kind]}: {kind}")


def batches(records: list[Record], per_batch: int) -> list[dict[TopicPartition, list[Record]]]:
    """The records as polls: `per_batch` records each, grouped by partition as getmany returns them."""
    out = []
    for i in range(0, len(records), per_batch):
        polled: dict[TopicPartition, list[Record]] = {}
        for r in records[i:i + per_batch]:
            polled.setdefault(TopicPartition(r.topic, r.partition), []).append(r)
        out.append(polled)
    return out


class Meter:
    """Process CPU and wall time, in total and per segment of about 100 k events."""

    def __init__(self, name: str) -> None:
        self.name, self.events = name, 0
        self.segments: list[float] = []
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
        self.segment = (self.cpu0, 0)

    def add(self, events: int) -> None:
        self.events += events
        cpu, start = self.segment
        if self.events - start >= 100_000:
            self.segments.append((time.process_time() - cpu) / (self.events - start) * 1e6)
            self.segment = (time.process_time(), self.events)

    def report(self, stages: dict[str, float] | None = None) -> float:
        cpu, wall = time.process_time() - self.cpu0, time.perf_counter() - self.wall0
        per = cpu / self.events * 1e6
        print(f"{self.name}: {self.events} events, {per:.1f} µs CPU/event, {self.events / wall:,.0f} events/s"
              f" (wall {wall:.1f} s)")
        if self.segments:
            print("  CPU µs/event per 100 k events: " + " ".join(f"{s:.1f}" for s in self.segments))
        for stage, seconds in (stages or {}).items():
            print(f"  {stage}: {seconds / self.events * 1e6:.1f} µs/event")
        return per


def run_store(settings: Settings, polls: list[dict[TopicPartition, list[Record]]], path: Path) -> float:
    """The store's own code, a poll at a time: decode, tiles, one transaction."""
    db = Database(path)
    statements = Statements()
    statements.wrap(db)
    try:
        ingestor, tiles = Ingestor(settings, db), TileMaintainer(db)
        stages = dict.fromkeys(("decode (ingestor)", "tiles", "DuckDB write (Database.ingest)"), 0.0)
        names = list(stages)
        meter = Meter("store")
        for polled in polls:
            t0 = time.process_time()
            batch = ingestor.decode(polled)
            t1 = time.process_time()
            tiles(batch)
            t2 = time.process_time()
            result = db.ingest(batch)
            t3 = time.process_time()
            for name, seconds in zip(names, (t1 - t0, t2 - t1, t3 - t2)):
                stages[name] += seconds
            meter.add(result.events)
        per = meter.report(stages)
        statements.report(meter.events)
        counts = db.counts()
        print(f"  tables: {counts['events']} events, {counts['blocks']} blocks")
        return per
    finally:
        db.close()


def run_peer(settings: Settings, polls: list[dict[TopicPartition, list[Record]]], path: Path) -> float:
    """The same rows, decoded and inserted with nothing else: the floor for this table in DuckDB."""
    entries_topic = settings.topics.name(settings.topics.entries)
    con = duckdb.connect(str(path))
    try:
        schema = resources.files("pipeline.store").joinpath("schema.sql").read_text()
        con.execute(schema[:schema.index(");") + 2])  # the events table alone
        con.execute(WRITE_SETTINGS)  # the store's checkpoint settings: the difference is the store's own work
        meter = Meter("peer (orjson + one Arrow INSERT per batch)")
        now = datetime.now(timezone.utc)
        for polled in polls:
            rows: list[dict[str, Any]] = []
            for tp, records in polled.items():
                if tp.topic == entries_topic:
                    for r in records:
                        rows += orjson.loads(r.value)["entries"]
            if not rows:
                continue
            con.register("staged", pa.table({
                **{c: [e[c] for e in rows] for c in ("event_id", "shipment_id", "event_type", "event_time", "log_id",
                                                      "leaf_hash", "payload")},
                "leaf_index": pa.array([e["leaf_index"] for e in rows], pa.int64()),
                "kafka_offset": pa.array([e["kafka_offset"] for e in rows], pa.int64()),
            }))
            con.execute("BEGIN")
            con.execute("INSERT INTO events SELECT event_id, shipment_id, event_type, event_time::TIMESTAMPTZ, log_id,"
                        " leaf_index, leaf_hash, 0, kafka_offset, payload::JSON, $1 FROM staged", [now])
            con.execute("COMMIT")
            con.unregister("staged")
            meter.add(len(rows))
        return meter.report()
    finally:
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--block-events", type=int, default=500, help="events per block (the worker's max_events)")
    parser.add_argument("--bundles-per-batch", type=int, default=20,
                        help="records per store batch (20 bundles of 256 entries: ~5 k events)")
    parser.add_argument("--records", type=Path, help="keep the made records in this file, and read them from it")
    parser.add_argument("--store-only", action="store_true", help="leave the peer out")
    args = parser.parse_args()
    settings = Settings()
    t = time.perf_counter()
    records, events = cached_records(args.records, settings, args)
    size = sum(len(r.value) for r in records) / events
    print(f"duckdb {duckdb.__version__}; {events} events in {len(records)} records ({size:.0f} bytes/event),"
          f" made in {time.perf_counter() - t:.0f} s; {args.bundles_per_batch} records per batch;"
          f" load average {Path('/proc/loadavg').read_text().strip()}")
    polls = batches(records, args.bundles_per_batch)
    with tempfile.TemporaryDirectory(prefix="store-ingest-") as tmp:
        store = run_store(settings, polls, Path(tmp) / "store.duckdb")
        if not args.store_only:
            peer = run_peer(settings, polls, Path(tmp) / "peer.duckdb")
            print(f"store / peer CPU per event: {store / peer:.2f}x")
    print(f"load average: {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()
