"""The DuckDB store on a real file in tmp_path: idempotent ingest, lookups, and the user-SQL sandbox."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import duckdb
import pytest
from factories import as_bytes, make_event, make_events

from pipeline.core import wire
from pipeline.core.blocks import BlockHeader
from pipeline.core.ledger import PartitionLog, accept
from pipeline.core.merkle import leaf_hash
from pipeline.errors import NotFound, QueryRejected
from pipeline.store.db import Database, IngestBatch
from pipeline.store.sandbox import json_value

LOG = "shipment-events/2"
TABLES = ("events", "duplicate_leaves", "blocks", "block_conflicts", "dead_letters", "consumer_offsets")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "store" / "provenance.duckdb")
    yield database
    database.close()


def ledger(events: list[dict[str, Any]], sizes: list[int], log_id: str = LOG,
           first_offset: int = 0) -> tuple[list[dict[str, Any]], list[BlockHeader]]:
    """Entry rows and block headers as the sequencer publishes them for `events` cut into `sizes`."""
    plog = PartitionLog(log_id)
    rows, headers, i = [], [], 0
    for n in sizes:
        for e in events[i:i + n]:
            offset = first_offset + i
            assert plog.admit(offset)
            event, payload = accept(as_bytes(e))
            plog.append(offset, event, payload)
            i += 1
        sealed = plog.seal(f"2026-03-01T09:00:0{len(headers)}.000Z")
        assert sealed is not None
        rows += [wire.entry_record(log_id, e) for e in sealed.entries]
        headers.append(sealed.header)
    return rows, headers


def dead_letter(offset: int, value: bytes = b"{broken", partition: int = 2) -> dict[str, Any]:
    return {
        "source_topic": "shipment-events", "source_partition": partition, "source_offset": offset,
        "key": b"shp-1", "value": value, "error": "not JSON: Expecting property name",
        "error_fields": json.dumps([{"field": "mode", "message": "bad", "type": "enum"}]),
    }


def snapshot(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    return {t: sorted(db.fetch(f"SELECT * FROM {t}"), key=repr) for t in TABLES}


def full_batch() -> IngestBatch:
    rows, headers = ledger(make_events(7, seed=4), [3, 4])
    return IngestBatch(
        entries=rows, blocks=headers, dead_letters=[dead_letter(7), dead_letter(8, b"\xff\xfe")],
        offsets={("ledger.entries", 2): 12, ("ledger.blocks", 2): 2, ("events.dead-letter", 0): 30},
    )


# ---- ingest --------------------------------------------------------------------------


def test_ingest_writes_every_kind_of_row(db: Database) -> None:
    batch = full_batch()
    result = db.ingest(batch)
    assert (result.events, result.blocks, result.dead_letters, result.duplicates, result.conflicts) == (7, 2, 2, 0, 0)
    assert db.counts() == {"events": 7, "blocks": 2, "dead_letters": 2, "checkpoints": 0,
                           "duplicate_leaves": 0, "block_conflicts": 0, "cosigned_checkpoints": 0,
                           "anomalies": 0, "epcis_events": 0}

    entry = batch.entries[4]
    row = db.event(entry["event_id"])
    assert (row["log_id"], row["leaf_index"], row["kafka_partition"], row["kafka_offset"]) == (LOG, 4, 2, 4)
    assert row["shipment_id"] == entry["shipment_id"] and row["event_type"] == entry["event_type"]
    assert row["event_time"] == datetime.fromisoformat(entry["event_time"])
    assert row["leaf_hash"] == entry["leaf_hash"]

    for header in batch.blocks:
        (stored,) = db.fetch_dicts("SELECT * FROM blocks WHERE log_id = ? AND height = ?", [LOG, header.height])
        assert stored == {**header.to_dict(), "block_hash": header.block_hash}

    rows = db.fetch_dicts("SELECT * FROM dead_letters ORDER BY source_offset")
    assert [r["source_offset"] for r in rows] == [7, 8]
    assert bytes(rows[1]["value"]) == b"\xff\xfe" and bytes(rows[0]["kafka_key"]) == b"shp-1"
    assert rows[0]["value_text"] == "{broken"
    assert json.loads(rows[0]["error_fields"])[0]["field"] == "mode"

    assert db.offsets() == batch.offsets
    assert db.next_leaf_indices() == {LOG: 7}


def test_payload_is_stored_byte_for_byte(db: Database) -> None:
    """An auditor recomputes leaf hashes from events.payload, so DuckDB must not rewrite it."""
    tricky = make_event(attributes={"x": 1e21, "s": "\u000f\u2028/\"", "u": "é😀\u0080", "n": -1.5e-7,
                                    "big": 9007199254740991, "z": -0.0, "deep": [{}, [], None, True]})
    rows, _ = ledger([tricky, *make_events(3, seed=9)], [4])
    db.ingest(IngestBatch(entries=rows))
    for entry in rows:
        stored = db.event(entry["event_id"])
        assert stored["payload"] == entry["payload"]
        assert leaf_hash(stored["payload"].encode("utf-8")).hex() == stored["leaf_hash"]


def test_replaying_a_batch_changes_nothing(db: Database) -> None:
    db.ingest(full_batch())
    before = snapshot(db)
    result = db.ingest(full_batch())
    assert (result.events, result.blocks, result.dead_letters, result.duplicates, result.conflicts) == (0, 0, 0, 0, 0)
    assert snapshot(db) == before


def test_replaying_in_other_batch_boundaries_changes_nothing(db: Database) -> None:
    batch = full_batch()
    db.ingest(batch)
    before = snapshot(db)
    db.ingest(IngestBatch(entries=batch.entries[2:5], blocks=batch.blocks[1:], offsets=batch.offsets))
    db.ingest(IngestBatch(entries=batch.entries[:1], dead_letters=batch.dead_letters[1:]))
    assert snapshot(db) == before


def test_event_id_at_another_leaf_is_a_duplicate_leaf(db: Database) -> None:
    events = make_events(4, seed=5)
    again = dict(events[1], event_type="delivered")  # same event_id, different content, later leaf
    rows, _ = ledger([*events, again], [5])
    first = db.ingest(IngestBatch(entries=rows[:4]))
    second = db.ingest(IngestBatch(entries=rows[4:]))
    assert (first.events, second.events, second.duplicates) == (4, 0, 1)
    kept = db.event(events[1]["event_id"])
    assert kept["leaf_index"] == 1 and json.loads(kept["payload"])["event_type"] == events[1]["event_type"]
    (dup,) = db.fetch_dicts("SELECT * FROM duplicate_leaves")
    assert (dup["log_id"], dup["leaf_index"], dup["event_id"]) == (LOG, 4, events[1]["event_id"])
    assert dup["leaf_hash"] == rows[4]["leaf_hash"]
    assert json.loads(dup["payload"])["event_type"] == "delivered"
    assert db.next_leaf_indices() == {LOG: 5}  # every leaf of the log is kept
    before = snapshot(db)
    assert db.ingest(IngestBatch(entries=rows)).duplicates == 0
    assert snapshot(db) == before


def test_a_batch_with_a_recorded_event_id_is_written_whole_once(db: Database) -> None:
    events = make_events(5, seed=9)
    rows, headers = ledger([*events, dict(events[0], mode="air")], [2, 4])
    db.ingest(IngestBatch(entries=rows[:2], blocks=headers[:1]))
    # The fast path meets event 0 again (at leaf 5): the batch is written again with conflict handling.
    result = db.ingest(IngestBatch(entries=rows[2:], blocks=headers[1:], dead_letters=[dead_letter(9)],
                                   offsets={("ledger.entries", 2): 6}))
    assert (result.events, result.duplicates, result.blocks, result.dead_letters) == (3, 1, 1, 1)
    assert db.counts()["events"] == 5 and db.fetch("SELECT leaf_index FROM duplicate_leaves") == [(5,)]
    assert db.offsets() == {("ledger.entries", 2): 6} and db.sealed_sizes() == {LOG: 6}


def test_duplicate_event_id_inside_one_batch(db: Database) -> None:
    events = make_events(3, seed=6)
    rows, _ = ledger([*events, dict(events[0], mode="air")], [4])
    result = db.ingest(IngestBatch(entries=rows))
    assert (result.events, result.duplicates) == (3, 1)
    assert db.event(events[0]["event_id"])["leaf_index"] == 0
    assert db.fetch("SELECT leaf_index FROM duplicate_leaves") == [(3,)]


def test_different_block_at_a_recorded_height_is_a_conflict(db: Database) -> None:
    rows, headers = ledger(make_events(6, seed=7), [3, 3])
    db.ingest(IngestBatch(entries=rows, blocks=headers))
    _, forked = ledger(make_events(6, seed=8), [3, 3])
    result = db.ingest(IngestBatch(blocks=forked[1:]))
    assert (result.blocks, result.conflicts) == (0, 1)
    (kept,) = db.fetch_dicts("SELECT block_hash, root FROM blocks WHERE height = 1")
    assert kept == {"block_hash": headers[1].block_hash, "root": headers[1].root}
    (conflict,) = db.fetch_dicts("SELECT * FROM block_conflicts")
    assert (conflict["log_id"], conflict["height"], conflict["block_hash"]) == (LOG, 1, forked[1].block_hash)
    assert BlockHeader.from_dict(json.loads(conflict["header"])) == forked[1]
    before = snapshot(db)
    db.ingest(IngestBatch(blocks=forked[1:]))
    assert snapshot(db) == before


def test_two_blocks_at_one_height_in_one_batch(db: Database) -> None:
    _, a = ledger(make_events(3, seed=1), [3])
    _, b = ledger(make_events(3, seed=2), [3])
    result = db.ingest(IngestBatch(blocks=[a[0], b[0]]))
    assert (result.blocks, result.conflicts) == (1, 1)
    assert db.fetch("SELECT block_hash FROM blocks") == [(a[0].block_hash,)]


def test_offsets_are_committed_with_their_rows(db: Database) -> None:
    rows, headers = ledger(make_events(6, seed=3), [3, 3])
    db.ingest(IngestBatch(entries=rows[:3], blocks=headers[:1], offsets={("ledger.entries", 2): 1}))
    before = snapshot(db)
    broken = dict(rows[3], event_time="not a time")
    with pytest.raises(duckdb.Error):
        db.ingest(IngestBatch(entries=[*rows[3:5], broken], blocks=headers[1:],
                              dead_letters=[dead_letter(9)], offsets={("ledger.entries", 2): 2}))
    assert snapshot(db) == before  # neither the rows nor the offset after them
    assert db.offsets() == {("ledger.entries", 2): 1}
    db.ingest(IngestBatch(entries=rows[3:], blocks=headers[1:], offsets={("ledger.entries", 2): 2}))
    assert db.offsets() == {("ledger.entries", 2): 2}
    assert db.counts()["events"] == 6


def test_offsets_move_in_place_and_new_partitions_are_added(db: Database) -> None:
    db.ingest(IngestBatch(offsets={("ledger.entries", 0): 3, ("ledger.blocks", 0): 1}))
    db.ingest(IngestBatch(offsets={("ledger.entries", 0): 5, ("ledger.entries", 1): 2}))
    assert db.offsets() == {("ledger.entries", 0): 5, ("ledger.entries", 1): 2, ("ledger.blocks", 0): 1}
    db.switch_broker_cluster("provenance-memory-a")
    db.switch_broker_cluster("provenance-memory-b")  # drops every offset
    db.ingest(IngestBatch(offsets={("ledger.entries", 0): 1}))
    assert db.offsets() == {("ledger.entries", 0): 1}
    db.close()
    reopened = Database(db.path)  # a restarted store knows only what the file holds
    reopened.ingest(IngestBatch(offsets={("ledger.entries", 0): 4, ("ledger.blocks", 0): 2}))
    assert reopened.offsets() == {("ledger.entries", 0): 4, ("ledger.blocks", 0): 2}
    reopened.close()


def test_lookups(db: Database) -> None:
    rows, headers = ledger(make_events(7, seed=4), [3, 4])
    db.ingest(IngestBatch(entries=rows, blocks=headers[:1]))
    with pytest.raises(NotFound):
        db.event("no-such-event")
    assert db.covering_block(LOG, 2)["height"] == 0
    assert db.covering_block(LOG, 3) is None  # sealed in block 1, which is not stored yet
    db.ingest(IngestBatch(blocks=headers))
    assert db.covering_block(LOG, 3)["height"] == 1
    assert db.covering_block(LOG, 0)["height"] == 0
    assert [b["height"] for b in db.blocks(LOG)] == [1, 0]
    assert [b["height"] for b in db.blocks(LOG, before=1)] == [0]
    assert db.blocks("shipment-events/9") == []


def test_state_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "p.duckdb"
    first = Database(path)
    first.ingest(full_batch())
    before = snapshot(first)
    first.close()
    again = Database(path)
    assert snapshot(again) == before
    again.close()
    reader = Database(path, read_only=True)
    assert snapshot(reader) == before
    assert reader.query("SELECT count(*) AS n FROM events", 10, 5.0).rows == [[7]]
    reader.close()


def test_read_only_database_on_a_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        Database(tmp_path / "absent.duckdb", read_only=True)
    assert not (tmp_path / "absent.duckdb").exists()


# ---- the user-SQL sandbox ------------------------------------------------------------


@pytest.fixture
def filled(db: Database) -> Database:
    db.ingest(full_batch())
    return db


@pytest.mark.parametrize("sql", [
    "INSERT INTO consumer_offsets VALUES ('x', 0, 1)",
    "UPDATE events SET event_type = 'cancelled'",
    "DELETE FROM blocks",
    "CREATE TABLE stolen AS SELECT * FROM events",
    "CREATE VIEW v AS SELECT 1",
    "DROP TABLE events",
    "ALTER TABLE events ADD COLUMN x INTEGER",
    "ATTACH ':memory:' AS other",
    "DETACH provenance",
    "COPY events TO 'out.csv'",
    "COPY events FROM 'in.csv'",
    "EXPORT DATABASE 'dump'",
    "SET enable_external_access = true",
    "RESET lock_configuration",
    "PRAGMA enable_profiling",
    "CALL pragma_version()",
    "INSTALL httpfs",
    "LOAD httpfs",
    "CHECKPOINT",
    "BEGIN TRANSACTION",
    "SELECT 1; SELECT 2",
    "SELECT * FROM events; DELETE FROM events",
    "",
    "   ",
    "SELEC 1",
])
def test_sandbox_refuses(filled: Database, sql: str) -> None:
    before = snapshot(filled)
    with pytest.raises(QueryRejected):
        filled.query(sql, 100, 5.0)
    assert snapshot(filled) == before


@pytest.mark.parametrize("function", ["read_csv", "read_csv_auto", "read_text", "read_blob", "read_json",
                                      "read_parquet", "glob"])
def test_sandbox_refuses_local_files(filled: Database, tmp_path: Path, function: str) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("a,b\n1,2\n")
    with pytest.raises(QueryRejected):
        filled.query(f"SELECT * FROM {function}('{secret}')", 100, 5.0)
    with pytest.raises(QueryRejected):
        filled.query(f"SELECT * FROM '{secret}'", 100, 5.0)


@pytest.mark.parametrize("sql", [
    "EXPLAIN ANALYZE DELETE FROM events",
    "EXPLAIN ANALYZE CREATE TABLE stolen AS SELECT * FROM events",
    "WITH gone AS (DELETE FROM blocks RETURNING *) SELECT count(*) FROM gone",
    "WITH moved AS (UPDATE consumer_offsets SET next_offset = 0 RETURNING *) SELECT * FROM moved",
])
def test_sandbox_refuses_writes_hidden_in_reads(filled: Database, sql: str) -> None:
    before = snapshot(filled)
    tables = filled.fetch("SELECT table_name FROM information_schema.tables ORDER BY 1")
    try:
        filled.query(sql, 100, 5.0)
    except QueryRejected:
        pass
    assert snapshot(filled) == before
    assert filled.fetch("SELECT table_name FROM information_schema.tables ORDER BY 1") == tables


@pytest.mark.parametrize("sql", [
    "SELECT event_id, leaf_index FROM events ORDER BY leaf_index",
    "  select count(*) from blocks  ",
    "EXPLAIN SELECT * FROM events",
    "DESCRIBE events",
    "SUMMARIZE blocks",
    "WITH b AS (SELECT * FROM blocks) SELECT max(height) FROM b",
    "FROM events SELECT event_type, count(*) GROUP BY ALL",
])
def test_sandbox_allows_reads(filled: Database, sql: str) -> None:
    result = filled.query(sql, 100, 5.0)
    assert result.columns and result.rows and not result.truncated


def test_runaway_query_is_interrupted(filled: Database) -> None:
    with pytest.raises(QueryRejected, match="timeout"):
        filled.query("SELECT sum(hash(a.range * b.range)) FROM range(200000) a, range(20000) b", 10, 0.05)
    assert filled.query("SELECT count(*) FROM events", 10, 5.0).rows == [[7]]  # still usable


@pytest.mark.parametrize(("cap", "rows", "truncated"), [(3, 3, True), (9, 9, True), (10, 10, False), (50, 10, False)])
def test_row_cap(filled: Database, cap: int, rows: int, truncated: bool) -> None:
    result = filled.query("SELECT range AS n FROM range(10)", cap, 5.0)
    assert result.columns == ["n"]
    assert [r[0] for r in result.rows] == list(range(rows))
    assert result.truncated is truncated


def test_query_values_are_plain_json(filled: Database) -> None:
    result = filled.query(
        "SELECT DATE '2026-03-01' AS d, TIMESTAMPTZ '2026-03-01 10:00:00+00' AS ts, TIME '10:30:00' AS t,"
        " INTERVAL 90 SECOND AS i, 12.25::DECIMAL(6, 2) AS dec, '\\x01\\xff'::BLOB AS b,"
        " '00000000-0000-0000-0000-00000000002a'::UUID AS u, {'a': 1, 'b': [1, 2]} AS s, [1.5, NULL] AS l,"
        " 18446744073709551616::HUGEINT AS h, true AS flag, NULL AS nothing, payload FROM events LIMIT 1",
        10, 5.0,
    )
    row = dict(zip(result.columns, result.rows[0]))
    assert row["d"] == "2026-03-01"
    assert datetime.fromisoformat(row["ts"]) == datetime(2026, 3, 1, 10, tzinfo=timezone.utc)
    assert row["t"] == "10:30:00"
    assert row["i"] == 90.0
    assert row["dec"] == 12.25
    assert row["b"] == "01ff"
    assert row["u"] == "00000000-0000-0000-0000-00000000002a"
    assert row["s"] == {"a": 1, "b": [1, 2]}
    assert row["l"] == [1.5, None]
    assert row["h"] == 2**64
    assert row["flag"] is True and row["nothing"] is None
    assert isinstance(json.loads(row["payload"]), dict)
    json.dumps(result.rows)  # every value serialises


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), (True, True), (3, 3), (2.5, 2.5), ("x", "x"),
    (datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc), "2026-03-01T10:00:00+00:00"),
    (date(2026, 3, 1), "2026-03-01"),
    (time(8, 15), "08:15:00"),
    (timedelta(minutes=2, milliseconds=500), 120.5),
    (Decimal("1.25"), 1.25),
    (b"\x00\xab", "00ab"),
    (bytearray(b"\x01"), "01"),
    (memoryview(b"\x02"), "02"),
    (UUID(int=1), "00000000-0000-0000-0000-000000000001"),
    ({1: date(2026, 1, 2), "k": [b"\x03", (Decimal("2"), None)]}, {"1": "2026-01-02", "k": ["03", [2.0, None]]}),
    (Path("a"), "a"),
])
def test_json_value(value: Any, expected: Any) -> None:
    assert json_value(value) == expected
    json.dumps(json_value(value), allow_nan=False)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_json_value_of_non_finite_float_is_valid_json(value: float) -> None:
    json.dumps(json_value(value), allow_nan=False)
