"""Produce → queryable latency of each event, cut into the stages it waited in (for bench/ingest.py).

Every time is read from one clock (one machine), from what the pipeline leaves behind:

- produced: the source record's Kafka timestamp (the producer stamps it at `send`);
- fetchable: when a consumer process of the bench's own first fetched it (bench/arrivals.py);
- cut: the block's `created_at` (the worker stamps it when it seals the block);
- sent: the Kafka timestamp of the block's `ledger.blocks` record (the worker sends a
  block once its entries and the block before it are confirmed);
- written: the event's `recorded_at` (the store stamps it as its write transaction begins);
- queryable: when `SELECT count(*) FROM events` first counted the event's transaction
  (`CommitWatch`, every 50 ms: an upper bound, at most one interval late).

So an event's latency is the sum of: waiting for the later records of its block, the last
record of its block reaching the broker (the producer's batching), the worker fetching it
until the cut (fetch, poll, validation),
cut → sent, sent → written (the broker's confirmation, the store's poll and any write ahead
of it), and the write itself.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

STAGES = ("rest of its block produced", "last record → fetchable", "fetchable → block cut", "cut → block sent",
          "block sent → store write begins", "store write → queryable")


class CommitWatch:
    """Samples the store's `events` count (from a thread): when each write transaction became queryable."""

    def __init__(self, url: str, interval: float = 0.05) -> None:
        self.url, self.interval = url, interval
        self.samples: list[tuple[float, int]] = []  # (time the answer arrived, rows counted)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CommitWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _count(self) -> int:
        body = json.dumps({"query": "SELECT count(*) FROM events"}).encode()
        req = urllib.request.Request(f"{self.url}/sql", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(json.loads(r.read())["rows"][0][0])

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                count = self._count()
            except OSError:
                continue
            if not self.samples or count != self.samples[-1][1]:
                self.samples.append((time.time(), count))

    def queryable_at(self, rows_through: int) -> float | None:
        """When at least `rows_through` rows were first counted."""
        counts = [c for _, c in self.samples]
        i = bisect.bisect_left(counts, rows_through)
        return self.samples[i][0] if i < len(self.samples) else None


def measure(db_path: Path, produced: dict[str, tuple[int, int, int]], block_sent: dict[tuple[str, int], int],
            watch: CommitWatch, ids: set[str], fetchable: dict[tuple[int, int], float]) -> dict[str, list[float]]:
    """Per stage (and "total"), the seconds each event of `ids` spent in it.

    `produced`: event_id → (Kafka timestamp ms, partition, offset) of its source record;
    `block_sent`: (log_id, height) → Kafka timestamp (ms) of the block's `ledger.blocks` record;
    `fetchable`: (partition, offset) → when a consumer of its own first fetched the source record
    (bench/arrivals.py: the producer's batching and the broker's append, apart from the worker).
    """
    import duckdb

    con = duckdb.connect(str(db_path), read_only=True)
    try:
        rows = con.execute(
            "SELECT e.event_id, epoch_ms(e.recorded_at), e.kafka_partition, b.log_id, b.height, b.last_offset,"
            " epoch_ms(b.created_at::TIMESTAMPTZ) FROM events e JOIN blocks b ON e.log_id = b.log_id"
            " AND e.kafka_offset BETWEEN b.first_offset AND b.last_offset").fetchall()
        stamps = con.execute("SELECT epoch_ms(recorded_at), count(*) FROM events GROUP BY 1 ORDER BY 1").fetchall()
    finally:
        con.close()
    through: dict[int, int] = {}  # a transaction's stamp → rows committed up to and including it
    total = 0
    for stamp, n in stamps:
        total += n
        through[stamp] = total
    by_offset = {(p, o): ts for ts, p, o in produced.values()}
    out: dict[str, list[float]] = {s: [] for s in (*STAGES, "total")}
    for event_id, written, partition, log_id, height, last_offset, cut in rows:
        if event_id not in ids or event_id not in produced:
            continue
        sent = block_sent.get((log_id, height))
        last = by_offset.get((partition, last_offset))
        arrived = fetchable.get((partition, last_offset))
        seen = watch.queryable_at(through[written])
        if sent is None or last is None or seen is None or arrived is None:
            continue
        start = produced[event_id][0]
        marks = (start, last, arrived * 1000, cut, sent, written, seen * 1000)
        for stage, a, b in zip(STAGES, marks, marks[1:]):
            out[stage].append((b - a) / 1000)
        out["total"].append(seen - start / 1000)
    return out


def report(parts: dict[str, list[float]]) -> list[str]:
    """One line per stage: mean (the means add up to the total's), p50, p99."""
    def q(values: list[float], f: float) -> float:
        return values[min(len(values) - 1, int(f * len(values)))]

    lines = []
    for stage, values in parts.items():
        if values:
            v = sorted(values)
            lines.append(f"  {stage:34s} mean {sum(v) / len(v):6.3f} s, p50 {q(v, 0.5):6.3f} s, p99 {q(v, 0.99):6.3f} s")
    return lines


async def _read_topic(bootstrap: str, topic: str, each: Callable[[Any], None]) -> None:
    """Call `each` on every record of `topic`, from the beginning until three empty polls."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or [])]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        idle = 0
        while idle < 3:
            batch = await c.getmany(timeout_ms=500, max_records=20000)
            idle = 0 if batch else idle + 1
            for msgs in batch.values():
                for m in msgs:
                    each(m)
    finally:
        await c.stop()


async def block_times(bootstrap: str, topic: str) -> dict[tuple[str, int], int]:
    """(log_id, height) → Kafka timestamp (ms) of every record of `ledger.blocks`."""
    from pipeline.core import wire

    out: dict[tuple[str, int], int] = {}

    def each(m: Any) -> None:
        header: Any = wire.decode_block(m.value).header
        out.setdefault((header.log_id, header.height), m.timestamp)

    await _read_topic(bootstrap, topic, each)
    return out


async def produce_times(settings: Any) -> dict[str, tuple[int, int, int]]:
    """event_id → (Kafka timestamp ms, partition, offset) of every record of the events topic."""
    out: dict[str, tuple[int, int, int]] = {}

    def each(m: Any) -> None:
        out[orjson.loads(m.value)["event_id"]] = (m.timestamp, m.partition, m.offset)

    await _read_topic(settings.kafka, settings.topics.name(settings.topics.events), each)
    return out
