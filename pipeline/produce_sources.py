"""What `provenance produce` sends: JSONL lines keyed by shipment, the fleet simulator's stream, a split in time.

Lines go out exactly as given, even malformed ones: validation is the worker's
job, and it dead-letters what fails so nothing is lost. Each line is keyed by
its shipment_id, so one shipment's events stay on one partition, in order.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO

from pipeline.core.simulator import Fleet
from pipeline.errors import ConfigError

KeyValue = tuple[bytes | None, bytes]


def shipment_key(line: bytes) -> bytes | None:
    """The Kafka key for one raw line: its shipment_id when it has a string one, else None.

    >>> shipment_key(b'{"shipment_id": "S-1", "event_type": "created"}')
    b'S-1'
    >>> shipment_key(b'{"shipment_id": 7}') is None, shipment_key(b'not json') is None
    (True, True)
    """
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return None
    sid = obj.get("shipment_id") if isinstance(obj, dict) else None
    return sid.encode("utf-8", "surrogatepass") if isinstance(sid, str) else None


def records_from_file(path: str | Path) -> Iterator[KeyValue]:
    """Each non-empty line of a JSONL file (`-` for stdin), as-is, keyed by its shipment_id."""
    if str(path) == "-":
        return _lines(sys.stdin.buffer)
    try:
        handle = Path(path).open("rb")
    except FileNotFoundError:
        raise ConfigError(f"no such file: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return _lines(handle)


def _lines(handle: IO[bytes]) -> Iterator[KeyValue]:
    with handle:
        for raw in handle:
            line = raw.rstrip(b"\r\n")
            if line.strip():
                yield shipment_key(line), line


def records_from_simulator(
    seed: int,
    malformed_share: float = 0.0,
    start: datetime | None = None,
    tick: timedelta = timedelta(seconds=30),
    anomalies: bool = False,
    backfill: timedelta = timedelta(0),
) -> Iterator[KeyValue]:
    """The fleet simulator's endless stream; `start` defaults to now, to the minute, minus `backfill`."""
    if start is None:
        start = datetime.now(timezone.utc).replace(second=0, microsecond=0) - backfill
    if anomalies:  # labelled delay anomalies injected (the labels stay in the simulator)
        from pipeline.core.anomaly_injection import LabelledFleet

        fleet: Fleet = LabelledFleet(seed, start, tick=tick, malformed_share=malformed_share)
    else:
        fleet = Fleet(seed, start, tick=tick, malformed_share=malformed_share)
    return ((key, value) for key, value, _ in fleet.records())


def split_at(records: Iterable[KeyValue], until: datetime) -> tuple[Iterator[KeyValue], Iterator[KeyValue]]:
    """The records whose event_time is before `until`, then the rest (consume the first before the second).

    A record without a readable event_time (a spoiled simulator line) stays with its neighbours.

    >>> rec = [(b"k", b'{"event_time": "2026-01-01T00:00:00Z"}'), (b"k", b"not json"), (b"k", b'{"event_time": "2026"}'),
    ...        (b"k", b'{"event_time": "2026-01-03T00:00:00+01:00"}'), (b"k", b'{"event_time": "2026-01-01T00:00:00Z"}')]
    >>> past, rest = split_at(rec, datetime(2026, 1, 2, tzinfo=timezone.utc))
    >>> len(list(past)), len(list(rest))
    (3, 2)
    """
    source = iter(records)
    held: list[KeyValue] = []

    def before() -> Iterator[KeyValue]:
        for key, value in source:
            try:
                when = datetime.fromisoformat(json.loads(value)["event_time"].replace("Z", "+00:00"))
            except (ValueError, KeyError, TypeError, AttributeError):
                when = None
            if when is None or when.tzinfo is None:
                yield key, value
                continue
            if when >= until:
                held.append((key, value))
                return
            yield key, value

    def after() -> Iterator[KeyValue]:
        yield from held
        yield from source

    return before(), after()
