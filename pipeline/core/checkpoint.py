"""Ledger checkpoints: one signed note over the latest block of every log.

A checkpoint is a C2SP signed note (see :mod:`pipeline.core.note`) whose text is
formatted as follows, every line ending in a newline (U+000A):

 1. The **origin**: the signing key's name, e.g. ``provenance.local/ledger``.
    It follows the key-name rules (non-empty, no spaces, no ``+``) and must
    equal the name in the signature line.

 2. The **sequence**: ASCII decimal, no leading zeroes, below 2**64. The signer
    raises it by at least one with every checkpoint it signs, so two checkpoints
    of one origin are ordered without a clock.

 3. Optionally, ``time <RFC 3339>``: the moment the caller says the checkpoint
    was cut, always in UTC with a ``Z`` suffix and with a six-digit fraction
    only when it has microseconds (``time 2025-01-02T03:04:05Z``). The core
    never reads a clock; a checkpoint without this line is just as valid.

 4. One line per log, sorted by log id in code-point order (so ``…/10`` comes
    before ``…/2``), at least one, no log twice::

        <log_id> <height> <tree_size> <base64 root> <hex block_hash>

    ``log_id`` is printable ASCII without spaces (``shipment-events/3``), and
    not ``time``, which would read as line 3;
    ``height`` and ``tree_size`` are decimal as above; ``root`` is the RFC 9162
    root of the log at ``tree_size`` in standard base64 (as in tlog-checkpoint);
    ``block_hash`` is the block's SHA-256 in lowercase hex (as everywhere else
    in the ledger).

Example (text, then the blank line and signature of the note)::

    provenance.local/ledger
    42
    time 2025-01-02T03:04:05Z
    shipment-events/0 7 3500 KmZ…= 9f86d08…
    shipment-events/1 6 3012 3q2+7w…= 60303ae…

    — provenance.local/ledger <base64(key id ‖ signature)>

Every field has exactly one spelling, so the same checkpoint always gives the
same bytes and :func:`parse_checkpoint` refuses anything else. The layout is
not a tlog-checkpoint (line 2 is no tree size): a plain tlog-checkpoint client
fails on line 3 instead of misreading it.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from pipeline.core.note import Signer, Verifier, check_key_name, decode_b64, encode_b64, verify_note
from pipeline.errors import InvalidChallenge, InvalidProof

_UINT64 = 1 << 64
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_LOG_ID = re.compile(r"[\x21-\x7e]+")
_HEX32 = re.compile(r"[0-9a-f]{64}")
_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{6}))?Z", re.ASCII)


def _check_uint(value: int, what: str) -> None:
    if not 0 <= value < _UINT64:
        raise InvalidChallenge(f"{what} {value} is outside 0..2**64-1")


@dataclass(frozen=True)
class CheckpointEntry:
    """The latest block of one log as a checkpoint states it."""

    log_id: str
    height: int
    tree_size: int
    root: bytes
    block_hash: bytes

    def __post_init__(self) -> None:
        if not _LOG_ID.fullmatch(self.log_id) or self.log_id == "time":
            raise InvalidChallenge(f"log id {self.log_id!r} must be printable ASCII without spaces, not 'time'")
        _check_uint(self.height, f"log {self.log_id}: height")
        _check_uint(self.tree_size, f"log {self.log_id}: tree size")
        if len(self.root) != 32:
            raise InvalidChallenge(f"log {self.log_id}: root has {len(self.root)} bytes, want 32")
        if len(self.block_hash) != 32:
            raise InvalidChallenge(f"log {self.log_id}: block hash has {len(self.block_hash)} bytes, want 32")


@dataclass(frozen=True)
class Checkpoint:
    """What one signed checkpoint says: who, which one, when (optional), and each log's head.

    Entries are kept sorted by log id whatever order they are given in, so equal
    checkpoints compare equal and format to the same bytes. A given time is
    converted to UTC.
    """

    origin: str
    sequence: int
    entries: tuple[CheckpointEntry, ...]
    time: datetime | None = None

    def __post_init__(self) -> None:
        check_key_name(self.origin)
        _check_uint(self.sequence, "checkpoint sequence")
        entries = tuple(sorted(self.entries, key=lambda e: e.log_id))
        if not entries:
            raise InvalidChallenge(f"checkpoint {self.sequence} covers no log")
        for a, b in zip(entries, entries[1:]):
            if a.log_id == b.log_id:
                raise InvalidChallenge(f"checkpoint {self.sequence} lists log {a.log_id} twice")
        object.__setattr__(self, "entries", entries)
        if self.time is not None:
            if self.time.tzinfo is None or self.time.utcoffset() is None:
                raise InvalidChallenge(f"checkpoint {self.sequence}: time {self.time} has no time zone")
            object.__setattr__(self, "time", self.time.astimezone(timezone.utc))

    def entry(self, log_id: str) -> CheckpointEntry | None:
        """The entry for `log_id`, or None when this checkpoint does not cover that log."""
        for e in self.entries:
            if e.log_id == log_id:
                return e
        return None


def _format_time(t: datetime) -> str:
    frac = f".{t.microsecond:06d}" if t.microsecond else ""
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}{frac}Z"


def format_checkpoint(cp: Checkpoint) -> str:
    """The note text of a checkpoint, the bytes that get signed.

    >>> e = CheckpointEntry("shipment-events/0", 3, 10, bytes(32), bytes(32))
    >>> print(format_checkpoint(Checkpoint("example.com/ledger", 1, (e,))), end="")
    example.com/ledger
    1
    shipment-events/0 3 10 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= 0000000000000000000000000000000000000000000000000000000000000000
    """
    lines = [cp.origin, str(cp.sequence)]
    if cp.time is not None:
        lines.append("time " + _format_time(cp.time))
    for e in cp.entries:
        lines.append(f"{e.log_id} {e.height} {e.tree_size} {encode_b64(e.root)} {e.block_hash.hex()}")
    return "\n".join(lines) + "\n"


def _parse_uint(field: str, what: str) -> int:
    if not _DECIMAL.fullmatch(field):
        raise InvalidChallenge(f"{what} {field!r} is not a decimal without leading zeroes")
    value = int(field)
    _check_uint(value, what)
    return value


def _parse_time(field: str, where: str) -> datetime:
    m = _TIME.fullmatch(field)
    if m is None:
        raise InvalidChallenge(f"{where}: time {field!r} is not RFC 3339 UTC like 2025-01-02T03:04:05Z")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micro = int(m.group(7)) if m.group(7) else 0
    if m.group(7) == "000000":
        raise InvalidChallenge(f"{where}: time {field!r} has a zero fraction; omit it")
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=timezone.utc)
    except ValueError as exc:
        raise InvalidChallenge(f"{where}: time {field!r}: {exc}") from None


def _parse_entry(line: str, where: str) -> CheckpointEntry:
    fields = line.split(" ")
    if len(fields) != 5:
        raise InvalidChallenge(f"{where}: want '<log_id> <height> <tree_size> <root> <block_hash>', got {line!r}")
    log_id, height, size, root, block_hash = fields
    if not _HEX32.fullmatch(block_hash):
        raise InvalidChallenge(f"{where}: block hash {block_hash!r} is not 64 lowercase hex digits")
    height_ = _parse_uint(height, f"{where}: height")
    size_ = _parse_uint(size, f"{where}: tree size")
    root_ = decode_b64(root, f"{where}: root")
    try:
        return CheckpointEntry(log_id, height_, size_, root_, bytes.fromhex(block_hash))
    except InvalidChallenge as exc:
        raise InvalidChallenge(f"{where}: {exc}") from None


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint note text, accepting only the one spelling format_checkpoint writes.

    >>> e = CheckpointEntry("shipment-events/0", 3, 10, bytes(32), bytes(32))
    >>> cp = Checkpoint("example.com/ledger", 1, (e,))
    >>> parse_checkpoint(format_checkpoint(cp)) == cp
    True
    """
    if not text.endswith("\n"):
        raise InvalidChallenge("checkpoint text does not end with a newline")
    lines = text[:-1].split("\n")
    for n, line in enumerate(lines, start=1):
        if not line:
            raise InvalidChallenge(f"checkpoint line {n} is empty")
    if len(lines) < 3:
        raise InvalidChallenge(f"checkpoint has {len(lines)} lines, want origin, sequence and at least one log")
    try:
        check_key_name(lines[0])
    except InvalidChallenge as exc:
        raise InvalidChallenge(f"checkpoint line 1 (origin): {exc}") from None
    sequence = _parse_uint(lines[1], "checkpoint line 2: sequence")
    first = 2
    time: datetime | None = None
    if lines[2].startswith("time "):
        time = _parse_time(lines[2][len("time "):], "checkpoint line 3")
        first = 3
    entries: list[CheckpointEntry] = []
    for n, line in enumerate(lines[first:], start=first + 1):
        entry = _parse_entry(line, f"checkpoint line {n}")
        if entries and entry.log_id <= entries[-1].log_id:
            raise InvalidChallenge(
                f"checkpoint line {n}: log {entry.log_id} is out of order or repeated after {entries[-1].log_id}"
            )
        entries.append(entry)
    cp = Checkpoint(lines[0], sequence, tuple(entries), time)
    if format_checkpoint(cp) != text:
        raise InvalidChallenge(f"checkpoint {sequence} is not in canonical form")
    return cp


