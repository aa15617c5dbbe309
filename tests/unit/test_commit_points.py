"""The heights the store's checkpoint vouches for: an empty data folder never restarts a log the store holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import LedgerError
from pipeline.worker.commit_points import CommitPoints


def test_an_empty_data_folder_continues_the_logs_the_checkpoint_names_in_a_new_epoch(tmp_path: Path) -> None:
    points = CommitPoints(tmp_path / "empty")
    points.vouch({"t/0": 5, "t/1": 3, "t@1/1": 0, "u/0": 2})  # every log, old epochs included
    assert points.fresh_log("t", 0) == "t@1/0"
    assert points.fresh_log("t", 1) == "t@2/1"
    assert points.fresh_log("t", 2) == "t/2"  # a partition the checkpoint does not name: a new log
    assert points.latest_epoch("u", 0) == 0


def test_a_commit_point_below_the_checkpoint_is_refused(tmp_path: Path) -> None:
    points = CommitPoints(tmp_path / "empty")
    points.vouch({"t/0": 5})
    points.check("t/0", 5, "t", 0, 0)
    points.check("t/0", 9, "t", 0, 0)  # the store lags the broker: normal
    with pytest.raises(LedgerError, match="block 4"):
        points.check("t/0", 4, "t", 0, 0)


def test_vouched_heights_only_rise_and_are_not_written_to_the_folder(tmp_path: Path) -> None:
    points = CommitPoints(tmp_path / "cp")
    points.vouch({"t/0": 5})
    points.vouch({"t/0": 3})
    assert points.highest("t/0") == 5
    points.save()
    assert CommitPoints(tmp_path / "cp").highest("t/0") is None
