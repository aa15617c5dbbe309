"""The attack suite: edit, drop, reorder and splice the stored ledger, and check that verification catches each.

Every attack starts from a private copy of one realistic ledger file (three
logs, several blocks each, old and new checkpoints, built by the store's own
code in `ledger_fixture`), edits it with plain SQL as someone holding the file
could, and asserts that `audit` reports a break at the right log, height and
check. Attacks on proof bundles start from the bundle the untampered store
serves and assert the exact step `verify_bundle` fails at. The CLI's exit
codes are checked once through a real process.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pytest
from ledger_fixture import Ledger, build_ledger

from pipeline.audit import AuditReport, Break, audit
from pipeline.core.blocks import block_hash, seal_block
from pipeline.core.bundle import StepFailed, verify_bundle
from pipeline.core.checkpoint import parse_checkpoint
from pipeline.core.merkle import leaf_hash
from pipeline.core.note import Verifier
from pipeline.core.tiles import TileBuilder
from pipeline.store.db import Database, IngestBatch
from pipeline.store.ledger import header_of

LOG_A = "shipment-events/0"
LOG_B = "shipment-events/1"


# ---- helpers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    return build_ledger(tmp_path_factory.mktemp("ledger"))


@pytest.fixture
def db_file(ledger: Ledger, tmp_path: Path) -> Path:
    """A private copy of the ledger file for one attack."""
    return ledger.copy_to(tmp_path / "attacked")


@contextmanager
def tampering(path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A raw read-write connection to the file, closed (and so flushed) afterwards."""
    con = duckdb.connect(str(path))
    try:
        yield con
    finally:
        con.close()


def run_audit(path: Path, verifier: Verifier) -> AuditReport:
    db = Database(path, read_only=True)
    try:
        return audit(db, verifier)
    finally:
        db.close()


def describe(report: AuditReport) -> str:
    return "\n".join(str(b) for b in report.breaks) or "(no breaks)"


def find_break(report: AuditReport, log_id: str, height: int | None, *fragments: str) -> Break:
    """The break at `log_id`/`height` whose text holds every fragment; fail listing all breaks otherwise."""
    for b in report.breaks:
        if b.log_id == log_id and b.height == height and all(f in b.what for f in fragments):
            return b
    where = log_id + ("" if height is None else f" block {height}")
    pytest.fail(f"no break at {where} mentioning {fragments!r}; audit reported:\n{describe(report)}")


def first_leaf(ledger: Ledger, log_id: str, height: int) -> int:
    return 0 if height == 0 else ledger.blocks[log_id][height - 1].tree_size


def last_leaf(ledger: Ledger, log_id: str, height: int) -> int:
    return ledger.blocks[log_id][height].tree_size - 1


def unchecked_height(ledger: Ledger, log_id: str) -> int:
    """A block below the head that no checkpoint names: only the chain vouches for it."""
    heights = set(range(len(ledger.blocks[log_id]) - 1)) - ledger.checkpointed_heights(log_id)
    assert heights, f"the fixture checkpoints every block of {log_id}; the attacks need one it does not"
    return min(heights)


def exact_bundle(ledger: Ledger) -> dict[str, Any]:
    """A bundle whose checkpoint names its very block (no consistency path)."""
    height = len(ledger.blocks[LOG_A]) - 1
    bundle = ledger.bundle(ledger.event_ids[LOG_A][last_leaf(ledger, LOG_A, height)])
    assert bundle["block"]["height"] == height and "consistency_path" not in bundle["checkpoint"]
    return bundle


def later_bundle(ledger: Ledger) -> dict[str, Any]:
    """A bundle whose checkpoint names a later block, joined by a consistency path."""
    height = unchecked_height(ledger, LOG_A)
    bundle = ledger.bundle(ledger.event_ids[LOG_A][first_leaf(ledger, LOG_A, height) + 1])
    assert bundle["block"]["height"] == height and bundle["checkpoint"]["consistency_path"]
    return bundle


def expect_step(bundle: dict[str, Any], verifier: Verifier, step: str) -> StepFailed:
    with pytest.raises(StepFailed) as caught:
        verify_bundle(bundle, verifier)
    assert caught.value.step == step, f"failed at {caught.value.step!r}, expected {step!r}: {caught.value}"
    return caught.value


