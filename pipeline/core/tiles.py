"""Merkle tree storage as tiles (tlog-tiles layout), so proofs never re-hash the log.

A tile at tile-level L, index i holds the hashes of tree level `8·L`, node
indices [256·i, 256·i + 256), concatenated (32 bytes each). The right-edge tile
of a level is partial: it holds only the complete nodes so far, and grows in
place as the log grows (so a stored tile of a bigger tree is a valid tile of a
smaller one, read as a prefix). Any complete node sits at most 7 levels above a
stored hash, so it costs at most 255 hashes inside one tile.

`height` exists for tests (small tiles give many tile levels with few leaves);
production keeps the default of 8.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, MutableMapping

from pipeline.core.merkle import EMPTY_ROOT, HASH_SIZE
from pipeline.errors import InvalidChallenge, LedgerError

_sha256 = hashlib.sha256

TILE_HEIGHT = 8

TileId = tuple[int, int]
"""(tile_level, tile_index)."""

TileFetcher = Callable[[int, int], bytes]
"""Returns the stored tile (tile_level, tile_index): full, or partial at the right edge."""


def tile_width(size: int, tile_level: int, tile_index: int, height: int = TILE_HEIGHT) -> int:
    """How many hashes tile (tile_level, tile_index) holds in the tree of `size` leaves.

    >>> tile_width(1000, 0, 3), tile_width(1000, 1, 0), tile_width(1000, 0, 4)
    (232, 3, 0)
    """
    count = size >> (height * tile_level)
    return max(0, min(1 << height, count - (tile_index << height)))


def partial_tile_ids(size: int, height: int = TILE_HEIGHT) -> list[TileId]:
    """The right-edge partial tiles of the tree of `size` leaves: what `TileBuilder.restore` needs.

    >>> partial_tile_ids(70_000)
    [(0, 273), (1, 1), (2, 0)]
    """
    ids: list[TileId] = []
    level, count = 0, size
    while count:
        if count & ((1 << height) - 1):
            ids.append((level, count >> height))
        level, count = level + 1, count >> height
    return ids


def _split(tile: bytes) -> list[bytes]:
    return [tile[i : i + HASH_SIZE] for i in range(0, len(tile), HASH_SIZE)]


def _parents(row: list[bytes]) -> list[bytes]:
    """The complete parents of a row of sibling hashes (an odd last one has none yet)."""
    sha = _sha256
    return [sha(b"\x01" + row[i] + row[i + 1]).digest() for i in range(0, len(row) - 1, 2)]


def _perfect_root(row: list[bytes]) -> bytes:
    while len(row) > 1:
        row = _parents(row)
    return row[0]


class TileBuilder:
    """Turns appended leaf hashes into the tiles to upsert.

    State is the right-edge partial tile of each tile level: O(log n) and
    restorable from the store, so a restarted writer resumes without reading
    the log.

    >>> from pipeline.core.merkle import leaf_hash, root_of
    >>> leaves = [leaf_hash(bytes([i])) for i in range(5)]
    >>> builder = TileBuilder()
    >>> sorted(builder.append(leaves))
    [(0, 0)]
    >>> builder.size, builder.root() == root_of(leaves)
    (5, True)
    """

    __slots__ = ("_size", "_height", "_edges")

    def __init__(self, *, height: int = TILE_HEIGHT) -> None:
        if height < 1:
            raise LedgerError(f"tile height must be at least 1, got {height}")
        self._size = 0
        self._height = height
        self._edges: list[list[bytes]] = [[]]

    @classmethod
    def restore(cls, size: int, partial_tiles: Mapping[TileId, bytes], *, height: int = TILE_HEIGHT) -> TileBuilder:
        """A builder that continues the tree of `size` leaves from its stored partial tiles.

        `partial_tiles` must hold every id of `partial_tile_ids(size)`; a stored
        tile longer than needed is read as a prefix.
        """
        if size < 0:
            raise LedgerError(f"cannot restore a tree of negative size {size}")
        builder = cls(height=height)
        builder._size = size
        edges: list[list[bytes]] = []
        level, count, mask = 0, size, (1 << height) - 1
        while count or not edges:
            width = count & mask
            tile = partial_tiles.get((level, count >> height), b"") if width else b""
            if len(tile) < width * HASH_SIZE:
                raise LedgerError(
                    f"tile ({level}, {count >> height}) of a tree of size {size} needs {width} hashes,"
                    f" the store has {len(tile) // HASH_SIZE}"
                )
            edges.append(_split(tile[: width * HASH_SIZE]))
            level, count = level + 1, count >> height
        builder._edges = edges
        return builder

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf_hashes: Iterable[bytes]) -> dict[TileId, bytes]:
        """Add leaf hashes; return every tile they changed, with its whole new content.

        A tile filled and left behind during the batch is returned full; the
        right-edge tiles are returned as they stand at the end of the batch.
        A hash of the wrong length is refused before anything changes: one would
        shift every later hash of its tile.
        """
        batch = list(leaf_hashes)
        if any(len(h) != HASH_SIZE for h in batch):
            raise LedgerError(f"leaf hashes must be {HASH_SIZE} bytes; the batch has other lengths")
        height, edges = self._height, self._edges
        width = 1 << height
        changed: dict[TileId, bytes] = {}
        dirty: set[int] = set()
        bottom = edges[0]
        size = self._size
        for h in batch:
            bottom.append(h)
            size += 1
            if len(bottom) == width:
                level = 0
                while len(edges[level]) == width:
                    full = edges[level]
                    changed[(level, ((size >> (height * level)) - 1) >> height)] = b"".join(full)
                    edges[level] = []
                    level += 1
                    if level == len(edges):
                        edges.append([])
                    edges[level].append(_perfect_root(full))
                    dirty.add(level)
                bottom = edges[0]
        if size > self._size:
            dirty.add(0)
        self._size = size
        for level in dirty:
            if edges[level]:
                changed[(level, (size >> (height * level)) >> height)] = b"".join(edges[level])
        return changed

    def root(self) -> bytes:
        """The RFC 9162 root of the tree built so far, from the partial tiles alone."""
        parts: list[bytes] = []
        for row in reversed(self._edges):
            begin = 0
            for level in range(self._height - 1, -1, -1):
                if len(row) >> level & 1:
                    parts.append(_perfect_root(row[begin : begin + (1 << level)]))
                    begin += 1 << level
        if not parts:
            return EMPTY_ROOT
        h = parts.pop()
        while parts:
            h = _sha256(b"\x01" + parts.pop() + h).digest()
        return h


class TileNodeReader:
    """A `NodeReader` over stored tiles for the tree of `size` leaves.

    Each tile is fetched once and the levels derived inside it are kept, so one
    proof touches each tile once. Meant to live for one request or one batch of
    proofs: the cache is not bounded.

    >>> from pipeline.core.merkle import leaf_hash, MemoryTree
    >>> leaves = [leaf_hash(bytes([i])) for i in range(5)]
    >>> tiles = TileBuilder().append(leaves)
    >>> reader = TileNodeReader(5, lambda level, index: tiles[(level, index)])
    >>> reader(2, 0) == MemoryTree(leaves)(2, 0)
    True
    """

    __slots__ = ("size", "_fetch", "_height", "_rows", "_full")

    def __init__(self, size: int, fetch_tile: TileFetcher, *, height: int = TILE_HEIGHT,
                 full_tiles: MutableMapping[TileId, list[list[bytes]]] | None = None) -> None:
        self.size = size
        self._fetch = fetch_tile
        self._height = height
        self._rows: dict[TileId, list[list[bytes]]] = {}
        # Full tiles never change: a caller may share their derived levels across readers.
        self._full = full_tiles

    def __call__(self, level: int, index: int, /) -> bytes:
        if level < 0 or index < 0 or (index + 1) << level > self.size:
            raise InvalidChallenge(f"no complete node ({level}, {index}) in a tree of size {self.size}")
        tile_level, sub = divmod(level, self._height)
        first = index << sub
        rows = self._tile_rows(tile_level, first >> self._height)
        while len(rows) <= sub:
            rows.append(_parents(rows[-1]))
        return rows[sub][(first & ((1 << self._height) - 1)) >> sub]

    def _tile_rows(self, tile_level: int, tile_index: int) -> list[list[bytes]]:
        key = (tile_level, tile_index)
        rows = self._rows.get(key)
        if rows is None:
            width = tile_width(self.size, tile_level, tile_index, self._height)
            full = self._full
            if full is not None and width == 1 << self._height:
                shared = full.get(key)
                if shared is None:
                    tile = self._fetch(tile_level, tile_index)
                    if len(tile) < width * HASH_SIZE:
                        raise LedgerError(f"tile {key} should be full, the store gave {len(tile)} bytes")
                    shared = [_split(tile[: width * HASH_SIZE])]
                    while len(shared[-1]) > 1:
                        shared.append(_parents(shared[-1]))
                    full[key] = shared  # complete before it is shared: never mutated afterwards
                rows = self._rows[key] = shared
                return rows
            tile = self._fetch(tile_level, tile_index)
            if len(tile) < width * HASH_SIZE or len(tile) % HASH_SIZE:
                raise LedgerError(
                    f"tile {key} of a tree of size {self.size} needs {width} hashes, the store gave {len(tile)} bytes"
                )
            rows = self._rows[key] = [_split(tile[: width * HASH_SIZE])]
        return rows
