"""How ledger results travel on Kafka: block messages, entry bundles, dead-letter headers.

`ledger.blocks` partition p carries the chain of log `<events topic>/p`, so the
last message of that partition is the log's commit point; its value is the
block header plus `block_hash` and the `frontier` (the compact range after the
block) that lets a restarted worker continue the tree in O(log n).
`ledger.entries` carries the sealed events in bundles of up to `bundle_size`.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.core.blocks import BlockHeader
from pipeline.core.ledger import Entry, SealedBlock
from pipeline.errors import InvalidChallenge, InvalidEvent


@dataclass(frozen=True, slots=True)
class BlockMessage:
    header: BlockHeader
    block_hash: str
    frontier: list[bytes]


def encode_block(sealed: SealedBlock) -> bytes:
    """The `ledger.blocks` value for one sealed block."""
    body = sealed.header.to_dict()
    body["block_hash"] = sealed.header.block_hash
    body["frontier"] = [h.hex() for h in sealed.frontier]
    return json.dumps(body, separators=(",", ":")).encode()


def decode_block(value: bytes) -> BlockMessage:
    """Parse a `ledger.blocks` value and check its block_hash against its header."""
    try:
        body = json.loads(value)
        frontier = [bytes.fromhex(h) for h in body.pop("frontier", [])]
        claimed = body.get("block_hash", "")
        header = BlockHeader.from_dict(body)
    except (ValueError, TypeError, AttributeError) as exc:
        raise InvalidChallenge(f"malformed block message: {exc}") from None
    if not hmac.compare_digest(str(claimed), header.block_hash):
        raise InvalidChallenge(
            f"{header.log_id} height {header.height}: block_hash {claimed} != recomputed {header.block_hash}"
        )
    return BlockMessage(header, header.block_hash, frontier)


def entry_record(log_id: str, e: Entry) -> dict[str, Any]:
    event_id, shipment_id, event_type, event_time, leaf_index, leaf_hash, offset, payload, extra = e
    record = {
        "event_id": event_id,
        "shipment_id": shipment_id,
        "event_type": event_type,
        "event_time": event_time,
        "log_id": log_id,
        "leaf_index": leaf_index,
        "leaf_hash": leaf_hash.hex(),
        "kafka_offset": offset,
        "payload": payload.decode("utf-8"),
    }
    if extra:
        record.update(extra)
    return record


def encode_entries(log_id: str, entries: list[Entry], bundle_size: int) -> list[bytes]:
    """`ledger.entries` values: the entries in bundles, leaf order kept."""
    out = []
    for i in range(0, len(entries), bundle_size):
        body = {"log_id": log_id, "entries": [entry_record(log_id, e) for e in entries[i : i + bundle_size]]}
        try:
            out.append(orjson.dumps(body))  # the same bytes as json.dumps compact, several times faster
        except TypeError:
            out.append(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())
    return out


def decode_entries(value: bytes) -> list[dict[str, Any]]:
    try:
        body = orjson.loads(value)
        entries = body["entries"]
        if not isinstance(entries, list):
            raise TypeError("entries is not a list")
        return entries
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidChallenge(f"malformed entries bundle: {exc}") from None


def dead_letter_headers(
    error: InvalidEvent, topic: str, partition: int, offset: int
) -> list[tuple[str, bytes]]:
    """Kafka headers naming why a record was refused and where it came from."""
    return [
        ("error", error.reason.encode("utf-8", "replace")[:4096]),
        ("error.fields", json.dumps(error.errors, ensure_ascii=False).encode()[:16384]),
        ("source.topic", topic.encode()),
        ("source.partition", str(partition).encode()),
        ("source.offset", str(offset).encode()),
    ]


CLUSTER_HEADER = "cluster"  # the Kafka cluster id the worker was started against


def written_for(headers: Any) -> str | None:
    """The cluster id a ledger record says it was written for (None: a record from before it was said).

    A producer that reconnects to a broker which came back empty as a new cluster resends
    what was in flight to the old one: such records belong to no log of the new cluster.
    """
    for key, value in headers or ():
        if key == CLUSTER_HEADER:
            return bytes(value or b"").decode("utf-8", "replace")
    return None


def read_headers(headers: Any) -> dict[str, str]:
    """Kafka headers as a dict of text (undecodable bytes replaced)."""
    out: dict[str, str] = {}
    for key, value in headers or ():
        out[str(key)] = (value or b"").decode("utf-8", "replace")
    return out
