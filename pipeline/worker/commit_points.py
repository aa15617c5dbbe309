"""What this machine saw delivered: the highest block height per log, kept in the worker's data folder.

The commit point of a log lives on the broker (the last message of its
`ledger.blocks` partition). A broker that loses its data (the embedded broker
keeps topics in memory, so a restart empties them) would make a worker resume
from nothing and start the chain again at height 0: a fork of the log the
store already holds. Each worker therefore notes the heights it delivered; a
commit point older than a height noted here is refused, loudly, instead of
silently renumbering the log.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pipeline.errors import LedgerError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class CommitPoints:
    """Per log, the highest block height delivered from this data folder (one small file each)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.noted: dict[str, int] = {}
        self._saved: dict[str, int] = {}

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
        best = max(saved, self.noted.get(log_id, -1))
        return None if best < 0 else best

    def check(self, log_id: str, height: int | None) -> None:
        """Refuse a commit point below a block already delivered (None: the log has no block on the broker)."""
        known = self.highest(log_id)
        if known is not None and (height is None or height < known):
            found = "no block" if height is None else f"block {height}"
            raise LedgerError(
                f"{log_id}: the broker's commit point is {found}, but block {known} of this log was delivered "
                f"before: the broker lost data (an in-memory broker restarted?). Refusing to continue the log "
                f"from there, which would fork it. Restore the ledger topics, or start a new ledger under a new "
                f"topic prefix (and remove {self.folder})."
            )

    def note(self, log_id: str, height: int) -> None:
        if height > self.noted.get(log_id, -1):
            self.noted[log_id] = height

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
