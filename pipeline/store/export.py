"""`provenance export --parquet DIR`: the store's tables as Hive-partitioned Parquet.

Layout: `DIR/<table>/day=YYYY-MM-DD/data_0.parquet`, which DuckDB, Spark, Trino
and Polars read as they are (`read_parquet('DIR/events/**/*.parquet',
hive_partitioning = true)`). `day` is the UTC day the row arrived in the store
(events by `recorded_at`, blocks by `created_at` …; see `DAY_COLUMNS`), so a
finished day never changes and `--since DAY` exports are incremental: they
rewrite the partitions from DAY on and leave the older ones alone. Each
partition is written beside its table first and then renamed into place, so
a reader sees a day's old files or its new ones.

Derived and internal tables are not exported: `merkle_tiles` (recomputed from
the leaves), `checkpoint_logs` (the `logs` column of `checkpoints`), `consumer_offsets`
and `broker_clusters` (the store's own Kafka positions and the clusters they were on).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pipeline.errors import InvalidChallenge

if TYPE_CHECKING:  # the command line loads this module; DuckDB only when an export runs
    from pipeline.store.db import Database

# The column whose UTC day partitions each table: when the row reached the store (or, for model
# output, when it was computed). Tables not listed but present (added later) use the first of
# FALLBACK_COLUMNS they have.
DAY_COLUMNS = {
    "events": "recorded_at",
    "duplicate_leaves": "recorded_at",
    "blocks": "created_at",
    "block_conflicts": "seen_at",
    "dead_letters": "received_at",
    "checkpoints": "created_at",
    "cosignatures": "received_at",
    "anomalies": "updated_at",
    "demand": "ds",
    "forecasts": "trained_at",
}
FALLBACK_COLUMNS = ("recorded_at", "received_at", "updated_at", "created_at", "detected_at", "ds")
SKIPPED = {"merkle_tiles", "consumer_offsets", "broker_clusters", "checkpoint_logs", "snapshot_info"}


@dataclass(frozen=True)
class TableExport:
    table: str
    rows: int
    days: list[str]


def day_sql(db: Database, table: str) -> str | None:
    """The SQL expression of a table's partition day (UTC), or None when it has no time column to go by."""
    types = dict(db.fetch("SELECT column_name, data_type FROM duckdb_columns()"
                          " WHERE schema_name = 'main' AND table_name = ?", [table]))
    column = DAY_COLUMNS.get(table) or next((c for c in FALLBACK_COLUMNS if c in types), None)
    if column is None or column not in types:
        return None
    if types[column] == "DATE":
        return f"strftime({column}, '%Y-%m-%d')"
    return f"strftime(timezone('UTC', {column}::TIMESTAMPTZ), '%Y-%m-%d')"


def exported_tables(db: Database) -> list[str]:
    rows = db.fetch("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' ORDER BY table_name")
    return [r[0] for r in rows if r[0] not in SKIPPED]


def export_parquet(db: Database, out: Path, since: date | None = None) -> list[TableExport]:
    """Write every table's partitions (from `since` on, if given) under `out`; returns what was written."""
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for table in exported_tables(db):
        day = day_sql(db, table)
        if day is None:
            continue
        results.append(_export_table(db, table, day, out, since))
    return results


def _export_table(db: Database, table: str, day: str, out: Path, since: date | None) -> TableExport:
    where = f"WHERE {day} >= '{since.isoformat()}'" if since else ""
    target = out / table
    staging = out / f".{table}.export-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    rows = db.fetch(f"SELECT count(*) FROM {table} {where}")[0][0] if not since else None
    db.cursor().execute(
        f"COPY (SELECT *, {day} AS day FROM {table} {where}) TO '{_sql_text(staging)}'"
        " (FORMAT parquet, PARTITION_BY (day), COMPRESSION zstd)"
    )
    written = sorted(p.name.removeprefix("day=") for p in staging.glob("day=*")) if staging.exists() else []
    target.mkdir(exist_ok=True)
    stale = [p for p in target.glob("day=*") if since is None or p.name.removeprefix("day=") >= since.isoformat()]
    for old in stale:
        if old.name.removeprefix("day=") not in written:
            shutil.rmtree(old)
    for name in written:
        final = target / f"day={name}"
        if final.exists():
            aside = target / f".day={name}.old-{os.getpid()}"
            final.rename(aside)
            (staging / f"day={name}").rename(final)
            shutil.rmtree(aside)
        else:
            (staging / f"day={name}").rename(final)
    shutil.rmtree(staging, ignore_errors=True)
    if rows is None:
        rows = db.fetch(f"SELECT count(*) FROM {table} {where}")[0][0]
    return TableExport(table, int(rows), written)


def _sql_text(path: Path) -> str:
    return str(path.resolve()).replace("'", "''")


def parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidChallenge(f"--since must be a day like 2026-03-01, not {text!r}") from None


@click.command("export")
@click.option("--parquet", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Write Hive-partitioned Parquet here: <table>/day=YYYY-MM-DD/.")
@click.option("--since", help="Only the days from this one on (YYYY-MM-DD, UTC); older partitions are kept.")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path),
              help="Read this DuckDB file (default: the store's, or its snapshot while the store runs).")
def export(out: Path, since: str | None, db: Path | None) -> None:
    """The tables as Hive-partitioned Parquet, for engines beyond one machine (DuckDB, Spark, Trino)."""
    from pipeline.cli import BadInput, fail_on, load_settings
    from pipeline.errors import PipelineError
    from pipeline.store.snapshot import open_for_reading

    settings = load_settings()
    try:
        day = parse_day(since) if since else None
    except InvalidChallenge as exc:
        raise BadInput(str(exc)) from None
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    try:
        database = open_for_reading(settings, db, writable=[out])
        try:
            results = export_parquet(database, out, day)
        finally:
            database.close()
    except PipelineError as exc:
        raise fail_on(exc) from None
    for r in results:
        days = f"{r.days[0]} .. {r.days[-1]}" if r.days else "no days"
        click.echo(f"{r.table}: {r.rows:,} rows, {len(r.days)} day(s) ({days})")
    click.echo(f"wrote {out}", err=True)
