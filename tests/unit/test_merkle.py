"""Merkle hashing, proofs and verification: fast code against slow references, tampering, pymerkle.

Every fast algorithm is checked against the RFC 6962 recursion over a leaf
list; pymerkle 7 is an independent implementation of the same RFC hashing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymerkle import ConsistencyProof, InclusionProof, InmemoryTree
from pymerkle.core import _consistency_path_layout  # range layout of pymerkle's own format

from pipeline.core.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MemoryTree,
    leaf_hash,
    leaf_hashes,
    node_hash,
    root_from_nodes,
    root_of,
)
from pipeline.core.proofs import (
    consistency_path,
    inclusion_path,
    reference_consistency_path,
    reference_inclusion_path,
    root_from_inclusion,
    roots_from_consistency,
    verify_consistency,
    verify_inclusion,
)
from pipeline.errors import InvalidChallenge, InvalidProof, LedgerError

MAX_SIZE = 300
LEAVES = [b"event-%d" % i for i in range(MAX_SIZE)]
HASHES = [leaf_hash(leaf) for leaf in LEAVES]
TREE = MemoryTree(HASHES)
ROOTS = [root_of(HASHES[:n]) for n in range(MAX_SIZE + 1)]

Failure = (InvalidProof, InvalidChallenge)


def flip(h: bytes, bit: int) -> bytes:
    """`h` with one bit inverted."""
    return bytes(b ^ (1 << (bit % 8)) if i == (bit // 8) % len(h) else b for i, b in enumerate(h))


def fails(check: Callable[[], None]) -> bool:
    try:
        check()
    except Failure:
        return True
    return False


sizes = st.integers(1, MAX_SIZE)


@st.composite
def leaf_in_tree(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(sizes)
    return draw(st.integers(0, size - 1)), size


@st.composite
def size_pair(draw: st.DrawFn) -> tuple[int, int]:
    """0 < size1 < size2: the sizes with a non-empty consistency proof."""
    size2 = draw(st.integers(2, MAX_SIZE))
    return draw(st.integers(1, size2 - 1)), size2


# -- hashing and roots ---------------------------------------------------------------


def test_hashes_follow_rfc9162_prefixes() -> None:
    import hashlib

    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert node_hash(b"l", b"r") == hashlib.sha256(b"\x01lr").digest()
    assert EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert leaf_hashes(LEAVES) == HASHES


def test_compact_range_matches_reference_root_at_every_size() -> None:
    cr = CompactRange()
    assert cr.root() == EMPTY_ROOT
    for n, h in enumerate(HASHES, start=1):
        cr.append(h)
        assert (cr.size, cr.root()) == (n, ROOTS[n])
        assert len(cr.hashes) == bin(n).count("1")


@given(st.lists(st.integers(0, 40), max_size=8))
def test_compact_range_extend_in_any_batches_equals_append(batches: list[int]) -> None:
    batched, single, at = CompactRange(), CompactRange(), 0
    for k in batches:
        batched.extend(HASHES[at : at + k])
        for h in HASHES[at : at + k]:
            single.append(h)
        at += k
        assert (batched.size, batched.hashes) == (single.size, single.hashes)
    assert batched.root() == ROOTS[batched.size]


def test_compact_range_extend_across_chunk_boundaries() -> None:
    many = leaf_hashes(b"%d" % i for i in range(5000))
    for start, batch in ((0, 5000), (7, 1024), (1023, 1025), (1, 4096), (3, 1)):
        one_by_one = CompactRange()
        for h in many[:start]:
            one_by_one.append(h)
        batched = one_by_one.copy()
        batched.extend(iter(many[start : start + batch]))
        for h in many[start : start + batch]:
            one_by_one.append(h)
        assert (batched.size, batched.hashes) == (one_by_one.size, one_by_one.hashes)
    assert batched.size == 4 and batched.root() == root_of(many[:4])


def test_compact_range_copy_and_restore_are_independent() -> None:
    cr = CompactRange()
    cr.extend(HASHES[:13])
    restored = CompactRange(cr.size, cr.hashes)
    twin = cr.copy()
    cr.append(HASHES[13])
    assert twin.root() == restored.root() == ROOTS[13]
    assert cr.root() == ROOTS[14]


def test_compact_range_rejects_a_state_that_cannot_be() -> None:
    with pytest.raises(LedgerError):
        CompactRange(3, [HASHES[0]])
    with pytest.raises(LedgerError):
        CompactRange(-1, [])


def test_memory_tree_roots_and_nodes() -> None:
    for n in range(MAX_SIZE + 1):
        assert root_from_nodes(n, TREE) == ROOTS[n]
    assert TREE.root() == ROOTS[MAX_SIZE]
    assert TREE(3, 2) == root_of(HASHES[16:24])
    with pytest.raises(InvalidChallenge):
        TREE(0, MAX_SIZE)
    with pytest.raises(InvalidChallenge):
        TREE(9, 0)


# -- fast paths against the RFC recursion --------------------------------------------


def test_paths_equal_reference_exhaustively_for_small_trees() -> None:
    for n in range(1, 65):
        for i in range(n):
            assert inclusion_path(i, n, TREE) == reference_inclusion_path(i, HASHES[:n]), (i, n)
        for m in range(n + 1):
            assert consistency_path(m, n, TREE) == reference_consistency_path(m, HASHES[:n]), (m, n)


@given(leaf_in_tree())
def test_inclusion_path_equals_reference(case: tuple[int, int]) -> None:
    index, size = case
    assert inclusion_path(index, size, TREE) == reference_inclusion_path(index, HASHES[:size])


@given(size_pair())
def test_consistency_path_equals_reference(case: tuple[int, int]) -> None:
    size1, size2 = case
    assert consistency_path(size1, size2, TREE) == reference_consistency_path(size1, HASHES[:size2])


def test_paths_read_log_many_nodes() -> None:
    """A proof costs O(log n) node lookups: at most 2·log2(n) + 2 for any request here."""
    calls: list[tuple[int, int]] = []

    def counting(level: int, index: int, /) -> bytes:
        calls.append((level, index))
        return TREE(level, index)

    bound = 2 * MAX_SIZE.bit_length() + 2
    for n in (1, 2, 7, 64, 255, 256, MAX_SIZE):
        for i in range(0, n, 7):
            calls.clear()
            inclusion_path(i, n, counting)
            assert len(calls) <= bound
            calls.clear()
            consistency_path(i, n, counting)
            assert len(calls) <= bound


def test_path_requests_out_of_range_are_invalid_challenges() -> None:
    for index, size in ((0, 0), (5, 5), (-1, 5)):
        with pytest.raises(InvalidChallenge):
            inclusion_path(index, size, TREE)
    for size1, size2 in ((6, 5), (-1, 5)):
        with pytest.raises(InvalidChallenge):
            consistency_path(size1, size2, TREE)


def test_consistency_policy_for_empty_and_equal_sizes() -> None:
    """From size 0 or to the same size the proof is empty; size 0 must claim the empty root."""
    assert consistency_path(0, 9, TREE) == consistency_path(9, 9, TREE) == []
    verify_consistency(0, 9, EMPTY_ROOT, ROOTS[9], [])
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(9, 9, ROOTS[9], ROOTS[9], [])
    with pytest.raises(InvalidProof):
        verify_consistency(0, 9, ROOTS[1], ROOTS[9], [])
    with pytest.raises(InvalidProof):
        verify_consistency(0, 0, EMPTY_ROOT, ROOTS[1], [])
    with pytest.raises(InvalidProof):
        verify_consistency(9, 9, ROOTS[9], ROOTS[8], [])
    with pytest.raises(InvalidChallenge):
        verify_consistency(0, 9, EMPTY_ROOT, ROOTS[9], [ROOTS[9]])
    with pytest.raises(InvalidChallenge):
        verify_consistency(9, 9, ROOTS[9], ROOTS[9], [ROOTS[9]])


# -- every proof verifies -------------------------------------------------------------


@given(leaf_in_tree())
def test_every_inclusion_proof_verifies(case: tuple[int, int]) -> None:
    index, size = case
    path = inclusion_path(index, size, TREE)
    verify_inclusion(HASHES[index], index, size, path, ROOTS[size])
    assert root_from_inclusion(HASHES[index], index, size, path) == ROOTS[size]


@given(size_pair())
def test_every_consistency_proof_verifies(case: tuple[int, int]) -> None:
    size1, size2 = case
    path = consistency_path(size1, size2, TREE)
    verify_consistency(size1, size2, ROOTS[size1], ROOTS[size2], path)
    assert roots_from_consistency(size1, size2, ROOTS[size1], path) == (ROOTS[size1], ROOTS[size2])


def test_every_proof_verifies_exhaustively_for_small_trees() -> None:
    for n in range(1, 70):
        for i in range(n):
            verify_inclusion(HASHES[i], i, n, inclusion_path(i, n, TREE), ROOTS[n])
        for m in range(n + 1):
            verify_consistency(m, n, ROOTS[m], ROOTS[n], consistency_path(m, n, TREE))


# -- any tampering is caught ---------------------------------------------------------


@given(leaf_in_tree(), st.integers(0, 255), st.data())
def test_inclusion_bit_flip_anywhere_fails(case: tuple[int, int], bit: int, data: st.DataObject) -> None:
    index, size = case
    path = inclusion_path(index, size, TREE)
    with pytest.raises(InvalidProof):
        verify_inclusion(flip(HASHES[index], bit), index, size, path, ROOTS[size])
    with pytest.raises(InvalidProof):
        verify_inclusion(HASHES[index], index, size, path, flip(ROOTS[size], bit))
    if path:
        at = data.draw(st.integers(0, len(path) - 1))
        bad = [flip(h, bit) if j == at else h for j, h in enumerate(path)]
        with pytest.raises(InvalidProof):
            verify_inclusion(HASHES[index], index, size, bad, ROOTS[size])


@given(size_pair(), st.integers(0, 255), st.data())
def test_consistency_bit_flip_anywhere_fails(case: tuple[int, int], bit: int, data: st.DataObject) -> None:
    size1, size2 = case
    path = consistency_path(size1, size2, TREE)
    with pytest.raises(InvalidProof):
        verify_consistency(size1, size2, flip(ROOTS[size1], bit), ROOTS[size2], path)
    with pytest.raises(InvalidProof):
        verify_consistency(size1, size2, ROOTS[size1], flip(ROOTS[size2], bit), path)
    at = data.draw(st.integers(0, len(path) - 1))
    bad = [flip(h, bit) if j == at else h for j, h in enumerate(path)]
    with pytest.raises(InvalidProof):
        verify_consistency(size1, size2, ROOTS[size1], ROOTS[size2], bad)


Verification = Callable[[Sequence[bytes]], object]


def _same_computation(compute: Verification, other: Verification, n: int) -> bool:
    """Whether two verifications are the same function of their hashes, probed with random ones."""
    probe = [os.urandom(32) for _ in range(n)]
    try:
        return compute(probe) == other(probe)
    except InvalidChallenge:
        return False


@given(leaf_in_tree(), leaf_in_tree())
def test_inclusion_with_wrong_index_or_size_fails(case: tuple[int, int], wrong: tuple[int, int]) -> None:
    """A wrong index always fails. A wrong size fails unless it gives the very same
    hashing (the proof cannot bind the size: the signed root does), e.g. leaf 0 of 3 vs of 4.
    """
    index, size = case
    path = inclusion_path(index, size, TREE)
    if wrong[0] != index:
        assert fails(lambda: verify_inclusion(HASHES[index], wrong[0], size, path, ROOTS[size]))
    if wrong[1] != size and index < wrong[1]:
        same = _same_computation(
            lambda p: root_from_inclusion(p[0], index, size, p[1:]),
            lambda p: root_from_inclusion(p[0], index, wrong[1], p[1:]),
            len(path) + 1,
        )
        assert fails(lambda: verify_inclusion(HASHES[index], index, wrong[1], path, ROOTS[size])) != same


@given(size_pair(), size_pair())
def test_consistency_with_wrong_sizes_fails(case: tuple[int, int], wrong: tuple[int, int]) -> None:
    """Wrong sizes fail unless they give the very same hashing (same argument as inclusion)."""
    size1, size2 = case
    path = consistency_path(size1, size2, TREE)
    for claim in ((wrong[0], size2), (size1, wrong[1]), wrong):
        if claim == case or not 0 < claim[0] < claim[1]:
            continue
        same = _same_computation(
            lambda p: roots_from_consistency(size1, size2, p[0], p[1:]),
            lambda p: roots_from_consistency(claim[0], claim[1], p[0], p[1:]),
            len(path) + 1,
        )
        assert fails(lambda: verify_consistency(claim[0], claim[1], ROOTS[size1], ROOTS[size2], path)) != same


def test_malformed_requests_are_invalid_challenges() -> None:
    path = inclusion_path(5, 8, TREE)
    for args in (
        (HASHES[5], 8, 8, path, ROOTS[8]),  # index out of range
        (HASHES[5], -1, 8, path, ROOTS[8]),
        (HASHES[5], 5, 8, path[:-1], ROOTS[8]),  # path too short
        (HASHES[5], 5, 8, [*path, ROOTS[8]], ROOTS[8]),  # path too long
        (HASHES[5][:31], 5, 8, path, ROOTS[8]),  # leaf hash not 32 bytes
        (HASHES[5], 5, 8, [path[0] + b"\x00", *path[1:]], ROOTS[8]),
        (HASHES[5], 5, 8, path, b""),
    ):
        with pytest.raises(InvalidChallenge):
            verify_inclusion(*args)
    cpath = consistency_path(6, 8, TREE)
    for cargs in (
        (7, 6, ROOTS[6], ROOTS[8], cpath),
        (6, 8, ROOTS[6], ROOTS[8], cpath[:-1]),
        (6, 8, ROOTS[6], ROOTS[8], []),
        (6, 8, ROOTS[6][:16], ROOTS[8], cpath),
    ):
        with pytest.raises(InvalidChallenge):
            verify_consistency(*cargs)


def test_failed_proofs_carry_their_evidence() -> None:
    path = inclusion_path(5, 8, TREE)
    with pytest.raises(InvalidProof) as inclusion:
        verify_inclusion(HASHES[4], 5, 8, path, ROOTS[8])
    computed = root_from_inclusion(HASHES[4], 5, 8, path)
    for evidence in ("leaf 5", "size 8", ROOTS[8].hex(), computed.hex()):
        assert evidence in str(inclusion.value)
    with pytest.raises(InvalidProof) as consistency:
        verify_consistency(6, 8, ROOTS[6], ROOTS[7], consistency_path(6, 8, TREE))
    for evidence in ("size 6", "size 8", ROOTS[7].hex(), ROOTS[8].hex()):
        assert evidence in str(consistency.value)


# -- pymerkle 7 cross-check ------------------------------------------------------------
# pymerkle numbers leaves from 1 and puts the base hash first in its paths. Its
# consistency paths use a finer layout than RFC 9162 (e.g. 4 -> 8 gives four hashes
# where the RFC gives one), so its proofs convert to ours but not the other way.


@pytest.fixture(scope="module")
def pymerkle_tree() -> InmemoryTree:
    tree = InmemoryTree(algorithm="sha256")  # security on: 0x00 / 0x01 prefixes as RFC 9162
    assert tree.hash_buff(b"x") == leaf_hash(b"x") and tree.hash_pair(b"l", b"r") == node_hash(b"l", b"r")
    tree.append_entries(LEAVES)
    return tree


def _rfc_consistency_ranges(m: int, start: int, n: int, whole: bool) -> list[tuple[int, int]]:
    """Leaf ranges of RFC 6962 SUBPROOF(m, D[start:start+n], whole), in path order."""
    if m == n:
        return [] if whole else [(start, start + n)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return _rfc_consistency_ranges(m, start, k, whole) + [(start + k, start + n)]
    return _rfc_consistency_ranges(m - k, start + k, n - k, False) + [(start, start + k)]


def _pymerkle_consistency_to_rfc(proof: ConsistencyProof) -> list[bytes]:
    """Rebuild the RFC 9162 path from the subtree hashes pymerkle's proof carries."""
    _, _, ranges = _consistency_path_layout(proof.prior_size, proof.size)
    known: dict[tuple[int, int], bytes] = dict(zip(ranges, proof.path))

    def subtree(begin: int, end: int) -> bytes:
        if (begin, end) in known:
            return known[(begin, end)]
        k = 1 << ((end - begin - 1).bit_length() - 1)
        return node_hash(subtree(begin, begin + k), subtree(begin + k, end))

    return [subtree(b, e) for b, e in _rfc_consistency_ranges(proof.prior_size, 0, proof.size, True)]


