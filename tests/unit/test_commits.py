"""OffsetCommitter: coalesces marks, never moves a commit back, survives a refused commit."""

from __future__ import annotations

import asyncio
from typing import Any

from pipeline.worker.commits import OffsetCommitter


def test_marks_are_coalesced_per_partition_and_only_advance() -> None:
    sent: list[dict[Any, int]] = []
    answer = [True]

    async def commit(offsets: Any) -> bool:
        sent.append(dict(offsets))
        return answer[0]

    async def scenario() -> None:
        c = OffsetCommitter(commit)
        c.mark("t", 0, 10)
        c.mark("t", 0, 30)
        c.mark("t", 0, 20)  # an older mark never moves the offset back
        c.mark("t", 1, 5)
        await c.flush()
        assert sent == [{("t", 0): 30, ("t", 1): 5}]
        await c.flush()  # nothing new: no request
        assert len(sent) == 1
        answer[0] = False
        c.mark("t", 1, 9)
        await c.flush()  # refused (a rebalance): tried again next time
        answer[0] = True
        await c.flush()
        assert sent[1:] == [{("t", 1): 9}, {("t", 1): 9}] and c.refused == 1
        c.forget("t", 1)
        c.mark("t", 1, 3)  # a new owner's commits start afresh
        await c.flush()
        assert sent[-1] == {("t", 1): 3}

    asyncio.run(scenario())


def test_commit_points_refuse_a_broker_that_lost_blocks(tmp_path: Any) -> None:
    import pytest

    from pipeline.errors import LedgerError
    from pipeline.worker.commit_points import CommitPoints

    points = CommitPoints(tmp_path / "cp")
    points.check("t/0", None)  # nothing delivered yet: a fresh log is fine
    points.note("t/0", 4)
    points.note("t/0", 2)
    points.save()
    again = CommitPoints(tmp_path / "cp")  # a restarted worker reads what was saved
    assert again.highest("t/0") == 4 and again.highest("t/1") is None
    again.check("t/0", 4)
    again.check("t/0", 7)  # the broker is ahead (another worker delivered more): fine
    with pytest.raises(LedgerError, match="lost data"):
        again.check("t/0", None)
    with pytest.raises(LedgerError, match="block 3"):
        again.check("t/0", 3)
