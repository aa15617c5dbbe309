"""Prometheus metrics of every process: the metric objects, and the few calls that feed them.

Names follow Prometheus conventions: `provenance_*`, base units (seconds,
records), `_total` on counters. Every hot path counts per batch or per block,
never per record: a worker calls `worker_batch` once per partition per batch
and `block_delivered` once per block; the store calls `store_poll` once per
poll. Lags are computed when Prometheus scrapes, from what those calls left.

The store serves `/metrics` on its own HTTP port; the worker and analytics
processes start a small exporter thread with `serve` when their port is set.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, generate_latest, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Latency buckets from 5 ms to 5 min: sealing waits up to max_age, ingest polls every flush_interval.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# ---- worker -------------------------------------------------------------------------------
EVENTS_CONSUMED = Counter("provenance_events_consumed", "Records the worker read from a source topic.",
                          ["topic", "partition"])
EVENTS_ACCEPTED = Counter("provenance_events_accepted", "Records accepted into the partition's ledger.",
                          ["topic", "partition"])
EVENTS_REJECTED = Counter("provenance_events_rejected", "Records refused and sent to the dead-letter topic.",
                          ["topic", "partition"])
EVENTS_REPLAYED = Counter("provenance_events_replayed", "Records below the commit point, skipped as replays.",
                          ["topic", "partition"])
BLOCKS_SEALED = Counter("provenance_blocks_sealed", "Blocks sealed and delivered to ledger.blocks.", ["log_id"])
BLOCK_EVENTS = Histogram("provenance_block_events", "Events per sealed block.",
                         buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000))
PRODUCED_TO_SEALED = Histogram("provenance_produced_to_sealed_seconds",
                               "From the Kafka timestamp of a block's first record to the block's delivery.",
                               buckets=LATENCY_BUCKETS)

# ---- store --------------------------------------------------------------------------------
STORE_CONSUMED = Counter("provenance_store_records_consumed", "Records the store read from a result topic.",
                         ["topic", "partition"])
STORE_ROWS = Counter("provenance_store_rows_written", "Rows the store added to a table (replays add none).",
                     ["table"])
PRODUCED_TO_QUERYABLE = Histogram(
    "provenance_produced_to_queryable_seconds",
    "From the Kafka timestamp of a block's first record to its entries being committed in DuckDB"
    " (one observation per ledger.entries bundle).",
    buckets=LATENCY_BUCKETS)
PROOF_SECONDS = Histogram("provenance_proof_serving_seconds", "Time to build and serve a proof.", ["kind"],
                          buckets=FAST_BUCKETS)
CHECKPOINT_AGE = Gauge("provenance_checkpoint_age_seconds", "Age of the latest signed checkpoint.")
CHECKPOINT_SEQUENCE = Gauge("provenance_checkpoint_sequence", "Sequence number of the latest signed checkpoint.")
TABLE_ROWS = Gauge("provenance_table_rows", "Rows in a store table.", ["table"])
ANOMALIES_STORED = Gauge("provenance_anomalies_stored", "Anomalies in the store, by kind and status.",
                         ["kind", "status"])

# ---- analytics ----------------------------------------------------------------------------
FORECAST_FIT = Histogram("provenance_forecast_fit_seconds", "Time to fit one forecasting model on one series.",
                         ["model"], buckets=FAST_BUCKETS + (5.0, 10.0, 30.0))
ANOMALIES_RAISED = Counter("provenance_anomalies", "Anomalies raised by the delay model.", ["kind"])


def worker_batch(topic: str, partition: int, consumed: int, accepted: int, rejected: int, replayed: int,
                 last_offset: int, last_timestamp: float | None) -> None:
    """One partition's share of one batch (call once per partition per batch).

    `last_timestamp` is the Kafka timestamp (seconds) of the batch's last record;
    it makes consumer lag in seconds measurable at scrape time.
    """
    p = str(partition)
    EVENTS_CONSUMED.labels(topic, p).inc(consumed)
    if accepted:
        EVENTS_ACCEPTED.labels(topic, p).inc(accepted)
    if rejected:
        EVENTS_REJECTED.labels(topic, p).inc(rejected)
    if replayed:
        EVENTS_REPLAYED.labels(topic, p).inc(replayed)
    WORKER_POSITIONS.advance(topic, partition, last_offset + 1, last_timestamp)


def block_delivered(log_id: str, events: int, first_timestamp: float | None) -> None:
    """One sealed block delivered to ledger.blocks (call once per block)."""
    BLOCKS_SEALED.labels(log_id).inc()
    BLOCK_EVENTS.observe(events)
    if first_timestamp:
        PRODUCED_TO_SEALED.observe(max(0.0, time.time() - first_timestamp))


def forecast_fitted(model: str, seconds: float) -> None:
    """One model fitted on one series."""
    FORECAST_FIT.labels(model).observe(seconds)


def anomalies_raised(kinds: Iterable[str]) -> None:
    """Anomalies the model raised (call once per batch with their kinds)."""
    counts: dict[str, int] = {}
    for kind in kinds:
        counts[kind] = counts.get(kind, 0) + 1
    for kind, n in counts.items():
        ANOMALIES_RAISED.labels(kind).inc(n)


class ConsumerPositions:
    """Consumer lag of one process, computed at scrape time.

    Lag in records is the partition's end offset minus the next offset the
    process will handle; lag in seconds is how old the last handled record is
    while records are waiting (0 when caught up), so a stalled consumer's lag
    keeps growing even though it handles nothing.
    """

    def __init__(self, consumer: str) -> None:
        self.consumer = consumer
        self.positions: dict[tuple[str, int], tuple[int, float | None]] = {}
        # End offsets: a callable read at scrape time (worker), or the last ones fetched (store).
        self.ends: Callable[[], dict[tuple[str, int], int]] | None = None
        self.known_ends: dict[tuple[str, int], int] = {}
        self.lock = threading.Lock()

    def advance(self, topic: str, partition: int, next_offset: int, last_timestamp: float | None) -> None:
        with self.lock:
            self.positions[(topic, partition)] = (next_offset, last_timestamp)

    def forget(self, topic: str, partitions: Iterable[int]) -> None:
        with self.lock:
            for p in partitions:
                self.positions.pop((topic, p), None)

    def lags(self, ends: dict[tuple[str, int], int], now: float) -> dict[tuple[str, int], tuple[int, float]]:
        """(records, seconds) behind per partition, for the given end offsets."""
        with self.lock:
            positions = dict(self.positions)
        out = {}
        for tp, end in ends.items():
            if tp not in positions:
                continue  # nothing handled yet since start: the position is not known here
            nxt, ts = positions[tp]
            records = max(0, end - nxt)
            seconds = max(0.0, now - ts) if records and ts else 0.0
            out[tp] = (records, seconds)
        return out

    def samples(self) -> list[tuple[str, int, int, float]]:
        """(topic, partition, records, seconds) now, for every partition with a known position."""
        ends = self.known_ends
        if self.ends is not None:
            try:
                ends = self.ends()
            except Exception:  # noqa: BLE001 - a scrape must not fail because the consumer is rebalancing
                log.debug("end offsets unavailable for %s", self.consumer, exc_info=True)
        return [(t, p, n, s) for (t, p), (n, s) in sorted(self.lags(ends, time.time()).items())]


WORKER_POSITIONS = ConsumerPositions("worker")
STORE_POSITIONS = ConsumerPositions("store")


class _ConsumerLag(Collector):
    """Both lag gauges, for every consumer of this process."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["consumer", "topic", "partition"]
        records = GaugeMetricFamily("provenance_consumer_lag_records", "Records on the broker not yet handled.",
                                    labels=labels)
        seconds = GaugeMetricFamily("provenance_consumer_lag_seconds",
                                    "Age of the last handled record while more are waiting (0 when caught up).",
                                    labels=labels)
        for positions in (WORKER_POSITIONS, STORE_POSITIONS):
            for topic, p, n, age in positions.samples():
                records.add_metric([positions.consumer, topic, str(p)], n)
                seconds.add_metric([positions.consumer, topic, str(p)], age)
        yield records
        yield seconds