def flip_hex(value: str, position: int = 0) -> str:
    """`value` with one bit of hex digit `position` flipped."""
    digit = int(value[position], 16) ^ 1
    return value[:position] + f"{digit:x}" + value[position + 1:]


def flip_digit_after(text: str, marker: str) -> str:
    """`text` with the first digit following `marker` changed: one byte, still valid JSON."""
    start = text.index(marker) + len(marker)
    match = re.compile(r"\d").search(text, start)
    assert match is not None
    i = match.start()
    return text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1:]


def leaf_row(con: duckdb.DuckDBPyConnection, log_id: str, index: int) -> tuple[str, str, str]:
    row = con.execute("SELECT event_id, leaf_hash, payload::VARCHAR FROM events WHERE log_id = ? AND leaf_index = ?",
                      [log_id, index]).fetchone()
    assert row is not None
    return row


# ---- the untampered ledger -----------------------------------------------------------------


def test_untampered_ledger_audits_clean(ledger: Ledger, db_file: Path) -> None:
    report = run_audit(db_file, ledger.verifier)
    assert report.ok, describe(report)
    assert report.logs == 3
    assert report.leaves == sum(len(ids) for ids in ledger.event_ids.values())
    assert report.blocks == sum(len(b) for b in ledger.blocks.values())
    assert report.checkpoints == len(ledger.checkpoints) >= 3
    assert report.tiles > 3  # full and partial tiles on more than one tile level


def test_untampered_bundles_verify(ledger: Ledger) -> None:
    for log_id in ledger.log_ids:
        for height in range(len(ledger.blocks[log_id])):
            for index in {first_leaf(ledger, log_id, height), last_leaf(ledger, log_id, height)}:
                event_id = ledger.event_ids[log_id][index]
                if (log_id, index) == ledger.duplicate:
                    continue  # the event's bundle is that of its first leaf
                result = verify_bundle(ledger.bundle(event_id), ledger.verifier)
                assert (result.event_id, result.log_id, result.leaf_index, result.height) == (
                    event_id, log_id, index, height)


def test_the_fixture_has_what_the_attacks_need(ledger: Ledger) -> None:
    assert all(len(blocks) >= 5 for blocks in ledger.blocks.values())
    assert all(len(ids) > 256 for ids in ledger.event_ids.values())  # a full tile and a partial one
    newest = ledger.checkpoints[-1]["logs"]
    assert {log_id: e["height"] for log_id, e in newest.items()} == {
        log_id: len(blocks) - 1 for log_id, blocks in ledger.blocks.items()}
    assert "consistency_path" in later_bundle(ledger)["checkpoint"]


# ---- leaves: edit, drop, reorder, splice ---------------------------------------------------


def test_edited_payload_byte(ledger: Ledger, db_file: Path) -> None:
    index = 10
    with tampering(db_file) as con:
        event_id, _, payload = leaf_row(con, LOG_A, index)
        edited = flip_digit_after(payload, '"shipment_id":"')
        assert len(edited) == len(payload) and sum(a != b for a, b in zip(edited, payload)) == 1
        con.execute("UPDATE events SET payload = ?::JSON WHERE event_id = ?", [edited, event_id])
    report = run_audit(db_file, ledger.verifier)
    find_break(report, LOG_A, None, f"leaf {index} (event {event_id})", "payload hashes to")
    find_break(report, LOG_A, ledger.covering_height(LOG_A, index), "root at tree_size")
    assert {b.log_id for b in report.breaks} == {LOG_A}

    # The store now serves a bundle for the edited event, and it fails at the path.
    expect_step(ledger.bundle(event_id, db_file), ledger.verifier, "inclusion proof")


def test_edited_event_in_bundle(ledger: Ledger) -> None:
    bundle = later_bundle(ledger)
    bundle["event"]["shipment_id"] = flip_digit_after(bundle["event"]["shipment_id"], "shp-")
    expect_step(bundle, ledger.verifier, "leaf hash")


def test_edited_event_with_matching_leaf_hash_in_bundle(ledger: Ledger) -> None:
    from pipeline.core.canonical import canonical_bytes

    bundle = later_bundle(ledger)
    bundle["event"]["carrier"] = "Someone Else"
    bundle["leaf_hash"] = leaf_hash(canonical_bytes(bundle["event"])).hex()
    expect_step(bundle, ledger.verifier, "inclusion proof")


