"""RFC 9162 §2.1 Merkle tree hashing: leaf and node hashes, compact ranges, roots.

Leaf hash `SHA-256(0x00 ‖ leaf)`, node hash `SHA-256(0x01 ‖ left ‖ right)`;
the empty tree's root is `SHA-256("")`. Indices are 0-based everywhere.

Trees are read through a `NodeReader`, so the same code serves an in-memory
tree in tests and stored tiles in production; :mod:`pipeline.core.proofs`
builds and verifies inclusion and consistency proofs on top of it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Protocol

from pipeline.errors import InvalidChallenge, LedgerError

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


def range_hash(begin: int, end: int, node: NodeReader) -> bytes:
    """Hash of the leaves [begin, end) from the complete subtrees covering them.

    `begin` must be aligned to the largest power of two not above end - begin:
    the range is then the perfect subtrees of the set bits of its width.

    >>> tree = MemoryTree(leaf_hash(bytes([i])) for i in range(6))
    >>> range_hash(4, 6, tree) == tree(1, 2)
    True
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
    return range_hash(0, size, node) if size else EMPTY_ROOT


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
