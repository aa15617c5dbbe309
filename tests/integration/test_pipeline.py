"""End to end on the real embedded broker: producer, worker and store as real processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import http_json, settings_env, wait_for
from ledger_checks import check_chain

from pipeline.core.simulator import Fleet
from pipeline.procs import spawn, stop
from pipeline.producer import produce_records
from pipeline.store.db import Database

pytestmark = pytest.mark.integration

VALID = 10_000
MALFORMED = 50


def simulated(valid: int, malformed: int, seed: int = 11) -> tuple[list[tuple[bytes | None, bytes]], set[str], int]:
    """`valid` simulated events with `malformed` spoiled lines spread among them."""
    fleet = Fleet(seed, datetime(2026, 3, 2, tzinfo=timezone.utc), malformed_share=0.02)
    records: list[tuple[bytes | None, bytes]] = []
    ids: set[str] = set()
    bad = 0
    for rec in fleet.records():
        if rec.is_valid and len(ids) < valid:
            records.append((rec.key, rec.value))
            ids.add(json.loads(rec.value)["event_id"])
        elif not rec.is_valid and bad < malformed:
            records.append((rec.key, rec.value))
            bad += 1
        if len(ids) == valid and bad == malformed:
            break
    return records, ids, bad


def end_offsets(settings: Any, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka, group_id=None, enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        return int(sum(consumer.end_offsets([TopicPartition(topic, p) for p in parts]).values()))
    finally:
        consumer.close()


@pytest.fixture
def running(pipeline_settings: Any, tmp_path: Path) -> Any:
    """Worker and store as real processes; yields (settings, url, processes)."""
    env = settings_env(pipeline_settings)
    cli = [sys.executable, "-m", "pipeline.cli"]
    procs = {
        "worker": spawn([*cli, "worker"], env, tmp_path / "worker.log"),
        "store": spawn([*cli, "serve"], env, tmp_path / "store.log"),
    }
    url = f"http://127.0.0.1:{pipeline_settings.store.port}"
    try:
        wait_for(lambda: http_json("GET", f"{url}/health")[0] == 200, 60, "the store's /health")
        yield pipeline_settings, url, procs
    finally:
        for p in procs.values():
            stop(p, signal.SIGTERM, timeout=20)
        for name in procs:
            log = tmp_path / f"{name}.log"
            if log.exists():
                sys.stderr.write(f"--- {name}.log (tail) ---\n{log.read_text()[-3000:]}\n")


def test_every_event_lands_once_and_every_block_verifies(running: Any, tmp_path: Path) -> None:
    settings, url, procs = running
    records, ids, bad = simulated(VALID, MALFORMED)
    assert bad == MALFORMED
    report = produce_records(settings, records, rate=None, count=None, progress=False)
    assert report.sent == VALID + MALFORMED and report.failed == 0

    def landed() -> bool:
        tables = http_json("GET", f"{url}/health")[1]["tables"]
        return tables["events"] == VALID and tables["dead_letters"] == MALFORMED

    wait_for(landed, 180, f"{VALID} events and {MALFORMED} dead letters in DuckDB")

    # Every event sealed: the last block of each log covers all its leaves.
    def all_sealed() -> bool:
        status, body = http_json("POST", f"{url}/sql", {"query":
            "SELECT (SELECT count(*) FROM events) = (SELECT coalesce(sum(m), 0) FROM"
            " (SELECT max(tree_size) AS m FROM blocks GROUP BY log_id))"})
        return status == 200 and body["rows"][0][0] is True

    wait_for(all_sealed, 30, "every event to be inside a sealed block")

    # provenance sql goes through the running store (the file is locked by it).
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "sql", "--format", "json",
                          "select event_type, count(*) as n from events group by 1 order by 1"],
                         env=settings_env(settings), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert sum(r["n"] for r in json.loads(out.stdout)) == VALID

    # Proofs: a bundle for any event verifies offline with the served key; a tampered one fails.
    key = urllib.request.urlopen(f"{url}/checkpoints/key", timeout=10).read().decode().strip()
    sample = sorted(ids)[:: VALID // 5]
    wait_for(lambda: http_json("GET", f"{url}/proofs/{sample[-1]}")[1].get("checkpoint"), 60,
             "a checkpoint covering the sampled events")
    env = settings_env(settings)
    for event_id in sample:
        path = tmp_path / f"{event_id}.json"
        run_cli(env, "prove", event_id, "-o", str(path))
        ok = run_cli(env, "verify", str(path), "--key", key)
        assert ok.stdout.startswith("OK: event"), ok.stdout
    bundle = json.loads(path.read_text())
    bundle["event"]["carrier"] = bundle["event"]["carrier"] + "x"
    path.write_text(json.dumps(bundle))
    bad = run_cli(env, "verify", str(path), "--key", key, expect=1)
    assert "leaf hash" in bad.stderr

    stop(procs["store"], signal.SIGTERM, timeout=20)
    db = Database(settings.db_path, read_only=True)
    try:
        check_store(db, ids)
    finally:
        db.close()
    clean = run_cli(env, "audit", "--quiet", "--key", key)
    assert "clean" in clean.stdout


def run_cli(env: dict[str, str], *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == expect, f"provenance {' '.join(args)} exited {out.returncode}: {out.stdout}{out.stderr}"
    return out


def check_store(db: Database, ids: set[str]) -> None:
    rows = db.fetch("SELECT event_id, count(*) FROM events GROUP BY 1 HAVING count(*) > 1")
    assert rows == []
    assert {r[0] for r in db.fetch("SELECT event_id FROM events")} == ids
    assert db.fetch("SELECT count(*) FROM duplicate_leaves")[0][0] == 0

    dead = db.fetch_dicts("SELECT error, source_offset FROM dead_letters")
    assert len(dead) == MALFORMED
    assert all(d["error"] and d["error"] != "unknown error" for d in dead)

    logs = [r[0] for r in db.fetch("SELECT DISTINCT log_id FROM events ORDER BY 1")]
    assert logs, "no logs"
    for log_id in logs:
        check_chain(db, log_id)


def test_bad_post_is_refused_with_field_errors_and_nothing_reaches_kafka(running: Any) -> None:
    settings, url, _ = running
    topic = settings.topics.name(settings.topics.events)
    before = end_offsets(settings, topic)
    good = {"event_id": "ok-1", "shipment_id": "S1", "event_type": "created", "event_time": "2026-01-01T00:00:00Z",
            "origin": "A", "destination": "B", "carrier": "C", "mode": "road"}
    bad = dict(good, event_id="bad-1", event_type="teleported", mode="warp")
    body = (json.dumps(good) + "\n" + json.dumps(bad) + "\n").encode()
    status, answer = http_json("POST", f"{url}/events", raw=body)
    assert status == 400
    fields = {f["field"] for f in answer["invalid"][0]["fields"]}
    assert answer["invalid"][0]["line"] == 2 and {"event_type", "mode"} <= fields
    for raw in (b"", b"\xff\xfe", b"not json", b"[1, 2]"):
        assert http_json("POST", f"{url}/events", raw=raw)[0] == 400
    assert end_offsets(settings, topic) == before

    status, answer = http_json("POST", f"{url}/events", good)
    assert status == 202 and answer["accepted"] == 1
    wait_for(lambda: http_json("GET", f"{url}/events/ok-1")[0] == 200, 60, "the posted event in the store")
    assert end_offsets(settings, topic) == before + 1