def test_changed_stored_leaf_hash(ledger: Ledger, db_file: Path) -> None:
    index = 42
    with tampering(db_file) as con:
        event_id, stored, _ = leaf_row(con, LOG_B, index)
        forged = flip_hex(stored, 5)
        con.execute("UPDATE events SET leaf_hash = ? WHERE event_id = ?", [forged, event_id])
    report = run_audit(db_file, ledger.verifier)
    b = find_break(report, LOG_B, None, f"leaf {index} (event {event_id})", f"stored {forged}")
    assert report.breaks == [b], describe(report)


def test_changed_leaf_hash_in_bundle(ledger: Ledger) -> None:
    bundle = exact_bundle(ledger)
    bundle["leaf_hash"] = flip_hex(bundle["leaf_hash"], 63)
    expect_step(bundle, ledger.verifier, "leaf hash")


def test_dropped_event(ledger: Ledger, db_file: Path) -> None:
    index = 77
    with tampering(db_file) as con:
        con.execute("DELETE FROM events WHERE log_id = ? AND leaf_index = ?", [LOG_A, index])
    report = run_audit(db_file, ledger.verifier)
    find_break(report, LOG_A, None, f"leaf {index} is missing")


def test_dropped_last_event(ledger: Ledger, db_file: Path) -> None:
    size = len(ledger.event_ids[LOG_B])
    with tampering(db_file) as con:
        con.execute("DELETE FROM events WHERE log_id = ? AND leaf_index = ?", [LOG_B, size - 1])
    report = run_audit(db_file, ledger.verifier)
    head = len(ledger.blocks[LOG_B]) - 1
    find_break(report, LOG_B, head, f"block covers {size} leaves but the store has only {size - 1}")


def test_dropped_duplicate_leaf(ledger: Ledger, db_file: Path) -> None:
    log_id, index = ledger.duplicate
    with tampering(db_file) as con:
        con.execute("DELETE FROM duplicate_leaves WHERE log_id = ? AND leaf_index = ?", [log_id, index])
    find_break(run_audit(db_file, ledger.verifier), log_id, None, f"leaf {index} is missing")


def test_reordered_events(ledger: Ledger, db_file: Path) -> None:
    height = 2
    i = first_leaf(ledger, LOG_A, height) + 3
    j = i + 1
    with tampering(db_file) as con:
        con.execute("UPDATE events SET leaf_index = CASE leaf_index WHEN ? THEN ? ELSE ? END"
                    " WHERE log_id = ? AND leaf_index IN (?, ?)", [i, j, i, LOG_A, i, j])
    report = run_audit(db_file, ledger.verifier)
    assert ledger.covering_height(LOG_A, j) == height
    find_break(report, LOG_A, height, "root at tree_size")
    find_break(report, LOG_A, None, f"leaf {j}", "Kafka offset")
    assert {b.log_id for b in report.breaks} == {LOG_A}


def test_moved_leaf_index_in_bundle(ledger: Ledger) -> None:
    bundle = later_bundle(ledger)
    bundle["leaf_index"] += 1
    expect_step(bundle, ledger.verifier, "inclusion proof")


def test_spliced_event_moved_to_another_log(ledger: Ledger, db_file: Path) -> None:
    index = 30
    with tampering(db_file) as con:
        con.execute("UPDATE events SET log_id = ?, kafka_partition = 1, leaf_index = ?"
                    " WHERE log_id = ? AND leaf_index = ?", [LOG_B, len(ledger.event_ids[LOG_B]), LOG_A, index])
    report = run_audit(db_file, ledger.verifier)
    find_break(report, LOG_A, None, f"leaf {index} is missing")
    find_break(report, LOG_B, None, "tile (0, 1) does not match")


def test_spliced_event_copied_over_a_leaf_of_another_log(ledger: Ledger, db_file: Path) -> None:
    index = 120
    with tampering(db_file) as con:
        _, hash_a, payload_a = leaf_row(con, LOG_A, index)
        con.execute("UPDATE events SET payload = ?::JSON, leaf_hash = ? WHERE log_id = ? AND leaf_index = ?",
                    [payload_a, hash_a, LOG_B, index])
    report = run_audit(db_file, ledger.verifier)
    find_break(report, LOG_B, ledger.covering_height(LOG_B, index), "root at tree_size")
    find_break(report, LOG_B, None, "tile (0, 0) does not match")
    assert {b.log_id for b in report.breaks} == {LOG_B}


