"""One append-only log per partition: the offset gate, pending leaves, and sealing.

The log holds only O(log n) state (its compact range and last block), so a
worker's memory does not grow with the log. The last sealed block is the
commit point: a restarted worker rebuilds a `PartitionLog` from it and resumes
at `last_offset + 1`, so replays never record an event twice or fork a chain.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple, TypeVar

from pipeline.core import plain_record
from pipeline.core.blocks import BlockHeader, seal_block
from pipeline.core.canonical import canonical_bytes
from pipeline.core.merkle import CompactRange, leaf_hash
from pipeline.core.plain_event import plain_event, plain_facts
from pipeline.core.strict_json import LIMITS, JSONRefused, Limits, decode, kind
from pipeline.errors import InvalidEvent, LedgerError
from pipeline.schema import ShipmentEvent, validate_object


class Entry(NamedTuple):
    """One accepted event at its place in the log.

    A named tuple, as immutable as a frozen dataclass: one is built per event, and the
    dataclass's constructor cost four times as much.
    """

    event_id: str
    shipment_id: str
    event_type: str
    event_time: str
    leaf_index: int
    leaf_hash: bytes
    offset: int
    payload: bytes
    extra: dict[str, Any] | None = None  # more fields for the entry record (EPCIS: type, hash, view)


class LeafFacts(NamedTuple):
    """What a log records beside a leaf: an EPCIS event's, or a plain shipment event's (`plain_leaf`)."""

    event_id: str
    shipment_id: str
    event_type: str
    event_time: str  # RFC 3339 in UTC, as `datetime.isoformat` writes it with `Z` for +00:00
    extra: dict[str, Any] | None = None


# A topic's accept function: raw record bytes to the leaves they become, in order
# (one for a shipment event, one per event for an EPCIS document); raises InvalidEvent.
AcceptRecord = Callable[[bytes], Sequence[tuple["ShipmentEvent | LeafFacts", bytes]]]
_Leaf = TypeVar("_Leaf")  # what a short way returns for a record it vouches for


@dataclass(frozen=True, slots=True)
class SealedBlock:
    """What sealing returns: the header, the entries it covers, and the frontier after it."""

    header: BlockHeader
    entries: list[Entry]
    frontier: list[bytes]


def utc_text(event: ShipmentEvent) -> str:
    """The event time as RFC 3339 in UTC, e.g. `2026-11-25T09:00:00Z`."""
    return event.event_time.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _instant(text: str) -> datetime:
    """An RFC 3339 UTC text as a datetime: text order is not time order once fractions appear."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def accept(raw: bytes | None, limits: Limits = LIMITS) -> tuple[ShipmentEvent, bytes]:
    """Validate raw record bytes and return the event with its leaf bytes (JCS).

    Raises InvalidEvent with a reason (and field-level errors) for anything not
    acceptable, and nothing else: whatever the bytes, the caller gets a verdict.
    The common record takes a short way (`plain_accept`) to the very verdict and
    bytes `strict_accept` gives; everything else, every refusal included, is
    `strict_accept`'s.
    """
    return _short_or_strict(plain_accept, raw, limits)


def _short_or_strict(short: Callable[[bytes | None, Limits], _Leaf | None], raw: bytes | None,
                     limits: Limits) -> _Leaf | tuple[ShipmentEvent, bytes]:
    """`short`'s answer when it vouches for the record, else `strict_accept`'s verdict."""
    try:
        plain = short(raw, limits)
    except Exception:  # noqa: BLE001 - the strict way gives the verdict, whatever went wrong here
        plain = None
    return plain if plain is not None else strict_accept(raw, limits)


def plain_accept(raw: bytes | None, limits: Limits = LIMITS) -> tuple[ShipmentEvent, bytes] | None:
    """What `strict_accept` returns, for a record the short way can vouch for; None for any other.

    `plain_record.read` and `plain_event` each accept only what they prove the strict
    decoder and pydantic accept, with the same value, so an event and leaf from here
    are exactly the strict way's; a differential test holds them to it.

    >>> event, leaf = plain_accept(b'{"event_id":"e1","shipment_id":"s1","event_type":"created",'
    ...     b'"event_time":"2026-01-01T00:00:00Z","origin":"A","destination":"B","carrier":"C","mode":"road"}')
    >>> leaf[:36]
    b'{"carrier":"C","destination":"B","ev'
    >>> plain_accept(b'{"event_id":"e1","event_id":"e2"}') is None
    True
    """
    read = plain_record.read(raw, limits)
    if read is None:
        return None
    event = plain_event(read[0])
    if event is None or (event.items is not None and len(event.items) > limits.max_items):
        return None
    return event, read[1]


def plain_leaf(raw: bytes | None, limits: Limits = LIMITS) -> tuple[LeafFacts, bytes] | None:
    """`plain_accept` for the log: the entry's facts in place of the event, never built as a model.

    >>> facts, leaf = plain_leaf(b'{"event_id":"e1","shipment_id":"s1","event_type":"created",'
    ...     b'"event_time":"2026-01-01T00:00:00+01:00","origin":"A","destination":"B","carrier":"C","mode":"road"}')
    >>> facts
    LeafFacts(event_id='e1', shipment_id='s1', event_type='created', event_time='2025-12-31T23:00:00Z', extra=None)
    """
    read = plain_record.read(raw, limits)
    if read is None:
        return None
    value, leaf = read
    facts = plain_facts(value)
    if facts is None:
        return None
    items = value.get("items")  # a list, if any, once plain_facts passed it
    if items is not None and len(items) > limits.max_items:
        return None
    return LeafFacts(*facts), leaf


