"""PartitionLog and block chaining, checked against the slow RFC 9162 reference root; wire round trips."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import pytest
from factories import as_bytes, make_event, make_events
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core import wire
from pipeline.core.blocks import GENESIS_HASH, BlockHeader, verify_link
from pipeline.core.ledger import PartitionLog, SealedBlock, accept
from pipeline.core.merkle import EMPTY_ROOT, leaf_hash, root_of
from pipeline.errors import InvalidChallenge, InvalidEvent, InvalidProof, LedgerError

LOG_ID = "shipment-events/3"
CREATED = "2026-03-01T09:00:00.000Z"


def feed(plog: PartitionLog, events: list[dict[str, Any]], first_offset: int) -> list[Any]:
    """Admit and append `events` at consecutive offsets; return the entries."""
    out = []
    for i, e in enumerate(events):
        offset = first_offset + i
        assert plog.admit(offset)
        event, payload = accept(as_bytes(e))
        out.append(plog.append(offset, event, payload))
    return out


def run(sizes: list[int], seed: int = 0, log_id: str = LOG_ID) -> tuple[list[SealedBlock], list[bytes]]:
    """Blocks of `sizes` events each from one uninterrupted log, and every leaf hash in order."""
    events = make_events(sum(sizes), seed=seed)
    plog = PartitionLog(log_id)
    blocks, offset = [], 0
    for n in sizes:
        feed(plog, events[offset:offset + n], offset)
        offset += n
        sealed = plog.seal(CREATED)
        assert sealed is not None
        blocks.append(sealed)
    hashes = [leaf_hash(accept(as_bytes(e))[1]) for e in events]
    return blocks, hashes


# ---- admit / append / seal -----------------------------------------------------------


def test_append_records_each_event_at_its_leaf() -> None:
    events = make_events(5, seed=1)
    plog = PartitionLog(LOG_ID)
    entries = feed(plog, events, first_offset=100)
    for i, (entry, e) in enumerate(zip(entries, events)):
        assert entry.leaf_index == i
        assert entry.offset == 100 + i
        assert entry.event_id == e["event_id"] and entry.shipment_id == e["shipment_id"]
        assert entry.event_type == e["event_type"]
        assert json.loads(entry.payload) == e
        assert entry.leaf_hash == leaf_hash(entry.payload)
        assert entry.event_time.endswith("Z")
    assert plog.pending == entries
    assert plog.size == 5 and plog.tree.size == 0  # leaves join the tree when their block is sealed
    plog.seal("2026-03-01T00:00:00Z")
    assert plog.size == 5 and plog.tree.size == 5


def test_entry_event_time_is_utc() -> None:
    event, payload = accept(as_bytes(make_event(event_time="2026-11-25T10:00:00+01:00")))
    plog = PartitionLog(LOG_ID)
    plog.admit(0)
    assert plog.append(0, event, payload).event_time == "2026-11-25T09:00:00Z"


def test_first_block() -> None:
    events = make_events(7, seed=2)
    plog = PartitionLog(LOG_ID)
    entries = feed(plog, events, first_offset=40)
    sealed = plog.seal(CREATED)
    assert sealed is not None
    h = sealed.header
    assert (h.log_id, h.height, h.prev_block_hash) == (LOG_ID, 0, GENESIS_HASH)
    assert (h.tree_size, h.first_offset, h.last_offset) == (7, 40, 46)
    assert h.root == root_of([e.leaf_hash for e in entries]).hex()
    assert h.created_at == CREATED
    assert sealed.entries == entries
    assert plog.pending == []
    assert plog.sealed_through == 46
    verify_link(None, h)


def test_block_event_times_span_the_entries() -> None:
    times = ["2026-03-02T10:00:00Z", "2026-03-01T10:00:00+02:00", "2026-03-03T00:00:00-01:00"]
    plog = PartitionLog(LOG_ID)
    feed(plog, [make_event(event_id=f"e{i}", event_time=t) for i, t in enumerate(times)], 0)
    sealed = plog.seal(CREATED)
    assert sealed is not None
    assert sealed.header.first_event_time == "2026-03-01T08:00:00Z"
    assert sealed.header.last_event_time == "2026-03-03T01:00:00Z"


def test_block_event_times_with_fractional_seconds() -> None:
    times = ["2026-03-01T10:00:00.500Z", "2026-03-01T10:00:00Z"]
    plog = PartitionLog(LOG_ID)
    feed(plog, [make_event(event_id=f"e{i}", event_time=t) for i, t in enumerate(times)], 0)
    sealed = plog.seal(CREATED)
    assert sealed is not None
    first = datetime.fromisoformat(sealed.header.first_event_time)
    last = datetime.fromisoformat(sealed.header.last_event_time)
    assert first == datetime(2026, 3, 1, 10, 0, 0, tzinfo=timezone.utc)
    assert last == datetime(2026, 3, 1, 10, 0, 0, 500_000, tzinfo=timezone.utc)


def test_seal_with_nothing_pending_returns_none() -> None:
    plog = PartitionLog(LOG_ID)
    assert plog.seal(CREATED) is None
    feed(plog, make_events(2), 0)
    assert plog.seal(CREATED) is not None
    assert plog.seal(CREATED) is None
    assert plog.last_block is not None and plog.last_block.height == 0


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(1, 9), min_size=1, max_size=8))
def test_every_block_root_is_the_reference_root(sizes: list[int]) -> None:
    blocks, hashes = run(sizes)
    previous = None
    for sealed in blocks:
        h = sealed.header
        assert h.root == root_of(hashes[:h.tree_size]).hex()
        verify_link(previous, h)
        previous = h
    assert blocks[-1].header.tree_size == len(hashes)
    assert [b.header.height for b in blocks] == list(range(len(sizes)))


def test_chain_links_over_several_blocks() -> None:
    blocks, _ = run([3, 1, 4, 1, 5])
    headers = [b.header for b in blocks]
    for prev, block in zip([None, *headers], headers):
        verify_link(prev, block)
        if prev is not None:
            assert block.prev_block_hash == prev.block_hash
            assert block.first_offset == prev.last_offset + 1
    with pytest.raises(InvalidProof):
        verify_link(headers[1], headers[3])  # a block dropped from the chain
    with pytest.raises(InvalidProof):
        verify_link(headers[2], replace(headers[3], prev_block_hash=headers[1].block_hash))
    with pytest.raises(InvalidProof):
        verify_link(replace(headers[1], root=headers[2].root), headers[2])  # edited after its successor
    with pytest.raises(InvalidProof):
        verify_link(None, headers[1])


def test_block_depends_only_on_its_inputs() -> None:
    a, _ = run([4, 6], seed=5)
    b, _ = run([4, 6], seed=5)
    assert [s.header for s in a] == [s.header for s in b]
    assert [s.header.block_hash for s in a] == [s.header.block_hash for s in b]
    assert [s.frontier for s in a] == [s.frontier for s in b]
    other, _ = run([4, 6], seed=6)
    assert other[0].header.block_hash != a[0].header.block_hash
    plog = PartitionLog(LOG_ID)
    feed(plog, make_events(4, seed=5), 0)
    sealed = plog.seal("2026-03-01T09:00:00.001Z")
    assert sealed is not None and sealed.header.root == a[0].header.root
    assert sealed.header.block_hash != a[0].header.block_hash  # created_at is part of the header


# ---- the offset gate -----------------------------------------------------------------


def test_offset_gate_skips_replays_and_records_gaps() -> None:
    plog = PartitionLog(LOG_ID)
    assert plog.admit(10)  # a fresh log starts wherever the partition does
    assert plog.admit(11)
    assert not plog.admit(11)
    assert not plog.admit(3)
    assert plog.gaps == []
    assert plog.admit(15)
    assert plog.gaps == [(12, 15)]
    assert not plog.admit(14)
    assert plog.admit(16)
    assert plog.gaps == [(12, 15)]


def test_restored_log_gates_at_the_block_last_offset() -> None:
    blocks, _ = run([5])
    sealed = blocks[0]
    plog = PartitionLog.restore(sealed.header, sealed.frontier, LOG_ID)
    assert plog.sealed_through == 4
    assert [plog.admit(o) for o in range(5)] == [False] * 5
    assert plog.admit(5)
    assert plog.gaps == []


# ---- restore -------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [1, 2, 3, 4])
def test_restore_continues_with_identical_blocks(cut: int) -> None:
    sizes = [3, 5, 1, 7, 2]
    uninterrupted, hashes = run(sizes)
    events = make_events(sum(sizes), seed=0)
    commit = uninterrupted[cut - 1]
    restored = PartitionLog.restore(commit.header, commit.frontier, LOG_ID)
    offset = commit.header.last_offset + 1
    for expected, n in zip(uninterrupted[cut:], sizes[cut:]):
        feed(restored, events[offset:offset + n], offset)
        offset += n
        sealed = restored.seal(CREATED)
        assert sealed is not None
        assert sealed.header == expected.header
        assert sealed.frontier == expected.frontier
    assert restored.last_block is not None
    assert restored.last_block.root == root_of(hashes).hex()


def test_restore_from_nothing_is_a_fresh_log() -> None:
    plog = PartitionLog.restore(None, [], LOG_ID)
    assert plog.last_block is None and plog.tree.size == 0 and plog.tree.root() == EMPTY_ROOT
    assert plog.sealed_through == -1


def test_restore_with_a_wrong_frontier_raises() -> None:
    blocks, _ = run([3, 3])  # tree_size 6: two frontier hashes
    header, frontier = blocks[1].header, blocks[1].frontier
    assert len(frontier) == 2
    with pytest.raises(LedgerError):
        PartitionLog.restore(header, [frontier[1], frontier[0]], LOG_ID)
    with pytest.raises(LedgerError):
        PartitionLog.restore(header, [frontier[0], bytes(32)], LOG_ID)
    with pytest.raises(LedgerError):
        PartitionLog.restore(header, frontier[:1], LOG_ID)
    with pytest.raises(LedgerError):
        PartitionLog.restore(header, blocks[0].frontier, LOG_ID)
    with pytest.raises(LedgerError):
        PartitionLog.restore(header, frontier, "shipment-events/4")


# ---- wire ----------------------------------------------------------------------------


def test_block_message_round_trip() -> None:
    blocks, _ = run([3, 4])
    for sealed in blocks:
        message = wire.decode_block(wire.encode_block(sealed))
        assert message.header == sealed.header
        assert message.block_hash == sealed.header.block_hash
        assert message.frontier == sealed.frontier
    message = wire.decode_block(wire.encode_block(blocks[-1]))
    resumed = PartitionLog.restore(message.header, message.frontier, LOG_ID)
    assert resumed.tree.root().hex() == blocks[-1].header.root


def _edited(value: bytes, **changes: Any) -> bytes:
    body = json.loads(value)
    body.update(changes)
    return json.dumps(body).encode()


def test_block_message_with_tampered_hash_is_refused() -> None:
    blocks, _ = run([3, 4])
    value = wire.encode_block(blocks[1])
    with pytest.raises(InvalidChallenge, match="block_hash"):
        wire.decode_block(_edited(value, block_hash=blocks[0].header.block_hash))
    with pytest.raises(InvalidChallenge, match="block_hash"):
        wire.decode_block(_edited(value, root=blocks[0].header.root))  # header edited, hash kept
    with pytest.raises(InvalidChallenge, match="block_hash"):
        wire.decode_block(_edited(value, tree_size=6))
    body = json.loads(value)
    del body["block_hash"]
    with pytest.raises(InvalidChallenge):
        wire.decode_block(json.dumps(body).encode())


@pytest.mark.parametrize("value", [b"", b"not json", b"[]", b'{"log_id": "x"}', b'{"frontier": ["zz"]}'])
def test_malformed_block_message_is_refused(value: bytes) -> None:
    with pytest.raises(InvalidChallenge):
        wire.decode_block(value)


def test_block_header_refuses_unknown_and_negative_fields() -> None:
    header = run([2])[0][0].header.to_dict()
    with pytest.raises(InvalidChallenge):
        BlockHeader.from_dict({**header, "extra": 1})
    with pytest.raises(InvalidChallenge):
        BlockHeader.from_dict({**header, "height": -1})
    with pytest.raises(InvalidChallenge):
        BlockHeader.from_dict({**header, "tree_size": True})
    assert BlockHeader.from_dict(header).to_dict() == header


def test_entry_bundles_keep_leaf_order() -> None:
    blocks, _ = run([10])
    entries = blocks[0].entries
    values = wire.encode_entries(LOG_ID, entries, bundle_size=4)
    assert len(values) == 3
    rows = [row for v in values for row in wire.decode_entries(v)]
    assert [r["leaf_index"] for r in rows] == list(range(10))
    for row, entry in zip(rows, entries):
        assert row["log_id"] == LOG_ID
        assert row["payload"].encode("utf-8") == entry.payload
        assert bytes.fromhex(row["leaf_hash"]) == leaf_hash(row["payload"].encode("utf-8"))
        assert row["kafka_offset"] == entry.offset


def test_dead_letter_headers_name_error_and_source() -> None:
    with pytest.raises(InvalidEvent) as info:
        accept(as_bytes(make_event(mode="truck")))
    headers = wire.read_headers(wire.dead_letter_headers(info.value, "shipment-events", 2, 99))
    assert headers["source.topic"] == "shipment-events"
    assert headers["source.partition"] == "2"
    assert headers["source.offset"] == "99"
    assert "mode" in headers["error"]
    assert [e["field"] for e in json.loads(headers["error.fields"])] == ["mode"]