def test_spliced_event_copied_to_the_end_of_another_log(ledger: Ledger, db_file: Path) -> None:
    with tampering(db_file) as con:
        con.execute("INSERT INTO duplicate_leaves SELECT ?, ?, event_id, leaf_hash, kafka_offset, payload, recorded_at"
                    " FROM events WHERE log_id = ? AND leaf_index = 5", [LOG_B, len(ledger.event_ids[LOG_B]), LOG_A])
    report = run_audit(db_file, ledger.verifier)
    find_break(report, LOG_B, None, "tile (0, 1) does not match")


def test_spliced_event_copied_to_the_end_with_tiles_recomputed(ledger: Ledger, db_file: Path) -> None:
    size_b = len(ledger.event_ids[LOG_B])
    with tampering(db_file) as con:
        con.execute("INSERT INTO duplicate_leaves SELECT ?, ?, event_id, leaf_hash, 1000000, payload, recorded_at"
                    " FROM events WHERE log_id = ? AND leaf_index = 5", [LOG_B, size_b, LOG_A])
        hashes = [bytes.fromhex(h) for (h,) in con.execute(
            "SELECT leaf_hash FROM (SELECT leaf_index, leaf_hash FROM events WHERE log_id = $1 UNION ALL"
            " SELECT leaf_index, leaf_hash FROM duplicate_leaves WHERE log_id = $1) ORDER BY leaf_index",
            [LOG_B]).fetchall()]
        for (level, idx), tile in TileBuilder().append(hashes).items():
            con.execute("INSERT OR REPLACE INTO merkle_tiles VALUES (?, ?, ?, ?)", [LOG_B, level, idx, tile])
    report = run_audit(db_file, ledger.verifier)
    find_break(report, LOG_B, None, str(size_b), "block")


def test_spliced_bundle_claims_another_log(ledger: Ledger) -> None:
    bundle = later_bundle(ledger)
    bundle["log_id"] = LOG_B
    expect_step(bundle, ledger.verifier, "block")


def test_edited_event_columns_outside_the_payload(ledger: Ledger, db_file: Path) -> None:
    index = 10
    with tampering(db_file) as con:
        event_id, _, payload = leaf_row(con, LOG_A, index)
        assert json.loads(payload)["event_type"] != "delivered"
        con.execute("UPDATE events SET event_type = 'delivered' WHERE event_id = ?", [event_id])
    find_break(run_audit(db_file, ledger.verifier), LOG_A, None, f"leaf {index}", "event_type")


# ---- blocks: rewrite, truncate, fork -------------------------------------------------------


def _update_block(con: duckdb.DuckDBPyConnection, log_id: str, height: int, rehash: bool, **fields: Any) -> None:
    row = con.execute("SELECT * FROM blocks WHERE log_id = ? AND height = ?", [log_id, height]).fetchone()
    assert row is not None
    names = [d[0] for d in con.description]
    header = dict(zip(names, row))
    header.update(fields)
    if rehash:
        header["block_hash"] = block_hash(header)
    sets = ", ".join(f"{k} = ?" for k in header if k not in ("log_id", "height"))
    con.execute(f"UPDATE blocks SET {sets} WHERE log_id = ? AND height = ?",
                [v for k, v in header.items() if k not in ("log_id", "height")] + [log_id, height])


def test_block_with_changed_root(ledger: Ledger, db_file: Path) -> None:
    height = unchecked_height(ledger, LOG_A)
    with tampering(db_file) as con:
        _update_block(con, LOG_A, height, rehash=False, root=flip_hex(ledger.blocks[LOG_A][height].root))
    report = run_audit(db_file, ledger.verifier)
    find_break(report, LOG_A, height, "block_hash", "!= SHA-256(JCS(header))")
    find_break(report, LOG_A, height, "root at tree_size")
    find_break(report, LOG_A, height + 1, "chain link")


