"""Tile storage: what TileBuilder writes and TileNodeReader reads is the tree MemoryTree holds.

Small tile heights give many tile levels with few leaves; height 8 (the
production layout) is checked on a tree with three tile levels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.merkle import MemoryTree, leaf_hash, root_from_nodes
from pipeline.core.proofs import consistency_path, inclusion_path, verify_consistency, verify_inclusion
from pipeline.core.tiles import (
    TILE_HEIGHT,
    TileBuilder,
    TileId,
    TileNodeReader,
    partial_tile_ids,
    tile_width,
)
from pipeline.errors import InvalidChallenge, LedgerError

MAX_SIZE = 1100
HASHES = [leaf_hash(i.to_bytes(8, "big")) for i in range(MAX_SIZE)]
TREE = MemoryTree(HASHES)


def expected_tiles(tree: MemoryTree, size: int, height: int) -> dict[TileId, bytes]:
    """Every tile of the tree of `size` leaves, straight from the layout's definition."""
    tiles: dict[TileId, bytes] = {}
    level = 0
    while size >> (height * level):
        count = size >> (height * level)
        for index in range(0, (count + (1 << height) - 1) >> height):
            first = index << height
            width = tile_width(size, level, index, height)
            tiles[(level, index)] = b"".join(tree(height * level, j) for j in range(first, first + width))
        level += 1
    return tiles


def build(sizes: list[int], height: int, restore_at: Collection[int] = ()) -> tuple[TileBuilder, dict[TileId, bytes]]:
    """Append HASHES in batches of `sizes`, restoring the builder from the store after batch k in restore_at."""
    builder, store, at = TileBuilder(height=height), dict[TileId, bytes](), 0
    for k, batch in enumerate(sizes):
        before = dict(store)
        changed = builder.append(HASHES[at : at + batch])
        at += batch
        store.update(changed)
        assert {tid for tid in store if store[tid] != before.get(tid)} == set(changed)
        if k in restore_at:
            partial = {tid: store[tid] for tid in partial_tile_ids(at, height)}
            builder = TileBuilder.restore(builder.size, partial, height=height)
    return builder, store


batches = st.lists(st.integers(0, 300), min_size=1, max_size=8).filter(lambda b: sum(b) <= MAX_SIZE)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([1, 2, 3, 4, TILE_HEIGHT]), batches, st.sets(st.integers(0, 7)))
def test_builder_writes_exactly_the_tiles_of_the_tree(height: int, sizes: list[int], restore_at: set[int]) -> None:
    builder, store = build(sizes, height, restore_at)
    size = sum(sizes)
    assert builder.size == size
    assert store == expected_tiles(TREE, size, height)
    assert builder.root() == root_from_nodes(size, TREE)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([1, 2, 3, 5, TILE_HEIGHT]), st.integers(1, MAX_SIZE), st.data())
def test_reader_equals_memory_tree(height: int, size: int, data: st.DataObject) -> None:
    """Every complete node, and every proof, read from tiles equals the in-memory tree's.

    The store is built for a bigger tree: partial tiles of the smaller one are read as prefixes.
    """
    grown = data.draw(st.integers(size, MAX_SIZE))
    store = expected_tiles(TREE, grown, height)
    reader = TileNodeReader(size, lambda level, index: store[(level, index)], height=height)
    for level in range(size.bit_length()):
        for index in range(size >> level):
            assert reader(level, index) == TREE(level, index)
    assert root_from_nodes(size, reader) == root_from_nodes(size, TREE)
    index = data.draw(st.integers(0, size - 1))
    assert inclusion_path(index, size, reader) == inclusion_path(index, size, TREE)
    assert consistency_path(index, size, reader) == consistency_path(index, size, TREE)


