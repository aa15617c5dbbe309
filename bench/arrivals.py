"""When each record of a topic could first be fetched from the broker (for bench/ingest.py).

    python bench/arrivals.py BOOTSTRAP TOPIC OUT

Tails every partition of TOPIC from its end with a 10 ms fetch wait, in a process of its
own (so it takes no CPU from the producer it watches), touches OUT.ready once it is at the
end, and when OUT.stop appears writes one `partition offset unix_seconds` line per record to OUT.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path


async def tail(bootstrap: str, topic: str, out: Path) -> list[tuple[int, int, float]]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         fetch_max_wait_ms=10)
    await c.start()
    seen: list[tuple[int, int, float]] = []
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or [])]
        c.assign(tps)
        await c.seek_to_end(*tps)
        for tp in tps:
            await c.position(tp)
        out.with_name(out.name + ".ready").touch()
        stop, end = out.with_name(out.name + ".stop"), time.monotonic() + 3600
        while not stop.exists() and time.monotonic() < end:
            batch = await c.getmany(timeout_ms=100)
            now = time.time()
            seen += [(m.partition, m.offset, now) for msgs in batch.values() for m in msgs]
        return seen
    finally:
        await c.stop()


def main() -> None:
    bootstrap, topic, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    seen = asyncio.run(tail(bootstrap, topic, out))
    out.write_text("".join(f"{p} {o} {t:.4f}\n" for p, o, t in seen))


if __name__ == "__main__":
    main()
