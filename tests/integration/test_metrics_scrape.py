"""A real Prometheus scrapes the worker, analytics and store processes while events flow through them."""

from __future__ import annotations

import json
import shutil
import signal
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import http_json, settings_env, wait_for
from integration.test_pipeline import simulated

from pipeline.broker import free_port
from pipeline.procs import spawn, stop
from pipeline.producer import produce_records

pytestmark = pytest.mark.integration

VALID, MALFORMED = 600, 10


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.fail("Debian's prometheus is not installed: `./run.sh test` installs it (apt-get install prometheus)")
    return path


def query(base: str, promql: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def value(base: str, promql: str) -> float:
    result = query(base, promql)
    return float(result[0]["value"][1]) if result else float("nan")


def test_prometheus_scrapes_every_process(pipeline_settings: Any, tmp_path: Path) -> None:
    settings = pipeline_settings
    ports = {"worker": free_port(), "analytics": free_port(), "store": settings.store.port}
    env = {**settings_env(settings), "PROVENANCE_METRICS__WORKER_PORT": str(ports["worker"]),
           "PROVENANCE_METRICS__ANALYTICS_PORT": str(ports["analytics"]),
           "PROVENANCE_ANALYTICS__GROUP_ID": f"{settings.worker.group_id}-analytics"}
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                           for job, port in ports.items()],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    prom_port = free_port()
    cli = [sys.executable, "-m", "pipeline.cli"]
    procs = {
        "worker": spawn([*cli, "worker"], env, tmp_path / "worker.log"),
        "analytics": spawn([*cli, "analytics"], env, tmp_path / "analytics.log"),
        "store": spawn([*cli, "serve"], env, tmp_path / "store.log"),
        "prometheus": spawn([prometheus_binary(), f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}",
                             "--log.level=warn"], None, tmp_path / "prometheus.log"),
    }
    url, prom = f"http://127.0.0.1:{ports['store']}", f"http://127.0.0.1:{prom_port}"
    try:
        wait_for(lambda: http_json("GET", f"{url}/health")[0] == 200, 60, "the store's /health")
        records, ids, bad = simulated(VALID, MALFORMED, seed=5)
        produce_records(settings, records, progress=False)
        wait_for(lambda: http_json("GET", f"{url}/health")[1]["tables"]["events"] == VALID, 90, "every event stored")
        event_id = sorted(ids)[0]
        wait_for(lambda: http_json("GET", f"{url}/proofs/{event_id}")[0] == 200, 30, "a proof to serve")

        topic = settings.topics.name(settings.topics.events)
        wait_for(lambda: {r["metric"]["job"] for r in query(prom, "up == 1")} == set(ports), 60,
                 "Prometheus to reach every process")
        wait_for(lambda: value(prom, f'sum(provenance_events_consumed_total{{job="worker",topic="{topic}"}})')
                 == VALID + bad, 60, "the worker's consumed counter to reach every record")
        consumed = query(prom, f'provenance_events_consumed_total{{job="worker",topic="{topic}"}}')
        assert {r["metric"]["partition"] for r in consumed} == {str(p) for p in range(settings.topics.partitions)}
        # Each series is polled: a process's counters move between scrapes (a block is counted once the
        # broker confirmed it, which can be after the store read it), and a scrape can miss on a busy machine.
        wait_for(lambda: value(prom, f'sum(provenance_events_accepted_total{{topic="{topic}"}})') == VALID, 30,
                 "the accepted counter to reach every valid record")
        wait_for(lambda: value(prom, f'sum(provenance_events_rejected_total{{topic="{topic}"}})') == bad, 30,
                 "the rejected counter to reach every malformed record")
        wait_for(lambda: value(prom, "sum(provenance_blocks_sealed_total)") >= settings.topics.partitions, 30,
                 "a sealed block counted for every partition")
        wait_for(lambda: query(prom, 'provenance_consumer_lag_records{consumer="worker"}'), 30, "worker lag series")
        entries = settings.topics.name(settings.topics.entries)
        wait_for(lambda: entries in {r["metric"]["topic"] for r in
                                     query(prom, 'provenance_consumer_lag_records{job="store",consumer="store"}')},
                 30, "the store's lag on ledger.entries")
        wait_for(lambda: query(prom, 'provenance_consumer_lag_seconds{job="store"}'), 30, "the store's lag in seconds")
        wait_for(lambda: value(prom, "provenance_checkpoint_age_seconds") >= 0, 30, "checkpoint age")
        wait_for(lambda: value(prom, "sum(provenance_produced_to_queryable_seconds_count)") > 0, 30,
                 "produced-to-queryable observations")
        served = 'provenance_proof_serving_seconds_count{job="store",kind="inclusion"}'
        wait_for(lambda: value(prom, served) >= 1, 30, "the proof request in the serving histogram")
        # The analytics process exposes its own registry (anomaly counters appear once it raises one).
        assert value(prom, 'process_resident_memory_bytes{job="analytics"}') > 0
    finally:
        for p in procs.values():
            stop(p, signal.SIGTERM, timeout=20)
        for name in procs:
            log = tmp_path / f"{name}.log"
            if log.exists() and log.stat().st_size:
                sys.stderr.write(f"--- {name}.log (tail) ---\n{log.read_text()[-2000:]}\n")
