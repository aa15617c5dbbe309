"""The SQL sandbox, kept honest: every known way out, through `POST /sql` and through `provenance sql`.

Each escape must be refused with a clear reason (400 over HTTP, exit 2 from the
command) and must leave nothing behind: no file written, no table changed, no
setting moved. Files, URLs and secrets are tried with real paths that exist.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from click.testing import CliRunner
from factories import as_bytes, make_events

from pipeline.cli import main
from pipeline.core.ledger import PartitionLog, accept
from pipeline.settings import Settings
from pipeline.store.db import Database, IngestBatch
from pipeline.store.http import Api


def escapes(tmp: Path) -> dict[str, tuple[str, str]]:
    """Name → (query, a fragment the refusal must contain)."""
    secret, out = tmp / "secret.csv", tmp / "out.csv"
    denied = "disabled by configuration"
    deep = "expression depth"
    return {
        "copy-to": (f"COPY events TO '{out}'", "COPY statements are not allowed"),
        "copy-query-to": (f"COPY (SELECT * FROM events) TO '{out}' (FORMAT csv)", "COPY statements are not allowed"),
        "copy-from": (f"COPY events FROM '{secret}'", "COPY statements are not allowed"),
        "attach": (f"ATTACH '{tmp / 'other.duckdb'}' AS other", "ATTACH statements are not allowed"),
        "detach": ("DETACH provenance", "DETACH statements are not allowed"),
        "install": ("INSTALL httpfs", "statements are not allowed"),
        "load": ("LOAD httpfs", "LOAD statements are not allowed"),
        "pragma": ("PRAGMA database_list", "PRAGMA statements are not allowed"),
        "pragma-set": ("PRAGMA enable_external_access = true", "statements are not allowed"),
        "set": ("SET enable_external_access = true", "SET statements are not allowed"),
        "set-depth": ("SET max_expression_depth TO 100000", "SET statements are not allowed"),
        "reset": ("RESET lock_configuration", "SET statements are not allowed"),
        "use": ("USE system", "statements are not allowed"),
        "call": ("CALL pragma_version()", "CALL statements are not allowed"),
        "checkpoint": ("CHECKPOINT", "statements are not allowed"),
        "export": (f"EXPORT DATABASE '{tmp / 'export'}'", "EXPORT statements are not allowed"),
        "create-secret": ("CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 'v')", "CREATE statements are not allowed"),
        "create-table": ("CREATE TABLE t AS SELECT 1", "CREATE statements are not allowed"),
        "insert": ("INSERT INTO events SELECT * FROM events", "INSERT statements are not allowed"),
        "two-statements": ("SELECT 1; DELETE FROM events", "one statement per query"),
        "delete-cte": ("WITH d AS (DELETE FROM events RETURNING *) SELECT count(*) FROM d", "read-only"),
        "update-cte": ("WITH u AS (UPDATE events SET event_type = 'x' RETURNING *) SELECT 1", "read-only"),
        "explain-analyze-delete": ("EXPLAIN ANALYZE DELETE FROM events", "read-only"),
        "read_csv": (f"SELECT * FROM read_csv('{secret}')", denied),
        "read_csv_auto": (f"SELECT * FROM read_csv_auto('{secret}')", denied),
        "file-as-table": (f"SELECT * FROM '{secret}'", denied),
        "read_text": ("SELECT * FROM read_text('/etc/passwd')", denied),
        "read_blob": ("SELECT * FROM read_blob('/etc/passwd')", denied),
        "read_json": ("SELECT * FROM read_json('/etc/hostname')", denied),
        "glob": ("SELECT * FROM glob('/etc/*')", denied),
        "parquet_scan": (f"SELECT * FROM parquet_scan('{tmp / 'x.parquet'}')", denied),
        "read_parquet": (f"SELECT * FROM read_parquet('{tmp / 'x.parquet'}')", denied),
        "http-url": ("SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')", denied),
        "https-url": ("SELECT * FROM 'https://example.com/x.parquet'", denied),
        "s3-url": ("SELECT * FROM read_parquet('s3://bucket/x.parquet')", denied),
        "duckdb_secrets": ("SELECT * FROM duckdb_secrets()", denied),
        "deep-parentheses": ("SELECT " + "(" * 5_000 + "1" + ")" * 5_000, deep),
        "deep-sum": ("SELECT " + "1+" * 20_000 + "1", deep),
        "deep-subqueries": ("SELECT " + "(SELECT " * 1_200 + "1" + ")" * 1_200, deep),
        "empty": ("   ", "empty query"),
    }


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("sandbox")
    (tmp / "secret.csv").write_text("a,b\n1,2\n")
    db = Database(tmp / "provenance.duckdb")
    plog = PartitionLog("shipment-events/0")
    for offset, e in enumerate(make_events(20, seed=3)):
        event, payload = accept(as_bytes(e))
        plog.admit(offset)
        plog.append(offset, event, payload)
    sealed = plog.seal("2026-03-01T09:00:00.000Z")
    assert sealed is not None
    from pipeline.core import wire

    db.ingest(IngestBatch(entries=[wire.entry_record("shipment-events/0", e) for e in sealed.entries],
                          blocks=[sealed.header]))
    db.close()
    return tmp


def leaves_no_trace(tmp: Path) -> None:
    assert not (tmp / "out.csv").exists() and not (tmp / "other.duckdb").exists() and not (tmp / "export").exists()


def test_every_escape_is_refused_over_http(database: Path) -> None:
    cases = escapes(database)

    async def scenario() -> list[tuple[str, int, Any]]:
        settings = Settings(data_dir=database)
        db = Database(database / "provenance.duckdb")

        async def produce(records: Any) -> None:
            raise AssertionError("nothing is produced here")

        async def status() -> dict[str, Any]:
            return {"status": "ok"}

        runner = web.AppRunner(Api(settings, db, produce, status).app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        answers = []
        try:
            async with aiohttp.ClientSession() as http:
                for name, (query, _) in cases.items():
                    async with http.post(f"http://{host}:{port}/sql", json={"query": query}) as resp:
                        answers.append((name, resp.status, await resp.json()))
                async with http.post(f"http://{host}:{port}/sql",
                                     json={"query": "SELECT count(*), current_setting('enable_external_access'),"
                                                    " current_setting('lock_configuration') FROM events"}) as resp:
                    answers.append(("after", resp.status, await resp.json()))
        finally:
            await runner.cleanup()
            db.close()
        return answers

    answers = asyncio.run(scenario())
    for name, status, body in answers[:-1]:
        assert status == 400, (name, status, body)
        assert cases[name][1] in body["error"], (name, body["error"])
        assert "Traceback" not in json.dumps(body)
    name, status, body = answers[-1]
    assert status == 200 and body["rows"] == [[20, False, True]], body
    leaves_no_trace(database)


def test_every_escape_is_refused_by_provenance_sql(database: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVENANCE_DATA_DIR", str(database))
    runner = CliRunner()
    for name, (query, fragment) in escapes(database).items():
        result = runner.invoke(main, ["sql", "--db", str(database / "provenance.duckdb"), query])
        assert result.exit_code == 2, (name, result.exit_code, result.output)
        assert fragment in result.output, (name, result.output)
        assert "Traceback" not in result.output
    result = runner.invoke(main, ["sql", "--format", "json", "--db", str(database / "provenance.duckdb"),
                                  "SELECT count(*) AS n FROM events"])
    assert result.exit_code == 0 and json.loads(result.output.splitlines()[0]) == [{"n": 20}], result.output
    leaves_no_trace(database)
