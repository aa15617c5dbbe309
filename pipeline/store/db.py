"""The one module that opens DuckDB: schema, idempotent ingest, lookups; user SQL via the sandbox.

DuckDB lets one process hold a file for writing and no other process open it,
so the store owns the file; readers come through its HTTP API (per-request
cursors), or open the file read-only when no store runs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from pipeline.core.blocks import BlockHeader
from pipeline.core.log_ids import parse_log_id
from pipeline.errors import NotFound, StoreError
from pipeline.store.epcis_rows import insert_epcis_entries
from pipeline.store.sandbox import QueryResult, run_query


@dataclass
class IngestBatch:
    """Rows decoded from one poll of the result topics, written in one transaction."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    blocks: list[BlockHeader] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    cosignatures: list[dict[str, Any]] = field(default_factory=list)
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    tiles: dict[tuple[str, int, int], bytes] = field(default_factory=dict)
    demand: list[dict[str, Any]] = field(default_factory=list)
    forecasts: list[dict[str, Any]] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    def __len__(self) -> int:
        return (len(self.entries) + len(self.blocks) + len(self.dead_letters) + len(self.checkpoints)
                + len(self.cosignatures) + len(self.anomalies) + len(self.demand) + len(self.forecasts))


@dataclass
class IngestResult:
    """Rows one batch added (replays add none)."""

    events: int = 0
    duplicates: int = 0
    blocks: int = 0
    conflicts: int = 0
    dead_letters: int = 0
    checkpoints: int = 0
    anomalies: int = 0
    epcis_events: int = 0

    def add(self, other: IngestResult) -> None:
        for f in fields(IngestResult):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def _insert_forecasting(cur: duckdb.DuckDBPyConnection, demand: list[dict[str, Any]],
                        forecasts: list[dict[str, Any]]) -> None:
    """Demand parts keep the larger total of a day (totals only grow), `demand` sums them; forecasts are written once."""
    if demand:
        parts: dict[tuple[str, str, int], float] = {}
        for r in demand:
            k = (r["series_key"], str(r["ds"]), int(r.get("part", 0)))
            parts[k] = max(parts.get(k, 0.0), float(r["y"]))
        cur.register("staged_demand", pa.table({
            "series_key": [k[0] for k in parts], "ds": pa.array([k[1] for k in parts]).cast(pa.date32()),
            "part": pa.array([k[2] for k in parts], pa.int32()), "y": list(parts.values())}))
        cur.execute("INSERT INTO demand_parts SELECT * FROM staged_demand ON CONFLICT (series_key, ds, part) "
                    "DO UPDATE SET y = greatest(demand_parts.y, excluded.y)")
        cur.execute("INSERT OR REPLACE INTO demand SELECT p.series_key, p.ds, sum(p.y) FROM demand_parts p "
                    "JOIN (SELECT DISTINCT series_key, ds FROM staged_demand) USING (series_key, ds) GROUP BY ALL")
        cur.unregister("staged_demand")
    if forecasts:
        cols = ("yhat", "yhat_lower", "yhat_upper", "yhat_lower_95", "yhat_upper_95")
        cur.register("staged_forecasts", pa.table({
            "series_key": [r["series_key"] for r in forecasts],
            "ds": pa.array([str(r["ds"]) for r in forecasts]).cast(pa.date32()),
            **{c: [float(r[c]) for r in forecasts] for c in cols},
            "trained_at": pa.array([str(r["trained_at"]) for r in forecasts]),
            "model": [json.dumps(r["model"], sort_keys=True) for r in forecasts],
            "input_ledger": [json.dumps(r["input_ledger"], sort_keys=True) for r in forecasts]}))
        cur.execute("INSERT INTO forecasts SELECT series_key, ds, yhat, yhat_lower, yhat_upper, yhat_lower_95, "
                    "yhat_upper_95, CAST(trained_at AS TIMESTAMPTZ), model, input_ledger FROM staged_forecasts "
                    "ON CONFLICT DO NOTHING")
        cur.unregister("staged_forecasts")


_ANOMALY_TEXT = ("anomaly_id", "event_id", "shipment_id", "lane", "kind", "severity", "status", "explanation",
                 "model", "log_id")


