"""What this machine saw delivered: the highest block height per log, kept in the worker's data folder.

The commit point of a log lives on the broker (the last message of its
`ledger.blocks` partition). A broker that loses its data (the embedded broker
keeps topics in memory, so a restart empties them) would make a worker resume
from nothing and start the chain again at height 0: a fork of the log the
store already holds. Each worker therefore notes the heights it delivered; a
commit point older than a height noted here is refused, loudly, instead of
silently renumbering the log.

The heights are also how a worker tells a broker that lost its data from one
that never had any: a partition whose commit point is gone although this
machine delivered a block of it starts the log's next epoch
(`pipeline.core.log_ids`) instead of height 0 of the old log.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from pipeline.core.log_ids import log_id as make_log_id
from pipeline.errors import LedgerError

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class CommitPoints:
    """Per log, the highest block height delivered from this data folder (one small file each)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.noted: dict[str, int] = {}
        self.vouched: dict[str, int] = {}  # heights the store signed in its latest checkpoint (`vouch`)
        self._saved: dict[str, int] = {}

    def vouch(self, heights: dict[str, int]) -> None:
        """Heights of logs the store's latest signed checkpoint names: delivered, if not from here.

        A worker whose data folder is empty (another machine) and whose broker lost its
        data would otherwise take such a log for new and write height 0 again: a fork.
        With these it starts the next epoch, and refuses a commit point below them.
        """
        for log_id, height in heights.items():
            if height > self.vouched.get(log_id, -1):
                self.vouched[log_id] = height

    def _path(self, log_id: str) -> Path:
        return self.folder / (_UNSAFE.sub("_", log_id) + ".height")

    def highest(self, log_id: str) -> int | None:
        try:
            saved = int(self._path(log_id).read_text().strip() or -1)
        except FileNotFoundError:
            saved = -1
        except ValueError:
            raise LedgerError(f"{self._path(log_id)} is not a block height: remove it if the ledger was reset "
                              "on purpose") from None
        best = max(saved, self.noted.get(log_id, -1), self.vouched.get(log_id, -1))
        return None if best < 0 else best

    def check(self, log_id: str, height: int, topic: str, partition: int, epoch: int) -> None:
        """Refuse a commit point below a block already delivered, or of an epoch older than one delivered."""
        known = self.highest(log_id)
        newest = self.latest_epoch(topic, partition)
        if newest is not None and newest > epoch:
            raise LedgerError(
                f"{log_id}: the broker's commit point is block {height} of epoch {epoch}, but epoch {newest} of "
                f"this partition's log was delivered before: the broker lost data and an older log was written "
                f"again. Refusing to continue it; restore the ledger topics (or remove {self.folder} if the "
                f"ledger was reset on purpose).")
        if known is not None and height < known:
            raise LedgerError(
                f"{log_id}: the broker's commit point is block {height}, but block {known} of this log was "
                f"delivered before: the broker lost data. Refusing to continue the log from there, which would "
                f"fork it. Restore the ledger topics (or remove {self.folder} if the ledger was reset on purpose)."
            )

    def latest_epoch(self, topic: str, partition: int) -> int | None:
        """The newest epoch of the partition's log with a block delivered from here, or None.

        Epochs are consecutive: epoch e + 1 begins only once a block of epoch e was delivered.
        """
        epoch = -1
        while self.highest(make_log_id(topic, partition, epoch + 1)) is not None:
            epoch += 1
        return None if epoch < 0 else epoch

    def fresh_log(self, topic: str, partition: int) -> str:
        """The log a partition without a commit point on the broker starts.

        Its first epoch if nothing of it was delivered from here. Otherwise the broker
        lost its data and the topic's offsets start again at 0: the next epoch numbers
        them afresh, where height 0 of the old log would fork it.
        """
        epoch = self.latest_epoch(topic, partition)
        if epoch is None:
            return make_log_id(topic, partition)
        old, new = make_log_id(topic, partition, epoch), make_log_id(topic, partition, epoch + 1)
        log.warning("%s: the broker has no commit point, but block %s of this log was delivered (noted here or "
                    "in the store's latest checkpoint): the "
                    "broker lost its data (an in-memory broker restarted?). From now on the partition's records "
                    "are log %s, a new epoch from height 0; %s ends at its last block recorded in the store.",
                    old, self.highest(old), new, old)
        return new

    def note(self, log_id: str, height: int) -> None:
        """A block was delivered; the first of a log is saved at once (it is what a later epoch depends on)."""
        first = log_id not in self.noted and self.highest(log_id) is None
        if height > self.noted.get(log_id, -1):
            self.noted[log_id] = height
        if first:
            self.save()

    def save(self) -> None:
        """Write the heights noted since the last save (atomically, per log)."""
        changed = {k: h for k, h in self.noted.items() if h > self._saved.get(k, -1)}
        if not changed:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for log_id, height in changed.items():
            path = self._path(log_id)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(f"{height}\n")
            os.replace(tmp, path)
            self._saved[log_id] = height
