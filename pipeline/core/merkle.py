"""RFC 9162 §2.1 Merkle tree hashing, proofs and their verification.

Leaf hash `SHA-256(0x00 ‖ leaf)`, node hash `SHA-256(0x01 ‖ left ‖ right)`;
the empty tree's root is `SHA-256("")`. Indices are 0-based everywhere.

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
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Protocol

from pipeline.errors import InvalidChallenge, InvalidProof, LedgerError

_sha256 = hashlib.sha256

HASH_SIZE = 32
EMPTY_ROOT = _sha256(b"").digest()
_CHUNK = 1024


def leaf_hash(leaf: bytes) -> bytes:
    """RFC 9162 leaf hash.

    >>> leaf_hash(b"").hex()[:16]
    '6e340b9cffb37a98'
    """
    return _sha256(b"\x00" + leaf).digest()


def leaf_hashes(leaves: Iterable[bytes]) -> list[bytes]:
    """RFC 9162 leaf hashes of a batch, without a Python call per leaf.

    >>> leaf_hashes([b"", b"a"]) == [leaf_hash(b""), leaf_hash(b"a")]
    True
    """
    sha = _sha256
    return [sha(b"\x00" + leaf).digest() for leaf in leaves]


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash."""
    return _sha256(b"\x01" + left + right).digest()


class CompactRange:
    """The right frontier of a growing tree: one hash per set bit of its size.

    Appending costs O(1) amortised hashes and the state is O(log n), so a log of
    any length fits in a few hundred bytes of memory.

    >>> cr = CompactRange()
    >>> for leaf in (b"a", b"b", b"c"):
    ...     cr.append(leaf_hash(leaf))
    >>> cr.size, len(cr.hashes)
    (3, 2)
    """

    __slots__ = ("size", "hashes")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0 or len(hashes) != bin(size).count("1"):
            raise LedgerError(
                f"compact range of size {size} needs {bin(max(size, 0)).count('1')} hashes, got {len(hashes)}"
            )
        self.size = size
        # hashes[0] is the largest (leftmost) perfect subtree, hashes[-1] the smallest.
        self.hashes = list(hashes)

    def append(self, leaf_hash_: bytes) -> None:
        """Add one leaf hash at index `size`."""
        h = leaf_hash_
        hashes = self.hashes
        size = self.size
        while size & 1:
            h = _sha256(b"\x01" + hashes.pop() + h).digest()
            size >>= 1
        hashes.append(h)
        self.size += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Add leaf hashes in order: the batch form of `append`.

        Hashes level by level over chunks of 1024 leaves: the inner loops are
        comprehensions over cache-warm lists, half again as fast as `append`.
        """
        it = iter(leaf_hashes)
        while chunk := list(islice(it, _CHUNK)):
            self._merge(chunk)

    def _merge(self, row: list[bytes]) -> None:
        sha = _sha256
        hashes, s = self.hashes, self.size
        self.size = s + len(row)
        tail: list[bytes] = []
        while row:
            if s & 1:  # the frontier's node at this level is the left sibling of row[0]
                row = [hashes.pop(), *row]
            if len(row) & 1:  # an unpaired last node joins the new frontier
                tail.append(row.pop())
            pairs = iter(row)
            row = [sha(b"\x01" + left + right).digest() for left, right in zip(pairs, pairs)]
            s >>= 1
        hashes.extend(reversed(tail))

    def root(self) -> bytes:
        """The RFC 9162 root of the tree of `size` leaves."""
        if not self.hashes:
            return EMPTY_ROOT
        it = reversed(self.hashes)
        h = next(it)
        for left in it:
            h = _sha256(b"\x01" + left + h).digest()
        return h

    def copy(self) -> CompactRange:
        return CompactRange(self.size, list(self.hashes))


class NodeReader(Protocol):
    """Returns the hash of the complete subtree at `level` covering leaves
    [index·2^level, (index+1)·2^level); level 0 is the leaf hashes.

    The seam between proof building and storage: memory, tiles or a database.
    """

    def __call__(self, level: int, index: int, /) -> bytes: ...


class MemoryTree:
    """Every complete node of a tree, kept in memory: a reference `NodeReader`.

    For tests and small trees; the store reads tiles instead.

    >>> tree = MemoryTree(leaf_hash(bytes([i])) for i in range(3))
    >>> tree.size, tree(1, 0) == node_hash(tree(0, 0), tree(0, 1))
    (3, True)
    """

    __slots__ = ("_levels",)

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [[]]
        for h in leaf_hashes:
            self.append(h)

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def append(self, leaf_hash_: bytes) -> None:
        """Add one leaf hash and every node it completes."""
        levels = self._levels
        level, h = 0, leaf_hash_
        levels[0].append(h)
        while len(levels[level]) % 2 == 0:
            h = node_hash(levels[level][-2], h)
            level += 1
            if level == len(levels):
                levels.append([])
            levels[level].append(h)

    def __call__(self, level: int, index: int, /) -> bytes:
        if level < 0 or index < 0 or level >= len(self._levels) or index >= len(self._levels[level]):
            raise InvalidChallenge(f"no complete node ({level}, {index}) in a tree of size {self.size}")
        return self._levels[level][index]

    def root(self) -> bytes:
        return root_from_nodes(self.size, self)


def _range_hash(begin: int, end: int, node: NodeReader) -> bytes:
    """Hash of the leaves [begin, end) from the complete subtrees covering them.

    `begin` must be aligned to the largest power of two not above end - begin:
    the range is then the perfect subtrees of the set bits of its width.
    """
    parts: list[bytes] = []
    width = end - begin
    for level in range(width.bit_length() - 1, -1, -1):
        if width >> level & 1:
            parts.append(node(level, begin >> level))
            begin += 1 << level
    h = parts.pop()
    while parts:
        h = node_hash(parts.pop(), h)
    return h


def root_from_nodes(size: int, node: NodeReader) -> bytes:
    """The root of the tree of `size` leaves from at most log2(size) node lookups.

    >>> tree = MemoryTree(leaf_hash(bytes([i])) for i in range(5))
    >>> root_from_nodes(5, tree) == root_of([leaf_hash(bytes([i])) for i in range(5)])
    True
    """
    if size < 0:
        raise InvalidChallenge(f"tree size {size} is negative")
    return _range_hash(0, size, node) if size else EMPTY_ROOT


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
        path.append(_range_hash(begin, size, node))
    for i in range(inner, (index >> inner).bit_length() + inner):
        if index >> i & 1:
            path.append(node(level + i, (index >> i) ^ 1))
    return path


def inclusion_path(index: int, size: int, node: NodeReader) -> list[bytes]:
    """RFC 9162 audit path of leaf `index` in the tree of `size` leaves, leaf side first.

    O(log size) node lookups, whatever the size.

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


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """Reference root, straight from RFC 9162 MTH(D[n]): slow and obviously right.

    >>> root_of([]) == EMPTY_ROOT
    True
    """
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = 1 << ((n - 1).bit_length() - 1)
    return node_hash(root_of(leaf_hashes[:k]), root_of(leaf_hashes[k:]))


def reference_inclusion_path(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """Reference audit path, straight from RFC 6962 §2.1.1 PATH(m, D[n]): for tests.

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
