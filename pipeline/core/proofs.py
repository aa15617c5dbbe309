"""RFC 9162 §2.1 inclusion and consistency proofs: building, verifying, and slow references.

Proofs are built from a `NodeReader`, so the same code serves an in-memory
tree in tests and stored tiles in production: a proof costs O(log n) node
lookups and never re-hashes the log.

Consistency policy: the empty tree is a prefix of every tree, so the proof
from size 0 is the empty path and it verifies iff `root1` is `EMPTY_ROOT`
(upstream transparency-dev rejects size1 == 0 outright; RFC 9162 leaves it
undefined). Every hash handed to a verifier must be 32 bytes.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from pipeline.core.merkle import EMPTY_ROOT, HASH_SIZE, NodeReader, range_hash, root_of
from pipeline.errors import InvalidChallenge, InvalidProof

_sha256 = hashlib.sha256


def _node_path(level: int, index: int, size: int, node: NodeReader) -> list[bytes]:
    """Audit path of the complete node (level, index) in the tree of `size` leaves.

    Inner part: siblings below the level where the node's path and the last
    leaf's path meet; the highest of them is the ephemeral right-border node,
    hashed from complete subtrees. Border part: left siblings above it.
    """
    inner = (index ^ ((size - 1) >> level)).bit_length()
    path = [node(level + i, (index >> i) ^ 1) for i in range(inner - 1)]
    if inner:
        begin = ((index >> (inner - 1)) | 1) << (level + inner - 1)
        path.append(range_hash(begin, size, node))
    for i in range(inner, (index >> inner).bit_length() + inner):
        if index >> i & 1:
            path.append(node(level + i, (index >> i) ^ 1))
    return path


def inclusion_path(index: int, size: int, node: NodeReader) -> list[bytes]:
    """RFC 9162 audit path of leaf `index` in the tree of `size` leaves, leaf side first.

    O(log size) node lookups, whatever the size.

    >>> from pipeline.core.merkle import MemoryTree, leaf_hash
    >>> tree = MemoryTree(leaf_hash(bytes([i])) for i in range(5))
    >>> path = inclusion_path(2, 5, tree)
    >>> verify_inclusion(leaf_hash(b"\\x02"), 2, 5, path, tree.root())
    >>> len(path)
    3
    """
    if not 0 <= index < size:
        raise InvalidChallenge(f"leaf index {index} is outside a tree of size {size}")
    return _node_path(0, index, size, node)


def consistency_path(size1: int, size2: int, node: NodeReader) -> list[bytes]:
    """RFC 9162 consistency proof that the tree of size1 leaves is a prefix of size2.

    It is the audit path, in the tree of size2, of the last perfect subtree of
    the tree of size1, preceded by that subtree's hash unless size1 is a power
    of two (the verifier already holds it as root1). Empty when size1 is 0 or
    equals size2.

    >>> from pipeline.core.merkle import MemoryTree, leaf_hash, root_from_nodes
    >>> tree = MemoryTree(leaf_hash(bytes([i])) for i in range(7))
    >>> path = consistency_path(3, 7, tree)
    >>> verify_consistency(3, 7, root_from_nodes(3, tree), tree.root(), path)
    >>> len(path), consistency_path(0, 7, tree), consistency_path(7, 7, tree)
    (4, [], [])
    """
    if not 0 <= size1 <= size2:
        raise InvalidChallenge(f"no consistency proof from size {size1} to size {size2}")
    if size1 == 0 or size1 == size2:
        return []
    level = (size1 & -size1).bit_length() - 1
    index = (size1 - 1) >> level
    path = _node_path(level, index, size2, node)
    return path if index == 0 else [node(level, index), *path]


def _check_hash(what: str, h: bytes) -> None:
    if not isinstance(h, bytes) or len(h) != HASH_SIZE:
        raise InvalidChallenge(f"{what} must be {HASH_SIZE} bytes, got {h!r}")


def _check_path(path: Sequence[bytes], expected: int, what: str) -> None:
    if len(path) != expected:
        raise InvalidChallenge(f"{what}: path has {len(path)} hashes, expected {expected}")
    for i, h in enumerate(path):
        _check_hash(f"path[{i}]", h)


def root_from_inclusion(leaf_hash_: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes:
    """The root that `path` proves leaf `index` under (RFC 9162 §2.1.3.2 loop).

    Raises InvalidChallenge when the request or path is malformed, so the
    caller's only remaining check is the root comparison.

    >>> from pipeline.core.merkle import leaf_hash
    >>> root_from_inclusion(leaf_hash(b""), 0, 1, []) == leaf_hash(b"")
    True
    """
    _check_hash("leaf hash", leaf_hash_)
    if not 0 <= index < size:
        raise InvalidChallenge(f"leaf index {index} is outside a tree of size {size}")
    inner = (index ^ (size - 1)).bit_length()
    _check_path(path, inner + bin(index >> inner).count("1"), f"inclusion of leaf {index} in size {size}")
    fn, sn, r = index, size - 1, leaf_hash_
    for p in path:
        if fn & 1 or fn == sn:
            r = _sha256(b"\x01" + p + r).digest()
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            r = _sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    return r


def verify_inclusion(leaf_hash_: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> None:
    """Check that leaf `index` of the tree of `size` leaves with `root` has `leaf_hash_`.

    Raises InvalidChallenge for a malformed request, InvalidProof (with the
    expected and computed roots) when the path does not lead to `root`.

    >>> from pipeline.core.merkle import leaf_hash
    >>> verify_inclusion(leaf_hash(b""), 0, 1, [], leaf_hash(b""))
    >>> verify_inclusion(leaf_hash(b"x"), 0, 1, [], leaf_hash(b""))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    pipeline.errors.InvalidProof: leaf 0 is not in the tree of size 1: ...
    """
    _check_hash("root", root)
    computed = root_from_inclusion(leaf_hash_, index, size, path)
    if not hmac.compare_digest(computed, root):
        raise InvalidProof(
            f"leaf {index} is not in the tree of size {size}: expected root {root.hex()},"
            f" computed {computed.hex()} from leaf hash {leaf_hash_.hex()} and {len(path)} path hashes"
        )


def roots_from_consistency(size1: int, size2: int, root1: bytes, path: Sequence[bytes]) -> tuple[bytes, bytes]:
    """The (old, new) roots that `path` proves for sizes 0 < size1 < size2 (RFC 9162 §2.1.4.2 loop).

    `root1` is only used as the seed when size1 is a power of two.
    """
    _check_hash("root1", root1)
    if not 0 < size1 < size2:
        raise InvalidChallenge(f"no consistency path from size {size1} to size {size2}: needs 0 < size1 < size2")
    level = (size1 & -size1).bit_length() - 1
    index = (size1 - 1) >> level
    inner = (index ^ ((size2 - 1) >> level)).bit_length()
    expected = inner + bin(index >> inner).count("1") + (index != 0)
    _check_path(path, expected, f"consistency from size {size1} to {size2}")
    hashes = [root1, *path] if index == 0 else list(path)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = hashes[0]
    for c in hashes[1:]:
        if fn & 1 or fn == sn:
            fr = _sha256(b"\x01" + c + fr).digest()
            sr = _sha256(b"\x01" + c + sr).digest()
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            sr = _sha256(b"\x01" + sr + c).digest()
        fn >>= 1
        sn >>= 1
    return fr, sr


def verify_consistency(size1: int, size2: int, root1: bytes, root2: bytes, path: Sequence[bytes]) -> None:
    """Check that the tree of size1 leaves with root1 is a prefix of the tree of size2 with root2.

    Raises InvalidChallenge for a malformed request, InvalidProof (sizes,
    expected and computed roots) when the log was rewritten.

    >>> from pipeline.core.merkle import leaf_hash
    >>> verify_consistency(0, 5, EMPTY_ROOT, leaf_hash(b"any"), [])
    >>> verify_consistency(2, 2, EMPTY_ROOT, leaf_hash(b"x"), [])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    pipeline.errors.InvalidProof: trees of equal size 2 have different roots: ...
    """
    _check_hash("root1", root1)
    _check_hash("root2", root2)
    if not 0 <= size1 <= size2:
        raise InvalidChallenge(f"no consistency proof from size {size1} to size {size2}")
    if size1 == size2 or size1 == 0:
        _check_path(path, 0, f"consistency from size {size1} to {size2}")
        if size1 == 0 and not hmac.compare_digest(root1, EMPTY_ROOT):
            raise InvalidProof(f"the tree of size 0 has root {EMPTY_ROOT.hex()}, got root1 {root1.hex()}")
        if size2 == 0 and not hmac.compare_digest(root2, EMPTY_ROOT):
            raise InvalidProof(f"the tree of size 0 has root {EMPTY_ROOT.hex()}, got root2 {root2.hex()}")
        if size1 == size2 and not hmac.compare_digest(root1, root2):
            raise InvalidProof(f"trees of equal size {size1} have different roots: {root1.hex()} vs {root2.hex()}")
        return
    fr, sr = roots_from_consistency(size1, size2, root1, path)
    for name, expected, computed in (("root1", root1, fr), ("root2", root2, sr)):
        if not hmac.compare_digest(computed, expected):
            raise InvalidProof(
                f"tree of size {size1} is not a prefix of the tree of size {size2}: expected {name}"
                f" {expected.hex()}, computed {computed.hex()} from {len(path)} path hashes"
            )


def reference_inclusion_path(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """Reference audit path, straight from RFC 6962 §2.1.1 PATH(m, D[n]): for tests.

    >>> from pipeline.core.merkle import leaf_hash
    >>> reference_inclusion_path(0, [leaf_hash(b"")])
    []
    """
    n = len(leaf_hashes)
    if n <= 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if index < k:
        return reference_inclusion_path(index, leaf_hashes[:k]) + [root_of(leaf_hashes[k:])]
    return reference_inclusion_path(index - k, leaf_hashes[k:]) + [root_of(leaf_hashes[:k])]


def reference_consistency_path(size1: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """Reference consistency proof, straight from RFC 6962 §2.1.2 PROOF(m, D[n]): for tests.

    Size1 of 0 gives the empty path, the same policy as `consistency_path`.

    >>> from pipeline.core.merkle import leaf_hash
    >>> reference_consistency_path(0, [leaf_hash(b"")])
    []
    """
    if size1 == 0:
        return []

    def subproof(m: int, d: Sequence[bytes], whole: bool) -> list[bytes]:
        n = len(d)
        if m == n:
            return [] if whole else [root_of(d)]
        k = 1 << ((n - 1).bit_length() - 1)
        if m <= k:
            return subproof(m, d[:k], whole) + [root_of(d[k:])]
        return subproof(m - k, d[k:], False) + [root_of(d[:k])]

    return subproof(size1, leaf_hashes, True)
