"""The one module that opens DuckDB: schema, idempotent ingest, lookups; user SQL via the sandbox.

DuckDB lets one process hold a file for writing and no other process open it,
so the store owns the file; readers come through its HTTP API (per-request
cursors), or open the file read-only when no store runs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

from pipeline.errors import NotFound, StoreError
from pipeline.store.sandbox import QueryResult, run_query
from pipeline.store.writer import IngestBatch, IngestResult, RecordedEventId, write_batch

__all__ = ["Database", "IngestBatch", "IngestResult"]


# Checkpoint vacuum merges the small row group each checkpoint leaves at the end of `events`
# with the ones before it, rewriting and re-indexing ever more of the table: ingest CPU per
# event grew from 10 to 40 µs over the first 500 k events. The store deletes no rows (a new
# broker cluster empties only the tiny consumer_offsets), so there is nothing else to vacuum.
# A 64 MB WAL (up to ~55 k events) between checkpoints makes fewer, larger row groups and
# serializes the event_id index less often; a restart replays at most that much WAL.
WRITE_SETTINGS = "SET max_vacuum_tasks = 0; SET checkpoint_threshold = '64MB'"


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Database:
    """The DuckDB file of one store; `read_only` for `provenance sql`/`audit` with no store running."""

    def __init__(self, path: Path | str, read_only: bool = False, writable: Sequence[Path] = ()) -> None:
        """`writable`: the only other files (or folders) this connection may open: snapshot scratch, exports."""
        self.path = Path(path)
        self.read_only = read_only
        if read_only and not self.path.exists():
            raise NotFound(f"no DuckDB file at {self.path}: run `provenance serve` or `provenance demo` first")
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from None
        self._write_lock = threading.Lock()
        self._heights: dict[str, int] | None = None  # per log, the highest block recorded (read at the first write)
        self._offset_keys: set[tuple[str, int]] | None = None  # the partitions consumer_offsets has a row for
        if not read_only:
            self.con.execute(resources.files("pipeline.store").joinpath("schema.sql").read_text())
            self.con.execute(WRITE_SETTINGS)
        for setting, paths in (("allowed_paths", [p for p in writable if not Path(p).is_dir()]),
                               ("allowed_directories", [p for p in writable if Path(p).is_dir()])):
            if paths:
                allowed = ", ".join("'" + str(Path(p).resolve()).replace("'", "''") + "'" for p in paths)
                self.con.execute(f"SET {setting} = [{allowed}]")
        # User SQL can read tables and nothing else: no files, no network, no settings.
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")

    def close(self) -> None:
        with self._write_lock:  # a write still running in its thread (the ingest was cancelled) ends first
            self.con.close()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self.con.cursor()

    # ---- ingest -------------------------------------------------------------------------

    def offsets(self) -> dict[tuple[str, int], int]:
        rows = self.cursor().execute("SELECT topic, partition, next_offset FROM consumer_offsets").fetchall()
        return {(t, p): o for t, p, o in rows}

    def broker_cluster(self) -> str | None:
        """The cluster id of the broker the store read from last (None before the first)."""
        row = self.cursor().execute("SELECT cluster_id FROM broker_clusters ORDER BY seen_at DESC LIMIT 1").fetchone()
        return None if row is None else str(row[0])

    def switch_broker_cluster(self, cluster_id: str) -> dict[tuple[str, int], int]:
        """Record a new cluster; unless it is the first, drop the consumer offsets (they were the old one's).

        Returns the offsets dropped. One transaction, under the write lock, so no batch writes
        an old offset after it.
        """
        with self._write_lock:
            cur = self.cursor()
            cur.execute("BEGIN")
            try:
                first = cur.execute("SELECT count(*) FROM broker_clusters").fetchone()[0] == 0  # type: ignore[index]
                dropped = {} if first else self.offsets()
                if not first:
                    cur.execute("DELETE FROM consumer_offsets")
                cur.execute("INSERT OR REPLACE INTO broker_clusters VALUES (?, ?, ?::JSON)",
                            [cluster_id, _now(), json.dumps({f"{t}[{p}]": o for (t, p), o in dropped.items()})])
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            finally:
                self._offset_keys = None  # read again at the next write
            return dropped

    def next_leaf_indices(self) -> dict[str, int]:
        """Per log, one past the highest leaf index recorded (events and duplicate leaves)."""
        rows = self.cursor().execute(
            "SELECT log_id, max(leaf_index) + 1 FROM ("
            " SELECT log_id, leaf_index FROM events UNION ALL SELECT log_id, leaf_index FROM duplicate_leaves"
            " UNION ALL SELECT log_id, leaf_index FROM epcis_events)"
            " GROUP BY log_id"
        ).fetchall()
        return {log_id: int(n) for log_id, n in rows}

    def sealed_sizes(self) -> dict[str, int]:
        """Per log, the tree size of its highest recorded block."""
        rows = self.cursor().execute("SELECT log_id, max(tree_size) FROM blocks GROUP BY log_id").fetchall()
        return {log_id: int(size) for log_id, size in rows}

    def ingest(self, batch: IngestBatch) -> IngestResult:
        """Write one batch and the consumer offsets after it, in one transaction.

        First on the fast path; a batch holding an event id already recorded is rolled
        back and written again with the conflict handling of every row (see `writer`).
        """
        with self._write_lock:
            try:
                return self._transaction(batch, careful=False)
            except RecordedEventId:
                return self._transaction(batch, careful=True)

    def _transaction(self, batch: IngestBatch, careful: bool) -> IngestResult:
        cur = self.cursor()
        if self._heights is None:
            rows = cur.execute("SELECT log_id, max(height) FROM blocks GROUP BY log_id").fetchall()
            self._heights = {log_id: int(h) for log_id, h in rows}
        if self._offset_keys is None:
            self._offset_keys = set(self.offsets())
        cur.execute("BEGIN")
        try:
            result = write_batch(cur, batch, _now(), careful, self._heights, self._offset_keys)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        self._offset_keys.update(batch.offsets)
        for b in batch.blocks:
            self._heights[b.log_id] = max(self._heights.get(b.log_id, -1), b.height)
        return result

    def anomalies(self, kind: str | None = None, status: str | None = None, lane: str | None = None,
                  limit: int = 100) -> list[dict[str, Any]]:
        """Anomaly rows, newest observation first, filtered by kind, status and lane."""
        where, params = [], []
        for column, value in (("kind", kind), ("status", status), ("lane", lane)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self.fetch_dicts(
            f"SELECT * EXCLUDE (updated_at) FROM anomalies {clause}"
            " ORDER BY observed_at DESC, anomaly_id LIMIT ?", [*params, limit])
        for r in rows:
            r["evidence"] = json.loads(r["evidence"]) if r["evidence"] else {}
        return rows

    # ---- reads -------------------------------------------------------------------------

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.cursor().execute(sql, list(params)).fetchall()

    def fetch_dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.cursor().execute(sql, list(params))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def event(self, event_id: str) -> dict[str, Any]:
        rows = self.fetch_dicts(
            "SELECT event_id, shipment_id, event_type, event_time, log_id, leaf_index, leaf_hash,"
            " kafka_partition, kafka_offset, payload, recorded_at FROM events WHERE event_id = ?",
            [event_id],
        )
        if not rows:
            raise NotFound(f"no event with event_id {event_id!r}")
        return rows[0]

    def covering_block(self, log_id: str, leaf_index: int) -> dict[str, Any] | None:
        """The first block of the log whose tree covers the leaf, or None while unsealed."""
        rows = self.fetch_dicts(
            "SELECT * FROM blocks WHERE log_id = ? AND tree_size > ? ORDER BY height LIMIT 1",
            [log_id, leaf_index],
        )
        return rows[0] if rows else None

    def blocks(self, log_id: str | None = None, limit: int = 100, before: int | None = None) -> list[dict[str, Any]]:
        where, params = [], []
        if log_id is not None:
            where.append("log_id = ?")
            params.append(log_id)
        if before is not None:
            where.append("height < ?")
            params.append(before)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        return self.fetch_dicts(
            f"SELECT * FROM blocks {clause} ORDER BY created_at DESC, log_id, height DESC LIMIT ?",
            [*params, limit],
        )

    def block(self, log_id: str, height: int) -> dict[str, Any]:
        rows = self.fetch_dicts("SELECT * FROM blocks WHERE log_id = ? AND height = ?", [log_id, height])
        if not rows:
            raise NotFound(f"no block {height} in log {log_id!r}")
        return rows[0]

    def latest_blocks(self) -> list[dict[str, Any]]:
        """The highest block of every log."""
        return self.fetch_dicts(
            "SELECT * FROM blocks QUALIFY row_number() OVER (PARTITION BY log_id ORDER BY height DESC) = 1"
            " ORDER BY log_id"
        )

    def tile(self, log_id: str, level: int, index: int) -> bytes:
        rows = self.fetch("SELECT hashes FROM merkle_tiles WHERE log_id = ? AND level = ? AND idx = ?",
                          [log_id, level, index])
        if not rows:
            raise NotFound(f"tile ({level}, {index}) of {log_id} is not stored")
        return bytes(rows[0][0])

    def tiles(self, log_id: str, ids: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        out = {}
        for level, index in ids:
            rows = self.fetch("SELECT hashes FROM merkle_tiles WHERE log_id = ? AND level = ? AND idx = ?",
                              [log_id, level, index])
            if rows:
                out[(level, index)] = bytes(rows[0][0])
        return out

    def latest_checkpoint(self) -> dict[str, Any] | None:
        rows = self.fetch_dicts("SELECT * FROM checkpoints ORDER BY sequence DESC LIMIT 1")
        return rows[0] if rows else None

    def cosignature_lines(self, sequence: int) -> list[str]:
        return [r[0] for r in self.fetch("SELECT line FROM cosignatures WHERE sequence = ? ORDER BY witness",
                                         [sequence])]

    def counts(self) -> dict[str, int]:
        row = self.fetch(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM blocks),"
            " (SELECT count(*) FROM dead_letters), (SELECT count(*) FROM checkpoints),"
            " (SELECT count(*) FROM duplicate_leaves), (SELECT count(*) FROM block_conflicts),"
            " (SELECT count(DISTINCT sequence) FROM cosignatures), (SELECT count(*) FROM anomalies),"
            " (SELECT count(*) FROM epcis_events)"
        )[0]
        names = ("events", "blocks", "dead_letters", "checkpoints", "duplicate_leaves", "block_conflicts",
                 "cosigned_checkpoints", "anomalies", "epcis_events")
        return dict(zip(names, (int(v) for v in row)))

    # ---- user SQL ----------------------------------------------------------------------

    def query(self, sql: str, row_cap: int, timeout: float) -> QueryResult:
        """Run one read-only statement in a fresh cursor, interrupted after `timeout` seconds."""
        return run_query(self.con, sql, row_cap, timeout)
