"""Faults under load at the batch path's speed: every case ends with the ledger exact.

Real processes on the real embedded broker. After each case `provenance audit`
is clean, every produced event is in `events` exactly once, every offset of the
events topic is a leaf or a dead letter, and no chain forks (`check_outcome`).
Each case is bounded: every wait has a timeout, and production stops after a
fixed count. The two-workers-with-a-rebalance case is
`test_crash.test_partitions_move_between_two_workers`.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading

import pytest
from conftest import wait_for

from integration.test_crash import Cluster, Producer, check_outcome, cluster, wait_events, wait_landed  # noqa: F401

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
    """Static membership: each restart takes the partitions back without waiting for a session to expire."""
    rng = random.Random(20)
    cluster.env["PROVENANCE_WORKER__INSTANCE_ID"] = "worker-a"
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


def test_kill_9_the_analytics_process(cluster: Cluster) -> None:
    """The analytics process reads ledger.entries only: killing it never touches the ledger."""
    env = dict(cluster.env, PROVENANCE_ANALYTICS__GROUP_ID=f"{cluster.settings.worker.group_id}-analytics")
    cluster.start_store()
    cluster.start_worker("worker-a")
    producer = Producer(cluster.settings, seed=47, rate=RATE, limit=LIMIT).start()

    def start_analytics(n: int) -> subprocess.Popen[bytes]:
        from pipeline.procs import spawn

        proc = spawn([sys.executable, "-m", "pipeline.cli", "analytics"], env, cluster.logs / f"analytics.{n}.log")
        cluster.everything.append((f"analytics.{n}", proc))
        return proc

    analytics = start_analytics(1)
    for round_ in range(2):
        wait_events(cluster, cluster.events() + 800, f"before analytics kill {round_ + 1}")
        assert analytics.poll() is None, f"analytics exited with {analytics.returncode}"
        os.kill(analytics.pid, signal.SIGKILL)
        analytics.wait(30)
        analytics = start_analytics(round_ + 2)
    wait_events(cluster, cluster.events() + 800, "after the last analytics restart")
    wait_for(lambda: analytics.poll() is None, 5, "the analytics process to stay up")
    stop_and_check(cluster, producer)
    analytics.send_signal(signal.SIGTERM)
    analytics.wait(30)