def sign_checkpoint(cp: Checkpoint, signer: Signer) -> str:
    """Format and sign a checkpoint; the signer's key name must be the origin."""
    if cp.origin != signer.name:
        raise InvalidChallenge(f"checkpoint origin {cp.origin!r} differs from signing key name {signer.name!r}")
    return signer.sign(format_checkpoint(cp))


def open_checkpoint(note: str | bytes, verifier: Verifier) -> Checkpoint:
    """Verify a checkpoint note's signature by `verifier`, then parse its text.

    Raises SignatureError when the key did not sign it, InvalidChallenge when
    the text is malformed, InvalidProof when a validly signed checkpoint names
    another origin.
    """
    cp = parse_checkpoint(verify_note(note, [verifier]))
    if cp.origin != verifier.name:
        raise InvalidProof(
            f"checkpoint {cp.sequence} has origin {cp.origin!r} but is signed by {verifier.name}+{verifier.key_id.hex()}"
        )
    return cp


def covers(cp: Checkpoint, log_id: str, height: int, block_hash: bytes) -> CheckpointEntry:
    """Return the checkpoint's entry for a block's log if the checkpoint has reached that block.

    A checkpoint older than the block (a replayed or stale one) or one that
    names a different block at the same height raises InvalidProof. When the
    entry is higher, linking it back to this block is the hash chain's job.

    >>> e = CheckpointEntry("shipment-events/0", 3, 10, bytes(32), bytes(32))
    >>> covers(Checkpoint("example.com/ledger", 1, (e,)), "shipment-events/0", 2, bytes(32)).height
    3
    """
    entry = cp.entry(log_id)
    if entry is None:
        logs = ", ".join(e.log_id for e in cp.entries)
        raise InvalidProof(f"checkpoint {cp.sequence} of {cp.origin} does not cover log {log_id} (it covers {logs})")
    if entry.height < height:
        raise InvalidProof(
            f"checkpoint {cp.sequence} of {cp.origin} stops at height {entry.height} of log {log_id}, "
            f"before block {height}: the checkpoint is stale or replayed"
        )
    if entry.height == height and not hmac.compare_digest(entry.block_hash, block_hash):
        raise InvalidProof(
            f"checkpoint {cp.sequence} of {cp.origin} names block {entry.block_hash.hex()} at height {height} "
            f"of log {log_id}, not {block_hash.hex()}"
        )
    return entry
