"""`provenance audit`: recompute the whole ledger from the DuckDB file and report every break.

Leaf hashes from payloads, roots at every block, block hashes, chain links,
Kafka offsets, stored tiles, checkpoint signatures and what each checkpoint
names. Nothing is trusted that can be recomputed; breaks are collected, not
raised, so one run reports all of them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pipeline.core.blocks import BlockHeader, verify_link
from pipeline.core.checkpoint import open_checkpoint
from pipeline.core.log_ids import parse_log_id
from pipeline.core.merkle import CompactRange
from pipeline.core.note import Verifier
from pipeline.core.tiles import TileBuilder
from pipeline.errors import InvalidChallenge, InvalidProof
from pipeline.store.db import Database

_CHUNK = 50_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Break:
    """One thing that does not recompute."""

    log_id: str
    height: int | None
    what: str

    def __str__(self) -> str:
        where = self.log_id + (f" block {self.height}" if self.height is not None else "")
        return f"{where}: {self.what}"


@dataclass
class AuditReport:
    logs: int = 0
    leaves: int = 0
    blocks: int = 0
    checkpoints: int = 0
    tiles: int = 0
    breaks: list[Break] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaks


def _leaves(db: Database, log_id: str) -> Iterator[tuple[Any, ...]]:
    cur = db.cursor()
    cur.execute(
        "SELECT leaf_index, leaf_hash, payload, event_id, kafka_offset, shipment_id, event_type, event_time,"
        " kafka_partition FROM ("
        " SELECT leaf_index, leaf_hash, payload::VARCHAR AS payload, event_id, kafka_offset, shipment_id,"
        " event_type, epoch_us(event_time) AS event_time, kafka_partition FROM events WHERE log_id = $1 UNION ALL"
        " SELECT leaf_index, leaf_hash, payload::VARCHAR, event_id, kafka_offset, NULL, NULL, NULL, NULL"
        " FROM duplicate_leaves WHERE log_id = $1 UNION ALL"
        " SELECT leaf_index, leaf_hash, original::VARCHAR, event_id, kafka_offset, NULL, NULL, NULL, NULL"
        " FROM epcis_events WHERE log_id = $1) ORDER BY leaf_index",
        [log_id],
    )
    while rows := cur.fetchmany(_CHUNK):
        yield from rows


def _column_mismatch(payload: str, event_id: str, columns: list[Any], partition: int | None) -> str | None:
    """Which queryable column disagrees with the hashed payload it was copied from, if any."""
    shipment_id, event_type, event_time_us, kafka_partition = columns
    try:
        event = json.loads(payload)
        when = datetime.fromisoformat(str(event["event_time"]).replace("Z", "+00:00").replace("z", "+00:00"))
        payload_us = int((when - _EPOCH).total_seconds() * 1_000_000) if when.tzinfo else None
        pairs = [("event_id", event_id, event.get("event_id")), ("shipment_id", shipment_id, event.get("shipment_id")),
                 ("event_type", event_type, event.get("event_type"))]
    except (ValueError, KeyError, TypeError) as exc:
        return f"payload is not a ShipmentEvent: {exc}"
    for name, column, in_payload in pairs:
        if column != in_payload:
            return f"column {name} says {column!r}, the payload says {in_payload!r}"
    if payload_us is not None and abs(payload_us - event_time_us) > 1:
        return f"column event_time differs from the payload's {event['event_time']}"
    if partition is not None and kafka_partition != partition:
        return f"column kafka_partition says {kafka_partition}, the log is partition {partition}"
    return None


def audit(db: Database, verifier: Verifier | None, progress: Callable[[int], None] = lambda n: None) -> AuditReport:
    """Recompute everything; `progress(n)` is told of every n leaves done."""
    report = AuditReport()
    logs = [r[0] for r in db.fetch(
        "SELECT log_id FROM blocks UNION SELECT log_id FROM events UNION SELECT log_id FROM duplicate_leaves"
        " UNION SELECT log_id FROM epcis_events ORDER BY 1")]
    report.logs = len(logs)
    sealed: dict[str, dict[int, BlockHeader]] = {}
    for log_id in logs:
        sealed[log_id] = _audit_log(db, log_id, report, progress)
    for row in db.fetch_dicts("SELECT * FROM block_conflicts ORDER BY log_id, height"):
        report.breaks.append(Break(row["log_id"], row["height"],
                                   f"fork: a second block {row['block_hash']} was published at this height"))
    _audit_checkpoints(db, verifier, sealed, report)
    return report


def _audit_log(db: Database, log_id: str, report: AuditReport, progress: Callable[[int], None]) -> dict[int, BlockHeader]:
    def fail(height: int | None, what: str) -> None:
        report.breaks.append(Break(log_id, height, what))

    rows = db.fetch_dicts("SELECT * FROM blocks WHERE log_id = ? ORDER BY height", [log_id])
    blocks: list[BlockHeader] = []
    previous: BlockHeader | None = None
    for row in rows:
        stored_hash = row.pop("block_hash")
        try:
            header = BlockHeader.from_dict(row)
        except InvalidChallenge as exc:
            fail(row.get("height"), f"malformed header: {exc}")
            continue
        if not hmac.compare_digest(stored_hash, header.block_hash):
            fail(header.height, f"block_hash {stored_hash} != SHA-256(JCS(header)) {header.block_hash}")
        try:
            verify_link(previous, header)
        except InvalidProof as exc:
            fail(header.height, f"chain link: {exc}")
        if header.first_offset > header.last_offset or (previous and header.first_offset <= previous.last_offset):
            fail(header.height, f"offsets {header.first_offset}..{header.last_offset} do not follow "
                                f"{previous.last_offset if previous else 'the start'}")
        blocks.append(header)
        previous = header
    report.blocks += len(blocks)

    tree = CompactRange()
    tiles = TileBuilder()
    expected_tiles: dict[tuple[int, int], bytes] = {}
    pending = iter(blocks)
    block = next(pending, None)
    last_offset = -1
    done = 0
    batch: list[bytes] = []
    name = parse_log_id(log_id)
    partition = None if name is None else name.partition
    # An EPCIS record holding a document is one Kafka offset with a leaf per event.
    several_per_record = name is not None and name.topic.endswith("epcis-events")
    for index, stored, payload, event_id, offset, *columns in _leaves(db, log_id):
        if index != tree.size:
            fail(None, f"leaf {tree.size} is missing (next stored leaf is {index})" if index > tree.size
                 else f"leaf {index} is stored twice (event {event_id})")
            if index < tree.size:
                continue
            return {b.height: b for b in blocks}  # every later root would break too: one report is enough
        computed = hashlib.sha256(b"\x00" + payload.encode("utf-8")).digest()
        if not hmac.compare_digest(computed.hex(), stored):
            fail(None, f"leaf {index} (event {event_id}): payload hashes to {computed.hex()}, stored {stored}")
        if columns[0] is not None:
            mismatch = _column_mismatch(payload, event_id, columns, partition)
            if mismatch:
                fail(None, f"leaf {index} (event {event_id}): {mismatch}")
        if offset < last_offset or (offset == last_offset and not several_per_record):
            fail(None, f"leaf {index} (event {event_id}): Kafka offset {offset} does not follow {last_offset}")
        last_offset = offset
        tree.append(computed)
        batch.append(computed)
        while block is not None and block.tree_size <= tree.size:
            if block.tree_size == tree.size:
                root = tree.root().hex()
                if not hmac.compare_digest(root, block.root):
                    fail(block.height, f"root at tree_size {block.tree_size} recomputes to {root}, "
                                       f"block says {block.root}")
                if not block.first_offset <= offset <= block.last_offset:
                    fail(block.height, f"leaf {index} has offset {offset}, outside the block's "
                                       f"{block.first_offset}..{block.last_offset}")
            block = next(pending, None)
        done += 1
        if len(batch) >= _CHUNK:
            expected_tiles.update(tiles.append(batch))
            batch = []
            progress(done)
            done = 0
    expected_tiles.update(tiles.append(batch))
    progress(done)
    report.leaves += tree.size
    while block is not None:
        fail(block.height, f"block covers {block.tree_size} leaves but the store has only {tree.size}")
        block = next(pending, None)
    sealed_size = blocks[-1].tree_size if blocks else 0
    if tree.size > sealed_size:
        fail(None, f"leaves {sealed_size}..{tree.size - 1} are in no block, so nothing vouches for them "
                   "(expected only while the pipeline is still sealing: audit again once it is idle)")
    stored_tiles = {(lvl, idx): bytes(h) for lvl, idx, h in
                    db.fetch("SELECT level, idx, hashes FROM merkle_tiles WHERE log_id = ?", [log_id])}
    for tile_id, want in expected_tiles.items():
        have = stored_tiles.get(tile_id)
        if have is None or not have.startswith(want):
            fail(None, f"tile {tile_id} does not match the leaves (proofs would not verify)")
    report.tiles += len(stored_tiles)
    return {b.height: b for b in blocks}


def _audit_checkpoints(db: Database, verifier: Verifier | None, sealed: dict[str, dict[int, BlockHeader]],
                       report: AuditReport) -> None:
    """Signatures, sequence order, and that every checkpoint signs blocks the store holds."""
    highest: dict[str, int] = {}
    last_sequence = -1
    index: dict[int, set[tuple[str, int, int, str]]] = {}
    for seq_, log_id_, height_, size_, hash_ in db.fetch(
            "SELECT sequence, log_id, height, tree_size, block_hash FROM checkpoint_logs"):
        index.setdefault(seq_, set()).add((log_id_, height_, size_, hash_))
    for row in db.fetch_dicts("SELECT sequence, note, logs FROM checkpoints ORDER BY sequence"):
        report.checkpoints += 1
        seq = row["sequence"]
        where = f"checkpoint {seq}"

        def fail(what: str, log_id: str = "checkpoints", height: int | None = None) -> None:
            report.breaks.append(Break(log_id, height, f"{where}: {what}"))

        if verifier is None:
            fail("no public key to check signatures with (give --key)")
            return
        try:
            cp = open_checkpoint(row["note"], verifier)
        except (InvalidProof, InvalidChallenge) as exc:
            fail(f"signature or format: {exc}")
            continue
        if cp.sequence != seq:
            fail(f"the signed note says sequence {cp.sequence} (an old checkpoint replayed?)")
        if seq <= last_sequence:
            fail(f"sequence does not increase after {last_sequence}")
        last_sequence = seq
        named = json.loads(row["logs"]) if isinstance(row["logs"], str) else row["logs"]
        signed = {(e.log_id, e.height, e.tree_size, e.block_hash.hex()) for e in cp.entries}
        indexed = index.pop(seq, set())
        for log_id, height, _, _ in sorted(signed - indexed):
            fail(f"the index that picks checkpoints for proofs lacks its entry for {log_id}", log_id, height)
        for log_id, height, _, _ in sorted(indexed - signed):
            fail(f"the proof index names block {height} of {log_id}, which the note does not sign", log_id, height)
        for entry in cp.entries:
            log_id = entry.log_id
            block = sealed.get(log_id, {}).get(entry.height)
            if block is None:
                fail(f"signs block {entry.height} of {log_id}, which the store does not have", log_id, entry.height)
                continue
            if not hmac.compare_digest(entry.block_hash.hex(), block.block_hash) or entry.tree_size != block.tree_size \
                    or not hmac.compare_digest(entry.root.hex(), block.root):
                fail(f"signs {entry.block_hash.hex()} (size {entry.tree_size}) but the stored block is "
                     f"{block.block_hash} (size {block.tree_size})", log_id, entry.height)
            if entry.height < highest.get(log_id, -1):
                fail(f"goes back to block {entry.height} of {log_id} after {highest[log_id]}", log_id, entry.height)
            highest[log_id] = max(highest.get(log_id, -1), entry.height)
            if named.get(log_id, {}).get("block_hash") != entry.block_hash.hex():
                fail(f"stored summary of {log_id} differs from the signed note", log_id, entry.height)