def test_block_with_changed_root_and_recomputed_hash(ledger: Ledger, db_file: Path) -> None:
    height = unchecked_height(ledger, LOG_A)
    with tampering(db_file) as con:
        _update_block(con, LOG_A, height, rehash=True, root=flip_hex(ledger.blocks[LOG_A][height].root))
    report = run_audit(db_file, ledger.verifier)
    find_break(report, LOG_A, height, "root at tree_size")
    find_break(report, LOG_A, height + 1, "chain link", "prev_block_hash")
    assert not [b for b in report.breaks if "SHA-256(JCS" in b.what], describe(report)


def test_block_with_changed_prev_block_hash(ledger: Ledger, db_file: Path) -> None:
    height = unchecked_height(ledger, LOG_A)
    with tampering(db_file) as con:
        _update_block(con, LOG_A, height, rehash=True, prev_block_hash="ab" * 32)
    report = run_audit(db_file, ledger.verifier)
    find_break(report, LOG_A, height, "chain link", "prev_block_hash " + "ab" * 32)
    find_break(report, LOG_A, height + 1, "chain link")


def test_block_rewritten_so_only_the_chain_link_catches_it(ledger: Ledger, db_file: Path) -> None:
    height = unchecked_height(ledger, LOG_A)
    with tampering(db_file) as con:
        _update_block(con, LOG_A, height, rehash=True, created_at="2020-01-01T00:00:00Z")
    report = run_audit(db_file, ledger.verifier)
    b = find_break(report, LOG_A, height + 1, "chain link", "prev_block_hash")
    assert report.breaks == [b], describe(report)


def test_checkpointed_block_rewritten_with_recomputed_hash(ledger: Ledger, db_file: Path) -> None:
    height = max(ledger.checkpointed_heights(LOG_B))
    with tampering(db_file) as con:
        _update_block(con, LOG_B, height, rehash=True, created_at="2020-01-01T00:00:00Z")
    report = run_audit(db_file, ledger.verifier)
    find_break(report, LOG_B, height, f"checkpoint {ledger.checkpoints[-1]['sequence']}: signs")


def test_dropped_middle_block(ledger: Ledger, db_file: Path) -> None:
    height = unchecked_height(ledger, LOG_A)
    with tampering(db_file) as con:
        con.execute("DELETE FROM blocks WHERE log_id = ? AND height = ?", [LOG_A, height])
    report = run_audit(db_file, ledger.verifier)
    find_break(report, LOG_A, height + 1, "chain link", f"expected {height}")


def test_truncated_chain(ledger: Ledger, db_file: Path) -> None:
    head = len(ledger.blocks[LOG_B]) - 1
    with tampering(db_file) as con:
        con.execute("DELETE FROM blocks WHERE log_id = ? AND height >= ?", [LOG_B, head - 1])
    report = run_audit(db_file, ledger.verifier)
    newest = ledger.checkpoints[-1]["sequence"]
    find_break(report, LOG_B, head, f"checkpoint {newest}: signs block {head} of {LOG_B}",
               "which the store does not have")


def test_truncated_chain_and_leaves(ledger: Ledger, db_file: Path) -> None:
    head = len(ledger.blocks[LOG_B]) - 1
    keep = ledger.blocks[LOG_B][head - 2].tree_size
    with tampering(db_file) as con:
        con.execute("DELETE FROM blocks WHERE log_id = ? AND height >= ?", [LOG_B, head - 1])
        con.execute("DELETE FROM events WHERE log_id = ? AND leaf_index >= ?", [LOG_B, keep])
    report = run_audit(db_file, ledger.verifier)
    find_break(report, LOG_B, head, "which the store does not have")


def test_fork_recorded_in_block_conflicts(ledger: Ledger, db_file: Path) -> None:
    height = 3
    honest = ledger.blocks[LOG_A][height]
    previous = ledger.blocks[LOG_A][height - 1]
    forged = seal_block(LOG_A, previous, honest.tree_size, bytes(32), honest.first_offset, honest.last_offset,
                        honest.first_event_time, honest.last_event_time, honest.created_at)
    db = Database(db_file)
    try:
        result = db.ingest(IngestBatch(blocks=[forged]))
        assert (result.blocks, result.conflicts) == (0, 1)
        assert header_of(db.block(LOG_A, height)) == honest  # the recorded block is kept
    finally:
        db.close()
    report = run_audit(db_file, ledger.verifier)
    b = find_break(report, LOG_A, height, "fork", forged.block_hash)
    assert report.breaks == [b], describe(report)


