"""`provenance produce`'s rate and CPU per message for 1, 2, 3 … sender processes, back to back.

    python bench/produce.py [--events 100000] [--processes 1 2 3] [--rounds 2]

Pre-generates N simulator records (the rate is the producer's, not the simulator's), then
in each round sends them through every process count in turn, each to a fresh topic on one
embedded broker. Prints the rate, the producer's CPU per message summed over the parent
and its sender processes, the broker's, and the load average before and after. The peer:
aiokafka appending the same records to its C record batches (`create_batch`/`send_batch`),
one process, which shows what kafka-python's per-record Python costs.
Figures, not a test. On a shared machine quote the CPU per message.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import resource
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kafka.partitioner.default import murmur2

from pipeline.broker import EmbeddedBroker, create_topics
from pipeline.produce_parallel import produce_parallel
from pipeline.produce_sources import KeyValue, records_from_simulator
from pipeline.settings import Settings

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def own_cpu() -> float:
    """CPU seconds of this process and of its children that have exited (the sender processes)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


async def aiokafka_batches(settings: Settings, records: list[KeyValue]) -> None:
    """The peer: the same records, each key on the partition produce gives it, in aiokafka's C batches."""
    from aiokafka import AIOKafkaProducer

    topic = settings.topics.name(settings.topics.events)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka, acks="all", linger_ms=settings.producer.linger_ms,
                                max_batch_size=settings.producer.batch_size)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        known: dict[bytes | None, int] = {}
        open_batches: dict[int, Any] = {}
        sent = []
        for key, value in records:
            p = known.get(key)
            if p is None:
                p = known[key] = partitions[(murmur2(key or b"") & 0x7FFFFFFF) % len(partitions)]
            batch = open_batches.get(p) or open_batches.setdefault(p, producer.create_batch())
            if batch.append(key=key, value=value, timestamp=None) is None:
                sent.append(await producer.send_batch(batch, topic, partition=p))
                batch = open_batches[p] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        for p, batch in open_batches.items():
            sent.append(await producer.send_batch(batch, topic, partition=p))
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    n = args.events
    records = list(itertools.islice(records_from_simulator(3, 0.0, datetime(2026, 1, 5, tzinfo=timezone.utc)), n))
    base = Settings(topics={"partitions": 4}, _env_file=None)
    with EmbeddedBroker(base) as broker:
        assert broker.process is not None
        for r in range(args.rounds):
            for processes in [*args.processes, 0]:
                name = f"{processes} process{'es' if processes > 1 else ''}" if processes else "aiokafka batches (peer)"
                settings = base.with_overrides(kafka=broker.bootstrap,
                                               topics={**base.topics.model_dump(), "prefix": f"r{r}p{processes}."})
                create_topics(settings)
                load = os.getloadavg()[0]
                cpu, broker_cpu, t = own_cpu(), cpu_seconds(broker.process.pid), time.perf_counter()
                if processes:
                    report = produce_parallel(settings, records, processes, progress=False)
                    assert report.sent == n and report.complete, report
                else:
                    asyncio.run(aiokafka_batches(settings, records))
                wall = time.perf_counter() - t
                used, broker_used = own_cpu() - cpu, cpu_seconds(broker.process.pid) - broker_cpu
                print(f"round {r + 1}, {name:24s} {n / wall:>9,.0f} msg/s, producer CPU {used / n * 1e6:5.1f} µs/msg, "
                      f"broker {broker_used / n * 1e6:4.1f} µs/msg (load average {load:.1f} → {os.getloadavg()[0]:.1f})",
                      flush=True)


if __name__ == "__main__":
    main()
