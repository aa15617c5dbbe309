"""End-to-end ingest figures, each against a peer measured in the same run on the same embedded broker.

    python bench/ingest.py [--events 200000] [--partitions 4] [--latency-rate 10000] [--latency-seconds 20]
                           [--only drain|latency]
    python bench/ingest.py --long 10000000     # worker RSS over a long drain (minutes)

Prints, all from one run:
1. `provenance produce`'s own rate (kafka-python, the producer the CLI uses), pre-loading N events;
2. raw aiokafka consume of those N records (the peer: no processing at all);
3. a faust no-op agent on them (faust's own per-record ceiling);
4. the sustained drain rate, first row queryable → last row queryable in DuckDB, for 1 and
   for 2 workers (each on its own pre-loaded copy), with the CPU seconds each process spent
   per event (less sensitive to a shared machine than rates) and the worker's RSS;
5. the ratios between them, and the whole CPU budget per event: the producer and the broker
   taking the pre-load, the workers, the store and the broker serving the drain (the embedded
   broker's own process), against what 2 cores allow;
6. produce → queryable latency (p50/p99) at a steady rate: each record's Kafka timestamp
   against its row's `recorded_at` in DuckDB (stamped when the store's write transaction
   begins), and the same latency to the moment the transaction was seen committed, cut into
   the stages it waited in (bench/latency_parts.py);
7. after kill -9 of a worker under load, the time from its restart until new rows are queryable.
Figures, not a test. On a shared machine quote the ratios and the CPU per event.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from ingest_procs import Pipeline, child_env, cpu_seconds, health, own_cpu, prefixed, rows, rss_mib
from latency_parts import CommitWatch, block_times, measure, produce_times, report
from pipeline.broker import EmbeddedBroker
from pipeline.core.simulator import Fleet
from pipeline.procs import spawn, stop
from pipeline.produce_parallel import produce_parallel
from pipeline.producer import produce_records
from pipeline.settings import Settings

def records(seed: int, n: int | None) -> Any:
    fleet = Fleet(seed, datetime(2026, 1, 5, tzinfo=timezone.utc))
    it = ((r.key, r.value) for r in fleet.records())
    return it if n is None else (kv for kv, _ in zip(it, range(n)))


PRODUCE_PROCESSES = 2  # --produce-processes: the fastest producer pre-loads, so it is not what is measured


def preload(settings: Settings, n: int, seed: int = 3) -> tuple[float, float]:
    """Produce n events as fast as the producer goes: (msg/s, the producer's CPU seconds)."""
    batch = list(records(seed, n))  # generated first: the rate is the producer's, not the simulator's
    t, cpu = time.perf_counter(), own_cpu()
    report = produce_parallel(settings, batch, PRODUCE_PROCESSES, rate=None, count=n, progress=False)
    assert report.sent == n, report
    return n / (time.perf_counter() - t), own_cpu() - cpu


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
    out = workdir / "faust-noop.result"
    proc = spawn([sys.executable, str(Path(__file__).with_name("faust_noop.py")),
                  settings.topics.name(settings.topics.events), "bench-faust-noop", str(n), str(out)],
                 child_env(settings, workdir), workdir / "faust-noop.log")
    try:
        deadline = time.perf_counter() + 900
        while time.perf_counter() < deadline:
            time.sleep(0.5)
            for line in (out.read_text().splitlines() if out.exists() else []):
                if "done " in line:
                    count, seconds = line[line.index("done "):].split()[1:3]
                    return int(count) / float(seconds)
        raise SystemExit(f"the faust no-op worker did not finish; see {out}")
    finally:
        stop(proc, signal.SIGTERM, 20)


def drain_run(base: Settings, n: int, workdir: Path, workers: int, broker_pid: int) -> dict[str, Any]:
    """Pre-load n events, then drain them: rates, and the CPU seconds every process spent per event.

    `budget` counts the producer's CPU and the broker's while it took the pre-load, then the
    workers', the store's and the broker's from the first queryable row to the last (a start-up
    measured apart moved by seconds with the machine's load, more than a drain's whole CPU).
    """
    settings = prefixed(base, f"drain{workers}.")
    broker_cpu = cpu_seconds(broker_pid)
    produced, producer_cpu = preload(settings, n)
    budget = {"producer": producer_cpu / n, "broker taking the pre-load": (cpu_seconds(broker_pid) - broker_cpu) / n}
    p = Pipeline(settings, workdir / f"drain-{workers}", workers, broker_pid)
    p.start()
    try:
        rate, started, per_event = p.drain(n)
    finally:
        p.stop()
    budget.update({"broker serving the drain" if k == "broker" else k: v for k, v in per_event.items()})
    return {"produced": produced, "rate": rate, "startup": started, "cpu": per_event, "rss": p.rss,
            "settings": settings, "whole": p.whole, "budget": budget}


def latency_run(base: Settings, rate: float, seconds: float, workdir: Path, broker_pid: int) -> dict[str, Any]:
    """Steady production at `rate` into a running pipeline; then kill -9 the worker and time its restart."""
    import duckdb

    settings = prefixed(base, "latency.")
    p = Pipeline(settings, workdir / "latency", 1, broker_pid)
    p.start()
    out: dict[str, Any] = {}
    steady_ids: set[str] = set()
    try:
        # warm: the pipeline seals a first trickle before the measured load starts
        produce_records(settings, records(11, 2000), rate=2000, count=2000, progress=False)
        p.drain(2000, timeout=300)
        n = int(rate * seconds)
        steady = list(records(12, n))
        steady_ids = {orjson.loads(v)["event_id"] for _, v in steady}
        tap = workdir / "arrivals.txt"  # when each source record was first fetchable, from another process
        tail = spawn([sys.executable, str(Path(__file__).with_name("arrivals.py")), settings.kafka,
                      settings.topics.name(settings.topics.events), str(tap)])
        while not tap.with_name(tap.name + ".ready").exists() and tail.poll() is None:
            time.sleep(0.1)
        cpu, producer, ingest = p.cpu(), own_cpu(), health(p.url)["ingest"]
        with CommitWatch(p.url) as watch:
            report = produce_records(settings, steady, rate=rate, count=n, progress=False)
            out["achieved_rate"] = report.rate
            p.drain(2000 + n, timeout=600)
        tap.with_name(tap.name + ".stop").touch()
        tail.wait(60)
        out["fetchable"] = {(int(part), int(offset)): float(t)
                            for part, offset, t in (line.split() for line in tap.read_text().splitlines())}
        out["cpu"] = {"producer": (own_cpu() - producer) / n} | {k: (v - cpu[k]) / n for k, v in p.cpu().items()}
        out["ingest"] = {k: health(p.url)["ingest"][k] - ingest[k] for k in ("polls", "blocks")}

        # restart after kill -9, under a steady 2 k/s load
        stopping = threading.Event()

        def trickle() -> None:
            while not stopping.is_set():
                produce_records(settings, records(13 + int(time.time()), 2000), rate=2000, count=2000,
                                progress=False)

        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        time.sleep(3)
        os.kill(p.workers[0].pid, signal.SIGKILL)
        p.workers[0].wait()
        time.sleep(1)
        # On a loaded machine the store may still be writing what the killed worker delivered:
        # count from a standstill, or those rows would read as the restarted worker's.
        before, settled = rows(p.url), time.perf_counter() + 10
        while time.perf_counter() < settled:
            time.sleep(0.5)
            now = rows(p.url)
            if now == before:
                break
            before = now
        t = time.perf_counter()
        p.workers[0] = p.start_worker(0)
        while rows(p.url) <= before:
            time.sleep(0.1)
            if time.perf_counter() - t > 120:
                break
        out["restart"] = time.perf_counter() - t
        stopping.set()
        thread.join(30)
    finally:
        p.stop()
    db = p.workdir / "provenance.duckdb"
    con = duckdb.connect(str(db), read_only=True)
    try:
        recorded = dict(con.execute("SELECT event_id, epoch_ms(recorded_at) FROM events").fetchall())
    finally:
        con.close()
    produced = asyncio.run(produce_times(settings))
    # only the steady phase: after the warm-up, before the kill
    out["latency"] = sorted((recorded[e] - ts) / 1000 for e, (ts, _, _) in produced.items()
                            if e in recorded and e in steady_ids)
    sent = asyncio.run(block_times(settings.kafka, settings.topics.name(settings.topics.blocks)))
    out["parts"] = measure(db, produced, sent, watch, steady_ids, out.pop("fetchable"))
    return out


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> None:
    global PRODUCE_PROCESSES
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--latency-rate", type=float, default=10_000)
    ap.add_argument("--latency-seconds", type=float, default=20)
    ap.add_argument("--only", choices=("drain", "latency"), help="only the drains and their peers, or only the "
                    "steady-rate latency and the restart")
    ap.add_argument("--long", type=int, default=0, help="only drain this many events with one worker, sampling RSS")
    ap.add_argument("--produce-processes", type=int, default=PRODUCE_PROCESSES, help="sender processes pre-loading")
    args = ap.parse_args()
    PRODUCE_PROCESSES = args.produce_processes
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = Settings(topics={"partitions": args.partitions})
        with EmbeddedBroker(base) as broker:
            assert broker.process is not None
            base = base.with_overrides(kafka=broker.bootstrap)
            if args.long:
                long_run(base, args.long, work, broker.process.pid)
                return
            say(f"events: {args.events:,} on {args.partitions} partitions; machine: {os.cpu_count()} cores, shared "
                f"(load average {os.getloadavg()[0]:.1f} at the start)")
            if args.only != "latency":
                drains(base, args.events, work, broker.process.pid)
            if args.only != "drain":
                latency(base, args.latency_rate, args.latency_seconds, work, broker.process.pid)
    say(f"load average at the end: {os.getloadavg()[0]:.1f}")


def drains(base: Settings, events: int, work: Path, broker_pid: int) -> None:
    one = drain_run(base, events, work, 1, broker_pid)
    say(f"provenance produce (kafka-python):  {one['produced']:>9,.0f} msg/s ({PRODUCE_PROCESSES} processes)")
    say(drain_line("1 worker", one))
    raw = asyncio.run(raw_consume(one["settings"], events))
    say(f"raw aiokafka consume (peer):        {raw:>9,.0f} records/s")
    noop = faust_noop(one["settings"], events, work)
    say(f"faust no-op agent (peer):           {noop:>9,.0f} records/s")
    ours = one["rate"]
    say(f"ratio 1 worker / raw consume:       {ours / raw:9.3f}")
    say(f"ratio 1 worker / faust no-op:       {ours / noop:9.3f}")
    say(f"ratio produce / 1-worker drain:     {one['produced'] / ours:9.3f}")
    rss = one["rss"]
    if rss:
        say(f"worker RSS during the drain (MiB):  first {rss[0]:.0f}, median {statistics.median(rss):.0f}, "
            f"last {rss[-1]:.0f}, max {max(rss):.0f} ({len(rss)} samples)")
    two = drain_run(base, events, work, 2, broker_pid)
    say(drain_line("2 workers", two))
    say(f"ratio 2 workers / 1 worker:         {two['rate'] / ours:9.3f}")
    for name, run in (("1 worker", one), ("2 workers", two)):
        say(budget_line(name, run))


def latency(base: Settings, rate: float, seconds: float, work: Path, broker_pid: int) -> None:
    lat = latency_run(base, rate, seconds, work, broker_pid)
    lats = lat["latency"]
    say(f"produce → queryable at {lat['achieved_rate']:,.0f} events/s (asked {rate:,.0f}): "
        f"p50 {pct(lats, 0.5):.3f} s, p99 {pct(lats, 0.99):.3f} s, max {max(lats):.3f} s ({len(lats):,} events; "
        "to the write's start)")
    say("where it goes (\"total\" to the count that first shows the event's transaction, within 50 ms):")
    for line in report(lat["parts"]):
        say(line)
    say(f"{lat['ingest']['blocks']:,} blocks in {lat['ingest']['polls']:,} store transactions")
    say("CPU µs/event at that rate (the store's includes answering the count every 50 ms, about 5 % of a core; "
        "the producer's is the bench process's): "
        + ", ".join(f"{k} {v * 1e6:.1f}" for k, v in lat["cpu"].items()))
    say(f"kill -9 → restarted worker's first new rows queryable: {lat['restart']:.1f} s (dynamic membership)")


def say(line: str) -> None:
    print(line, flush=True)


def drain_line(name: str, run: dict[str, Any]) -> str:
    cpu = ", ".join(f"{k} {v * 1e6:.1f}" for k, v in sorted(run["cpu"].items()))
    whole = ", ".join(f"{k} {v * 1e6:.1f}" for k, v in sorted(run["whole"].items()))
    return (f"drain, {name:9s} → DuckDB:       {run['rate']:>9,.0f} events/s  (start-up {run['startup']:.1f} s; "
            f"CPU µs/event from the first row: {cpu}; whole process lives, start-up included: {whole})")


def budget_line(name: str, run: dict[str, Any]) -> str:
    """The CPU every process spent per event, producing (the pre-load) and draining, against 2 cores."""
    parts = run["budget"]
    total = sum(parts.values())
    return (f"CPU µs/event, {name} (pre-load, then the drain from its first row): " + ", ".join(f"{k} {v * 1e6:.1f}" for k, v in parts.items())
            + f"; all {total * 1e6:.1f} µs: 2 cores, and nothing else, would carry {2 / total:,.0f} events/s "
            f"(50 k/s needs 40 µs in all)")


def long_run(base: Settings, n: int, work: Path, broker_pid: int) -> None:
    settings = prefixed(base, "long.")
    step = 1_000_000
    p = Pipeline(settings, work / "long", 1, broker_pid)
    p.start()
    try:
        for done in range(0, n, step):
            preload(settings, min(step, n - done), seed=100 + done // step)
            rate, _, cpu = p.drain(min(done + step, n), timeout=3600)
            print(f"{min(done + step, n):>11,} events: drain {rate:,.0f}/s, worker RSS {rss_mib(p.workers[0].pid):.0f}"
                  f" MiB, CPU µs/event " + ", ".join(f"{k} {v * 1e6:.1f}" for k, v in sorted(cpu.items())),
                  flush=True)
    finally:
        p.stop()


if __name__ == "__main__":
    main()