def test_changed_block_field_in_bundle(ledger: Ledger) -> None:
    for name, value, step in (
        ("root", "00" * 32, "block"),
        ("tree_size", None, "block"),
        ("log_id", LOG_B, "block"),
        ("created_at", "2020-01-01T00:00:00Z", "block hash"),
        ("prev_block_hash", "cd" * 32, "block hash"),
        ("block_hash", None, "block hash"),
    ):
        bundle = later_bundle(ledger)
        block = bundle["block"]
        block[name] = value if value is not None else (
            block[name] + 1 if isinstance(block[name], int) else flip_hex(block[name], 10))
        expect_step(bundle, ledger.verifier, step)


def test_block_with_recomputed_hash_in_bundle_against_its_own_checkpoint(ledger: Ledger) -> None:
    bundle = exact_bundle(ledger)
    bundle["block"]["created_at"] = "2020-01-01T00:00:00Z"
    bundle["block"]["block_hash"] = block_hash(bundle["block"])
    expect_step(bundle, ledger.verifier, "checkpoint coverage")


def test_block_with_recomputed_hash_in_bundle_against_a_later_checkpoint(ledger: Ledger) -> None:
    bundle = later_bundle(ledger)
    bundle["block"]["created_at"] = "2020-01-01T00:00:00Z"
    bundle["block"]["first_offset"] = 0
    bundle["block"]["block_hash"] = block_hash(bundle["block"])
    with pytest.raises(StepFailed):
        verify_bundle(bundle, ledger.verifier)


def test_block_height_forged_with_an_empty_consistency_path(ledger: Ledger) -> None:
    bundle = exact_bundle(ledger)
    bundle["block"].update(height=0, prev_block_hash="0" * 64)
    bundle["block"]["block_hash"] = block_hash(bundle["block"])
    bundle["checkpoint"]["consistency_path"] = []
    with pytest.raises(StepFailed):
        verify_bundle(bundle, ledger.verifier)


# ---- checkpoints: forge, replay, key swap --------------------------------------------------


def _latest_checkpoint(con: duckdb.DuckDBPyConnection) -> tuple[int, str]:
    row = con.execute("SELECT sequence, note FROM checkpoints ORDER BY sequence DESC LIMIT 1").fetchone()
    assert row is not None
    return row


def _forge_text(note: str) -> str:
    """The note with the tree size on its first log line raised by one (signature left as is)."""
    lines = note.split("\n")
    first_log = next(i for i, line in enumerate(lines) if line.startswith("shipment-events/"))
    fields = lines[first_log].split(" ")
    fields[2] = str(int(fields[2]) + 1)
    lines[first_log] = " ".join(fields)
    return "\n".join(lines)


def test_forged_checkpoint_text(ledger: Ledger, db_file: Path) -> None:
    with tampering(db_file) as con:
        sequence, note = _latest_checkpoint(con)
        con.execute("UPDATE checkpoints SET note = ? WHERE sequence = ?", [_forge_text(note), sequence])
    report = run_audit(db_file, ledger.verifier)
    b = find_break(report, "checkpoints", None, f"checkpoint {sequence}: signature or format", "does not verify")
    assert report.breaks == [b], describe(report)


def test_forged_checkpoint_text_in_bundle(ledger: Ledger) -> None:
    bundle = exact_bundle(ledger)
    bundle["checkpoint"]["note"] = _forge_text(bundle["checkpoint"]["note"])
    expect_step(bundle, ledger.verifier, "checkpoint signature")


def test_old_checkpoint_replayed_as_the_latest_row(ledger: Ledger, db_file: Path) -> None:
    old = ledger.checkpoints[0]
    with tampering(db_file) as con:
        sequence, _ = _latest_checkpoint(con)
        con.execute("UPDATE checkpoints SET note = ?, logs = ? WHERE sequence = ?",
                    [old["note"], json.dumps(old["logs"]), sequence])
    report = run_audit(db_file, ledger.verifier)
    find_break(report, "checkpoints", None, f"checkpoint {sequence}: the signed note says sequence "
               f"{old['sequence']}", "replayed")
    find_break(report, LOG_A, old["logs"][LOG_A]["height"], f"checkpoint {sequence}: goes back to block")


