"""Faults under load at the batch path's speed: every case ends with the ledger exact.

Real processes on the real embedded broker. After each case `provenance audit`
is clean, every produced event is in `events` exactly once, every offset of the
events topic is a leaf or a dead letter, and no chain forks (`check_outcome`).
Each case is bounded: every wait has a timeout, and production stops after a
fixed count. The two-workers-with-a-rebalance case is
`test_crash.test_partitions_move_between_two_workers`. Restarting the embedded
broker loses what it held in memory; that case checks what must survive it
(`test_restart_the_embedded_broker`).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import http_json, settings_env, wait_for
from ledger_checks import assert_audit_clean, check_chain

from integration.test_crash import (  # noqa: F401
    Cluster,
    Producer,
    check_outcome,
    cluster,
    topic_offsets,
    wait_events,
    wait_landed,
)

pytestmark = pytest.mark.integration

RATE = 500.0  # events a second: each case spans many blocks per partition, and the backlog stays small
LIMIT = 150_000  # production stops at the end of each case long before this


def stop_and_check(c: Cluster, producer: Producer) -> None:
    stream = producer.stop(180)
    key = wait_landed(c, stream)
    tables = c.tables()
    c.stop_all()
    assert tables["duplicate_leaves"] == 0 and tables["block_conflicts"] == 0, tables
    check_outcome(c, stream, key)


def test_kill_9_the_worker_20_times_mid_block(cluster: Cluster) -> None:
    """The default dynamic membership: each restart rejoins in about 1 s (a static member waits 6 s here).

    Static membership is exercised by `test_restart_the_embedded_broker`.
    """
    rng = random.Random(20)
    cluster.env["PROVENANCE_LEDGER__MAX_EVENTS"] = "200"
    cluster.start_store()
    cluster.start_worker("worker-a")
    producer = Producer(cluster.settings, seed=41, rate=RATE, limit=LIMIT).start()
    for kill in range(20):
        # Some progress by this incarnation, then a moment anywhere in a block's life.
        wait_events(cluster, cluster.events() + 200, f"before kill {kill + 1}")
        threading.Event().wait(rng.uniform(0.0, 0.6))
        cluster.kill("worker-a")
        cluster.start_worker("worker-a")
    wait_events(cluster, cluster.events() + 500, "after the last restart")
    stop_and_check(cluster, producer)


def test_kill_9_the_store_and_restart_it(cluster: Cluster) -> None:
    cluster.start_store()
    cluster.start_worker("worker-a")
    producer = Producer(cluster.settings, seed=43, rate=RATE, limit=LIMIT).start()
    for round_ in range(3):
        wait_events(cluster, cluster.events() + 800, f"before store kill {round_ + 1}")
        assert cluster.store is not None
        os.kill(cluster.store.pid, signal.SIGKILL)
        cluster.store.wait(30)
        threading.Event().wait(1.0)  # the worker keeps sealing while the store is down
        cluster.start_store()
    wait_events(cluster, cluster.events() + 800, "after the last store restart")
    stop_and_check(cluster, producer)


def start_analytics(c: Cluster, n: int) -> subprocess.Popen[bytes]:
    """The analytics process (incarnation n) as a real process, in a consumer group of this test's own."""
    from pipeline.procs import spawn

    env = dict(c.env, PROVENANCE_ANALYTICS__GROUP_ID=f"{c.settings.worker.group_id}-analytics")
    proc = spawn([sys.executable, "-m", "pipeline.cli", "analytics"], env, c.logs / f"analytics.{n}.log")
    c.everything.append((f"analytics.{n}", proc))
    return proc


def analytics_consumed(c: Cluster) -> int:
    """Offsets of ledger.entries the analytics group committed on the broker now (0 if none)."""
    from kafka import KafkaConsumer, TopicPartition

    entries = c.settings.topics.name(c.settings.topics.entries)
    consumer = KafkaConsumer(bootstrap_servers=c.settings.kafka, group_id=f"{c.settings.worker.group_id}-analytics",
                             enable_auto_commit=False, client_id="test-offsets")
    try:
        committed = (consumer.committed(TopicPartition(entries, p)) for p in range(c.settings.topics.ledger_partitions))
        return sum(offset or 0 for offset in committed)
    finally:
        consumer.close()