def _rule(index: int, size: int) -> list[int]:
    """pymerkle's resolution bits for an RFC audit path: 1 where the sibling is on the left."""
    fn, sn, rule = index, size - 1, []
    while sn:
        if fn & 1 or fn == sn:
            rule.append(1)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            rule.append(0)
        fn, sn = fn >> 1, sn >> 1
    return [*rule, 0]


def test_roots_equal_pymerkle(pymerkle_tree: InmemoryTree) -> None:
    for n in range(MAX_SIZE + 1):
        assert pymerkle_tree.get_root(n) == ROOTS[n]


@settings(max_examples=200)
@given(leaf_in_tree())
def test_inclusion_proofs_convert_both_ways_with_pymerkle(pymerkle_tree: InmemoryTree, case: tuple[int, int]) -> None:
    index, size = case
    theirs = pymerkle_tree.prove_inclusion(index + 1, size)
    verify_inclusion(HASHES[index], index, size, theirs.path[1:], ROOTS[size])
    ours = inclusion_path(index, size, TREE)
    assert ours == theirs.path[1:]
    converted = InclusionProof("sha256", True, size, index + 1, _rule(index, size), [HASHES[index], *ours])
    converted.verify(HASHES[index], ROOTS[size], index=index + 1, size=size)


@settings(max_examples=200)
@given(size_pair())
def test_pymerkle_consistency_proofs_verify_with_ours(pymerkle_tree: InmemoryTree, case: tuple[int, int]) -> None:
    size1, size2 = case
    theirs = pymerkle_tree.prove_consistency(size1, size2)
    theirs.verify(ROOTS[size1], ROOTS[size2], prior_size=size1, later_size=size2)
    converted = _pymerkle_consistency_to_rfc(theirs)
    verify_consistency(size1, size2, ROOTS[size1], ROOTS[size2], converted)
    assert converted == consistency_path(size1, size2, TREE)