def strict_accept(raw: bytes | None, limits: Limits = LIMITS) -> tuple[ShipmentEvent, bytes]:
    """`accept` by the strict decoder and pydantic alone: the reference, and every refusal's author."""
    try:
        parsed = decode(raw, limits)
        if type(parsed.value) is not dict:
            raise JSONRefused("not_object", f"a record must be one JSON object (a ShipmentEvent), got "
                              f"{kind(parsed.value)}")
        event = validate_object(parsed.value)
        if event.items is not None and len(event.items) > limits.max_items:
            raise InvalidEvent(f"items: {len(event.items)} entries, more than the limit of {limits.max_items} "
                               "per event", [{"field": "items", "message": "too many entries", "type": "limit"}])
        try:
            if event.event_time.year in (1, 9999):  # only these can leave the range once in UTC
                utc_text(event)
        except (OverflowError, ValueError):
            raise InvalidEvent("event_time: outside the range of dates once converted to UTC",
                               [{"field": "event_time", "message": "out of range in UTC", "type": "range"}]) from None
        return event, canonical_bytes(parsed.value, parsed.simple)
    except InvalidEvent:
        raise
    except Exception as exc:  # a validator's bug or exhaustion must still end in a verdict, not a crash
        raise InvalidEvent(f"could not be validated: {type(exc).__name__}: {str(exc)[:200]}") from None


def accept_shipment(raw: bytes, limits: Limits = LIMITS) -> list[tuple[ShipmentEvent | LeafFacts, bytes]]:
    """`accept` as a topic's AcceptRecord: one record, one leaf (the short way's as facts, see `plain_leaf`)."""
    return [_short_or_strict(plain_leaf, raw, limits)]


@dataclass
class PartitionLog:
    """The ledger state of one partition between two blocks."""

    log_id: str
    last_block: BlockHeader | None = None
    tree: CompactRange = field(default_factory=CompactRange)
    pending: list[Entry] = field(default_factory=list)
    next_offset: int | None = None
    gaps: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        block = self.last_block
        size = 0 if block is None else block.tree_size
        if self.tree.size != size:
            raise LedgerError(f"{self.log_id}: frontier holds {self.tree.size} leaves, block says {size}")
        if block is not None:
            if block.log_id != self.log_id:
                raise LedgerError(f"{self.log_id}: restored from a block of {block.log_id}")
            if not hmac.compare_digest(self.tree.root().hex(), block.root):
                raise LedgerError(
                    f"{self.log_id}: frontier root {self.tree.root().hex()} != block {block.height} root {block.root}"
                )
            if self.next_offset is None:
                self.next_offset = block.last_offset + 1

    @property
    def size(self) -> int:
        """Leaves in the log, pending ones included."""
        return self.tree.size + len(self.pending)

    @property
    def sealed_through(self) -> int:
        """The highest Kafka offset inside a sealed block, or -1."""
        return -1 if self.last_block is None else self.last_block.last_offset

    def admit(self, offset: int) -> bool:
        """The offset gate: True for a record not seen yet, False for a replay.

        A jump ahead of the expected offset is recorded in `gaps` (an alert:
        records there were never seen) and the record is admitted.
        """
        expected = self.next_offset
        if expected is not None and offset < expected:
            return False
        if expected is not None and offset > expected:
            self.gaps.append((expected, offset))
        self.next_offset = offset + 1
        return True

    def append(self, offset: int, event: ShipmentEvent | LeafFacts, payload: bytes) -> Entry:
        """Add one accepted event as the next leaf (call `admit` first; one record may add several).

        The leaf joins the tree when the block is sealed, all of a block's leaves at
        once (`CompactRange.extend` hashes them level by level).
        """
        h = leaf_hash(payload)
        index = self.size
        if isinstance(event, LeafFacts):
            entry = Entry(event.event_id, event.shipment_id, event.event_type, event.event_time,
                          index, h, offset, payload, event.extra)
        else:
            entry = Entry(event.event_id, event.shipment_id, event.event_type.value, utc_text(event),
                          index, h, offset, payload)
        self.pending.append(entry)
        return entry

    def seal(self, created_at: str) -> SealedBlock | None:
        """Cut the pending entries into the next block; None when nothing is pending.

        The caller decides when (max_events, max_age); the block's content depends
        only on the entries and `created_at`.
        """
        if not self.pending:
            return None
        entries, self.pending = self.pending, []
        self.tree.extend([e.leaf_hash for e in entries])
        times = [e.event_time for e in entries]
        # `isoformat` texts in UTC: when all have one length (all or none with a fraction),
        # their text order is their time order.
        if len(set(map(len, times))) == 1:
            first, last = min(times), max(times)
        else:
            times.sort(key=_instant)
            first, last = times[0], times[-1]
        header = seal_block(
            self.log_id,
            self.last_block,
            tree_size=self.tree.size,
            root=self.tree.root(),
            first_offset=entries[0].offset,
            last_offset=entries[-1].offset,
            first_event_time=first,
            last_event_time=last,
            created_at=created_at,
        )
        self.last_block = header
        return SealedBlock(header, entries, list(self.tree.hashes))

    @classmethod
    def restore(cls, header: BlockHeader | None, frontier: list[bytes], log_id: str) -> PartitionLog:
        """Rebuild the state from the last sealed block and its frontier (checked against its root)."""
        if header is None:
            return cls(log_id)
        return cls(log_id, header, CompactRange(header.tree_size, frontier))
