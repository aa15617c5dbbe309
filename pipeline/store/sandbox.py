"""User SQL in a sandbox: one read-only statement, a row cap, a timeout, and JSON-safe values.

Anyone who can reach the store's HTTP API or run `provenance sql` may send a
query, so a query is checked to be a single SELECT (or EXPLAIN) before it runs,
runs in a read-only transaction in its own cursor, and is interrupted when it
outlives its timeout. The connection comes from :class:`pipeline.store.db.Database`,
which owns the DuckDB file and shuts off external access on it.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from datetime import date, datetime, time as dtime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import duckdb

from pipeline.errors import QueryRejected

_ALLOWED_STATEMENTS = {"SELECT", "EXPLAIN"}


@dataclass(frozen=True)
class QueryResult:
    """What a query returned: column names, JSON-safe rows, and whether the row cap cut them short."""

    columns: list[str]
    rows: list[list[Any]]
    truncated: bool = False


def run_query(con: duckdb.DuckDBPyConnection, sql: str, row_cap: int, timeout: float) -> QueryResult:
    """Run one read-only statement in a fresh cursor, interrupted after `timeout` seconds."""
    check_read_only(con, sql)
    cur = con.cursor()
    # A SELECT can still hide a write (EXPLAIN ANALYZE DELETE, a data-modifying CTE):
    # a read-only transaction makes DuckDB refuse any of them.
    cur.execute("BEGIN TRANSACTION READ ONLY")
    timer = threading.Timer(timeout, cur.interrupt)
    timer.start()
    try:
        cur.execute(sql)
        columns = [d[0] for d in cur.description or []]
        rows = cur.fetchmany(row_cap + 1)
    except duckdb.InterruptException:
        raise QueryRejected(f"query cancelled after {timeout:g}s (statement timeout)") from None
    except duckdb.TransactionException as exc:
        raise QueryRejected(f"read-only: {_first_line(exc)}") from None
    except duckdb.Error as exc:
        raise QueryRejected(_first_line(exc)) from None
    finally:
        timer.cancel()
        try:
            cur.execute("ROLLBACK")
        except duckdb.Error:
            pass
        cur.close()
    truncated = len(rows) > row_cap
    return QueryResult(columns, [[json_value(v) for v in row] for row in rows[:row_cap]], truncated)


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse anything but a single SELECT (or EXPLAIN) statement."""
    if not isinstance(sql, str) or not sql.strip():
        raise QueryRejected("empty query")
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryRejected(_first_line(exc)) from None
    if len(statements) != 1:
        raise QueryRejected(f"one statement per query, got {len(statements)}")
    kind = statements[0].type.name
    if kind not in _ALLOWED_STATEMENTS:
        raise QueryRejected(f"read-only: {kind} statements are not allowed, only SELECT")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def json_value(v: Any) -> Any:
    """A DuckDB value as plain JSON."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None  # JSON has no NaN or infinity
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, (date, dtime)):
        return v.isoformat()
    if isinstance(v, timedelta):
        return v.total_seconds()
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, UUID):
        return str(v)
    if isinstance(v, dict):
        return {str(k): json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_value(x) for x in v]
    return str(v)
