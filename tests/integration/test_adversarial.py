"""Hostile producers against the real broker, worker and store: one bad record never stops the ledger.

1. A few hundred hostile records (deep nesting, duplicate keys, BOMs, UTF-16,
   NaN, lone surrogates, impossible times, ...) and then valid events: every
   record lands in `events` or `dead_letters` exactly once, each dead letter
   with its reason, the valid events after them are sealed, the worker lives.
2. A worker whose agent crashes exits with status 70, the error in its log; a
   restarted worker replays the record from the committed offset and goes on.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import http_json, settings_env, wait_for
from factories import as_bytes, make_events
from hostile import HOSTILE, hostile_records

from pipeline.fatal import EXIT_CRASHED
from pipeline.procs import spawn, stop
from pipeline.producer import produce_records

pytestmark = pytest.mark.integration

HOSTILE_COUNT = 300
VALID_AFTER = 200
KAFKA_SAFE = 512 * 1024  # bigger records are refused by the producer before they reach a topic

CRASHING_WORKER = """
import sys
from pipeline.worker import sequencer

handle = sequencer.LedgerSequencer.handle_partition

async def crashing(self, p, records, *args, **kwargs):
    if any(r.value == b"CRASH" for r in records):
        raise RuntimeError("injected agent failure")
    return await handle(self, p, records, *args, **kwargs)

sequencer.LedgerSequencer.handle_partition = crashing
from pipeline.cli import main
sys.argv = ["provenance", "worker"]
main()
"""


def sql(url: str, query: str) -> list[list[Any]]:
    status, body = http_json("POST", f"{url}/sql", {"query": query})
    assert status == 200, body
    return body["rows"]


@pytest.fixture
def store(pipeline_settings: Any, tmp_path: Path) -> Any:
    env = {**settings_env(pipeline_settings), "PROVENANCE_STORE__STALL_AFTER": "3"}
    proc = spawn([sys.executable, "-m", "pipeline.cli", "serve"], env, tmp_path / "store.log")
    url = f"http://127.0.0.1:{pipeline_settings.store.port}"
    try:
        wait_for(lambda: http_json("GET", f"{url}/health")[0] == 200, 60, "the store's /health")
        yield url
    finally:
        stop(proc, signal.SIGTERM, timeout=20)


def worker(settings: Any, log: Path, script: str | None = None) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-c", script] if script else [sys.executable, "-m", "pipeline.cli", "worker"]
    return spawn(args, settings_env(settings), log)


def show_logs(tmp_path: Path) -> None:
    for log in sorted(tmp_path.glob("*.log")):
        sys.stderr.write(f"--- {log.name} (tail) ---\n{log.read_text(errors='replace')[-3000:]}\n")


def test_hostile_records_are_dead_lettered_once_and_the_ledger_goes_on(pipeline_settings: Any, store: str,
                                                                     tmp_path: Path) -> None:
    settings, url = pipeline_settings, store
    proc = worker(settings, tmp_path / "worker.log")
    try:
        hostile = [(name, raw) for name, raw, _ in hostile_records(HOSTILE_COUNT * 2) if len(raw) <= KAFKA_SAFE]
        hostile = hostile[:HOSTILE_COUNT]
        events = make_events(VALID_AFTER, seed=23)
        records = [(None, raw) for _, raw in hostile] + [(e["shipment_id"].encode(), as_bytes(e)) for e in events]
        report = produce_records(settings, records, rate=None, count=None, progress=False)
        assert report.sent == len(records) and report.failed == 0

        def landed() -> bool:
            tables = http_json("GET", f"{url}/health")[1]["tables"]
            return tables["events"] == VALID_AFTER and tables["dead_letters"] == len(hostile)

        wait_for(landed, 120, f"{VALID_AFTER} events and {len(hostile)} dead letters in DuckDB")
        wait_for(lambda: sql(url, "SELECT (SELECT count(*) FROM events) = (SELECT coalesce(sum(m), 0) FROM"
                                  " (SELECT max(tree_size) AS m FROM blocks GROUP BY log_id))")[0][0] is True,
                 30, "the valid events after the hostile ones to be sealed")
        assert proc.poll() is None, "the worker died"
        assert http_json("GET", f"{url}/health")[0] == 200

        # Each hostile record exactly once, with its own reason; the valid ones exactly once in events.
        rows = sql(url, "SELECT source_partition, source_offset, count(*), any_value(error) FROM dead_letters "
                        "GROUP BY 1, 2")
        assert len(rows) == len(hostile) and all(r[2] == 1 for r in rows)
        reasons = [r[3] for r in rows]
        for name, fragment in {n: HOSTILE[n][1] for n, _ in hostile}.items():
            assert any(fragment in r for r in reasons), (name, fragment)
        assert sorted(r[0] for r in sql(url, "SELECT event_id FROM events")) == sorted(e["event_id"] for e in events)
    except BaseException:
        show_logs(tmp_path)
        raise
    finally:
        stop(proc, signal.SIGTERM, timeout=20)


def test_a_crashed_agent_exits_70_and_a_restart_replays_the_record(pipeline_settings: Any, store: str,
                                                                  tmp_path: Path) -> None:
    settings, url = pipeline_settings, store
    events = make_events(40, seed=29)
    before, after = events[:20], events[20:]
    crashing = worker(settings, tmp_path / "crashing-worker.log", CRASHING_WORKER)
    restarted = None
    try:
        produce_records(settings, [(e["shipment_id"].encode(), as_bytes(e)) for e in before], progress=False)
        wait_for(lambda: http_json("GET", f"{url}/health")[1]["tables"]["events"] == 20, 90, "the first events")
        produce_records(settings, [(b"k", b"CRASH")] + [(e["shipment_id"].encode(), as_bytes(e)) for e in after],
                        progress=False)
        code = crashing.wait(60)
        assert code == EXIT_CRASHED
        log = (tmp_path / "crashing-worker.log").read_text(errors="replace")
        assert "crashed (RuntimeError: injected agent failure)" in log and f"status {EXIT_CRASHED}" in log

        # Nobody consumes the events topic now, and records wait there: the store says so.
        health = wait_for(lambda: (lambda h: h if h["status"] == "degraded" else None)(
            http_json("GET", f"{url}/health")[1]), 30, "/health to report the stalled events topic")
        events_topic = settings.topics.name(settings.topics.events)
        assert any(r.startswith(f"{events_topic}: ") and "the worker has not advanced" in r
                   for r in health["reasons"]), health

        # What a supervisor does: start it again. The record is replayed from the committed offset
        # (here it is dead-lettered: it is not JSON), and everything after it is sealed.
        restarted = worker(settings, tmp_path / "worker.log")
        wait_for(lambda: http_json("GET", f"{url}/health")[1]["tables"]["events"] == 40, 120,
                 "the events after the crash")
        rows = wait_for(lambda: sql(url, "SELECT error FROM dead_letters"), 30, "the replayed record's dead letter")
        assert len(rows) == 1 and "not JSON" in rows[0][0]
        assert restarted.poll() is None
        wait_for(lambda: http_json("GET", f"{url}/health")[1]["status"] == "ok", 30, "/health to recover")
    except BaseException:
        show_logs(tmp_path)
        raise
    finally:
        stop(crashing, signal.SIGTERM, timeout=10)
        stop(restarted, signal.SIGTERM, timeout=20)
