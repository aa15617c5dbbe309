"""The store's tile maintainer: tiles of every log in the batch, and leaves out of order refused before any move."""

from __future__ import annotations

from pathlib import Path

import pytest
from factories import as_bytes, make_events

from pipeline.core import wire
from pipeline.core.ledger import PartitionLog, accept
from pipeline.core.merkle import root_of
from pipeline.errors import LedgerError
from pipeline.store.db import Database, IngestBatch
from pipeline.store.ledger import TileMaintainer


def entries(log_id: str, n: int, seed: int) -> list[dict]:
    plog = PartitionLog(log_id)
    for offset, e in enumerate(make_events(n, seed=seed)):
        event, payload = accept(as_bytes(e))
        plog.admit(offset)
        plog.append(offset, event, payload)
    sealed = plog.seal("2026-03-01T09:00:00.000Z")
    assert sealed is not None
    return [wire.entry_record(log_id, e) for e in sealed.entries]


def test_tiles_follow_every_log_and_refuse_a_leaf_out_of_order(tmp_path: Path) -> None:
    db = Database(tmp_path / "store.duckdb")
    try:
        tiles = TileMaintainer(db)
        a, b = entries("shipment-events/0", 5, 1), entries("shipment-events/1", 3, 2)
        batch = IngestBatch(entries=[*a[:2], *b, *a[2:]])
        tiles(batch)
        assert {k[0] for k in batch.tiles} == {"shipment-events/0", "shipment-events/1"}
        assert tiles.builders["shipment-events/0"].size == 5 and tiles.builders["shipment-events/1"].size == 3
        assert tiles.builders["shipment-events/0"].root() == root_of([bytes.fromhex(e["leaf_hash"]) for e in a])
        more = entries("shipment-events/1", 5, 2)[3:]
        with pytest.raises(LedgerError, match="leaf 4 arrived, tiles expect 3"):
            tiles(IngestBatch(entries=[*entries("shipment-events/0", 6, 1)[5:], more[1], more[0]]))
        # Neither log moved: the batch that failed is not half applied.
        assert tiles.builders["shipment-events/0"].size == 5 and tiles.builders["shipment-events/1"].size == 3
    finally:
        db.close()
