"""The store's ingest decoding, without a broker: entries wait for their block; cluster tags and resets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition
from factories import as_bytes, make_events

from pipeline.core import wire
from pipeline.core.ledger import PartitionLog, accept
from pipeline.settings import Settings
from pipeline.store.db import Database
from pipeline.store.ingest import Ingestor

LOG = "shipment-events/0"


@dataclass
class Msg:
    partition: int
    offset: int
    value: bytes
    headers: Any = None
    timestamp: int | None = None
    key: bytes | None = None


def sealed_blocks(n_blocks: int, per_block: int) -> list[Any]:
    plog = PartitionLog(LOG)
    out, offset = [], 0
    for b in range(n_blocks):
        for e in make_events(per_block, seed=b):
            event, payload = accept(as_bytes(e))
            plog.admit(offset)
            plog.append(offset, event, payload)
            offset += 1
        out.append(plog.seal(f"2026-03-01T09:00:0{b}.000Z"))
    return out


def ingestor(tmp_path: Path) -> tuple[Ingestor, Database]:
    db = Database(tmp_path / "store.duckdb")
    ing = Ingestor(Settings(data_dir=tmp_path), db)
    ing.cluster = "provenance-memory-a"
    return ing, db


def test_entries_wait_for_the_block_that_covers_them(tmp_path: Path) -> None:
    ing, db = ingestor(tmp_path)
    first, second = sealed_blocks(2, 3)
    entries_tp, blocks_tp = TopicPartition(ing.entries_topic, 0), TopicPartition(ing.blocks_topic, 0)
    bundles = [wire.encode_entries(LOG, s.entries, 2) for s in (first, second)]
    # Both blocks' entries arrive, but only the first block.
    batch = ing.decode({entries_tp: [Msg(0, i, v) for i, v in enumerate(bundles[0] + bundles[1])],
                        blocks_tp: [Msg(0, 0, wire.encode_block(first))]})
    assert [e["leaf_index"] for e in batch.entries] == [0, 1, 2]
    # The entries offset stored is that of the first bundle still waiting (bundles: 0-1, 2, 3-4, 5).
    assert batch.offsets[(ing.entries_topic, 0)] == 2 and batch.offsets[(ing.blocks_topic, 0)] == 1
    db.ingest(batch)
    later = ing.decode({blocks_tp: [Msg(0, 1, wire.encode_block(second))]})
    assert [e["leaf_index"] for e in later.entries] == [3, 4, 5]
    assert later.offsets == {(ing.blocks_topic, 0): 2}  # nothing waits: the entries offset stands
    db.ingest(later)
    assert db.fetch("SELECT count(*) FROM events")[0][0] == 6
    db.close()


def test_records_written_for_another_cluster_are_skipped(tmp_path: Path) -> None:
    ing, db = ingestor(tmp_path)
    (block,) = sealed_blocks(1, 2)
    other = [(wire.CLUSTER_HEADER, b"provenance-memory-old")]
    mine = [(wire.CLUSTER_HEADER, b"provenance-memory-a")]
    batch = ing.decode({
        TopicPartition(ing.entries_topic, 0): [Msg(0, 0, v, other) for v in wire.encode_entries(LOG, block.entries, 5)],
        TopicPartition(ing.blocks_topic, 0): [Msg(0, 0, wire.encode_block(block), other)],
    })
    assert batch.entries == [] and batch.blocks == [] and ing.stats.stale == 2
    batch = ing.decode({
        TopicPartition(ing.entries_topic, 0): [Msg(0, 1, v, mine) for v in wire.encode_entries(LOG, block.entries, 5)],
        TopicPartition(ing.blocks_topic, 0): [Msg(0, 1, wire.encode_block(block), mine)],
    })
    assert len(batch.entries) == 2 and len(batch.blocks) == 1
    db.close()


def test_a_new_cluster_drops_the_offsets_and_degrades_until_a_block_arrives(tmp_path: Path) -> None:
    import asyncio

    ing, db = ingestor(tmp_path)
    assert db.switch_broker_cluster("provenance-memory-a") == {}  # the first cluster: nothing to drop
    first, second = sealed_blocks(2, 2)
    tp = TopicPartition(ing.blocks_topic, 0)
    db.ingest(ing.decode({TopicPartition(ing.entries_topic, 0): [Msg(0, 0, v) for v in
                                                                   wire.encode_entries(LOG, first.entries, 5)],
                          tp: [Msg(0, 0, wire.encode_block(first))]}))
    # The next block's entries arrive, then the broker loses its data before the block does.
    db.ingest(ing.decode({TopicPartition(ing.entries_topic, 0): [Msg(0, 1, v) for v in
                                                                   wire.encode_entries(LOG, second.entries, 5)]}))
    assert db.offsets()[(ing.entries_topic, 0)] == 1 and ing.degraded() is None

    ing.new_cluster = "provenance-memory-b"
    assert "lost its data" in (ing.degraded() or "")
    dropped = asyncio.run(ing._switch_cluster("provenance-memory-b"))
    assert dropped == {(ing.entries_topic, 0): 1, (ing.blocks_topic, 0): 1}
    assert db.offsets() == {} and db.broker_cluster() == "provenance-memory-b"
    assert ing.unsealed == {} and ing.next_leaf[LOG] == 2  # the unsealed entries went with the old cluster
    assert "not resumed" in (ing.degraded() or "")
    ing.stats.blocks += 1  # a block of the new cluster was recorded
    assert ing.degraded() is None
    assert db.fetch("SELECT count(*) FROM events")[0][0] == 2  # no leaf without a block
    db.close()


def test_a_block_ending_inside_a_bundle_releases_its_leaves_and_keeps_the_rest(tmp_path: Path) -> None:
    ing, db = ingestor(tmp_path)
    first, second = sealed_blocks(2, 3)
    entries_tp, blocks_tp = TopicPartition(ing.entries_topic, 0), TopicPartition(ing.blocks_topic, 0)
    # One bundle holding both blocks' leaves (0-5): the first block covers half of it.
    (bundle,) = wire.encode_entries(LOG, first.entries + second.entries, 6)
    batch = ing.decode({entries_tp: [Msg(0, 0, bundle, [("produced.ms", b"1700000000000")])],
                        blocks_tp: [Msg(0, 0, wire.encode_block(first))]})
    assert [e["leaf_index"] for e in batch.entries] == [0, 1, 2] and ing.produced == [1700000000.0]
    assert batch.offsets[(ing.entries_topic, 0)] == 0  # the bundle's record is read again after a restart
    later = ing.decode({blocks_tp: [Msg(0, 1, wire.encode_block(second))]})
    assert [e["leaf_index"] for e in later.entries] == [3, 4, 5] and ing.produced == []  # observed once
    assert ing.unsealed == {}
    db.close()


def test_replayed_leaves_are_dropped_and_the_new_ones_of_a_bundle_kept(tmp_path: Path) -> None:
    ing, db = ingestor(tmp_path)
    (block,) = sealed_blocks(1, 5)
    entries_tp = TopicPartition(ing.entries_topic, 0)
    head, tail = wire.encode_entries(LOG, block.entries[:3], 3), wire.encode_entries(LOG, block.entries[1:], 4)
    ing.decode({entries_tp: [Msg(0, 0, head[0])]})
    ing.decode({entries_tp: [Msg(0, 1, tail[0])]})  # leaves 1-4 again: 1 and 2 are replays
    assert ing.stats.replayed == 2 and ing.next_leaf[LOG] == 5
    batch = ing.decode({TopicPartition(ing.blocks_topic, 0): [Msg(0, 0, wire.encode_block(block))]})
    assert [e["leaf_index"] for e in batch.entries] == [0, 1, 2, 3, 4]
    db.close()


def test_an_odd_bundle_is_taken_leaf_by_leaf_and_a_broken_one_skipped_whole(tmp_path: Path) -> None:
    ing, db = ingestor(tmp_path)
    (block,) = sealed_blocks(1, 4)
    rows = [wire.entry_record(LOG, e) for e in block.entries]
    entries_tp = TopicPartition(ing.entries_topic, 0)
    odd = orjson.dumps({"log_id": LOG, "entries": [rows[0], rows[1], rows[0], rows[3], rows[2]]})
    ing.decode({entries_tp: [Msg(0, 0, odd)]})
    # Leaf 0 again, and leaf 2 after 3, count as replays (as one leaf at a time would); 3 is a gap.
    assert ing.stats.replayed == 2 and ing.next_leaf[LOG] == 4
    assert [[e["leaf_index"] for e in w.entries] for w in ing.unsealed[LOG]] == [[0, 1], [3]]
    broken = orjson.dumps({"log_id": LOG, "entries": [dict(rows[0], leaf_index=4), dict(rows[1], leaf_index="5")]})
    ing.decode({entries_tp: [Msg(0, 1, broken)]})
    assert ing.stats.malformed == 1 and ing.next_leaf[LOG] == 4  # nothing of it was taken
    db.close()
