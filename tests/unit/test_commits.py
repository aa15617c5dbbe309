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
    assert points.fresh_log("t", 0) == "t/0"  # nothing delivered yet: the first epoch
    points.note("t/0", 4)
    points.note("t/0", 2)
    points.save()
    again = CommitPoints(tmp_path / "cp")  # a restarted worker reads what was saved
    assert again.highest("t/0") == 4 and again.highest("t/1") is None
    again.check("t/0", 4, "t", 0, 0)
    again.check("t/0", 7, "t", 0, 0)  # the broker is ahead (another worker delivered more): fine
    with pytest.raises(LedgerError, match="block 3"):
        again.check("t/0", 3, "t", 0, 0)


def test_a_lost_commit_point_starts_the_next_epoch_never_height_0_of_the_old_log(tmp_path: Any) -> None:
    import pytest

    from pipeline.errors import LedgerError
    from pipeline.worker.commit_points import CommitPoints

    points = CommitPoints(tmp_path / "cp")
    points.note("t/0", 0)  # the first block of a log is saved at once, before any interval
    restarted = CommitPoints(tmp_path / "cp")
    assert restarted.latest_epoch("t", 0) == 0 and restarted.latest_epoch("t", 1) is None
    # The broker has no commit point for t/0 although block 0 was delivered: it lost its data.
    assert restarted.fresh_log("t", 0) == "t@1/0"
    assert restarted.fresh_log("t", 1) == "t/1"  # partition 1 never delivered a block: nothing lost
    # Until epoch 1 delivers a block, a second loss starts epoch 1 again (nothing of it exists).
    assert CommitPoints(tmp_path / "cp").fresh_log("t", 0) == "t@1/0"
    restarted.note("t@1/0", 0)
    again = CommitPoints(tmp_path / "cp")
    assert again.latest_epoch("t", 0) == 1 and again.fresh_log("t", 0) == "t@2/0"
    again.check("t@1/0", 0, "t", 0, 1)
    # A commit point of an older epoch than one delivered from here: the old log was written again.
    with pytest.raises(LedgerError, match="epoch 1"):
        again.check("t/0", 9, "t", 0, 0)
