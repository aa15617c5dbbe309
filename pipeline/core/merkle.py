"""RFC 9162 §2.1 Merkle tree hashing, with an O(log n) compact range for appends.

Leaf hash `SHA-256(0x00 ‖ leaf)`, node hash `SHA-256(0x01 ‖ left ‖ right)`;
the empty tree's root is `SHA-256("")`. Indices are 0-based everywhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from pipeline.errors import LedgerError

_sha256 = hashlib.sha256

EMPTY_ROOT = _sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    """RFC 9162 leaf hash.

    >>> leaf_hash(b"").hex()[:16]
    '6e340b9cffb37a98'
    """
    return _sha256(b"\x00" + leaf).digest()


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

    def extend(self, leaf_hashes: Sequence[bytes]) -> None:
        for h in leaf_hashes:
            self.append(h)

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