def test_old_checkpoint_replayed_as_a_new_row(ledger: Ledger, db_file: Path) -> None:
    old = ledger.checkpoints[1]
    with tampering(db_file) as con:
        sequence, _ = _latest_checkpoint(con)
        con.execute("INSERT INTO checkpoints SELECT ?, origin, key_id, note, logs, created_at FROM checkpoints"
                    " WHERE sequence = ?", [sequence + 1, old["sequence"]])
    report = run_audit(db_file, ledger.verifier)
    find_break(report, "checkpoints", None, f"checkpoint {sequence + 1}: the signed note says sequence "
               f"{old['sequence']}")


def test_old_checkpoint_that_does_not_cover_the_block_in_bundle(ledger: Ledger) -> None:
    bundle = exact_bundle(ledger)
    bundle["checkpoint"] = {"note": ledger.checkpoints[0]["note"], "key_id": ledger.checkpoints[0]["key_id"]}
    err = expect_step(bundle, ledger.verifier, "checkpoint coverage")
    assert f"older than block {bundle['block']['height']}" in str(err)


def test_dropped_checkpoint_in_bundle(ledger: Ledger) -> None:
    bundle = exact_bundle(ledger)
    bundle["checkpoint"] = None
    expect_step(bundle, ledger.verifier, "checkpoint")


def test_tampered_consistency_path_in_bundle(ledger: Ledger) -> None:
    bundle = later_bundle(ledger)
    bundle["checkpoint"]["consistency_path"][-1] = flip_hex(bundle["checkpoint"]["consistency_path"][-1])
    expect_step(bundle, ledger.verifier, "checkpoint consistency")
    del bundle["checkpoint"]["consistency_path"]
    expect_step(bundle, ledger.verifier, "checkpoint consistency")


def test_checkpoint_signed_by_another_key(ledger: Ledger, db_file: Path) -> None:
    with tampering(db_file) as con:
        sequence, note = _latest_checkpoint(con)
        text = note[: note.rindex("\n\n") + 1]
        con.execute("UPDATE checkpoints SET note = ?, key_id = ? WHERE sequence = ?",
                    [ledger.attacker.sign(text), ledger.attacker.key_id.hex(), sequence])
    report = run_audit(db_file, ledger.verifier)
    b = find_break(report, "checkpoints", None, f"checkpoint {sequence}: signature or format",
                   "no signature by a known key")
    assert report.breaks == [b], describe(report)


def test_new_checkpoint_signed_by_another_key(ledger: Ledger, db_file: Path) -> None:
    with tampering(db_file) as con:
        sequence, note = _latest_checkpoint(con)
        cp = parse_checkpoint(note[: note.rindex("\n\n") + 1])
        text = note[: note.rindex("\n\n") + 1].replace(f"\n{cp.sequence}\n", f"\n{cp.sequence + 1}\n", 1)
        con.execute("INSERT INTO checkpoints SELECT ?, origin, ?, ?, logs, created_at FROM checkpoints"
                    " WHERE sequence = ?", [sequence + 1, ledger.attacker.key_id.hex(), ledger.attacker.sign(text),
                                            sequence])
    report = run_audit(db_file, ledger.verifier)
    find_break(report, "checkpoints", None, f"checkpoint {sequence + 1}: signature or format")


def test_audit_with_the_wrong_key(ledger: Ledger, db_file: Path) -> None:
    report = run_audit(db_file, ledger.attacker.verifier)
    assert len(report.breaks) == len(ledger.checkpoints), describe(report)
    for cp in ledger.checkpoints:
        find_break(report, "checkpoints", None, f"checkpoint {cp['sequence']}: signature or format")


def test_checkpoint_signed_by_another_key_in_bundle(ledger: Ledger) -> None:
    bundle = exact_bundle(ledger)
    note = bundle["checkpoint"]["note"]
    bundle["checkpoint"]["note"] = ledger.attacker.sign(note[: note.rindex("\n\n") + 1])
    expect_step(bundle, ledger.verifier, "checkpoint signature")


def test_bundle_checked_with_the_wrong_key(ledger: Ledger) -> None:
    expect_step(exact_bundle(ledger), ledger.attacker.verifier, "checkpoint signature")


