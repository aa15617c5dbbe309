"""Sending shipment events to Kafka, from a JSONL file or the fleet simulator.

Lines go out exactly as given, even malformed ones: validation is the worker's
job, and it dead-letters what fails so nothing is lost. Each line is keyed by
its shipment_id, so one shipment's events stay on one partition, in order.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.partitioner.default import murmur2
from tqdm import tqdm

from pipeline.broker import ClusterProbe
from pipeline.core.simulator import Fleet
from pipeline.errors import BrokerError, ConfigError
from pipeline.pacing import TokenBucket
from pipeline.produce_report import ProduceReport
from pipeline.settings import Settings

KeyValue = tuple[bytes | None, bytes]

_CHUNK = 500
_BOOTSTRAP_TIMEOUT_MS = 5_000
_MAX_BLOCK_MS = 5_000
_REQUEST_TIMEOUT_MS = 10_000
_KEY_MEMO = 200_000


class _Tally:
    """Delivery outcomes: `ok` and `error` run on kafka-python's sender thread, `handed` on the caller's."""

    def __init__(self) -> None:
        self.handed = 0
        self.acked = 0
        self.failed = 0
        self.first_error: str | None = None

    def ok(self, _metadata: Any) -> None:
        self.acked += 1

    def error(self, exc: BaseException) -> None:
        self.failed += 1
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {exc}"

    @property
    def unconfirmed(self) -> int:
        return self.handed - self.acked - self.failed


def no_broker(settings: Settings) -> str:
    """The message for an unreachable broker, telling the user how to get one."""
    return f"no Kafka broker at {settings.kafka}: start one with `provenance broker` or set PROVENANCE_KAFKA"


def open_producer(settings: Settings) -> KafkaProducer:
    """A KafkaProducer configured from settings, or a BrokerError a person can act on.

    Without the `crc32c` C extension kafka-python checksums every record batch in
    pure Python, which caps throughput; gzip shrinks what gets checksummed. The
    client retries a record until `producer.delivery_timeout`, then reports it failed.
    """
    compression = None if importlib.util.find_spec("crc32c") is not None else "gzip"
    p = settings.producer
    delivery_ms = int(p.delivery_timeout * 1000)
    try:
        return KafkaProducer(
            bootstrap_servers=settings.kafka.split(","),
            acks="all",
            linger_ms=p.linger_ms,
            batch_size=p.batch_size,
            compression_type=compression,
            bootstrap_timeout_ms=_BOOTSTRAP_TIMEOUT_MS,
            max_block_ms=_MAX_BLOCK_MS,
            delivery_timeout_ms=delivery_ms,
            request_timeout_ms=max(1, min(_REQUEST_TIMEOUT_MS, delivery_ms - p.linger_ms)),
            client_id="provenance-producer",
        )
    except (KafkaError, OSError) as exc:
        raise BrokerError(f"{no_broker(settings)} ({exc})") from None
    except ValueError as exc:
        raise ConfigError(f"PROVENANCE_KAFKA={settings.kafka!r} is not host:port[,host:port]: {exc}") from None


class _BrokerAway(Exception):
    """The client could not take a record for the whole delivery timeout: the broker is gone."""


def produce_records(
    settings: Settings,
    records: Iterable[KeyValue],
    rate: float | None = None,
    count: int | None = None,
    progress: bool = True,
    topic: str | None = None,
) -> ProduceReport:
    """Send (key, value) records to the events topic and wait until the broker has them all.

    The report counts what was confirmed, refused and left unconfirmed (`complete`
    says whether nothing was lost). A broker that goes away mid-run is waited for
    up to `producer.delivery_timeout`; if it does not come back, input stops, the
    records handed over get the same bounded wait, and a BrokerError says how many
    were not confirmed. Ctrl-C stops sending, flushes what was handed over and
    reports, rather than losing the tail of the run to a stack trace.
    """
    if rate is not None and rate <= 0:
        raise ConfigError(f"--rate must be positive, got {rate}")
    if count is not None and count < 0:
        raise ConfigError(f"--count must be zero or more, got {count}")
    topic = topic or settings.topics.name(settings.topics.events)
    source: Iterator[KeyValue] = iter(records) if count is None else itertools.islice(records, count)
    bucket = TokenBucket(rate) if rate else None
    producer = open_producer(settings)
    cluster = _cluster_id(settings)
    tally = _Tally()
    interrupted = away = False
    bar = tqdm(total=count, unit="msg", unit_scale=True, file=sys.stderr, disable=not progress,
               desc=f"-> {topic}", mininterval=0.5, smoothing=0.2)
    started = time.monotonic()
    send = producer.send
    partition_of = _KeyPartitions(_partitions(producer, settings, topic))
    watch = _Silence(settings.producer.delivery_timeout)
    try:
        while True:
            wanted = bucket.take(_CHUNK) if bucket else _CHUNK
            batch = list(itertools.islice(source, wanted))
            for key, value in batch:
                try:
                    send(topic, value=value, key=key, partition=partition_of(key)).add_callback(
                        tally.ok).add_errback(tally.error)
                    tally.handed += 1
                except KafkaError as exc:
                    _send_again(producer, settings, topic, key, value, tally, exc)
            bar.update(len(batch))
            if tally.failed:
                bar.set_postfix(failed=tally.failed, refresh=False)
                watch.check(tally)
            if len(batch) < wanted:
                break
    except KeyboardInterrupt:
        interrupted = True
    except _BrokerAway:
        away = True
    except BaseException:
        _close(producer)
        bar.close()
        raise
    interrupted = _finish(producer, settings, interrupted)
    bar.close()
    elapsed = time.monotonic() - started
    now = _cluster_id(settings)
    report = ProduceReport(
        sent=tally.acked,
        failed=tally.failed,
        elapsed=elapsed,
        rate=tally.acked / elapsed if elapsed > 0 else 0.0,
        interrupted=interrupted,
        first_error=tally.first_error,
        unconfirmed=tally.unconfirmed,
        new_cluster=now if cluster and now and now != cluster else None,
    )
    if away:
        raise BrokerError(
            f"the broker at {settings.kafka} confirmed nothing for {settings.producer.delivery_timeout:g}s: input "
            f"stopped after {tally.handed} records, {report.sent} confirmed, {report.failed + report.unconfirmed} "
            f"not: {report.problems()}")
    return report


class _KeyPartitions:
    """Each key's partition as kafka-python's default partitioner picks it, hashed once per key.

    Its pure-Python murmur2 was about an eighth of the producer's CPU per record, and a
    shipment's events repeat its key. Bounded: the memo starts over at `_KEY_MEMO` keys.
    """

    def __init__(self, partitions: list[int]) -> None:
        self.partitions = partitions
        self.known: dict[bytes, int] = {}

    def __call__(self, key: bytes | None) -> int | None:
        if key is None:
            return None  # the client spreads keyless records itself
        found = self.known.get(key)
        if found is None:
            if len(self.known) >= _KEY_MEMO:
                self.known.clear()
            found = self.known[key] = self.partitions[(murmur2(key) & 0x7FFFFFFF) % len(self.partitions)]
        return found


def _partitions(producer: KafkaProducer, settings: Settings, topic: str) -> list[int]:
    """The topic's partitions, sorted as the default partitioner indexes them, or a BrokerError."""
    try:
        return sorted(producer.partitions_for(topic))
    except KafkaError as exc:
        _close(producer)
        raise BrokerError(f"{no_broker(settings)} (topic {topic}: {exc})") from None


