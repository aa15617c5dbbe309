"""The store's gauges, read from DuckDB when Prometheus scrapes: table rows, checkpoint age, anomalies."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pipeline import metrics
from pipeline.store.db import Database


def refresh_store_gauges(db: Database, status: dict[str, Any]) -> None:
    """Set the gauges that describe the store's tables from `status` (see `Store.status`) and the file."""
    for table, rows in status.get("tables", {}).items():
        metrics.TABLE_ROWS.labels(table).set(rows)
    latest = db.fetch("SELECT sequence, created_at FROM checkpoints ORDER BY sequence DESC LIMIT 1")
    if latest:
        sequence, created_at = latest[0]
        metrics.CHECKPOINT_SEQUENCE.set(sequence)
        metrics.CHECKPOINT_AGE.set(max(0.0, (datetime.now(timezone.utc) - created_at).total_seconds()))
    has_anomalies = db.fetch("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'anomalies'")[0][0]
    if has_anomalies:
        rows = db.fetch("SELECT kind, status, count(*) FROM anomalies GROUP BY ALL")
        metrics.ANOMALIES_STORED.clear()  # a (kind, status) no row has any more is gone, not stale
        for kind, status_, n in rows:
            metrics.ANOMALIES_STORED.labels(str(kind), str(status_)).set(n)