def test_checkpoint_index_rows_deleted(ledger: Ledger, db_file: Path) -> None:
    with tampering(db_file) as con:
        con.execute("DELETE FROM checkpoint_logs WHERE log_id = ?", [LOG_A])
    # Every bundle of the log now comes without a checkpoint and fails verification...
    bundle = ledger.bundle(ledger.event_ids[LOG_A][0], db_file)
    expect_step(bundle, ledger.verifier, "checkpoint")
    # ...which the audit should explain.
    report = run_audit(db_file, ledger.verifier)
    assert any(b.log_id == LOG_A for b in report.breaks), describe(report)


# ---- tiles --------------------------------------------------------------------------------


def test_deleted_tile(ledger: Ledger, db_file: Path) -> None:
    with tampering(db_file) as con:
        con.execute("DELETE FROM merkle_tiles WHERE log_id = ? AND level = 0 AND idx = 0", [LOG_A])
    report = run_audit(db_file, ledger.verifier)
    b = find_break(report, LOG_A, None, "tile (0, 0) does not match")
    assert report.breaks == [b], describe(report)


def test_corrupted_tile(ledger: Ledger, db_file: Path) -> None:
    target = 6  # the hash of leaf 6, which is the first path element of leaf 7
    with tampering(db_file) as con:
        (tile,) = con.execute("SELECT hashes FROM merkle_tiles WHERE log_id = ? AND level = 0 AND idx = 0",
                              [LOG_A]).fetchone()
        tile = bytearray(tile)
        tile[32 * target] ^= 0x01
        con.execute("UPDATE merkle_tiles SET hashes = ? WHERE log_id = ? AND level = 0 AND idx = 0",
                    [bytes(tile), LOG_A])
    report = run_audit(db_file, ledger.verifier)
    b = find_break(report, LOG_A, None, "tile (0, 0) does not match")
    assert report.breaks == [b], describe(report)
    # The store now serves a wrong path for the neighbouring leaf.
    expect_step(ledger.bundle(ledger.event_ids[LOG_A][target + 1], db_file), ledger.verifier, "inclusion proof")


def test_tampered_inclusion_path_in_bundle(ledger: Ledger) -> None:
    bundle = later_bundle(ledger)
    for i in range(len(bundle["inclusion_path"])):
        edited = copy.deepcopy(bundle)
        edited["inclusion_path"][i] = flip_hex(edited["inclusion_path"][i], 31)
        expect_step(edited, ledger.verifier, "inclusion proof")
    shortened = copy.deepcopy(bundle)
    shortened["inclusion_path"].pop()
    expect_step(shortened, ledger.verifier, "inclusion proof")
    rooted = copy.deepcopy(bundle)
    rooted["root"] = flip_hex(rooted["root"])
    expect_step(rooted, ledger.verifier, "inclusion proof")


# ---- the CLI ------------------------------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVENANCE_")}
    env["PROVENANCE_DATA_DIR"] = str(cwd / "data")
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_exit_codes(ledger: Ledger, db_file: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(exact_bundle(ledger), indent=2, ensure_ascii=False))
    bad = tmp_path / "bad.json"
    tampered = exact_bundle(ledger)
    tampered["event"]["carrier"] = "Someone Else"
    bad.write_text(json.dumps(tampered))
    junk = tmp_path / "junk.json"
    junk.write_text("this is not { json")
    key = str(ledger.vkey_path)

    ok = _cli("verify", str(good), "--key", key, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK: event ")
    failed = _cli("verify", str(bad), "--key", ledger.vkey, cwd=tmp_path)
    assert failed.returncode == 1, failed.stderr
    assert "FAILED at leaf hash" in failed.stderr
    malformed = _cli("verify", str(junk), "--key", key, cwd=tmp_path)
    assert malformed.returncode == 2, malformed.stderr
    assert "not a JSON proof bundle" in malformed.stderr

    clean = _cli("audit", "--db", str(db_file), "--key", key, "--quiet", cwd=tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "clean" in clean.stdout
    with tampering(db_file) as con:
        con.execute("DELETE FROM events WHERE log_id = ? AND leaf_index = 3", [LOG_A])
    broken = _cli("audit", "--db", str(db_file), "--key", key, "--quiet", cwd=tmp_path)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert f"BREAK {LOG_A}: leaf 3 is missing" in broken.stdout
