"""Sending shipment events to Kafka, from a JSONL file or the fleet simulator.

Lines go out exactly as given, even malformed ones: validation is the worker's
job, and it dead-letters what fails so nothing is lost. Each line is keyed by
its shipment_id, so one shipment's events stay on one partition, in order.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError
from tqdm import tqdm

from pipeline.core.simulator import Fleet
from pipeline.errors import BrokerError, ConfigError
from pipeline.settings import Settings

KeyValue = tuple[bytes | None, bytes]

_CHUNK = 500
_BOOTSTRAP_TIMEOUT_MS = 5_000
_MAX_BLOCK_MS = 15_000
_FLUSH_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class ProduceReport:
    """What a produce run did: `sent` counts records the broker acknowledged."""

    sent: int
    failed: int
    elapsed: float
    rate: float
    interrupted: bool = False
    first_error: str | None = None

    def plus(self, later: ProduceReport) -> ProduceReport:
        """This run followed by `later` (one report for both)."""
        sent, elapsed = self.sent + later.sent, self.elapsed + later.elapsed
        return ProduceReport(sent, self.failed + later.failed, elapsed, sent / elapsed if elapsed > 0 else 0.0,
                             later.interrupted, self.first_error or later.first_error)


class TokenBucket:
    """Admit `rate` messages a second on average, handing out tokens in batches.

    Sleeping once per message caps a Python loop at a few thousand a second and
    jitters; granting a batch at a time keeps the average exact at any rate.

    >>> now = [0.0]
    >>> bucket = TokenBucket(1000.0, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    >>> sum(bucket.take(500) for _ in range(50)), round(now[0], 2)
    (500, 0.5)
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ConfigError(f"rate must be positive, got {rate}")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate / 10)
        self.clock = clock
        self.sleep = sleep
        self._tokens = 0.0
        self._last = clock()

    def take(self, wanted: int) -> int:
        """Block until tokens are available; return how many of `wanted` were granted (at least 1)."""
        least = max(1.0, min(float(wanted), self.rate / 100, self.burst))
        while True:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            # The epsilon keeps float rounding from asking for a sleep too short to advance the clock.
            if self._tokens + 1e-9 >= least:
                granted = min(wanted, int(self._tokens + 1e-9))
                self._tokens -= granted
                return granted
            self.sleep((least - self._tokens) / self.rate)


class _Tally:
    """Delivery outcomes, counted from kafka-python's sender thread."""

    def __init__(self) -> None:
        self.acked = 0
        self.failed = 0
        self.first_error: str | None = None

    def ok(self, _metadata: Any) -> None:
        self.acked += 1

    def error(self, exc: BaseException) -> None:
        self.failed += 1
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {exc}"


def no_broker(settings: Settings) -> str:
    """The message for an unreachable broker, telling the user how to get one."""
    return f"no Kafka broker at {settings.kafka}: start one with `provenance broker` or set PROVENANCE_KAFKA"


def open_producer(settings: Settings) -> KafkaProducer:
    """A KafkaProducer configured from settings, or a BrokerError a person can act on.

    Without the `crc32c` C extension kafka-python checksums every record batch in
    pure Python, which caps throughput; gzip shrinks what gets checksummed.
    """
    compression = None if importlib.util.find_spec("crc32c") is not None else "gzip"
    try:
        return KafkaProducer(
            bootstrap_servers=settings.kafka.split(","),
            acks="all",
            linger_ms=settings.producer.linger_ms,
            batch_size=settings.producer.batch_size,
            compression_type=compression,
            bootstrap_timeout_ms=_BOOTSTRAP_TIMEOUT_MS,
            max_block_ms=_MAX_BLOCK_MS,
            client_id="provenance-producer",
        )
    except (KafkaError, OSError) as exc:
        raise BrokerError(f"{no_broker(settings)} ({exc})") from None
    except ValueError as exc:
        raise ConfigError(f"PROVENANCE_KAFKA={settings.kafka!r} is not host:port[,host:port]: {exc}") from None


def produce_records(
    settings: Settings,
    records: Iterable[KeyValue],
    rate: float | None = None,
    count: int | None = None,
    progress: bool = True,
    topic: str | None = None,
) -> ProduceReport:
    """Send (key, value) records to the events topic and wait until the broker has them all.

    Ctrl-C stops sending, flushes what was handed over and reports, rather than
    losing the tail of the run to a stack trace.
    """
    if rate is not None and rate <= 0:
        raise ConfigError(f"--rate must be positive, got {rate}")
    if count is not None and count < 0:
        raise ConfigError(f"--count must be zero or more, got {count}")
    topic = topic or settings.topics.name(settings.topics.events)
    source: Iterator[KeyValue] = iter(records) if count is None else itertools.islice(records, count)
    bucket = TokenBucket(rate) if rate else None
    producer = open_producer(settings)
    tally = _Tally()
    rejected = 0
    interrupted = False
    bar = tqdm(total=count, unit="msg", unit_scale=True, file=sys.stderr, disable=not progress,
               desc=f"-> {topic}", mininterval=0.5, smoothing=0.2)
    started = time.monotonic()
    try:
        while True:
            wanted = bucket.take(_CHUNK) if bucket else _CHUNK
            batch = list(itertools.islice(source, wanted))
            for key, value in batch:
                try:
                    producer.send(topic, value=value, key=key).add_callback(tally.ok).add_errback(tally.error)
                except KafkaTimeoutError as exc:
                    raise BrokerError(f"{no_broker(settings)} (topic {topic}: {exc})") from None
                except KafkaError as exc:
                    rejected += 1
                    tally.first_error = tally.first_error or f"{type(exc).__name__}: {exc}"
            bar.update(len(batch))
            if tally.failed or rejected:
                bar.set_postfix(failed=tally.failed + rejected, refresh=False)
            if len(batch) < wanted:
                break
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:
        producer.close(timeout=0)
        bar.close()
        raise
    interrupted = _finish(producer, interrupted)
    bar.close()
    elapsed = time.monotonic() - started
    return ProduceReport(
        sent=tally.acked,
        failed=tally.failed + rejected,
        elapsed=elapsed,
        rate=tally.acked / elapsed if elapsed > 0 else 0.0,
        interrupted=interrupted,
        first_error=tally.first_error,
    )


def _finish(producer: KafkaProducer, interrupted: bool) -> bool:
    """Flush and close; a second Ctrl-C during the flush gives up waiting."""
    try:
        producer.flush(timeout=_FLUSH_TIMEOUT)
        producer.close(timeout=_FLUSH_TIMEOUT)
    except KeyboardInterrupt:
        producer.close(timeout=0)
        return True
    except KafkaError:
        producer.close(timeout=0)
    return interrupted


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
