"""The dashboard's panels as queries: one function per panel, each a JSON-ready dict.

Every panel stands alone: a table that is missing (the analytics tables exist
only once the analytics process has run against this store) or empty gives
`{"available": false, "message": ...}` for that panel, never an error for the
page. Times go out as epoch seconds (what uPlot plots) and RFC 3339 strings.
"""

from __future__ import annotations

from typing import Any

from pipeline.core.fleet_catalog import SITES
from pipeline.store.db import Database
from pipeline.store.sandbox import json_value

# Ingest charts: one bucket a second over the last few minutes.
INGEST_WINDOW = 180
MIN_WINDOW = 60
TOP_LANES = 12
RECENT_ROWS = 12
REASONS = 10

SITE_NAMES = {s.gln: s.city for s in SITES}


def _rows(db: Database, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    return [{k: json_value(v) for k, v in r.items()} for r in db.fetch_dicts(sql, params or [])]


def tables(db: Database) -> set[str]:
    return {r[0] for r in db.fetch("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'")}


def columns(db: Database, table: str) -> set[str]:
    return {r[0] for r in db.fetch("SELECT column_name FROM duckdb_columns() WHERE table_name = ?", [table])}


def _per_second(db: Database, table: str, column: str, start: int, end: int) -> list[int]:
    counts = dict(db.fetch(
        f"SELECT floor(epoch({column}))::BIGINT AS s, count(*) FROM {table}"
        f" WHERE {column} >= to_timestamp(?) GROUP BY 1", [start]))
    return [int(counts.get(t, 0)) for t in range(start, end + 1)]


def ingest(db: Database, now: int, lag: dict[str, int], lag_history: list[tuple[int, int]]) -> dict[str, Any]:
    """Accepted and dead-lettered records a second (as the store wrote them), totals, consumer lag."""
    start = now - INGEST_WINDOW
    accepted = _per_second(db, "events", "recorded_at", start, now)
    dups = _per_second(db, "duplicate_leaves", "recorded_at", start, now)
    dead = _per_second(db, "dead_letters", "received_at", start, now)
    accepted = [a + d for a, d in zip(accepted, dups)]
    recent = accepted[-11:-1]  # the last ten whole seconds
    # A store that started moments ago: the chart starts a little before its first record, not minutes before.
    first = next((i for i, (a, d) in enumerate(zip(accepted, dead)) if a or d), len(accepted))
    cut = max(0, min(first - 5, len(accepted) - MIN_WINDOW))
    return {
        "t": list(range(start + cut, now + 1)), "accepted": accepted[cut:], "dead_lettered": dead[cut:],
        "rate": sum(recent) / len(recent) if recent else 0.0,
        "lag": lag, "lag_total": sum(lag.values()),
        "lag_t": [t for t, _ in lag_history], "lag_records": [n for _, n in lag_history],
    }


def event_mix(db: Database) -> dict[str, Any]:
    """Accepted events by type and by lane (origin → destination, named from the site catalogue)."""
    by_type = _rows(db, "SELECT event_type, count(*) AS n FROM events GROUP BY 1 ORDER BY 2 DESC, 1")
    lanes = _rows(db,
        "SELECT payload->>'origin' AS origin, payload->>'destination' AS destination, count(*) AS n"
        " FROM events WHERE payload->>'origin' IS NOT NULL GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT ?", [TOP_LANES])
    lane_count = db.fetch("SELECT count(DISTINCT (payload->>'origin', payload->>'destination')) FROM events"
                          " WHERE payload->>'origin' IS NOT NULL")[0][0]
    for lane in lanes:
        lane["lane"] = lane_label(lane["origin"], lane["destination"])
    return {"by_type": by_type, "by_lane": lanes, "lanes": int(lane_count or 0)}


def lane_label(origin: str | None, destination: str | None) -> str:
    """`Rotterdam → Lyon` where the sites are known, the codes otherwise."""
    def name(code: str | None) -> str:
        return SITE_NAMES.get(code or "", code or "?")
    return f"{name(origin)} → {name(destination)}"


def dead_letters(db: Database) -> dict[str, Any]:
    """Dead letters grouped by reason, and the latest few with where they came from."""
    # Parser messages name a line, column or byte position; one reason should count them all.
    reasons = _rows(db,
        "SELECT regexp_replace(error, '(line|column|position|byte) (0x[0-9a-f]+|[0-9]+)', '\\1 …', 'g') AS reason,"
        " count(*) AS n, max(received_at) AS last_seen FROM dead_letters GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ?",
        [REASONS])
    recent = _rows(db,
        "SELECT source_topic, source_partition, source_offset, error AS reason, received_at,"
        " left(value_text, 160) AS value FROM dead_letters ORDER BY received_at DESC, source_offset DESC LIMIT ?",
        [RECENT_ROWS])
    total = db.fetch("SELECT count(*) FROM dead_letters")[0][0]
    return {"total": int(total), "reasons": reasons, "recent": recent}


def ledger(db: Database, now: int) -> dict[str, Any]:
    """Blocks per log, the latest signed checkpoint and its age, and its witness cosignatures."""
    logs = _rows(db,
        "SELECT log_id, count(*) AS blocks, max(height) AS height, max(tree_size) AS tree_size,"
        " max(created_at) AS last_block_at FROM blocks GROUP BY 1"
        " ORDER BY split_part(log_id, '/', 1), try_cast(split_part(log_id, '/', 2) AS INTEGER), log_id")
    checkpoint = None
    cp = _rows(db, "SELECT sequence, origin, key_id, created_at, json_array_length(json_keys(logs)) AS logs,"
                   " epoch(created_at) AS created_epoch FROM checkpoints ORDER BY sequence DESC LIMIT 1")
    cosignatures: list[dict[str, Any]] = []
    if cp:
        checkpoint = cp[0]
        checkpoint["age_s"] = max(0.0, now - float(checkpoint.pop("created_epoch")))
        cosignatures = _rows(db, "SELECT witness, key_id, received_at FROM cosignatures WHERE sequence = ?"
                                 " ORDER BY witness", [checkpoint["sequence"]])
    cosigned = db.fetch("SELECT count(DISTINCT sequence), count(DISTINCT witness) FROM cosignatures")[0]
    return {"logs": logs, "checkpoint": checkpoint, "cosignatures": cosignatures,
            "cosigned_checkpoints": int(cosigned[0]), "witnesses": int(cosigned[1])}


def recent_event(db: Database) -> str | None:
    """A recent event the verify box can prove now: under the latest checkpoint, else in a sealed block."""
    for covered in (
        "SELECT log_id, tree_size AS size FROM checkpoint_logs"
        " WHERE sequence = (SELECT max(sequence) FROM checkpoints)",
        "SELECT log_id, max(tree_size) AS size FROM blocks GROUP BY 1",
    ):
        rows = db.fetch(
            f"SELECT e.event_id FROM events e JOIN ({covered}) c ON e.log_id = c.log_id AND e.leaf_index < c.size"
            " ORDER BY e.recorded_at DESC LIMIT 1")
        if rows:
            return str(rows[0][0])
    return None