def _partition(text: str) -> int:
    """The source partition of a log (any epoch)."""
    name = parse_log_id(text)
    if name is None:
        raise ValueError(f"{text!r} is not a log id")
    return name.partition


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
        if not read_only:
            self.con.execute(resources.files("pipeline.store").joinpath("schema.sql").read_text())
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

    def ingest(self, batch: IngestBatch) -> IngestResult:
        """Write one batch and the consumer offsets after it, in one transaction."""
        result = IngestResult()
        now = _now()
        with self._write_lock:
            cur = self.cursor()
            cur.execute("BEGIN")
            try:
                if batch.entries:
                    self._insert_entries(cur, batch.entries, now, result)
                if batch.blocks:
                    self._insert_blocks(cur, batch.blocks, now, result)
                if batch.dead_letters:
                    self._insert_dead_letters(cur, batch.dead_letters, now, result)
                if batch.checkpoints:
                    self._insert_checkpoints(cur, batch.checkpoints, result)
                if batch.cosignatures:
                    cur.executemany(
                        "INSERT INTO cosignatures VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        [(c["sequence"], c["witness"], c["key_id"], c["line"], now) for c in batch.cosignatures],
                    )
                if batch.anomalies:
                    result.anomalies = self._upsert_anomalies(cur, batch.anomalies, now)
                if batch.tiles:
                    tiles = pa.table({
                        "log_id": [k[0] for k in batch.tiles], "level": [k[1] for k in batch.tiles],
                        "idx": [k[2] for k in batch.tiles], "hashes": list(batch.tiles.values()),
                    })
                    cur.register("staged_tiles", tiles)
                    cur.execute("INSERT OR REPLACE INTO merkle_tiles SELECT * FROM staged_tiles")
                if batch.demand or batch.forecasts:
                    _insert_forecasting(cur, batch.demand, batch.forecasts)
                if batch.offsets:
                    # One statement: executemany runs one INSERT per row, which cost more than the rows.
                    cur.register("staged_offsets", pa.table({
                        "topic": [t for t, _ in batch.offsets],
                        "partition": pa.array([p for _, p in batch.offsets], pa.int32()),
                        "next_offset": pa.array(list(batch.offsets.values()), pa.int64()),
                    }))
                    cur.execute("INSERT OR REPLACE INTO consumer_offsets SELECT * FROM staged_offsets")
                    cur.unregister("staged_offsets")
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return result

    def _insert_entries(self, cur: duckdb.DuckDBPyConnection, entries: list[dict[str, Any]],
                        now: datetime, result: IngestResult) -> None:
        if any("epcis" in e for e in entries):
            added, kept = insert_epcis_entries(cur, [e for e in entries if "epcis" in e], now)
            result.epcis_events += added
            result.duplicates += kept
            entries = [e for e in entries if "epcis" not in e]
            if not entries:
                return
        staged = pa.table({
            "event_id": [e["event_id"] for e in entries],
            "shipment_id": [e["shipment_id"] for e in entries],
            "event_type": [e["event_type"] for e in entries],
            "event_time": [e["event_time"] for e in entries],
            "log_id": [e["log_id"] for e in entries],
            "leaf_index": pa.array([e["leaf_index"] for e in entries], pa.int64()),
            "leaf_hash": [e["leaf_hash"] for e in entries],
            "kafka_partition": pa.array([_partition(e["log_id"]) for e in entries], pa.int32()),
            "kafka_offset": pa.array([e["kafka_offset"] for e in entries], pa.int64()),
            "payload": [e["payload"] for e in entries],
        })
        cur.register("staged_entries", staged)
        inserted = cur.execute(
            "INSERT INTO events SELECT event_id, shipment_id, event_type, event_time::TIMESTAMPTZ, log_id,"
            " leaf_index, leaf_hash, kafka_partition, kafka_offset, payload::JSON, $1"
            " FROM staged_entries ON CONFLICT DO NOTHING",
            [now],
        ).fetchone()
        added = int(inserted[0]) if inserted else 0
        result.events += added
        if added < len(entries):
            # Same event_id at another leaf: keep the leaf, so every leaf of the log stays in the store.
            dup = cur.execute(
                "INSERT INTO duplicate_leaves SELECT s.log_id, s.leaf_index, s.event_id, s.leaf_hash,"
                " s.kafka_offset, s.payload::JSON, $1 FROM staged_entries s"
                " ANTI JOIN events e ON e.log_id = s.log_id AND e.leaf_index = s.leaf_index"
                " ON CONFLICT DO NOTHING",
                [now],
            ).fetchone()
            result.duplicates += int(dup[0]) if dup else 0
        cur.unregister("staged_entries")

    def _insert_blocks(self, cur: duckdb.DuckDBPyConnection, blocks: list[BlockHeader],
                       now: datetime, result: IngestResult) -> None:
        keys = {(b.log_id, b.height) for b in blocks}
        known: dict[tuple[str, int], str] = {}
        for log_id in {k[0] for k in keys}:
            heights = [h for lid, h in keys if lid == log_id]
            for lid, h, bh in cur.execute(
                "SELECT log_id, height, block_hash FROM blocks WHERE log_id = ? AND height BETWEEN ? AND ?",
                [log_id, min(heights), max(heights)],
            ).fetchall():
                known[(lid, h)] = bh
        fresh: list[tuple[Any, ...]] = []
        for b in blocks:
            bh = b.block_hash
            seen = known.get((b.log_id, b.height))
            if seen is None:
                known[(b.log_id, b.height)] = bh
                d = b.to_dict()
                fresh.append(tuple(d.values()) + (bh,))
            elif seen != bh:
                result.conflicts += 1
                cur.execute(
                    "INSERT INTO block_conflicts VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [b.log_id, b.height, bh, json.dumps(b.to_dict()), now],
                )
        if fresh:
            cur.executemany("INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", fresh)
        result.blocks = len(fresh)

    def _insert_dead_letters(self, cur: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]],
                             now: datetime, result: IngestResult) -> None:
        staged = pa.table({
            "source_topic": [r["source_topic"] for r in rows],
            "source_partition": pa.array([r["source_partition"] for r in rows], pa.int32()),
            "source_offset": pa.array([r["source_offset"] for r in rows], pa.int64()),
            "kafka_key": pa.array([r["key"] for r in rows], pa.binary()),
            "value": pa.array([r["value"] for r in rows], pa.binary()),
            "value_text": [r["value"].decode("utf-8", "replace") for r in rows],
            "error": [r["error"] for r in rows],
            "error_fields": [r["error_fields"] for r in rows],
        })
        cur.register("staged_dead", staged)
        n = cur.execute(
            "INSERT INTO dead_letters SELECT *, $1 FROM ("
            " SELECT source_topic, source_partition, source_offset, kafka_key, value, value_text, error,"
            " error_fields::JSON FROM staged_dead) ON CONFLICT DO NOTHING",
            [now],
        ).fetchone()
        cur.unregister("staged_dead")
        result.dead_letters = int(n[0]) if n else 0

    def _insert_checkpoints(self, cur: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]],
                            result: IngestResult) -> None:
        for r in rows:
            n = cur.execute(
                "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [r["sequence"], r["origin"], r["key_id"], r["note"], json.dumps(r["logs"]), r["created_at"]],
            ).fetchone()
            added = int(n[0]) if n else 0
            result.checkpoints += added
            if added:
                cur.executemany(
                    "INSERT INTO checkpoint_logs VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [(r["sequence"], log_id, e["height"], e["tree_size"], e["block_hash"])
                     for log_id, e in r["logs"].items()],
                )

    def _upsert_anomalies(self, cur: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]], now: datetime) -> int:
        """Keep the highest revision of each anomaly_id; a replayed or older revision changes nothing."""
        latest: dict[str, dict[str, Any]] = {}
        for r in rows:
            seen = latest.get(r["anomaly_id"])
            if seen is None or r["revision"] > seen["revision"]:
                latest[r["anomaly_id"]] = r
        staged = pa.table({
            **{c: [r[c] for r in latest.values()] for c in _ANOMALY_TEXT},
            **{c: pa.array([r[c] for r in latest.values()], pa.float64()) for c in ("score", "expected", "actual")},
            "observed_at": [r["observed_at"] for r in latest.values()],
            "detected_at": [r.get("detected_at") or now.isoformat() for r in latest.values()],
            "evidence": [json.dumps(r.get("evidence") or {}) for r in latest.values()],
            "leaf_index": pa.array([r["leaf_index"] for r in latest.values()], pa.int64()),
            "revision": pa.array([r["revision"] for r in latest.values()], pa.int64()),
        })
        cur.register("staged_anomalies", staged)
        before = cur.execute("SELECT count(*) FROM anomalies a JOIN staged_anomalies s USING (anomaly_id)"
                             " WHERE s.revision > a.revision").fetchone()
        fresh = cur.execute("SELECT count(*) FROM staged_anomalies s ANTI JOIN anomalies a USING (anomaly_id)").fetchone()
        cur.execute(
            "INSERT INTO anomalies SELECT anomaly_id, event_id, shipment_id, lane, kind, severity, status, score,"
            " expected, actual, observed_at::TIMESTAMPTZ, detected_at::TIMESTAMPTZ, explanation, evidence::JSON,"
            " model, log_id, leaf_index, revision, $1 FROM staged_anomalies"
            " ON CONFLICT (anomaly_id) DO UPDATE SET event_id = excluded.event_id, lane = excluded.lane,"
            " severity = excluded.severity, status = excluded.status, score = excluded.score,"
            " expected = excluded.expected, actual = excluded.actual, observed_at = excluded.observed_at,"
            " explanation = excluded.explanation, evidence = excluded.evidence, model = excluded.model,"
            " log_id = excluded.log_id, leaf_index = excluded.leaf_index, revision = excluded.revision,"
            " updated_at = excluded.updated_at WHERE excluded.revision > anomalies.revision",
            [now],
        )
        cur.unregister("staged_anomalies")
        return int(before[0] if before else 0) + int(fresh[0] if fresh else 0)

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
