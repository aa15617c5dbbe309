"""The snapshot: a copy of the store's DuckDB file that outside readers may open while the store runs.

DuckDB lets one process hold a database file and no other open it, not even
read-only. So every `snapshot.interval` seconds the store copies the whole
database (one consistent transaction) into `<snapshot>.tmp`, written in
DuckDB 1.5's storage format so older readers (Grafana's DuckDB plugin embeds
DuckDB 1.5) can open it, then `os.replace`s it over the snapshot: a reader
sees the previous copy or the next one, never half of one.

`provenance audit`, `sql` and `prove` fall back to the snapshot when the store
holds the database file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import duckdb

from pipeline.errors import PipelineError, StoreError
from pipeline.settings import Settings
from pipeline.store.db import Database

log = logging.getLogger(__name__)

STORAGE_VERSION = "v1.5.0"


def scratch_paths(target: Path) -> list[Path]:
    """The files DuckDB writes while building a snapshot: the copy and its write-ahead log."""
    tmp = target.with_name(target.name + ".tmp")
    return [tmp, *(tmp.with_name(tmp.name + suffix) for suffix in (".wal", ".wal.checkpoint", ".tmp"))]


def publish_snapshot(db: Database, target: Path, cur: duckdb.DuckDBPyConnection | None = None) -> float:
    """Copy the database to `target` atomically, readable by DuckDB 1.5; returns seconds taken.

    `cur`: the cursor to copy with (closed afterwards), so a caller can interrupt the copy.
    """
    started = time.monotonic()
    tmp, *scratch = scratch_paths(target)
    for path in (tmp, *scratch):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    cur = cur or db.cursor()
    try:
        source = cur.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        cur.execute(f"ATTACH '{_sql_text(tmp)}' AS provenance_snapshot (STORAGE_VERSION '{STORAGE_VERSION}')")
        try:
            cur.execute(f'COPY FROM DATABASE "{source}" TO provenance_snapshot')
            cur.execute("CREATE TABLE provenance_snapshot.snapshot_info AS"
                        " SELECT now() AS taken_at, ? AS source_file", [str(db.path)])
        finally:
            cur.execute("DETACH provenance_snapshot")
    except Exception as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise StoreError(f"snapshot to {target} failed: {exc}") from exc
    finally:
        cur.close()
    os.replace(tmp, target)
    return time.monotonic() - started


def _sql_text(path: Path) -> str:
    return str(path.resolve()).replace("'", "''")


class SnapshotPublisher:
    """Publishes the snapshot when the store starts and then every `snapshot.interval` seconds.

    A round is skipped when nothing was written since the last snapshot (the
    store's consumer offsets and latest checkpoint are unchanged). Stopping
    interrupts a copy in progress, so the store can close its database.
    """

    def __init__(self, settings: Settings, db: Database) -> None:
        self.target = settings.snapshot_path
        self.interval = settings.snapshot.interval
        self.db = db
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._cursor: duckdb.DuckDBPyConnection | None = None
        self._published_state: tuple[object, ...] | None = None
        self.published = 0

    async def start(self) -> None:
        if self.interval > 0:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self._task = asyncio.create_task(self.run())

    def _state(self) -> tuple[object, ...]:
        return tuple(self.db.fetch("SELECT (SELECT sum(next_offset) FROM consumer_offsets),"
                                   " (SELECT max(sequence) FROM checkpoints)")[0])

    def _publish_if_changed(self) -> float | None:
        state = self._state()
        if state == self._published_state and self.target.exists():
            return None
        self._cursor = self.db.cursor()
        try:
            took = publish_snapshot(self.db, self.target, self._cursor)
        finally:
            self._cursor = None
        self._published_state = state
        return took

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                took = await asyncio.to_thread(self._publish_if_changed)
                if took is not None:
                    self.published += 1
                    log.info("snapshot %s published in %.2fs", self.target, took)
            except StoreError:
                if not self._stopping.is_set():
                    log.exception("snapshot not published; the previous one stays")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)

    async def stop(self) -> None:
        self._stopping.set()
        cursor = self._cursor
        if cursor is not None:
            with contextlib.suppress(duckdb.Error):
                cursor.interrupt()
        if self._task is not None:
            await self._task


def open_for_reading(settings: Settings, db: Path | None, writable: Sequence[Path] = ()) -> Database:
    """The file a reader asked for; else the store's file, or its snapshot while the store holds the file.

    `writable`: folders the reader may write to (an export's output), nothing else.
    """
    if db is not None:
        return Database(db, read_only=True, writable=writable)
    try:
        return Database(settings.db_path, read_only=True, writable=writable)
    except StoreError as main_error:
        snapshot = settings.snapshot_path
        if not snapshot.exists():
            raise
        try:
            database = Database(snapshot, read_only=True, writable=writable)
        except PipelineError:
            raise main_error from None
        taken = database.fetch("SELECT max(taken_at) FROM snapshot_info")[0][0]
        print(f"{settings.db_path} is held by the running store: reading its snapshot {snapshot}"
              f" (taken {taken})", file=sys.stderr)
        return database