def test_kill_9_the_analytics_process(cluster: Cluster) -> None:
    """The analytics process reads ledger.entries only: killing it never touches the ledger."""
    cluster.start_store()
    cluster.start_worker("worker-a")
    producer = Producer(cluster.settings, seed=47, rate=RATE, limit=LIMIT).start()

    analytics = start_analytics(cluster, 1)
    for round_ in range(2):
        wait_events(cluster, cluster.events() + 800, f"before analytics kill {round_ + 1}")
        assert analytics.poll() is None, f"analytics exited with {analytics.returncode}"
        os.kill(analytics.pid, signal.SIGKILL)
        analytics.wait(30)
        analytics = start_analytics(cluster, round_ + 2)
    wait_events(cluster, cluster.events() + 800, "after the last analytics restart")
    wait_for(lambda: analytics.poll() is None, 5, "the analytics process to stay up")
    stop_and_check(cluster, producer)
    analytics.send_signal(signal.SIGTERM)
    analytics.wait(30)


# ---- the embedded broker restarts ---------------------------------------------------------


def _supervise(c: Cluster, name: str, exits: list[tuple[int, str]], until: Any, timeout: float) -> None:
    """As a supervisor would: restart `name` whenever it exits, noting each exit code and log, until `until()`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = c.workers.get(name)
        if proc is not None and proc.poll() is not None:
            exits.append((proc.returncode, c.worker_log(name).read_text(errors="replace")))
            c.workers.pop(name)
            time.sleep(1.0)
            c.start_worker(name)
        try:
            if until():
                return
        except Exception:  # noqa: BLE001 - the store may be between answers
            pass
        time.sleep(0.25)
    pytest.fail(f"{name} did not recover within {timeout:.0f}s; exits: {[code for code, _ in exits]}")


def test_restart_the_embedded_broker(pipeline_settings: Any, tmp_path: Path) -> None:
    """kill -9 the in-memory broker under load and start it again empty, on the same port.

    Lost with it: the topics, the consumer groups and their offsets, so the events
    it held that were not in DuckDB yet. Kept: everything DuckDB recorded. The
    worker and the store exit 70 at once, naming the lost broker (so nothing is
    resent to its successor). Restarted, the worker continues each log in a new
    epoch (`<topic>@1/<p>`, height 0) instead of forking the old one, even from an
    empty data folder (the store's latest checkpoint names the old logs); the store
    drops its old offsets, reads the new topics from their start, and reports the
    reset; every log stays verifiable and the audit is clean. The analytics process
    exits 70 with them and, restarted, consumes the new cluster's ledger.entries.
    """
    from pipeline.broker import EmbeddedBroker, free_port

    port = free_port()
    settings = pipeline_settings.model_copy(update={"kafka": f"127.0.0.1:{port}"})
    first = EmbeddedBroker(settings, port=port, log_file=tmp_path / "broker.1.log").start()
    env = settings_env(settings)
    env["PROVENANCE_WORKER__INSTANCE_ID"] = "worker-a"
    c = Cluster(settings, tmp_path, env, f"http://127.0.0.1:{settings.store.port}")
    second = None
    try:
        c.start_store()
        c.start_worker("worker-a")
        analytics = start_analytics(c, 1)
        before = Producer(settings, seed=53, rate=RATE, limit=LIMIT).start()
        wait_events(c, 1500, "before the broker restart")
        stream1 = before.stop(60)  # every event of it is on the broker: what it loses is known below
        recorded_at_kill = _event_ids(c)
        assert first.process is not None
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(10)
        first.process = None

        # Loud: both exit 70 at once, naming the lost broker, before anything could reach a successor.
        store, worker = c.store, c.workers.pop("worker-a")
        assert store is not None
        for proc, log in ((worker, c.worker_log("worker-a")), (store, tmp_path / "store.log"),
                          (analytics, tmp_path / "analytics.1.log")):
            assert proc.wait(30) == 70, f"{log.name}: exit {proc.returncode}"
            assert "the connection to the in-memory broker" in log.read_text(errors="replace"), log.name
        second = EmbeddedBroker(settings, port=port, log_file=tmp_path / "broker.2.log").start()  # topics return

        c.start_store()
        health = http_json("GET", f"{c.url}/health")[1]
        assert health["broker"]["last_reset"]["to"] == second.cluster_id, health["broker"]
        assert health["broker"]["last_reset"]["from"] == first.cluster_id
        # The worker comes back on another machine: nothing of its data folder. The store's checkpoint,
        # published again at its start, tells it which logs exist, so it still starts a new epoch.
        points = settings.data_dir / "worker" / "commit-points"
        points.rename(points.with_name("commit-points.lost"))
        c.start_worker("worker-a")
        analytics = start_analytics(c, 2)
        after = Producer(settings, seed=59, rate=RATE, limit=LIMIT).start()
        exits: list[tuple[int, str]] = []
        _supervise(c, "worker-a", exits, lambda: "a new epoch" in c.worker_log("worker-a").read_text(), 90)
        wait_events(c, len(recorded_at_kill) + 1000, "after the broker restart")
        stream2 = after.stop(120)
        key = wait_landed(c, _Remaining(stream2, recorded_at_kill))
        assert c.workers["worker-a"].poll() is None and not exits, [code for code, _ in exits]
        # Restarted against the new cluster, the analytics process reads its ledger.entries and stays up.
        wait_for(lambda: analytics_consumed(c) > 0, 60, "the restarted analytics process to consume")
        assert analytics.poll() is None, f"analytics exited with {analytics.returncode}"
        c.stop_all()
        store_log = (tmp_path / "store.log").read_text(errors="replace")
        assert "is a new cluster" in store_log
        _check_epochs(c, stream1, stream2, recorded_at_kill, key)  # the new broker still up: its topic is read
    finally:
        from pipeline.procs import stop

        for _, proc in c.everything:
            stop(proc, signal.SIGTERM, timeout=20)
        for b in (first, second):
            if b is not None:
                b.stop()


class _Remaining:
    """The stream `wait_landed` waits for: the old events recorded before the kill plus the new stream."""

    def __init__(self, stream: Any, kept: set[str]) -> None:
        self.ids = set(stream.ids) | kept
        self.malformed = stream.malformed


def _event_ids(c: Cluster) -> set[str]:
    status, body = http_json("POST", f"{c.url}/sql", {"query": "SELECT event_id FROM events"})
    assert status == 200 and not body["truncated"], body
    return {row[0] for row in body["rows"]}


def _check_epochs(c: Cluster, stream1: Any, stream2: Any, recorded_at_kill: set[str], key: str) -> None:
    """Nothing recorded lost, every new event once, each partition two logs, none forked, audit clean."""
    from pipeline.store.db import Database

    settings = c.settings
    topic = settings.topics.name(settings.topics.events)
    db = Database(settings.db_path, read_only=True)
    try:
        assert db.fetch("SELECT event_id FROM events GROUP BY 1 HAVING count(*) > 1") == []
        assert db.fetch("SELECT count(*) FROM duplicate_leaves")[0][0] == 0
        assert db.fetch("SELECT count(*) FROM block_conflicts")[0][0] == 0, "a log forked"
        recorded = {r[0] for r in db.fetch("SELECT event_id FROM events")}
        assert recorded_at_kill <= recorded, "events DuckDB had recorded were lost"
        assert stream2.ids <= recorded, f"{len(stream2.ids - recorded)} events produced after the restart lost"
        assert recorded <= stream1.ids | stream2.ids
        # What the broker held of stream1 beyond `recorded_at_kill` (the backlog at the kill) is lost with it.
        logs = {r[0] for r in db.fetch("SELECT DISTINCT log_id FROM blocks")}
        partitions = range(settings.topics.partitions)
        assert logs == {f"{topic}/{p}" for p in partitions} | {f"{topic}@1/{p}" for p in partitions}, logs
        for log_id in sorted(logs):
            check_chain(db, log_id)
        # The new epoch numbers the new topic's offsets: each valid record of it is a leaf once.
        offsets = topic_offsets(settings, len(stream2.records))
        leaves = sum(db.fetch("SELECT count(*) FROM events WHERE log_id = ?", [f"{topic}@1/{p}"])[0][0]
                     for p in partitions)
        assert leaves == len(stream2.ids) and sum(map(len, offsets.values())) == len(stream2.records)
    finally:
        db.close()
    assert_audit_clean(settings.db_path, key, c.env)
