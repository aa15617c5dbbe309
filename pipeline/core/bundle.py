"""Proof bundles: everything an auditor needs to check one event, and the offline check.

A bundle says "this exact event is leaf `leaf_index` of log `log_id`, inside
block `height` of that log's hash chain, and a signed checkpoint covers that
block". `verify_bundle` checks each link with nothing but the bundle and the
log's public key, and raises naming the exact step that failed. The tree math
is plain RFC 9162, so any implementation can check the same bundle.

Bundle (JSON)::

    {"version": 1, "event": {...}, "leaf_hash": hex, "log_id": "shipment-events/3",
     "leaf_index": 1234, "tree_size": 5000, "root": hex, "inclusion_path": [hex, ...],
     "block": {<header fields>, "block_hash": hex},
     "checkpoint": {"note": "...", "key_id": hex8,
                    "chain": [{<header>, "block_hash": hex}, ...],   # only when the checkpoint
                    "consistency_path": [hex, ...]}}                # names a later block

When the checkpoint names a later block of the log than the bundle's, `chain`
holds the headers from the bundle's block up to the signed one, so the hash
links tie the bundle's block to the signature, and the consistency path proves
the bundle's tree is a prefix of the checkpointed one.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.core.blocks import BlockHeader, verify_link
from pipeline.core.canonical import canonical_bytes
from pipeline.core.checkpoint import open_checkpoint
from pipeline.core.merkle import leaf_hash
from pipeline.core.note import Verifier, parse_note
from pipeline.core.proofs import verify_consistency, verify_inclusion
from pipeline.errors import InvalidChallenge, InvalidProof, PipelineError

BUNDLE_VERSION = 1


class StepFailed(InvalidProof):
    """A verification step failed; `step` names it."""

    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"{step}: {detail}")
        self.step = step
        self.detail = detail


@dataclass(frozen=True)
class Verified:
    """What a successful verification established."""

    event_id: str
    log_id: str
    leaf_index: int
    height: int
    tree_size: int
    checkpoint_sequence: int
    witnesses: tuple[str, ...]

    def summary(self) -> str:
        w = f", cosigned by {', '.join(self.witnesses)}" if self.witnesses else ""
        return (f"OK: event {self.event_id} is leaf {self.leaf_index} of {self.log_id} "
                f"(block {self.height}, tree size {self.tree_size}), covered by signed checkpoint "
                f"{self.checkpoint_sequence}{w}")


def build_bundle(
    event: dict[str, Any],
    log_id: str,
    leaf_index: int,
    inclusion_path: Sequence[bytes],
    block: BlockHeader,
    checkpoint_note: str | None,
    checkpoint_key_id: bytes | None,
    consistency_path: Sequence[bytes] = (),
    chain: Sequence[BlockHeader] = (),
) -> dict[str, Any]:
    """Assemble a bundle from what the store holds (pure)."""
    bundle: dict[str, Any] = {
        "version": BUNDLE_VERSION,
        "event": event,
        "leaf_hash": leaf_hash(canonical_bytes(event)).hex(),
        "log_id": log_id,
        "leaf_index": leaf_index,
        "tree_size": block.tree_size,
        "root": block.root,
        "inclusion_path": [h.hex() for h in inclusion_path],
        "block": {**block.to_dict(), "block_hash": block.block_hash},
        "checkpoint": None,
    }
    if checkpoint_note is not None and checkpoint_key_id is not None:
        cp: dict[str, Any] = {"note": checkpoint_note, "key_id": checkpoint_key_id.hex()}
        if chain:
            cp["chain"] = [{**h.to_dict(), "block_hash": h.block_hash} for h in chain]
            cp["consistency_path"] = [h.hex() for h in consistency_path]
        bundle["checkpoint"] = cp
    return bundle


def _hex(value: Any, what: str, size: int = 32) -> bytes:
    if not isinstance(value, str):
        raise InvalidChallenge(f"{what} must be a hex string, got {type(value).__name__}")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise InvalidChallenge(f"{what} is not hex: {value[:20]!r}") from None
    if len(raw) != size:
        raise InvalidChallenge(f"{what} must be {size} bytes, got {len(raw)}")
    return raw


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidChallenge(f"{what} must be a non-negative integer, got {value!r}")
    return value


def _check_chain(block: BlockHeader, raw_chain: Any, entry: Any, sequence: int) -> None:
    """The headers after `block` must link, hash by hash, to the block the checkpoint signs."""
    if not isinstance(raw_chain, list) or not raw_chain:
        raise StepFailed("checkpoint chain", f"checkpoint {sequence} signs block {entry.height}, later than block "
                                             f"{block.height}, but the bundle has no chain of headers between them")
    previous = block
    for i, raw in enumerate(raw_chain):
        if not isinstance(raw, dict):
            raise InvalidChallenge(f"checkpoint.chain[{i}] must be a block header object")
        header = BlockHeader.from_dict(raw)
        if header.log_id != block.log_id:
            raise StepFailed("checkpoint chain", f"chain[{i}] belongs to {header.log_id}, not {block.log_id}")
        try:
            verify_link(previous, header)
        except InvalidProof as exc:
            raise StepFailed("checkpoint chain", str(exc)) from None
        previous = header
    if previous.height != entry.height or not hmac.compare_digest(previous.block_hash, entry.block_hash.hex()) \
            or previous.tree_size != entry.tree_size or not hmac.compare_digest(previous.root, entry.root.hex()):
        raise StepFailed("checkpoint chain", f"the chain ends at block {previous.height} ({previous.block_hash}), "
                                             f"the checkpoint signs block {entry.height} ({entry.block_hash.hex()})")


def verify_bundle(bundle: Any, verifier: Verifier, witnesses: Iterable[Verifier] = ()) -> Verified:
    """Check a bundle offline; raise InvalidChallenge (malformed) or StepFailed (does not verify)."""
    if not isinstance(bundle, dict):
        raise InvalidChallenge("a proof bundle is a JSON object")
    if bundle.get("version") != BUNDLE_VERSION:
        raise InvalidChallenge(f"unsupported bundle version {bundle.get('version')!r}")
    event = bundle.get("event")
    if not isinstance(event, dict):
        raise InvalidChallenge("bundle.event must be the event's JSON object")
    log_id = bundle.get("log_id")
    if not isinstance(log_id, str):
        raise InvalidChallenge("bundle.log_id must be a string")
    index = _int(bundle.get("leaf_index"), "leaf_index")
    size = _int(bundle.get("tree_size"), "tree_size")
    root = _hex(bundle.get("root"), "root")
    claimed_leaf = _hex(bundle.get("leaf_hash"), "leaf_hash")
    raw_path = bundle.get("inclusion_path")
    if not isinstance(raw_path, list):
        raise InvalidChallenge("inclusion_path must be a list of hex hashes")
    path = [_hex(h, f"inclusion_path[{i}]") for i, h in enumerate(raw_path)]

    # 1. The leaf: the event's canonical bytes hash to the leaf hash.
    try:
        computed_leaf = leaf_hash(canonical_bytes(event))
    except PipelineError as exc:
        raise StepFailed("leaf hash", f"event cannot be canonicalised: {exc}") from None
    if not hmac.compare_digest(computed_leaf, claimed_leaf):
        raise StepFailed("leaf hash", f"SHA-256(0x00 ‖ JCS(event)) = {computed_leaf.hex()}, "
                                      f"bundle says {claimed_leaf.hex()}")

    # 2. The path: the leaf sits at leaf_index of the tree with that root.
    try:
        verify_inclusion(computed_leaf, index, size, path, root)
    except (InvalidProof, InvalidChallenge) as exc:
        raise StepFailed("inclusion proof", str(exc)) from None

    # 3. The block: same log, same tree, and its hash recomputes.
    raw_block = bundle.get("block")
    if not isinstance(raw_block, dict):
        raise InvalidChallenge("bundle.block must be the block header object")
    block = BlockHeader.from_dict(raw_block)
    if block.log_id != log_id or block.tree_size != size or not hmac.compare_digest(block.root, root.hex()):
        raise StepFailed("block", f"block {block.height} of {block.log_id} has tree_size {block.tree_size} "
                                  f"root {block.root}; the proof is for {log_id} size {size} root {root.hex()}")
    if not hmac.compare_digest(str(raw_block.get("block_hash", "")), block.block_hash):
        raise StepFailed("block hash", f"SHA-256(JCS(header)) = {block.block_hash}, "
                                       f"bundle says {raw_block.get('block_hash')}")

    # 4. The checkpoint: signed by the log's key, and covering this block.
    cp_raw = bundle.get("checkpoint")
    if not isinstance(cp_raw, dict) or not isinstance(cp_raw.get("note"), str):
        raise StepFailed("checkpoint", "the bundle carries no signed checkpoint (the block is newer "
                                       "than the latest checkpoint: fetch the bundle again later)")
    try:
        cp = open_checkpoint(cp_raw["note"], verifier)
    except (InvalidProof, InvalidChallenge) as exc:
        raise StepFailed("checkpoint signature", str(exc)) from None
    entry = cp.entry(log_id)
    if entry is None:
        raise StepFailed("checkpoint coverage", f"checkpoint {cp.sequence} names no block of {log_id}")
    if entry.height < block.height:
        raise StepFailed("checkpoint coverage", f"checkpoint {cp.sequence} covers {log_id} up to block "
                                                f"{entry.height}, older than block {block.height}")
    if entry.height == block.height:
        if not hmac.compare_digest(entry.block_hash, bytes.fromhex(block.block_hash)):
            raise StepFailed("checkpoint coverage", f"checkpoint {cp.sequence} signs block {entry.height} "
                                                    f"as {entry.block_hash.hex()}, bundle has {block.block_hash}")
    else:
        _check_chain(block, cp_raw.get("chain"), entry, cp.sequence)
        raw_cons = cp_raw.get("consistency_path")
        if not isinstance(raw_cons, list):
            raise StepFailed("checkpoint consistency", f"checkpoint {cp.sequence} signs a later block "
                                                       f"({entry.height}) but the bundle has no consistency path")
        cons = [_hex(h, f"consistency_path[{i}]") for i, h in enumerate(raw_cons)]
        try:
            verify_consistency(size, entry.tree_size, root, entry.root, cons)
        except (InvalidProof, InvalidChallenge) as exc:
            raise StepFailed("checkpoint consistency", str(exc)) from None

    # 5. Witnesses: each named witness must have cosigned this very note.
    names: list[str] = []
    wanted = list(witnesses)
    if wanted:
        _, signatures = parse_note(cp_raw["note"])
        text = cp_raw["note"][: cp_raw["note"].rindex("\n\n") + 1]
        for w in wanted:
            mine = [s for s in signatures if s.name == w.name and hmac.compare_digest(s.key_id, w.key_id)]
            if not mine:
                raise StepFailed("witness cosignature", f"no cosignature by {w.name}+{w.key_id.hex()} on "
                                                        f"checkpoint {cp.sequence}")
            try:
                w.verify(text, mine[0].sig)
            except InvalidProof as exc:
                raise StepFailed("witness cosignature", str(exc)) from None
            names.append(w.name)
    # A ShipmentEvent's id or an EPCIS eventID; an EPCIS event without one is named by its leaf.
    event_id = event.get("event_id", event.get("eventID")) or f"(no eventID, leaf {computed_leaf.hex()[:16]})"
    return Verified(str(event_id), log_id, index, block.height, size, cp.sequence, tuple(names))
