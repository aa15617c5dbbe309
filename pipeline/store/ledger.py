"""The store's side of the ledger: tiles as entries arrive, signed checkpoints, proofs.

- Tiles: every log's leaf hashes are folded into tlog-style tiles in the same
  DuckDB transaction as the entries, so any inclusion or consistency proof
  reads a handful of tiles instead of re-hashing the log.
- Checkpoints: at an interval, one Ed25519-signed note over the latest block
  of every log is written to DuckDB (its commit point) and then published to
  `ledger.checkpoints` for witnesses and other readers.
- Proofs: bundles for events, consistency proofs between blocks.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from pipeline import fatal
from pipeline.core.blocks import BlockHeader
from pipeline.core.bundle import build_bundle
from pipeline.core.checkpoint import Checkpoint, CheckpointEntry, parse_checkpoint, sign_checkpoint
from pipeline.core.merkle import HASH_SIZE
from pipeline.core.note import Signer
from pipeline.core.proofs import consistency_path, inclusion_path
from pipeline.core.tiles import TileBuilder, TileNodeReader, partial_tile_ids, tile_width
from pipeline.errors import InvalidChallenge, LedgerError, NotFound
from pipeline.keys import load_or_create_signer
from pipeline.settings import Settings
from pipeline.store.db import Database, IngestBatch

log = logging.getLogger(__name__)


def header_of(row: dict[str, Any]) -> BlockHeader:
    return BlockHeader.from_dict({k: v for k, v in row.items() if k != "block_hash"})


class TileMaintainer:
    """Keeps each log's right-edge tiles in memory and adds changed tiles to every ingest batch."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.builders: dict[str, TileBuilder] = {}

    def restore(self, sizes: dict[str, int]) -> None:
        for log_id, size in sizes.items():
            tiles = self.db.tiles(log_id, partial_tile_ids(size))
            self.builders[log_id] = TileBuilder.restore(size, tiles)

    def __call__(self, batch: IngestBatch) -> None:
        """Every log's leaves must continue its tree; all are checked before any builder moves."""
        by_log: dict[str, list[dict[str, Any]]] = {}
        for e in batch.entries:
            by_log.setdefault(e["log_id"], []).append(e)
        for log_id, entries in by_log.items():
            size = self.builders[log_id].size if log_id in self.builders else 0
            indices = [e["leaf_index"] for e in entries]
            if indices != list(range(size, size + len(indices))):
                at = next(i for i, index in enumerate(indices) if index != size + i)
                raise LedgerError(f"{log_id}: leaf {indices[at]} arrived, tiles expect {size + at}")
        for log_id, entries in by_log.items():
            builder = self.builders.setdefault(log_id, TileBuilder())
            for (level, index), tile in builder.append([bytes.fromhex(e["leaf_hash"]) for e in entries]).items():
                batch.tiles[(log_id, level, index)] = tile


class Checkpointer:
    """Signs a checkpoint whenever the latest block of any log changed."""

    def __init__(self, settings: Settings, db: Database, signer: Signer) -> None:
        self.settings = settings
        self.db = db
        self.signer = signer
        self.topic = settings.topics.name(settings.topics.checkpoints)
        self.producer: AIOKafkaProducer | None = None
        self.signed = 0

    def cut(self, now: datetime) -> dict[str, Any] | None:
        """Sign and store a new checkpoint if any log moved since the last one (thread)."""
        latest = self.db.latest_blocks()
        if not latest:
            return None
        previous = self.db.latest_checkpoint()
        logs = {b["log_id"]: {"height": b["height"], "tree_size": b["tree_size"], "root": b["root"],
                              "block_hash": b["block_hash"]} for b in latest}
        if previous is not None and json.loads(previous["logs"]) == logs:
            return None
        sequence = 0 if previous is None else previous["sequence"] + 1
        cp = Checkpoint(
            origin=self.signer.name,
            sequence=sequence,
            entries=tuple(CheckpointEntry(log_id, e["height"], e["tree_size"], bytes.fromhex(e["root"]),
                                          bytes.fromhex(e["block_hash"])) for log_id, e in sorted(logs.items())),
            time=now.replace(microsecond=0),
        )
        row = {"sequence": sequence, "origin": self.signer.name, "key_id": self.signer.key_id.hex(),
               "note": sign_checkpoint(cp, self.signer), "logs": logs, "created_at": now.isoformat()}
        self.db.ingest(IngestBatch(checkpoints=[row]))
        self.signed += 1
        return row

    async def run(self) -> None:
        interval = self.settings.ledger.checkpoint_interval
        while True:
            await asyncio.sleep(interval)
            try:
                row = await asyncio.to_thread(self.cut, datetime.now(timezone.utc))
                if row is not None:
                    await self.publish(row)
            except asyncio.CancelledError:
                raise
            except Exception:  # keep signing: a failed publish is retried by the next checkpoint
                log.exception("checkpoint failed")

    async def publish(self, row: dict[str, Any]) -> None:
        if self.producer is None:
            self.producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka, acks="all",
                                             client_id="provenance-checkpointer")
            await self.producer.start()
        try:
            await self.producer.send_and_wait(self.topic, json.dumps(row).encode(), key=row["origin"].encode())
        except KafkaError as exc:
            log.warning("checkpoint %d stored but not published: %s", row["sequence"], exc)

    async def close(self) -> None:
        if self.producer is not None:
            await self.producer.stop()


