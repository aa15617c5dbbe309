"""Proof bundles as properties: any log, any block cuts, every bundle verifies and any flipped bit is caught.

The log is built with the ledger's own pieces (`PartitionLog`, `TileBuilder`,
`TileNodeReader`, `build_bundle`, a signed checkpoint over the head block), and
the proofs the tiles give are checked against the slow RFC 6962 reference.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pytest
from factories import as_bytes, make_events
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.blocks import BlockHeader
from pipeline.core.bundle import StepFailed, build_bundle, verify_bundle
from pipeline.core.checkpoint import Checkpoint, CheckpointEntry, sign_checkpoint
from pipeline.core.ledger import PartitionLog, accept
from pipeline.core.note import Signer
from pipeline.core.proofs import (
    consistency_path,
    inclusion_path,
    reference_consistency_path,
    reference_inclusion_path,
    verify_consistency,
)
from pipeline.core.tiles import TileBuilder, TileNodeReader
from pipeline.errors import InvalidProof

LOG_ID = "shipment-events/4"
MAX_EVENTS = 200
ACCEPTED = [accept(as_bytes(e)) for e in make_events(MAX_EVENTS, seed=3)]
SIGNER = Signer(hashlib.sha256(b"bundle properties").digest(), "provenance.test/ledger")
VERIFIER = SIGNER.verifier
CREATED = "2026-03-01T09:00:00Z"


@dataclass
class Log:
    """One sealed log: its blocks, every leaf hash, its tiles, and a checkpoint over the head."""

    blocks: list[BlockHeader]
    hashes: list[bytes]
    tiles: dict[tuple[int, int], bytes]
    note: str

    def reader(self, size: int) -> TileNodeReader:
        return TileNodeReader(size, lambda level, index: self.tiles[(level, index)])

    def block_of(self, index: int) -> BlockHeader:
        return next(b for b in self.blocks if b.tree_size > index)

    def bundle(self, index: int) -> dict[str, Any]:
        block, head = self.block_of(index), self.blocks[-1]
        path = inclusion_path(index, block.tree_size, self.reader(block.tree_size))
        cons = consistency_path(block.tree_size, head.tree_size, self.reader(head.tree_size))
        event = json.loads(ACCEPTED[index][1])
        chain = self.blocks[block.height + 1 :]
        return build_bundle(event, LOG_ID, index, path, block, self.note, SIGNER.key_id, cons, chain)


def build_log(n: int, cuts: set[int]) -> Log:
    """`n` events sealed into blocks ending at each cut and at `n`."""
    plog = PartitionLog(LOG_ID)
    builder = TileBuilder()
    tiles: dict[tuple[int, int], bytes] = {}
    blocks, hashes = [], []
    start = 0
    for end in sorted(cuts | {n}):
        for offset in range(start, end):
            assert plog.admit(offset)
            event, payload = ACCEPTED[offset]
            hashes.append(plog.append(offset, event, payload).leaf_hash)
        sealed = plog.seal(CREATED)
        assert sealed is not None
        tiles.update(builder.append(e.leaf_hash for e in sealed.entries))
        blocks.append(sealed.header)
        start = end
    head = blocks[-1]
    cp = Checkpoint(SIGNER.name, 7, (CheckpointEntry(LOG_ID, head.height, head.tree_size, bytes.fromhex(head.root),
                                                     bytes.fromhex(head.block_hash)),))
    return Log(blocks, hashes, tiles, sign_checkpoint(cp, SIGNER))


@st.composite
def logs(draw: st.DrawFn) -> Log:
    n = draw(st.integers(1, MAX_EVENTS))
    cuts = draw(st.sets(st.integers(1, n - 1), max_size=40)) if n > 1 else set()
    return build_log(n, cuts)


def flip(hex_value: str, bit: int) -> str:
    raw = bytearray(bytes.fromhex(hex_value))
    raw[bit // 8] ^= 1 << (bit % 8)
    return raw.hex()


@settings(max_examples=30, deadline=None)
@given(log=logs())
def test_every_event_bundle_verifies(log: Log) -> None:
    for index in range(len(log.hashes)):
        bundle = log.bundle(index)
        block = log.block_of(index)
        assert [bytes.fromhex(h) for h in bundle["inclusion_path"]] == reference_inclusion_path(
            index, log.hashes[: block.tree_size])
        result = verify_bundle(bundle, VERIFIER)
        assert (result.leaf_index, result.height, result.tree_size, result.checkpoint_sequence) == (
            index, block.height, block.tree_size, 7)


@settings(max_examples=30, deadline=None)
@given(log=logs(), data=st.data())
def test_any_flipped_bit_is_caught(log: Log, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(log.hashes) - 1), label="leaf")
    bundle = log.bundle(index)
    targets = ["leaf_hash", "root", "block.root", "block_hash"]
    targets += [f"inclusion_path[{i}]" for i in range(len(bundle["inclusion_path"]))]
    target = data.draw(st.sampled_from(targets), label="field")
    bit = data.draw(st.integers(0, 255), label="bit")
    if target == "leaf_hash":
        bundle["leaf_hash"] = flip(bundle["leaf_hash"], bit)
        step = "leaf hash"
    elif target == "root":
        bundle["root"] = flip(bundle["root"], bit)
        step = "inclusion proof"
    elif target == "block.root":
        bundle["block"]["root"] = flip(bundle["block"]["root"], bit)
        step = "block"
    elif target == "block_hash":
        bundle["block"]["block_hash"] = flip(bundle["block"]["block_hash"], bit)
        step = "block hash"
    else:
        i = int(target[len("inclusion_path["):-1])
        bundle["inclusion_path"][i] = flip(bundle["inclusion_path"][i], bit)
        step = "inclusion proof"
    with pytest.raises(StepFailed) as caught:
        verify_bundle(bundle, VERIFIER)
    assert caught.value.step == step, str(caught.value)


@settings(max_examples=30, deadline=None)
@given(log=logs(), data=st.data())
def test_consistency_between_any_two_blocks(log: Log, data: st.DataObject) -> None:
    for a in log.blocks:
        for b in log.blocks[a.height:]:
            path = consistency_path(a.tree_size, b.tree_size, log.reader(b.tree_size))
            assert path == reference_consistency_path(a.tree_size, log.hashes[: b.tree_size])
            verify_consistency(a.tree_size, b.tree_size, bytes.fromhex(a.root), bytes.fromhex(b.root), path)
    pairs = [(a, b) for a in log.blocks for b in log.blocks[a.height + 1:]
             if consistency_path(a.tree_size, b.tree_size, log.reader(b.tree_size))]
    if pairs:
        a, b = data.draw(st.sampled_from(pairs), label="blocks")
        path = consistency_path(a.tree_size, b.tree_size, log.reader(b.tree_size))
        i = data.draw(st.integers(0, len(path) - 1), label="element")
        path[i] = bytes.fromhex(flip(path[i].hex(), data.draw(st.integers(0, 255), label="bit")))
        with pytest.raises(InvalidProof):
            verify_consistency(a.tree_size, b.tree_size, bytes.fromhex(a.root), bytes.fromhex(b.root), path)
