"""`provenance export --parquet`: Hive-partitioned Parquet that DuckDB reads back as it is."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import duckdb
import pytest
from ledger_fixture import build_ledger
from test_dashboards import fill_fixture

from pipeline.store.db import Database
from pipeline.store.export import export_parquet

TABLES = ("events", "blocks", "checkpoints", "dead_letters", "cosignatures", "duplicate_leaves", "anomalies",
          "demand", "forecasts")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store file over three recorded days (events moved back one and two days by leaf index)."""
    ledger = build_ledger(tmp_path_factory.mktemp("export"), events=300)
    db = Database(ledger.db_path)
    try:
        fill_fixture(db)
        db.cursor().execute("UPDATE events SET recorded_at = TIMESTAMPTZ '2026-03-05 12:00:00+00'"
                            " - INTERVAL (leaf_index % 3) DAY")
    finally:
        db.close()
    return ledger.db_path


def read_back(out: Path, table: str) -> duckdb.DuckDBPyRelation:
    return duckdb.sql(f"SELECT * FROM read_parquet('{out}/{table}/**/*.parquet', hive_partitioning = true)")


def exported(store: Path, out: Path, since: date | None = None) -> dict[str, list[str]]:
    db = Database(store, read_only=True, writable=[out])
    try:
        return {r.table: r.days for r in export_parquet(db, out, since)}
    finally:
        db.close()


def test_every_table_reads_back_as_it_is_with_its_day(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "lake"
    out.mkdir()
    days = exported(store, out)
    assert set(TABLES) <= set(days) and "merkle_tiles" not in days
    assert days["events"] == ["2026-03-03", "2026-03-04", "2026-03-05"]
    with duckdb.connect(str(store), read_only=True) as con:
        for table in TABLES:
            original = con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
            back = read_back(out, table)
            assert back.columns[-1] == "day"
            rows = duckdb.sql(f"SELECT * EXCLUDE (day) FROM read_parquet('{out}/{table}/**/*.parquet',"
                              " hive_partitioning = true) ORDER BY ALL").fetchall()
            assert rows == original, table
        by_day = con.execute("SELECT strftime(timezone('UTC', recorded_at), '%Y-%m-%d'), count(*) FROM events"
                             " GROUP BY 1 ORDER BY 1").fetchall()
    back = duckdb.sql(f"SELECT day::VARCHAR, count(*) FROM read_parquet('{out}/events/*/*.parquet',"
                      " hive_partitioning = true) GROUP BY 1 ORDER BY 1").fetchall()
    assert back == by_day
    assert sorted(p.name for p in (out / "events").iterdir()) == [f"day={d}" for d in days["events"]]


def test_since_rewrites_only_the_days_from_then_on(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "lake"
    out.mkdir()
    exported(store, out)
    kept = (out / "events" / "day=2026-03-03").stat().st_mtime_ns
    again = exported(store, out, since=date(2026, 3, 4))
    assert again["events"] == ["2026-03-04", "2026-03-05"]
    assert (out / "events" / "day=2026-03-03").stat().st_mtime_ns == kept
    assert read_back(out, "events").count("*").fetchall() == [(300,)]  # nothing doubled
    assert not [p for p in out.rglob(".*")]  # no staging left behind


def test_the_command_line(store: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PROVENANCE_DATA_DIR": str(tmp_path)}
    out = tmp_path / "lake"
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "export", "--parquet", str(out), "--db", str(store),
                           "--since", "2026-03-05"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    with duckdb.connect(str(store), read_only=True) as con:
        n = con.execute("SELECT count(*) FROM events WHERE recorded_at >= TIMESTAMPTZ '2026-03-05 00:00:00+00'")
        expected = n.fetchone()[0]  # type: ignore[index]
    assert f"events: {expected:,} rows, 1 day(s) (2026-03-05 .. 2026-03-05)" in done.stdout
    assert read_back(out, "events").count("*").fetchall() == [(expected,)]
    bad = subprocess.run([sys.executable, "-m", "pipeline.cli", "export", "--parquet", str(out), "--db", str(store),
                          "--since", "yesterday"], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "--since must be a day" in bad.stderr
