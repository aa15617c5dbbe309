"""The metric calls: what a batch, a block and a store poll add, and how lag is computed at scrape time."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from pipeline import metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_sequencer import Broker, event_values, records, sequencer  # noqa: E402


def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(name: str, **labels: str) -> float:
    return samples().get((name, tuple(sorted(labels.items()))), 0.0)


def test_lag_counts_records_past_the_position_and_ages_only_while_behind() -> None:
    positions = metrics.ConsumerPositions("test")
    positions.advance("t", 0, next_offset=10, last_timestamp=100.0)
    positions.advance("t", 1, next_offset=5, last_timestamp=90.0)
    lags = positions.lags({("t", 0): 10, ("t", 1): 8, ("t", 2): 3}, now=130.0)
    assert lags == {("t", 0): (0, 0.0), ("t", 1): (3, 40.0)}  # partition 2: no position known yet
    positions.forget("t", [1])
    assert positions.lags({("t", 1): 8}, now=130.0) == {}


def test_a_sequenced_batch_counts_per_partition_and_a_block_per_log() -> None:
    topic = "shipment-events"

    async def scenario() -> None:
        broker = Broker()
        seq = sequencer(broker, max_events=2)
        values = event_values(4) + [b"not json"]
        await seq.handle(records(broker, values, first_offset=100, partition=7))
        for _ in range(100):
            await asyncio.sleep(0)

    before = {n: value(f"provenance_events_{n}_total", topic=topic, partition="7")
              for n in ("consumed", "accepted", "rejected")}
    blocks_before = value("provenance_blocks_sealed_total", log_id=f"{topic}/7")
    asyncio.run(scenario())
    assert value("provenance_events_consumed_total", topic=topic, partition="7") - before["consumed"] == 5
    assert value("provenance_events_accepted_total", topic=topic, partition="7") - before["accepted"] == 4
    assert value("provenance_events_rejected_total", topic=topic, partition="7") - before["rejected"] == 1
    assert value("provenance_blocks_sealed_total", log_id=f"{topic}/7") - blocks_before == 2
    assert metrics.WORKER_POSITIONS.positions[(topic, 7)][0] == 105
    metrics.WORKER_POSITIONS.known_ends = {(topic, 7): 109}
    try:
        assert value("provenance_consumer_lag_records", consumer="worker", topic=topic, partition="7") == 4
    finally:
        metrics.WORKER_POSITIONS.known_ends = {}
        metrics.WORKER_POSITIONS.forget(topic, [7])


def test_produced_time_travels_in_entries_headers_and_feeds_the_latency_histogram() -> None:
    headers = metrics.produced_headers(1_700_000_000.25)
    assert headers == [("produced.ms", b"1700000000250")]
    assert metrics.produced_at(headers) == 1_700_000_000.25
    assert metrics.produced_at([("produced.ms", b"garbage")]) is None
    assert metrics.produced_headers(None) is None
    count = value("provenance_produced_to_queryable_seconds_count")
    metrics.store_committed({"events": 3, "blocks": 0}, [1.0, 2.0])
    assert value("provenance_produced_to_queryable_seconds_count") - count == 2


def test_anomalies_and_fits_are_counted_by_kind_and_model() -> None:
    before = value("provenance_anomalies_total", kind="late")
    metrics.anomalies_raised(["late", "late", "stalled"])
    assert value("provenance_anomalies_total", kind="late") - before == 2
    n = value("provenance_forecast_fit_seconds_count", model="ets")
    metrics.forecast_fitted("ets", 0.02)
    assert value("provenance_forecast_fit_seconds_count", model="ets") - n == 1