class TileCache:
    """Tiles kept in memory across requests: a proof then costs one tile read at most.

    A full tile never changes, so it is cached for good (LRU-bounded). A
    right-edge tile grows in place and a longer copy serves any smaller tree
    (it is read as a prefix), so a cached edge tile is reused while it is long
    enough and re-read when a request needs more of it. The store writes every
    tile through this cache as it ingests (`remember`), so a warm store reads
    DuckDB for tiles only after a restart or an eviction.
    """

    def __init__(self, db: Database, capacity: int = 50_000, derived: int = 4_096) -> None:
        self.db = db
        self.capacity = capacity
        self.derived = derived
        self._tiles: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.full: dict[str, _Lru] = {}

    def full_tiles(self, log_id: str) -> _Lru:
        """Derived levels of full tiles of one log, shared by every proof."""
        with self._lock:
            return self.full.setdefault(log_id, _Lru(self.derived))

    def remember(self, tiles: dict[tuple[str, int, int], bytes]) -> None:
        """Keep tiles just written to DuckDB (after their transaction committed)."""
        with self._lock:
            for key, tile in tiles.items():
                self._tiles[key] = tile
                self._tiles.move_to_end(key)
            while len(self._tiles) > self.capacity:
                self._tiles.popitem(last=False)

    def fetcher(self, log_id: str, size: int) -> Callable[[int, int], bytes]:
        def fetch(level: int, index: int) -> bytes:
            key = (log_id, level, index)
            need = tile_width(size, level, index) * HASH_SIZE
            with self._lock:
                tile = self._tiles.get(key)
                if tile is not None and len(tile) >= need:
                    self._tiles.move_to_end(key)
                    return tile
            tile = self.db.tile(log_id, level, index)
            with self._lock:
                self._tiles[key] = tile
                if len(self._tiles) > self.capacity:
                    self._tiles.popitem(last=False)
            return tile

        return fetch


