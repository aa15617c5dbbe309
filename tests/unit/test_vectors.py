"""RFC 9162 reference vectors from transparency-dev/merkle (see tests/vectors/README.md).

Every root, path and probe is checked; probes whose outcome is a matter of
verifier policy are asserted against the policy documented in
`pipeline/core/proofs.py`, not against upstream's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.merkle import CompactRange, MemoryTree, leaf_hash, root_from_nodes, root_of
from pipeline.core.proofs import (
    consistency_path,
    inclusion_path,
    reference_consistency_path,
    reference_inclusion_path,
    verify_consistency,
    verify_inclusion,
)
from pipeline.core.tiles import TileBuilder
from pipeline.errors import InvalidChallenge, InvalidProof

VECTORS: dict[str, Any] = json.loads((Path(__file__).parents[1] / "vectors" / "rfc9162_vectors.json").read_text())
LEAF_HASHES = [bytes.fromhex(h) for h in VECTORS["leaf_hashes"]]
TREE = MemoryTree(LEAF_HASHES)

# Where our policy gives another outcome than upstream's `must_fail`, and why.
POLICY_OUTCOME = {
    # Equal sizes, empty path, equal roots, but the roots are 12-byte placeholders:
    # upstream accepts, we reject every hash that is not 32 bytes.
    "testdata/consistency/additional/sizes-are-equal-one-and-proof-is-empty.json": InvalidChallenge,
}


def _bytes(hexes: list[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in hexes]


def _inclusion(v: dict[str, Any]) -> None:
    verify_inclusion(
        bytes.fromhex(v["leaf_hash"]), v["leaf_index"], v["tree_size"], _bytes(v["path"]), bytes.fromhex(v["root"])
    )


def _consistency(v: dict[str, Any]) -> None:
    verify_consistency(
        v["size1"], v["size2"], bytes.fromhex(v["root1"]), bytes.fromhex(v["root2"]), _bytes(v["path"])
    )


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [c.get("source_path") or c.get("desc") or str(i) for i, c in enumerate(cases)]


def test_leaf_hashes_of_the_reference_leaves() -> None:
    assert [leaf_hash(bytes.fromhex(leaf)) for leaf in VECTORS["leaves_hex"]] == LEAF_HASHES


def test_every_complete_node() -> None:
    for level, row in enumerate(VECTORS["node_hashes_by_level"]["levels"]):
        assert [TREE(level, j) for j in range(len(row))] == _bytes(row)


@pytest.mark.parametrize("size", range(9))
def test_roots(size: int) -> None:
    expected = bytes.fromhex(VECTORS["roots"][str(size)])
    compact = CompactRange()
    compact.extend(LEAF_HASHES[:size])
    builder = TileBuilder(height=1)
    builder.append(LEAF_HASHES[:size])
    assert root_of(LEAF_HASHES[:size]) == compact.root() == root_from_nodes(size, TREE) == builder.root() == expected


@pytest.mark.parametrize("v", VECTORS["inclusion"], ids=lambda v: f"{v['leaf_index']}-of-{v['tree_size']}")
def test_inclusion(v: dict[str, Any]) -> None:
    _inclusion(v)
    path = _bytes(v["path"])
    assert inclusion_path(v["leaf_index"], v["tree_size"], TREE) == path
    assert reference_inclusion_path(v["leaf_index"], LEAF_HASHES[: v["tree_size"]]) == path
    assert bytes.fromhex(v["root"]) == bytes.fromhex(VECTORS["roots"][str(v["tree_size"])])


@pytest.mark.parametrize("v", VECTORS["consistency"], ids=lambda v: f"{v['size1']}-to-{v['size2']}")
def test_consistency(v: dict[str, Any]) -> None:
    _consistency(v)
    path = _bytes(v["path"])
    assert consistency_path(v["size1"], v["size2"], TREE) == path
    assert reference_consistency_path(v["size1"], LEAF_HASHES[: v["size2"]]) == path


@pytest.mark.parametrize("v", VECTORS["inclusion_negative"], ids=_ids(VECTORS["inclusion_negative"]))
def test_inclusion_negative(v: dict[str, Any]) -> None:
    assert v["must_fail"]
    with pytest.raises((InvalidProof, InvalidChallenge)):
        _inclusion(v)


@pytest.mark.parametrize("v", VECTORS["consistency_negative"], ids=_ids(VECTORS["consistency_negative"]))
def test_consistency_negative(v: dict[str, Any]) -> None:
    assert v["must_fail"]
    with pytest.raises((InvalidProof, InvalidChallenge)):
        _consistency(v)


def _check_probe(v: dict[str, Any], verify: Callable[[dict[str, Any]], None]) -> None:
    policy = POLICY_OUTCOME.get(v["source_path"])
    if policy is not None:
        with pytest.raises(policy):
            verify(v)
    elif v["must_fail"]:
        with pytest.raises((InvalidProof, InvalidChallenge)):
            verify(v)
    else:
        verify(v)


PROBES = VECTORS["upstream_probes"]


@pytest.mark.parametrize("v", PROBES["inclusion"], ids=_ids(PROBES["inclusion"]))
def test_upstream_inclusion_probe(v: dict[str, Any]) -> None:
    _check_probe(v, _inclusion)


@pytest.mark.parametrize("v", PROBES["consistency"], ids=_ids(PROBES["consistency"]))
def test_upstream_consistency_probe(v: dict[str, Any]) -> None:
    _check_probe(v, _consistency)


def test_policy_notes_are_the_documented_ones() -> None:
    """The probes upstream marks policy-dependent give what our policy says, for the reason it says."""
    noted = [v for kind in ("inclusion", "consistency") for v in PROBES[kind] if "policy_note" in v]
    assert len(noted) == 11
    for v in noted:
        if "leaf_hash" in v:  # empty leaf hash and root: not 32 bytes
            with pytest.raises(InvalidChallenge, match="32 bytes"):
                _inclusion(v)
        elif v["size1"] == 0:  # from the empty tree: only an empty path to a 32-byte root1 == EMPTY_ROOT
            assert v["must_fail"]
            with pytest.raises((InvalidProof, InvalidChallenge)):
                _consistency(v)
        else:
            assert POLICY_OUTCOME[v["source_path"]] is InvalidChallenge
            with pytest.raises(InvalidChallenge, match="32 bytes"):
                _consistency(v)


def test_upstream_probe_counts() -> None:
    probes = PROBES["inclusion"] + PROBES["consistency"]
    assert len(probes) == 196
    assert sum(not p["must_fail"] for p in probes) == 12
