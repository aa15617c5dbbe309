"""Sending (key, value) records to Kafka with kafka-python: progress, delivery accounting, a lost broker.

The records come from `produce_sources`; `produce_parallel` runs this sender in several
processes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.partitioner.default import murmur2
from tqdm import tqdm

from pipeline.broker import ClusterProbe
from pipeline.errors import BrokerError, ConfigError
from pipeline.pacing import TokenBucket
from pipeline.produce_report import ProduceReport
from pipeline.produce_sources import KeyValue
from pipeline.settings import Settings

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
    check_pacing(rate, count)
    topic = topic or settings.topics.name(settings.topics.events)
    bar = progress_bar(topic, count, progress)

    def shown(handed: int, tally: _Tally) -> None:
        bar.update(handed)
        if tally.failed:
            bar.set_postfix(failed=tally.failed, refresh=False)

    try:
        report = send_batches(settings, batches(records, rate, count, _CHUNK), topic, shown)
    finally:
        bar.close()
    if report.broker_away:
        raise broker_away(settings, report)
    return report


def check_pacing(rate: float | None, count: int | None) -> None:
    """A ConfigError for a rate or count no run can keep."""
    if rate is not None and rate <= 0:
        raise ConfigError(f"--rate must be positive, got {rate}")
    if count is not None and count < 0:
        raise ConfigError(f"--count must be zero or more, got {count}")


def progress_bar(topic: str, count: int | None, progress: bool) -> tqdm[Any]:
    return tqdm(total=count, unit="msg", unit_scale=True, file=sys.stderr, disable=not progress,
                desc=f"-> {topic}", mininterval=0.5, smoothing=0.2)


def batches(records: Iterable[KeyValue], rate: float | None, count: int | None, size: int) -> Iterator[list[KeyValue]]:
    """The first `count` records (all without one) in lists of up to `size`, paced to `rate` a second."""
    source: Iterator[KeyValue] = iter(records) if count is None else itertools.islice(records, count)
    bucket = TokenBucket(rate) if rate else None
    while True:
        wanted = bucket.take(size) if bucket else size
        batch = list(itertools.islice(source, wanted))
        if batch:
            yield batch
        if len(batch) < wanted:
            return


def broker_away(settings: Settings, report: ProduceReport) -> BrokerError:
    """The error of a run whose broker confirmed nothing for the delivery timeout, with its counts."""
    return BrokerError(
        f"the broker at {settings.kafka} confirmed nothing for {settings.producer.delivery_timeout:g}s: input "
        f"stopped after {report.handed} records, {report.sent} confirmed, {report.failed + report.unconfirmed} "
        f"not: {report.problems()}")


def send_batches(settings: Settings, source: Iterable[list[KeyValue]], topic: str,
                 after_batch: Callable[[int, _Tally], None]) -> ProduceReport:
    """Hand each batch's records to one kafka-python client, then wait for every outcome.

    `after_batch` hears how many records each batch handed over and the tally so far. A
    broker that confirmed nothing for the delivery timeout stops the input: the report
    then says `broker_away`.
    """
    producer = open_producer(settings)
    cluster = _cluster_id(settings)
    tally = _Tally()
    interrupted = away = False
    started = time.monotonic()
    send = producer.send
    partition_of = KeyPartitions(_partitions(producer, settings, topic))
    watch = _Silence(settings.producer.delivery_timeout)
    try:
        for batch in source:
            for key, value in batch:
                try:
                    send(topic, value=value, key=key, partition=partition_of(key)).add_callback(
                        tally.ok).add_errback(tally.error)
                    tally.handed += 1
                except KafkaError as exc:
                    _send_again(producer, settings, topic, key, value, tally, exc)
            after_batch(len(batch), tally)
            if tally.failed:
                watch.check(tally)
    except KeyboardInterrupt:
        interrupted = True
    except _BrokerAway:
        away = True
    except BaseException:
        _close(producer)
        raise
    interrupted = _finish(producer, settings, interrupted)
    elapsed = time.monotonic() - started
    now = _cluster_id(settings)
    return ProduceReport(
        sent=tally.acked,
        failed=tally.failed,
        elapsed=elapsed,
        rate=tally.acked / elapsed if elapsed > 0 else 0.0,
        interrupted=interrupted,
        first_error=tally.first_error,
        unconfirmed=tally.unconfirmed,
        new_cluster=now if cluster and now and now != cluster else None,
        broker_away=away,
    )


class KeyPartitions:
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
