"""The analytics process on the real broker: injected anomalies end up as the expected rows in DuckDB,
and killing it with SIGKILL mid-stream and restarting it changes none of them."""

from __future__ import annotations

import json
import os
import signal
import sys
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from conftest import http_json, settings_env, wait_for

from pipeline.analytics.anomalies import detector_from
from pipeline.core.anomaly import iso
from pipeline.core.anomaly_injection import LabelledFleet
from pipeline.core.sealed import SealedEvent, parse_time
from pipeline.procs import spawn, stop
from pipeline.producer import produce_records

pytestmark = pytest.mark.integration

EVENTS = 4000
SHARES = {"late": 0.05, "dwell": 0.06, "silent": 0.06, "sequence": 0.06, "little_late": 0.05}


def sql(url: str, query: str) -> list[list[Any]]:
    status, body = http_json("POST", f"{url}/sql", {"query": query})
    assert status == 200, body
    return body["rows"]


def expected_rows(url: str, settings: Any) -> dict[tuple[str, str], tuple[str, str, str]]:
    """The pure detector over what the ledger holds, partition by partition in leaf order."""
    rows = sql(url, "SELECT log_id, leaf_index, payload::VARCHAR FROM events ORDER BY log_id, leaf_index")
    detectors: dict[str, Any] = {}
    out: dict[tuple[str, str], tuple[str, str, str]] = {}
    for log_id, leaf, payload in rows:
        event = json.loads(payload)
        d = detectors.setdefault(log_id, detector_from(settings.analytics))
        d.observe(SealedEvent(event, log_id, leaf, parse_time(event["event_time"])))
        for r in d.changed():
            out[(r.shipment_id, r.kind)] = (r.status, iso(r.observed_at), r.explanation)
    return out


def stored_rows(url: str) -> dict[tuple[str, str], tuple[str, str, str]]:
    rows = sql(url, "SELECT shipment_id, kind, status, epoch(observed_at), explanation FROM anomalies")
    return {(s, k): (st, iso(float(t)), text) for s, k, st, t, text in rows}


def test_injected_anomalies_land_as_expected_rows_across_a_kill(pipeline_settings: Any, tmp_path: Path) -> None:
    settings = pipeline_settings
    env = dict(settings_env(settings), PROVENANCE_ANALYTICS__GROUP_ID=f"analytics-{os.getpid()}-{tmp_path.name}")
    cli = [sys.executable, "-m", "pipeline.cli"]
    url = f"http://127.0.0.1:{settings.store.port}"
    fleet = LabelledFleet(21, datetime(2026, 3, 2, tzinfo=timezone.utc), shares=SHARES)
    events = list(islice(fleet.events(), EVENTS))
    records = [(e["shipment_id"].encode(), json.dumps(e).encode()) for e in events]
    procs: dict[str, Any] = {}
    try:
        procs["worker"] = spawn([*cli, "worker"], env, tmp_path / "worker.log")
        procs["store"] = spawn([*cli, "serve"], env, tmp_path / "store.log")
        procs["analytics"] = spawn([*cli, "analytics", "--loglevel", "info"], env, tmp_path / "analytics.1.log")
        wait_for(lambda: http_json("GET", f"{url}/health")[0] == 200, 60, "the store's /health")

        half = EVENTS // 2
        produce_records(settings, records[:half], progress=False)
        wait_for(lambda: sql(url, "SELECT count(*) FROM anomalies")[0][0] > 0, 120, "the first anomaly rows")
        os.kill(procs["analytics"].pid, signal.SIGKILL)  # mid-stream: rows in flight, state lost
        procs["analytics"].wait(30)
        produce_records(settings, records[half:], progress=False)
        procs["analytics"] = spawn([*cli, "analytics", "--loglevel", "info"], env, tmp_path / "analytics.2.log")
        wait_for(lambda: sql(url, "SELECT count(*) FROM events")[0][0] == EVENTS, 120, f"{EVENTS} events in DuckDB")

        expected = expected_rows(url, settings)
        assert len(expected) > 50
        wait_for(lambda: stored_rows(url) == expected, 150, "the anomaly rows the pure detector expects")

        kinds = {k for _, k in expected}
        assert {"late", "sequence", "at_risk"} <= kinds
        sequence = {s for (s, k) in expected if k == "sequence"}
        labelled = {s for s, ks in fleet.labels.items() if "sequence" in ks}
        assert sequence and sequence <= labelled  # no false alarm, reorderings included
        status, body = http_json("GET", f"{url}/anomalies?kind=sequence&limit=1000")
        assert status == 200 and {r["shipment_id"] for r in body["anomalies"]} == sequence
        row = body["anomalies"][0]
        assert row["log_id"].startswith(settings.topics.prefix + "shipment-events/") and row["explanation"]
        event = sql(url, f"SELECT log_id, leaf_index FROM events WHERE event_id = '{row['event_id']}'")
        assert event == [[row["log_id"], row["leaf_index"]]]  # the row names its ledger position
    finally:
        for p in procs.values():
            stop(p, signal.SIGTERM, timeout=20)
        for log in sorted(tmp_path.glob("*.log")):
            sys.stderr.write(f"--- {log.name} (tail) ---\n{log.read_text(errors='replace')[-2000:]}\n")
