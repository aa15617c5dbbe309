"""Blocks: signed-off checkpoints of one log, chained by hash.

A block header is `{log_id, height, prev_block_hash, tree_size, root,
first_offset, last_offset, first_event_time, last_event_time, created_at}` and
`block_hash = SHA-256(JCS(header))`. Height 0 links to 64 zeros. The header
names the Kafka offsets it covers so a replay can be checked against it.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from pipeline.core.canonical import canonical_bytes
from pipeline.errors import InvalidChallenge, InvalidProof

GENESIS_HASH = "0" * 64

HEADER_FIELDS = (
    "log_id", "height", "prev_block_hash", "tree_size", "root",
    "first_offset", "last_offset", "first_event_time", "last_event_time", "created_at",
)


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """One sealed block of one log; hex strings for hashes, RFC 3339 UTC for times."""

    log_id: str
    height: int
    prev_block_hash: str
    tree_size: int
    root: str
    first_offset: int
    last_offset: int
    first_event_time: str
    last_event_time: str
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in HEADER_FIELDS}

    @property
    def block_hash(self) -> str:
        """SHA-256 of the header's canonical JSON, hex."""
        return block_hash(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BlockHeader:
        """Build a header from JSON, refusing missing or unknown fields."""
        if not isinstance(data, dict):
            raise InvalidChallenge(f"block header must be an object, got {type(data).__name__}")
        fields = {k: v for k, v in data.items() if k != "block_hash"}
        missing = [f for f in HEADER_FIELDS if f not in fields]
        extra = sorted(set(fields) - set(HEADER_FIELDS))
        if missing or extra:
            raise InvalidChallenge(f"block header fields: missing {missing}, unknown {extra}")
        for name in ("height", "tree_size", "first_offset", "last_offset"):
            if not isinstance(fields[name], int) or isinstance(fields[name], bool) or fields[name] < 0:
                raise InvalidChallenge(f"block header {name} must be a non-negative integer, got {fields[name]!r}")
        return cls(**fields)


def block_hash(header: dict[str, Any]) -> str:
    """`SHA-256(JCS(header))` in hex; `block_hash` itself is never part of the hashed header.

    >>> len(block_hash({"log_id": "t/0", "height": 0}))
    64
    """
    fields = {k: v for k, v in header.items() if k != "block_hash"}
    # ASCII strings and small integers: json.dumps writes the very bytes JCS does.
    simple = all((type(v) is int and abs(v) < 2**53) or (type(v) is str and v.isascii()) for v in fields.values())
    return hashlib.sha256(canonical_bytes(fields, simple)).hexdigest()


def seal_block(
    log_id: str,
    previous: BlockHeader | None,
    tree_size: int,
    root: bytes,
    first_offset: int,
    last_offset: int,
    first_event_time: str,
    last_event_time: str,
    created_at: str,
) -> BlockHeader:
    """The next block of a chain; depends only on its arguments.

    >>> b0 = seal_block("t/0", None, 2, b"\\x00" * 32, 0, 1, "a", "b", "c")
    >>> b1 = seal_block("t/0", b0, 3, b"\\x01" * 32, 2, 2, "a", "b", "c")
    >>> (b0.height, b0.prev_block_hash == GENESIS_HASH, b1.prev_block_hash == b0.block_hash)
    (0, True, True)
    """
    if previous is not None:
        if previous.log_id != log_id:
            raise InvalidChallenge(f"cannot chain a block of {log_id} onto {previous.log_id}")
        if tree_size <= previous.tree_size:
            raise InvalidChallenge(f"tree must grow: {previous.tree_size} -> {tree_size}")
    return BlockHeader(
        log_id=log_id,
        height=0 if previous is None else previous.height + 1,
        prev_block_hash=GENESIS_HASH if previous is None else previous.block_hash,
        tree_size=tree_size,
        root=root.hex(),
        first_offset=first_offset,
        last_offset=last_offset,
        first_event_time=first_event_time,
        last_event_time=last_event_time,
        created_at=created_at,
    )


def verify_link(previous: BlockHeader | None, block: BlockHeader) -> None:
    """Check that `block` follows `previous` in its chain; raise InvalidProof naming the break."""
    expected_height = 0 if previous is None else previous.height + 1
    expected_prev = GENESIS_HASH if previous is None else previous.block_hash
    if block.height != expected_height:
        raise InvalidProof(f"{block.log_id}: block height {block.height}, expected {expected_height}")
    if not hmac.compare_digest(block.prev_block_hash, expected_prev):
        raise InvalidProof(
            f"{block.log_id} height {block.height}: prev_block_hash {block.prev_block_hash} "
            f"!= hash of previous block {expected_prev}"
        )
    if previous is not None and block.tree_size <= previous.tree_size:
        raise InvalidProof(
            f"{block.log_id} height {block.height}: tree_size {block.tree_size} "
            f"does not grow from {previous.tree_size}"
        )