REGISTRY.register(_ConsumerLag())


def store_poll(topic: str, partition: int, records: int, next_offset: int, last_timestamp: float | None) -> None:
    """One partition's share of one store poll."""
    STORE_CONSUMED.labels(topic, str(partition)).inc(records)
    STORE_POSITIONS.advance(topic, partition, next_offset, last_timestamp)


def store_committed(rows: dict[str, int], produced: Iterable[float]) -> None:
    """One committed ingest batch: rows added per table, and the produced times of its entries bundles."""
    for table, n in rows.items():
        if n:
            STORE_ROWS.labels(table).inc(n)
    now = time.time()
    for t in produced:
        PRODUCED_TO_QUERYABLE.observe(max(0.0, now - t))


def render() -> bytes:
    """Everything this process exposes, in Prometheus text format."""
    return generate_latest(REGISTRY)


def serve(port: int, host: str, what: str) -> Any:
    """Start the exporter thread for a worker or analytics process; returns the server, or None if port is 0."""
    if not port:
        return None
    server, _thread = start_http_server(port, addr=host)
    print(f"{what} metrics: http://{host}:{server.server_address[1]}/metrics", flush=True)
    return server


PRODUCED_HEADER = "produced.ms"


def produced_headers(first_timestamp: float | None) -> list[tuple[str, bytes]] | None:
    """Kafka headers for a block's ledger.entries bundles: when its first record was produced."""
    if not first_timestamp:
        return None
    return [(PRODUCED_HEADER, str(int(first_timestamp * 1000)).encode())]


def produced_at(headers: Any) -> float | None:
    """The produced time (seconds) carried by an entries bundle's headers, if any."""
    for key, value in headers or ():
        if key == PRODUCED_HEADER:
            try:
                return int(value) / 1000
            except (TypeError, ValueError):
                return None
    return None
