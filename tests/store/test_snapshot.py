"""The snapshot: an atomic, DuckDB-1.5-readable copy of a store's file that readers open while it runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from duckdb15 import read_with_duckdb15
from ledger_fixture import build_ledger

from pipeline.audit import audit
from pipeline.errors import QueryRejected
from pipeline.settings import Settings
from pipeline.store.db import Database
from pipeline.store.snapshot import publish_snapshot, scratch_paths

TABLES = ("events", "blocks", "checkpoints", "checkpoint_logs", "merkle_tiles", "duplicate_leaves")


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return build_ledger(tmp_path_factory.mktemp("ledger"), events=600)


def counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}  # type: ignore[index]


def open_store(ledger, tmp_path: Path) -> tuple[Database, Path]:  # type: ignore[no-untyped-def]
    """A private copy of the ledger opened as the store opens it, and where its snapshot goes."""
    target = tmp_path / "store" / "snapshot.duckdb"
    return Database(ledger.copy_to(tmp_path / "store"), writable=scratch_paths(target)), target


def test_snapshot_is_published_atomically_while_the_store_holds_its_file(ledger, tmp_path: Path) -> None:
    db, target = open_store(ledger, tmp_path)
    try:
        expected = counts(db.cursor())
        publish_snapshot(db, target)
        first = duckdb.connect(str(target), read_only=True)
        assert counts(first) == expected
        taken = first.execute("SELECT taken_at FROM snapshot_info").fetchone()
        # A second snapshot replaces the file; a reader of the first keeps its copy intact.
        db.cursor().execute("DELETE FROM merkle_tiles WHERE level = 0")
        publish_snapshot(db, target)
        assert counts(first) == expected
        first.close()
        with duckdb.connect(str(target), read_only=True) as second:
            assert counts(second)["merkle_tiles"] < expected["merkle_tiles"]
            assert second.execute("SELECT taken_at FROM snapshot_info").fetchone() >= taken
        assert not [p for p in scratch_paths(target) if p.exists()]
    finally:
        db.close()


def test_user_sql_still_reads_no_file_but_the_snapshot_scratch(ledger, tmp_path: Path) -> None:
    path = ledger.copy_to(tmp_path / "store")
    secret = tmp_path / "store" / "ledger.key"
    secret.write_text("not for user SQL")
    db = Database(path, writable=scratch_paths(tmp_path / "store" / "snapshot.duckdb"))
    try:
        for query in (f"SELECT * FROM read_text('{secret}')", f"SELECT * FROM read_text('{tmp_path}/store/snapshot.duckdb')",
                      f"ATTACH '{tmp_path}/other.duckdb' AS other"):
            with pytest.raises(QueryRejected):
                db.query(query, 10, 5.0)
    finally:
        db.close()


def test_the_snapshot_audits_clean_and_audit_falls_back_to_it(ledger, tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = ledger.copy_to(data)
    settings = Settings(data_dir=data, store={"db_file": path})
    db = Database(path, writable=scratch_paths(settings.snapshot_path))
    try:
        publish_snapshot(db, settings.snapshot_path)
        snap = Database(settings.snapshot_path, read_only=True)
        try:
            report = audit(snap, ledger.verifier)
        finally:
            snap.close()
        assert report.ok, report.breaks
        # The store's file is held by this process: a CLI audit reads the snapshot instead, and says so.
        env = {**os.environ, "PROVENANCE_DATA_DIR": str(data), "PROVENANCE_STORE__DB_FILE": str(path)}
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", "audit", "--quiet", "--key", str(ledger.vkey_path)],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "reading its snapshot" in done.stderr and "clean" in done.stdout
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", "sql", "--format", "csv",
                               "SELECT count(*) AS n FROM blocks"], capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["n", str(sum(len(b) for b in ledger.blocks.values()))]
    finally:
        db.close()


def test_the_snapshot_opens_in_duckdb_1_5(ledger, tmp_path: Path) -> None:
    db, target = open_store(ledger, tmp_path)
    path = db.path
    try:
        expected = counts(db.cursor())
        publish_snapshot(db, target)
    finally:
        db.close()
    with pytest.raises(AssertionError, match="DuckDB 1.5 could not read"):
        read_with_duckdb15(path, ["SELECT 1"])  # the store's own file is DuckDB 2 format: the reason for the copy
    out = read_with_duckdb15(target, [f"SELECT count(*) FROM {t}" for t in TABLES])
    assert out["version"].startswith("1.5.")
    assert [int(r["rows"][0][0]) for r in out["results"]] == list(expected.values())


def test_the_publisher_skips_unchanged_rounds_and_stops_mid_copy(ledger, tmp_path: Path) -> None:
    import asyncio

    from pipeline.store.snapshot import SnapshotPublisher

    db, target = open_store(ledger, tmp_path)
    settings = Settings(data_dir=tmp_path, snapshot={"interval": 0.05, "path": target})

    async def scenario() -> tuple[int, int]:
        publisher = SnapshotPublisher(settings, db)
        await publisher.start()
        for _ in range(400):
            if publisher.published:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # several more rounds: nothing was written, so nothing is copied
        unchanged = publisher.published
        db.cursor().execute("UPDATE consumer_offsets SET next_offset = next_offset + 1")
        db.cursor().execute("INSERT INTO consumer_offsets VALUES ('t', 0, 1)")
        for _ in range(400):
            if publisher.published > unchanged:
                break
            await asyncio.sleep(0.05)
        changed = publisher.published
        db.cursor().execute("INSERT INTO consumer_offsets VALUES ('t', 1, 1)")
        await asyncio.sleep(0.06)  # the next copy starts; stopping interrupts or awaits it
        await publisher.stop()
        return unchanged, changed

    try:
        unchanged, changed = asyncio.run(scenario())
    finally:
        db.close()  # nothing is still running on the connection
    assert (unchanged, changed) == (1, 2)
    with duckdb.connect(str(target), read_only=True) as snap:
        assert snap.execute("SELECT count(*) FROM events").fetchone() == (600,)
    assert not [p for p in scratch_paths(target) if p.exists()]