class _Lru(OrderedDict):  # type: ignore[type-arg]
    """A bounded mapping: the least recently inserted entry goes first."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        if len(self) > self.capacity:
            self.popitem(last=False)


class _Index:
    """A per-log sorted list read from DuckDB and topped up when a lookup runs past its end."""

    def __init__(self, load: Callable[[str, int], list[tuple[int, ...]]]) -> None:
        self.load = load
        self.rows: dict[str, list[tuple[int, ...]]] = {}
        self.lock = threading.Lock()

    def first_at_least(self, log_id: str, key: int) -> tuple[int, ...] | None:
        """The first row whose first field is >= key."""
        with self.lock:
            rows = self.rows.setdefault(log_id, [])
            if not rows or rows[-1][0] < key:
                after = rows[-1][1] if rows else -1
                rows.extend(self.load(log_id, after))
            i = bisect.bisect_left(rows, (key,))
            return rows[i] if i < len(rows) else None

    def first_at_least_height(self, log_id: str, height: int) -> Any:
        """For block rows (tree_size, height, header): the header at `height`, loading as needed."""
        with self.lock:
            rows = self.rows.setdefault(log_id, [])
            if not rows or rows[-1][1] < height:
                rows.extend(self.load(log_id, rows[-1][1] if rows else -1))
            # Heights are contiguous from 0 in a sound chain; search rather than index to stay safe.
            i = bisect.bisect_left([r[1] for r in rows], height) if rows and rows[0][1] != 0 else height
            if 0 <= i < len(rows) and rows[i][1] == height:
                return rows[i][2]
            return None


class Proofs:
    """Answers proof requests from tiles, blocks and checkpoints."""

    def __init__(self, db: Database, signer: Signer | None, tile_cache: int = 50_000) -> None:
        self.db = db
        self.signer = signer
        self.tiles = TileCache(db, tile_cache)
        # (tree_size, height, header): the first block whose tree covers a leaf. Blocks never change.
        self.blocks = _Index(lambda log_id, after: [(r["tree_size"], r["height"], header_of(r)) for r in db.fetch_dicts(
            "SELECT * FROM blocks WHERE log_id = ? AND height > ? ORDER BY height", [log_id, after])])
        self._checkpoint_rows: OrderedDict[int, dict[str, Any]] = OrderedDict()
        # (height, sequence): the first checkpoint naming a block at or after a height.
        self.checkpoints = _Index(lambda log_id, after: [tuple(r) for r in db.fetch(
            "SELECT height, min(sequence) FROM checkpoint_logs WHERE log_id = ? AND sequence > ?"
            " GROUP BY height ORDER BY height", [log_id, after])])

    def _reader(self, log_id: str, size: int) -> TileNodeReader:
        return TileNodeReader(size, self.tiles.fetcher(log_id, size), full_tiles=self.tiles.full_tiles(log_id))

    def bundle(self, event_id: str) -> dict[str, Any]:
        rows = self.db.fetch("SELECT log_id, leaf_index, payload FROM events WHERE event_id = ?", [event_id])
        if rows:
            return self.bundle_at(event_id, *rows[0])
        # An EPCIS event: its original (not a declaration under the same id), with its corrections.
        rows = self.db.fetch("SELECT log_id, leaf_index, original, declaration FROM epcis_events WHERE event_id = ?"
                             " ORDER BY declaration, log_id, leaf_index", [event_id])
        if not rows:
            raise NotFound(f"no event with event_id {event_id!r}")
        bundle = self.bundle_at(event_id, *rows[0][:3])
        corrections = []
        linked = self.db.fetch(
            "SELECT e.event_id, e.log_id, e.leaf_index, e.original, l.relation FROM epcis_links l"
            " JOIN epcis_events e ON e.event_id = l.target_id AND NOT e.declaration"
            " WHERE l.declared_by = ? AND l.relation = 'correctiveEventID'", [event_id])
        for row in [(event_id, r[0], r[1], r[2], "errorDeclaration") for r in rows[1:] if r[3]] + linked:
            try:
                corrections.append({"relation": row[4], "event_id": row[0],
                                    "bundle": self.bundle_at(row[0], row[1], row[2], row[3])})
            except NotFound as exc:  # recorded, not sealed yet
                corrections.append({"relation": row[4], "event_id": row[0], "bundle": None, "pending": str(exc)})
        bundle["corrections"] = corrections
        return bundle

    def bundle_at(self, event_id: str, log_id: str, index: int, payload: Any) -> dict[str, Any]:
        """The bundle of the leaf `index` of `log_id`, whose event JSON is `payload`."""
        covering = self.blocks.first_at_least(log_id, index + 1)
        if covering is None:
            raise NotFound(f"event {event_id} is recorded at leaf {index} of {log_id} but not sealed in a "
                           "block yet: ask again in a moment")
        block = covering[2]
        path = inclusion_path(index, block.tree_size, self._reader(log_id, block.tree_size))
        note, key_id, cons, chain = None, None, [], []
        cp = self.checkpoints.first_at_least(log_id, block.height)
        cp_row = self._checkpoint(cp[1]) if cp is not None else None
        if cp_row is not None:
            note = self.with_cosignatures(cp_row)
            key_id = bytes.fromhex(cp_row["key_id"])
            entry = json.loads(cp_row["logs"])[log_id]
            if entry["height"] > block.height:
                cons = consistency_path(block.tree_size, entry["tree_size"],
                                        self._reader(log_id, entry["tree_size"]))
                chain = [self._block(log_id, h) for h in range(block.height + 1, entry["height"] + 1)]
        return build_bundle(json.loads(payload), log_id, index, path, block, note, key_id, cons, chain)

    def _checkpoint(self, sequence: int) -> dict[str, Any] | None:
        row = self._checkpoint_rows.get(sequence)
        if row is None:
            rows = self.db.fetch_dicts("SELECT * FROM checkpoints WHERE sequence = ?", [sequence])
            if not rows:
                return None
            row = self._checkpoint_rows[sequence] = rows[0]
            if len(self._checkpoint_rows) > 1024:
                self._checkpoint_rows.popitem(last=False)
        return row

    def _block(self, log_id: str, height: int) -> BlockHeader:
        found = self.blocks.first_at_least_height(log_id, height)
        if found is None:
            raise NotFound(f"no block {height} in log {log_id!r}")
        return found

    def with_cosignatures(self, cp_row: dict[str, Any]) -> str:
        note = str(cp_row["note"])
        lines = self.db.cosignature_lines(cp_row["sequence"])
        return note + "".join(line + "\n" for line in lines if line + "\n" not in note)

    def consistency(self, log_id: str, first: int, second: int) -> dict[str, Any]:
        """Consistency proof between blocks `first` and `second` (heights) of a log."""
        if first > second:
            raise InvalidChallenge(f"from ({first}) must not be after to ({second})")
        a, b = self._block(log_id, first), self._block(log_id, second)
        path = consistency_path(a.tree_size, b.tree_size, self._reader(log_id, b.tree_size))
        return {
            "log_id": log_id,
            "from": {"height": a.height, "tree_size": a.tree_size, "root": a.root, "block_hash": a.block_hash},
            "to": {"height": b.height, "tree_size": b.tree_size, "root": b.root, "block_hash": b.block_hash},
            "consistency_path": [h.hex() for h in path],
        }

    def consistency_sizes(self, log_id: str, size1: int, size2: int) -> list[str]:
        """Consistency proof between two tree sizes (what witnesses ask for)."""
        if not 0 <= size1 <= size2:
            raise InvalidChallenge(f"need 0 <= from <= to, got {size1}, {size2}")
        latest = {b["log_id"]: b["tree_size"] for b in self.db.latest_blocks()}
        if size2 > latest.get(log_id, 0):
            raise NotFound(f"{log_id} has no sealed tree of size {size2}")
        return [h.hex() for h in consistency_path(size1, size2, self._reader(log_id, size2))]

    def latest_checkpoint(self) -> dict[str, Any]:
        row = self.db.latest_checkpoint()
        if row is None:
            raise NotFound("no checkpoint signed yet")
        cp = parse_checkpoint(row["note"][: row["note"].rindex("\n\n") + 1])
        return {"sequence": cp.sequence, "origin": cp.origin, "key_id": row["key_id"],
                "note": self.with_cosignatures(row), "logs": json.loads(row["logs"]),
                "verifier_key": self.signer.verifier_key if self.signer else None}


def published_form(row: dict[str, Any]) -> dict[str, Any]:
    """A stored checkpoint row as `Checkpointer.cut` publishes it (`logs` an object, `created_at` ISO text)."""
    out = dict(row)
    if isinstance(out.get("logs"), str):
        out["logs"] = json.loads(out["logs"])
    if isinstance(out.get("created_at"), datetime):
        out["created_at"] = out["created_at"].isoformat()
    return out


class LedgerService:
    """Wires tiles, checkpoints and proofs into a running store."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.signer = load_or_create_signer(settings.key_path, settings.ledger.key_name)
        self.tiles = TileMaintainer(db)
        self.checkpointer = Checkpointer(settings, db, self.signer)
        self.proofs = Proofs(db, self.signer, settings.store.tile_cache)
        self._task: asyncio.Task[None] | None = None

    def banner(self) -> str:
        return f"checkpoint key: {self.signer.verifier_key}"

    async def start(self) -> None:
        await asyncio.to_thread(self.tiles.restore, self.db.next_leaf_indices())
        # Again at every start: a broker that lost its data gets it back at once, so a worker with an
        # empty data folder sees which logs exist and continues them in a new epoch (a witness: "repeated").
        latest = await asyncio.to_thread(self.db.latest_checkpoint)
        if latest is not None:
            try:
                await self.checkpointer.publish(published_form(latest))
            except (KafkaError, OSError) as exc:
                log.warning("checkpoint %d not published again at start: %s", latest["sequence"], exc)
        self._task = fatal.watch(asyncio.create_task(self.checkpointer.run()), "the checkpointer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.checkpointer.close()
