"""What a snapshot costs: `publish_snapshot` against a plain copy of the same file, at several sizes.

    python bench/snapshot.py [--events 100000 1000000] [--repeat 3]

Fills a store file with N synthetic events (the `events` table as the store
writes it, payloads of ~300 bytes) and times, per size, the median of
`--repeat` snapshots (ATTACH … STORAGE_VERSION 'v1.5.0', COPY FROM DATABASE,
os.replace) and of `shutil.copyfile` of the same file: the floor any copy
pays, though a plain copy is neither readable by DuckDB 1.5 nor consistent
while the store writes. The snapshot interval should stay well above the
snapshot time (the publisher waits the interval between the end of one copy
and the start of the next, so copies never overlap).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from pipeline.store.db import Database
from pipeline.store.snapshot import publish_snapshot, scratch_paths

FILL = """
INSERT INTO events
SELECT 'evt-' || i, 'shp-' || (i // 6), ['created', 'departed', 'arrived', 'delivered'][1 + i % 4],
       TIMESTAMPTZ '2026-03-01 00:00:00+00' + INTERVAL (i) SECOND, 'shipment-events/' || (i % 4), i // 4,
       sha256('leaf' || i), i % 4, i // 4,
       json_object('event_id', 'evt-' || i, 'shipment_id', 'shp-' || (i // 6), 'origin', 'DE-HAM',
                   'destination', 'NL-RTM', 'carrier', 'Nordfracht', 'mode', 'road',
                   'items', [json_object('sku', 'SKU-' || (i % 50), 'quantity', 1 + i % 7)]),
       now()
FROM range(?, ?) t(i)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path, target = Path(tmp) / "store.duckdb", Path(tmp) / "snapshot.duckdb"
        db = Database(path, writable=scratch_paths(target))
        have = 0
        print(f"{'events':>10} {'file MB':>8} {'snapshot':>10} {'file copy':>10} {'ratio':>6}")
        for n in sorted(args.events):
            db.cursor().execute(FILL, [have, n])
            db.cursor().execute("CHECKPOINT")
            have = n
            snap = [publish_snapshot(db, target) for _ in range(args.repeat)]
            plain = []
            for _ in range(args.repeat):
                started = time.monotonic()
                shutil.copyfile(path, Path(tmp) / "plain.duckdb")
                plain.append(time.monotonic() - started)
            s, c = statistics.median(snap), statistics.median(plain)
            print(f"{n:>10,} {path.stat().st_size / 1e6:>8.1f} {s * 1000:>8.0f}ms {c * 1000:>8.0f}ms {s / c:>5.1f}x")
        db.close()


if __name__ == "__main__":
    main()
