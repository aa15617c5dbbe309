"""End-to-end ingest throughput against raw aiokafka consume, on the same embedded broker.

    python bench/ingest.py [--events 100000] [--partitions 4]

1. Pre-loads N simulated events into `shipment-events` (kafka-python producer).
2. Peer: a bare aiokafka consumer reads the same N records (no processing).
3. Ours: workers (one consumer group) and the store as real processes drain that backlog; the rate is
   measured from the first row in DuckDB to the last (process start-up is
   reported apart), i.e. produced → validated → sealed → published → in DuckDB.
Prints both rates and their ratio. Figures, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from pipeline.broker import EmbeddedBroker, free_port
from pipeline.core.simulator import Fleet
from pipeline.procs import spawn, stop
from pipeline.producer import produce_records
from pipeline.settings import Settings


def preload(settings: Settings, n: int) -> float:
    fleet = Fleet(3, datetime(2026, 1, 5, tzinfo=timezone.utc))
    records = ((r.key, r.value) for r, _ in zip(fleet.records(), range(n)))
    t = time.perf_counter()
    report = produce_records(settings, records, rate=None, count=n, progress=False)
    assert report.sent == n, report
    return n / (time.perf_counter() - t)


async def raw_consume(settings: Settings, n: int) -> float:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topic = settings.topics.name(settings.topics.events)
    c = AIOKafkaConsumer(bootstrap_servers=settings.kafka, group_id=None, enable_auto_commit=False,
                         max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or [])]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        seen = 0
        t = time.perf_counter()
        while seen < n:
            batch = await c.getmany(timeout_ms=1000, max_records=10000)
            seen += sum(len(v) for v in batch.values())
        return n / (time.perf_counter() - t)
    finally:
        await c.stop()


def faust_noop(settings: Settings, n: int, workdir: Path) -> float:
    """The same records through a faust worker that does nothing but ack: the framework's ceiling."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVENANCE_")}
    env["PROVENANCE_KAFKA"] = settings.kafka
    out = workdir / "faust-noop.result"
    proc = spawn([sys.executable, str(Path(__file__).with_name("faust_noop.py")),
                  settings.topics.name(settings.topics.events), "bench-faust-noop", str(n), str(out)], env,
                 workdir / "faust-noop.log")
    try:
        deadline = time.perf_counter() + 600
        while time.perf_counter() < deadline:
            time.sleep(0.5)
            for line in (out.read_text().splitlines() if out.exists() else []):
                if "done " in line:
                    count, seconds = line[line.index("done "):].split()[1:3]
                    return int(count) / float(seconds)
        raise SystemExit(f"the faust no-op worker did not finish; see {out}")
    finally:
        stop(proc, signal.SIGTERM, 20)


def rows(url: str) -> int:
    with urllib.request.urlopen(f"{url}/health", timeout=10) as r:
        t = json.loads(r.read())["tables"]
    return int(t["events"] + t["dead_letters"])


def pipeline_rate(settings: Settings, n: int, workdir: Path, workers: int) -> tuple[float, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVENANCE_")}
    env.update(PROVENANCE_KAFKA=settings.kafka, PROVENANCE_DATA_DIR=str(workdir),
               PROVENANCE_STORE__PORT=str(settings.store.port))
    cli = [sys.executable, "-m", "pipeline.cli"]
    t0 = time.perf_counter()
    worker_procs = [spawn([*cli, "worker"], env, workdir / f"worker-{i}.log") for i in range(workers)]
    store = spawn([*cli, "serve"], env, workdir / "store.log")
    url = f"http://127.0.0.1:{settings.store.port}"
    try:
        first = None
        first_rows = 0
        while True:
            time.sleep(0.2)
            try:
                count = rows(url)
            except OSError:
                continue
            now = time.perf_counter()
            if first is None and count > 0:
                first, first_rows = now, count
            if count >= n:
                assert first is not None
                return (count - first_rows) / max(now - first, 1e-9), first - t0
            if now - t0 > 600:
                raise SystemExit(f"pipeline stalled at {count} of {n}; see {workdir}")
    finally:
        for w in worker_procs:
            stop(w, signal.SIGTERM, 20)
        stop(store, signal.SIGTERM, 20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2, help="worker processes in the consumer group")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Settings(topics={"partitions": args.partitions})
        with EmbeddedBroker(base) as broker:
            settings = base.with_overrides(kafka=broker.bootstrap, store__port=free_port())
            produced = preload(settings, args.events)
            raw = asyncio.run(raw_consume(settings, args.events))
            noop = faust_noop(settings, args.events, Path(tmp))
            ours, startup = pipeline_rate(settings, args.events, Path(tmp), args.workers)
    print(f"events:                       {args.events:,} on {args.partitions} partitions, {args.workers} worker(s)")
    print(f"producer (kafka-python):      {produced:,.0f} events/s")
    print(f"raw aiokafka consume (peer):  {raw:,.0f} records/s")
    print(f"faust no-op agent (1 worker): {noop:,.0f} records/s  (framework ceiling, nothing done per record)")
    print(f"end to end, into DuckDB:      {ours:,.0f} events/s  (start-up {startup:.1f} s not counted)")
    print(f"ratio ours / raw consume:     {ours / raw:.3f}")
    print(f"ratio ours / faust no-op:     {ours / noop:.3f}")


if __name__ == "__main__":
    main()
