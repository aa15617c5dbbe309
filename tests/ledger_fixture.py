"""A realistic ledger DuckDB file, built through the same code paths the worker and the store use.

Events are validated with `accept`, admitted and appended to one
`PartitionLog` per partition, sealed into blocks of varying sizes, sent
through `wire.entry_record` and the store's `TileMaintainer`, written with
`Database.ingest`, and checkpointed with `Checkpointer.cut` between blocks, so
the file holds old and new checkpoints. No Kafka: only the broker hop is
skipped. The same arguments always give the same ledger (fixed seeds, fixed
clock), so a test can name the log, leaf and block it tampers with.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from factories import as_bytes, make_events

from pipeline.core import wire
from pipeline.core.blocks import BlockHeader
from pipeline.core.ledger import PartitionLog, accept
from pipeline.core.note import Signer, Verifier
from pipeline.settings import Settings
from pipeline.store.db import Database, IngestBatch
from pipeline.store.ledger import Checkpointer, Proofs, TileMaintainer

TOPIC = "shipment-events"
KEY_NAME = "provenance.local/ledger"
SEED = bytes(range(32))
ATTACKER_SEED = bytes(range(100, 132))
_CLOCK = datetime(2026, 3, 2, 6, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Ledger:
    """What `build_ledger` made: the file, the keys, and where every event and block sits."""

    db_path: Path
    vkey_path: Path
    signer: Signer
    verifier: Verifier
    attacker: Signer
    event_ids: dict[str, list[str]]
    """Per log, the event id at each leaf index."""
    blocks: dict[str, list[BlockHeader]]
    """Per log, the sealed blocks by height."""
    checkpoints: list[dict[str, Any]]
    """The checkpoint rows `Checkpointer.cut` wrote, oldest first."""
    duplicate: tuple[str, int]
    """(log_id, leaf_index) of the one leaf that repeats an earlier event id."""

    @property
    def log_ids(self) -> list[str]:
        return sorted(self.event_ids)

    @property
    def vkey(self) -> str:
        return self.verifier.vkey

    def copy_to(self, directory: Path) -> Path:
        """A private copy of the DuckDB file to tamper with."""
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / self.db_path.name
        shutil.copyfile(self.db_path, target)
        return target

    def covering_height(self, log_id: str, leaf_index: int) -> int:
        """The height of the first block of `log_id` whose tree holds `leaf_index`."""
        return next(b.height for b in self.blocks[log_id] if b.tree_size > leaf_index)

    def checkpointed_heights(self, log_id: str) -> set[int]:
        return {cp["logs"][log_id]["height"] for cp in self.checkpoints if log_id in cp["logs"]}

    def bundle(self, event_id: str, db_path: Path | None = None) -> dict[str, Any]:
        """The proof bundle the store would serve for `event_id`."""
        db = Database(db_path or self.db_path, read_only=True)
        try:
            return Proofs(db, self.signer).bundle(event_id)
        finally:
            db.close()


def _seal_and_ingest(plog: PartitionLog, db: Database, tiles: TileMaintainer, created_at: datetime) -> BlockHeader:
    sealed = plog.seal(created_at.isoformat().replace("+00:00", "Z"))
    assert sealed is not None
    batch = IngestBatch(entries=[wire.entry_record(plog.log_id, e) for e in sealed.entries], blocks=[sealed.header])
    tiles(batch)  # the store's preprocessor: tiles go in the same transaction as their leaves
    db.ingest(batch)
    return sealed.header


def build_ledger(
    directory: Path,
    *,
    partitions: int = 3,
    events: int = 900,
    seed: int = 7,
    block_sizes: tuple[int, int] = (20, 70),
    checkpoint_every: int = 150,
) -> Ledger:
    """Write a ledger of `events` events over `partitions` logs into `directory`/ledger.duckdb.

    Blocks hold between `block_sizes` events; a checkpoint is cut after every
    `checkpoint_every` events and once more at the end, after every log's last
    block, so the newest checkpoint names every log's head. Some offsets are
    skipped (records that went to the dead-letter topic) and one event is sent
    twice under a new offset (a producer retry), which the store keeps as a
    duplicate leaf.
    """
    directory.mkdir(parents=True, exist_ok=True)
    db_path = directory / "ledger.duckdb"
    signer = Signer(SEED, KEY_NAME)
    attacker = Signer(ATTACKER_SEED, KEY_NAME)
    vkey_path = directory / "ledger.vkey"
    vkey_path.write_text(signer.verifier_key + "\n")

    rng = random.Random(seed)
    log_ids = [f"{TOPIC}/{p}" for p in range(partitions)]
    logs = {log_id: PartitionLog(log_id) for log_id in log_ids}
    offsets = dict.fromkeys(log_ids, 0)
    targets = {log_id: rng.randint(*block_sizes) for log_id in log_ids}
    event_ids: dict[str, list[str]] = {log_id: [] for log_id in log_ids}
    blocks: dict[str, list[BlockHeader]] = {log_id: [] for log_id in log_ids}
    checkpoints: list[dict[str, Any]] = []
    clock = _CLOCK
    raw_events = [as_bytes(e) for e in make_events(events, seed=seed)]
    duplicate_of = events // 2
    duplicate: tuple[str, int] | None = None
    seen: set[str] = set()

    db = Database(db_path)
    try:
        tiles = TileMaintainer(db)
        checkpointer = Checkpointer(Settings(), db, signer)
        stream = [(i, raw) for i, raw in enumerate(raw_events)]
        stream.insert(duplicate_of + 40, (duplicate_of, raw_events[duplicate_of]))
        for n, (i, raw) in enumerate(stream, start=1):
            log_id = log_ids[rng.randrange(partitions)]
            plog = logs[log_id]
            if rng.random() < 0.03:
                offsets[log_id] += 1  # a refused record: its offset never reaches the log
            offset = offsets[log_id]
            offsets[log_id] += 1
            assert plog.admit(offset)
            event, payload = accept(raw)
            entry = plog.append(offset, event, payload)
            if event.event_id in seen:
                duplicate = (log_id, entry.leaf_index)
            seen.add(event.event_id)
            event_ids[log_id].append(event.event_id)
            clock += timedelta(seconds=rng.randint(1, 20))
            if len(plog.pending) >= targets[log_id]:
                blocks[log_id].append(_seal_and_ingest(plog, db, tiles, clock))
                targets[log_id] = rng.randint(*block_sizes)
            if n % checkpoint_every == 0:
                row = checkpointer.cut(clock)
                if row is not None:
                    checkpoints.append(row)
        for log_id, plog in logs.items():
            if plog.pending:
                clock += timedelta(seconds=1)
                blocks[log_id].append(_seal_and_ingest(plog, db, tiles, clock))
        row = checkpointer.cut(clock + timedelta(seconds=1))
        assert row is not None
        checkpoints.append(row)
    finally:
        db.close()
    assert duplicate is not None
    return Ledger(db_path, vkey_path, signer, signer.verifier, attacker, event_ids, blocks, checkpoints, duplicate)