@pytest.fixture(scope="module")
def big_tree() -> tuple[list[bytes], MemoryTree]:
    """Three tile levels at height 8, with a partial tile on each: 2·65536 + 3·256 + 5 leaves."""
    hashes = [leaf_hash(i.to_bytes(8, "big")) for i in range(2 * 65536 + 3 * 256 + 5)]
    return hashes, MemoryTree(hashes)


def test_height_8_tiles_serve_proofs_on_three_tile_levels(big_tree: tuple[list[bytes], MemoryTree]) -> None:
    hashes, tree = big_tree
    size = len(hashes)
    builder = TileBuilder()
    store: dict[TileId, bytes] = {}
    for at in range(0, size, 10_000):
        store.update(builder.append(hashes[at : at + 10_000]))
    assert partial_tile_ids(size) == [(0, 515), (1, 2), (2, 0)]
    assert {tid: store[tid] for tid in partial_tile_ids(size)} == {
        tid: expected_tiles(tree, size, TILE_HEIGHT)[tid] for tid in partial_tile_ids(size)
    }
    root = root_from_nodes(size, tree)
    assert builder.root() == root

    fetched: Counter[TileId] = Counter()

    def fetch(level: int, index: int) -> bytes:
        fetched[(level, index)] += 1
        return store[(level, index)]

    for index in (0, 255, 256, 65535, 65536, 131071, size - 300, size - 1):
        reader = TileNodeReader(size, fetch)
        fetched.clear()
        path = inclusion_path(index, size, reader)
        assert path == inclusion_path(index, size, tree)
        verify_inclusion(hashes[index], index, size, path, root)
        assert max(fetched.values()) == 1
    for size1 in (1, 256, 65536, 65537, 131072, size - 1):
        reader = TileNodeReader(size, fetch)
        path = consistency_path(size1, size, reader)
        assert path == consistency_path(size1, size, tree)
        verify_consistency(size1, size, root_from_nodes(size1, tree), root, path)
    assert reader(17, 0) == tree(17, 0)


def test_restore_needs_every_partial_tile() -> None:
    builder, store = build([700], 2)
    ids = partial_tile_ids(700, 2)
    assert ids == [(1, 43), (2, 10), (3, 2), (4, 0)]  # 700 = 22330 in base 4
    partial = {tid: store[tid] for tid in ids}
    assert TileBuilder.restore(700, partial, height=2).root() == builder.root()
    for tid in ids:
        with pytest.raises(LedgerError):
            TileBuilder.restore(700, {t: b for t, b in partial.items() if t != tid}, height=2)
        with pytest.raises(LedgerError):
            TileBuilder.restore(700, {**partial, tid: partial[tid][:-32]}, height=2)
    with pytest.raises(LedgerError):
        TileBuilder.restore(-1, {})
    with pytest.raises(LedgerError):
        TileBuilder(height=0)
    with pytest.raises(LedgerError):
        builder.append([HASHES[0], HASHES[1][:31]])
    assert builder.size == 700 and builder.root() == root_from_nodes(700, TREE)


def test_reader_refuses_incomplete_nodes_and_short_tiles() -> None:
    _, store = build([700], TILE_HEIGHT)
    reader = TileNodeReader(700, lambda level, index: store[(level, index)])
    with pytest.raises(InvalidChallenge):
        reader(0, 700)
    with pytest.raises(InvalidChallenge):
        reader(9, 1)  # covers leaves [512, 1024): not complete at 700
    with pytest.raises(InvalidChallenge):
        reader(-1, 0)
    short = TileNodeReader(700, lambda level, index: store[(level, index)][:-32])
    with pytest.raises(LedgerError):
        short(0, 699)


def test_tile_geometry() -> None:
    assert [tile_width(70_000, 0, i) for i in (0, 272, 273, 274)] == [256, 256, 112, 0]
    assert partial_tile_ids(0) == [] and partial_tile_ids(256) == [(1, 0)] and partial_tile_ids(65536) == [(2, 0)]
    assert TileBuilder().append([]) == {}
