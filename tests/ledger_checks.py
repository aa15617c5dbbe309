"""Checks of a stored ledger shared by the integration tests: recomputed from the DuckDB rows."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from pipeline.core.blocks import GENESIS_HASH, BlockHeader, block_hash
from pipeline.core.merkle import root_of
from pipeline.store.db import Database


def check_chain(db: Database, log_id: str) -> None:
    """Leaves contiguous and in offset order, leaf hashes, chain links, roots, and every leaf sealed."""
    leaves = db.fetch("SELECT leaf_index, leaf_hash, payload, kafka_offset FROM events WHERE log_id = ?"
                      " ORDER BY leaf_index", [log_id])
    assert [r[0] for r in leaves] == list(range(len(leaves))), f"{log_id}: leaf indices not contiguous"
    offsets = [r[3] for r in leaves]
    assert offsets == sorted(set(offsets)), f"{log_id}: leaves not in Kafka offset order"
    hashes = []
    for _, leaf_hex, payload, _ in leaves:
        h = hashlib.sha256(b"\x00" + payload.encode()).digest()
        assert h.hex() == leaf_hex
        hashes.append(h)
    previous: BlockHeader | None = None
    blocks = db.fetch_dicts("SELECT * FROM blocks WHERE log_id = ? ORDER BY height", [log_id])
    assert blocks, f"{log_id} has no blocks"
    for b in blocks:
        claimed = b.pop("block_hash")
        header = BlockHeader(**b)
        assert block_hash(header.to_dict()) == claimed
        assert header.height == (0 if previous is None else previous.height + 1), f"{log_id}: heights skip"
        assert header.prev_block_hash == (GENESIS_HASH if previous is None else previous.block_hash)
        assert header.tree_size > (0 if previous is None else previous.tree_size)
        assert header.first_offset > (-1 if previous is None else previous.last_offset)
        assert root_of(hashes[: header.tree_size]).hex() == header.root, f"{log_id} block {header.height}"
        previous = header
    assert previous is not None and previous.tree_size == len(hashes), f"{log_id}: unsealed leaves"


def assert_audit_clean(db_path: Path, key: str, env: dict[str, str]) -> None:
    """`provenance audit` on the stored ledger, as an auditor runs it: exit 0 and "clean"."""
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "audit", "--db", str(db_path), "--key", key, "--quiet"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0 and "clean" in out.stdout, f"audit exited {out.returncode}:\n{out.stdout}{out.stderr}"