class _Silence:
    """Notices a broker that stopped confirming: records fail and none was confirmed for the delivery timeout.

    Without this an endless run (`--simulate --rate N`) against a dead broker would go on
    handing records to the client, each expiring in turn, and never say so.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.acked = -1
        self.since = time.monotonic()

    def check(self, tally: _Tally) -> None:
        now = time.monotonic()
        if tally.acked != self.acked:
            self.acked, self.since = tally.acked, now
        elif now - self.since > self.timeout:
            raise _BrokerAway()


def _send_again(producer: KafkaProducer, settings: Settings, topic: str, key: bytes | None, value: bytes,
                tally: _Tally, exc: KafkaError) -> None:
    """Hand over a record the client refused; while the broker is away, keep trying up to the delivery timeout.

    A timeout before anything was handed over means there never was a broker: say how to get one.
    """
    deadline = time.monotonic() + settings.producer.delivery_timeout
    while isinstance(exc, KafkaTimeoutError):
        if tally.handed == 0 and tally.failed == 0:
            raise BrokerError(f"{no_broker(settings)} (topic {topic}: {exc})") from None
        if time.monotonic() >= deadline:
            tally.error(exc)
            tally.handed += 1
            raise _BrokerAway() from None
        try:
            producer.send(topic, value=value, key=key).add_callback(tally.ok).add_errback(tally.error)
            tally.handed += 1
            return
        except KafkaError as again:
            exc = again
    tally.handed += 1  # refused outright (too large, a fatal client error): a failed record
    tally.error(exc)


def _cluster_id(settings: Settings) -> str | None:
    """The broker's cluster id now (None if it does not answer): a change during a run means it lost its data."""
    probe = ClusterProbe(settings.kafka)
    try:
        return probe.cluster_id()
    finally:
        probe.close()


def _finish(producer: KafkaProducer, settings: Settings, interrupted: bool) -> bool:
    """Wait for every handed-over record's outcome, bounded by the delivery timeout; a second Ctrl-C gives up."""
    try:
        producer.flush(timeout=settings.producer.delivery_timeout + 5.0)
    except KeyboardInterrupt:
        interrupted = True
    except KafkaError:
        pass  # what is still pending is counted as unconfirmed
    _close(producer)
    return interrupted


def _close(producer: KafkaProducer) -> None:
    """Close without waiting; records still pending stay unconfirmed in the tally."""
    with contextlib.suppress(KafkaError):
        producer.close(timeout=0)


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
