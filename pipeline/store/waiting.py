"""Entries that wait in memory for the block that seals them.

Entries reach ledger.entries before their block reaches ledger.blocks, so the
store holds each bundle's new leaves until a block covers them. A bundle is
normally one run of consecutive leaves of one log, handled as a whole; an odd
one (several logs, leaves out of order) is cut into such runs.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Waiting(NamedTuple):
    """New entries of one bundle, consecutive leaves of one log, waiting for the block that covers them."""

    partition: int  # of ledger.entries
    offset: int  # of the bundle's record
    produced: float | None  # when the block's first source record was produced (once per bundle)
    entries: list[dict[str, Any]]


def runs(entries: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The bundle cut into runs of consecutive leaves of one log: one run, unless the bundle is odd."""
    if not entries:
        return []
    log_ids = [e["log_id"] for e in entries]
    indices = [e["leaf_index"] for e in entries]
    if not all(isinstance(i, int) for i in indices):
        raise TypeError("a leaf_index is not an integer")
    first = indices[0]
    if log_ids.count(log_ids[0]) == len(log_ids) and indices == list(range(first, first + len(indices))):
        return [(log_ids[0], entries)]
    runs: list[tuple[str, list[dict[str, Any]]]] = []
    for e, log_id, index in zip(entries, log_ids, indices):
        if runs and runs[-1][0] == log_id and runs[-1][1][-1]["leaf_index"] == index - 1:
            runs[-1][1].append(e)
        else:
            runs.append((log_id, [e]))
    return runs


def release(pending: list[Waiting], size: int, entries: list[dict[str, Any]], produced: list[float]) -> None:
    """Move the leaves below `size` (a block's tree size) from `pending` to `entries`, in leaf order.

    The produced time of each bundle released goes to `produced`; a bundle a block ends
    inside keeps its other leaves waiting.
    """
    cut = 0
    while cut < len(pending) and pending[cut].entries[0]["leaf_index"] < size:
        w = pending[cut]
        covered = size - w.entries[0]["leaf_index"]  # a run holds consecutive leaves
        entries += w.entries[:covered]
        if w.produced is not None:
            produced.append(w.produced)
        if covered < len(w.entries):
            pending[cut] = w._replace(produced=None, entries=w.entries[covered:])
            break
        cut += 1
    del pending[:cut]
