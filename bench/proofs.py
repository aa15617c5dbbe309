"""Proof latency in the store at scale: bundles and consistency proofs from a real DuckDB file.

    python bench/proofs.py [--leaves 10000000] [--samples 2000]

Builds one log of N leaves the way the store holds it (events rows, blocks of
500, tlog tiles in `merkle_tiles`, a signed checkpoint), then times
`Proofs.bundle(event_id)` (event lookup, covering block, inclusion path from
tiles, checkpoint, consistency path) and `Proofs.consistency` between random
blocks. Prints p50/p99; the contract asks for p99 < 5 ms at 10 M.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from pipeline.core.blocks import seal_block
from pipeline.core.merkle import CompactRange
from pipeline.core.note import Signer
from pipeline.core.tiles import TileBuilder
from pipeline.settings import Settings
from pipeline.store.db import Database, IngestBatch
from pipeline.store.ledger import Checkpointer, Proofs

LOG = "shipment-events/0"
BLOCK = 500
CHECKPOINT_EVERY = 10  # blocks


def build(path: Path, n: int) -> tuple[Database, Signer]:
    db = Database(path)
    t = time.perf_counter()
    # Events: payloads are small JSON objects; their leaf hashes are computed by DuckDB's sha256.
    db.con.execute(
        "INSERT INTO events SELECT 'ev-' || i, 'S' || (i % 100000), 'departed', TIMESTAMPTZ '2026-01-01 00:00:00+00',"
        " ?, i, '', 0, i, ('{\"event_id\":\"ev-' || i || '\"}')::JSON, now() FROM range(?) t(i)",
        [LOG, n],
    )
    print(f"  events rows:  {time.perf_counter() - t:6.1f} s")
    t = time.perf_counter()
    tree, tiles = CompactRange(), TileBuilder()
    signer = Signer(hashlib.sha256(b"bench").digest(), "bench.local/ledger")
    blocks, prev = [], None
    cur = db.cursor()
    cur.execute("SELECT payload::VARCHAR FROM events ORDER BY leaf_index")
    staged: dict[tuple[str, int, int], bytes] = {}
    done = 0
    while rows := cur.fetchmany(100_000):
        hashes = [hashlib.sha256(b"\x00" + r[0].encode()).digest() for r in rows]
        for i in range(0, len(hashes), BLOCK):
            chunk = hashes[i : i + BLOCK]
            tree.extend(chunk)
            prev = seal_block(LOG, prev, tree.size, tree.root(), done + i, done + i + len(chunk) - 1,
                              "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z")
            blocks.append(prev)
        for (level, index), tile in tiles.append(hashes).items():
            staged[(LOG, level, index)] = tile
        done += len(rows)
    db.ingest(IngestBatch(tiles=staged))
    # Blocks arrive a few at a time and a checkpoint is cut between, as in a running store
    # (a checkpoint every 5 s, a block every second or so per log).
    checkpointer = Checkpointer(Settings(), db, signer)
    for i in range(0, len(blocks), CHECKPOINT_EVERY):
        db.ingest(IngestBatch(blocks=blocks[i : i + CHECKPOINT_EVERY]))
        checkpointer.cut(datetime.now(timezone.utc))
    print(f"  tiles+blocks: {time.perf_counter() - t:6.1f} s ({len(staged):,} tiles, {len(blocks):,} blocks, "
          f"{checkpointer.signed:,} checkpoints)")
    return db, signer


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--leaves", type=int, default=1_000_000)
    ap.add_argument("--samples", type=int, default=2000)
    args = ap.parse_args()
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"building a {args.leaves:,}-leaf log ...")
        db, signer = build(Path(tmp) / "bench.duckdb", args.leaves)
        proofs = Proofs(db, signer, tile_cache=65_536)
        # A running store writes every tile through its cache as it ingests: start as warm as it is.
        proofs.tiles.remember({(LOG, lvl, idx): bytes(h) for lvl, idx, h in
                               db.fetch("SELECT level, idx, hashes FROM merkle_tiles WHERE log_id = ?", [LOG])})
        heights = args.leaves // BLOCK
        for name, call in (
            ("inclusion bundle", lambda: proofs.bundle(f"ev-{rng.randrange(args.leaves)}")),
            ("consistency", lambda: proofs.consistency(LOG, *sorted(rng.sample(range(heights), 2)))),
        ):
            for _ in range(50):
                call()
            wall, cpu = [], []
            for _ in range(args.samples):
                t, c = time.perf_counter(), time.process_time()
                call()
                wall.append((time.perf_counter() - t) * 1000)
                cpu.append((time.process_time() - c) * 1000)
            print(f"{name:17s} at {args.leaves:>12,} leaves: p50 {statistics.median(wall):.2f} ms, "
                  f"p99 {pct(wall, 0.99):.2f} ms (CPU p99 {pct(cpu, 0.99):.2f} ms)")
        db.close()


if __name__ == "__main__":
    main()
