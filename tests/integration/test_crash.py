"""Crash safety on the real embedded broker: workers killed and moved while events stream in.

The worker acks a record only after the block holding it was delivered to
`ledger.blocks`, whose last message per partition is the log's commit point.
These tests kill workers (SIGKILL and SIGTERM) at varied moments while a
rate-limited producer runs, restart them, and then check the outcome in DuckDB:
every valid event recorded exactly once, every malformed one dead-lettered,
every Kafka offset of the events topic accounted for, no duplicate leaf, no
fork, contiguous chains, and `provenance audit` clean.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import http_json, settings_env, wait_for
from ledger_checks import assert_audit_clean, check_chain

from pipeline.core.simulator import Fleet
from pipeline.procs import spawn, stop
from pipeline.producer import ProduceReport, produce_records
from pipeline.store.db import Database

pytestmark = pytest.mark.integration

VALID = 24_000
MALFORMED_SHARE = 0.01
RATE = 300.0  # events a second: production spans the kills and restarts below
# A restarted worker waits for the dead member's session to expire (broker_session_timeout)
# before it gets partitions; a kill during a restart makes it wait for two.
RESTART_TIMEOUT = 90
LANDED_TIMEOUT = 180
STALLED_POLLS = 45  # polls a second apart without any change: longer than a worker restart

_RESUMES = re.compile(r"(\S+/\d+) resumes after block")
_JUMP = re.compile(r"(\S+/\d+): (?:offset gap, expected (\d+) got (\d+)|resuming at offset (\d+), not (\d+))")
_ASSIGNED = "Setting newly assigned partitions"


# ---- data ---------------------------------------------------------------------------------


@dataclass
class Stream:
    records: list[tuple[bytes | None, bytes]]
    ids: set[str]
    malformed: int


class Producer:
    """Simulated events, rate-limited, in a thread, until `stop()`: workers are killed while it runs.

    Production is open-ended so that slow restarts on a loaded machine can never
    outlast it; what was sent is known exactly afterwards (`stream()`).
    """

    def __init__(self, settings: Any, seed: int, rate: float, limit: int) -> None:
        self.fleet = Fleet(seed, datetime(2026, 5, 4, tzinfo=timezone.utc), malformed_share=MALFORMED_SHARE)
        self.limit = limit
        self.sent: list[tuple[bytes | None, bytes, bool]] = []
        self.stopping = threading.Event()
        self.report: ProduceReport | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(settings, rate), daemon=True, name="producer")

    def _records(self) -> Any:
        for rec in self.fleet.records():
            if self.stopping.is_set() or len(self.sent) >= self.limit:
                return
            self.sent.append((rec.key, rec.value, rec.is_valid))
            yield rec.key, rec.value

    def _run(self, settings: Any, rate: float) -> None:
        try:
            self.report = produce_records(settings, self._records(), rate=rate, count=None, progress=False)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self.error = exc

    def start(self) -> Producer:
        self.thread.start()
        return self

    def stop(self, timeout: float) -> Stream:
        """Stop producing, wait for the last deliveries, and say what was sent."""
        self.stopping.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the producer did not finish within {timeout:.0f}s"
        if self.error is not None:
            raise self.error
        assert self.report is not None
        assert self.report.failed == 0 and self.report.sent == len(self.sent), self.report
        ids = [json.loads(value)["event_id"] for _, value, valid in self.sent if valid]
        assert len(set(ids)) == len(ids), "simulator repeated an event_id"
        return Stream([(k, v) for k, v, _ in self.sent], set(ids), sum(1 for *_, valid in self.sent if not valid))


# ---- processes ----------------------------------------------------------------------------


@dataclass
class Cluster:
    """The store and any number of workers as real processes, each incarnation with its own log."""

    settings: Any
    logs: Path
    env: dict[str, str]
    url: str
    store: subprocess.Popen[bytes] | None = None
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    incarnations: dict[str, int] = field(default_factory=dict)
    everything: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "pipeline.cli", *args]

    def start_store(self) -> None:
        self.store = spawn(self.cli("serve"), self.env, self.logs / "store.log")
        self.everything.append(("store", self.store))
        wait_for(lambda: http_json("GET", f"{self.url}/health")[0] == 200, 60, "the store's /health")

    def start_worker(self, name: str) -> Path:
        n = self.incarnations[name] = self.incarnations.get(name, 0) + 1
        log = self.worker_log(name, n)
        # faust makes its data directory in the working directory unless told otherwise.
        env = dict(self.env, FAUST_DATADIR=str(self.logs / f"{name}.{n}-faust-data"))
        proc = spawn(self.cli("worker", "--loglevel", "info"), env, log)
        self.workers[name] = proc
        self.everything.append((log.stem, proc))
        return log

    def worker_log(self, name: str, n: int | None = None) -> Path:
        return self.logs / f"{name}.{n or self.incarnations[name]}.log"

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.workers.pop(name)
        assert proc.poll() is None, f"{name} had already exited with {proc.returncode}"
        if sig == signal.SIGKILL:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
        else:
            stop(proc, sig, timeout=60)

    def resumed(self, name: str) -> set[str]:
        """Logs whose state the current incarnation of `name` loaded from ledger.blocks."""
        log = self.worker_log(name)
        return set(_RESUMES.findall(log.read_text(errors="replace"))) if log.exists() else set()

    def assignments(self, name: str) -> list[set[int]]:
        """The events-topic partitions of each assignment the current incarnation of `name` got, in order."""
        log = self.worker_log(name)
        text = log.read_text(errors="replace") if log.exists() else ""
        row = re.compile(r"\|\s*" + re.escape(self.settings.topics.name(self.settings.topics.events))
                         + r"\s*\|\s*\{([^}]*)\}")
        out = []
        for chunk in text.split(_ASSIGNED)[1:]:
            table = chunk.split(" for group ", 1)[0]
            found = row.search(table)
            out.append(parse_partitions(found.group(1)) if found else set())
        return out

    def owns(self, name: str) -> set[int]:
        got = self.assignments(name)
        return got[-1] if got else set()

    def tables(self) -> dict[str, int]:
        return dict(http_json("GET", f"{self.url}/health")[1]["tables"])

    def events(self) -> int:
        return self.tables()["events"]

    def stop_all(self) -> None:
        for proc in self.workers.values():
            stop(proc, signal.SIGTERM, timeout=30)
        self.workers.clear()
        stop(self.store, signal.SIGTERM, timeout=30)

    def offset_jumps(self) -> list[tuple[str, str, int, int]]:
        """(worker log, log_id, expected, got) wherever a worker's offset gate saw a record past the next one."""
        out = []
        for path in sorted(self.logs.glob("worker-*.log")):
            for log_id, expected, got, got2, expected2 in _JUMP.findall(path.read_text(errors="replace")):
                out.append((path.stem, log_id, int(expected or expected2), int(got or got2)))
        return out


def parse_partitions(text: str) -> set[int]:
    """faust's partition set notation: `0-1`, `0, 2-3`."""
    out: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, _, last = part.partition("-")
        out.update(range(int(first), int(last or first) + 1))
    return out


@pytest.fixture
def cluster(pipeline_settings: Any, tmp_path: Path) -> Any:
    env = settings_env(pipeline_settings)
    c = Cluster(pipeline_settings, tmp_path, env, f"http://127.0.0.1:{pipeline_settings.store.port}")
    try:
        yield c
    finally:
        for _, proc in c.everything:
            stop(proc, signal.SIGTERM, timeout=20)
        for name, _ in c.everything:
            log = tmp_path / f"{name}.log"
            if log.exists():
                sys.stderr.write(f"--- {log.name} (tail) ---\n{log.read_text(errors='replace')[-3000:]}\n")


def wait_events(cluster: Cluster, at_least: int, what: str, timeout: float = RESTART_TIMEOUT) -> None:
    wait_for(lambda: cluster.events() >= at_least, timeout, f"{at_least} events in the store ({what})")


def wait_resumed(cluster: Cluster, name: str, what: str) -> set[str]:
    """Until the current incarnation of `name` has loaded at least one partition's state."""
    return set(wait_for(lambda: cluster.resumed(name), RESTART_TIMEOUT, f"{name} to take partitions ({what})"))


# ---- the outcome --------------------------------------------------------------------------


def wait_landed(cluster: Cluster, stream: Stream) -> str:
    """Until every event and dead letter is in DuckDB and sealed, or nothing moves any more.

    A stall does not fail here: the checks after it say which offsets are missing.
    Returns the verifier key.
    """
    valid, bad = len(stream.ids), stream.malformed
    seen: list[tuple[int, int, int]] = []

    def landed_or_stalled() -> bool:
        t = cluster.tables()
        seen.append((t["events"], t["dead_letters"], t["blocks"]))
        if t["events"] >= valid and t["dead_letters"] >= bad:
            return True
        return len(seen) > STALLED_POLLS and len(set(seen[-STALLED_POLLS:])) == 1

    wait_for(landed_or_stalled, LANDED_TIMEOUT, f"{valid} events and {bad} dead letters in DuckDB", interval=1.0)

    def all_sealed() -> bool:
        status, body = http_json("POST", f"{cluster.url}/sql", {"query":
            "SELECT (SELECT count(*) FROM events) = (SELECT coalesce(sum(m), 0) FROM"
            " (SELECT max(tree_size) AS m FROM blocks GROUP BY log_id))"})
        return status == 200 and body["rows"][0][0] is True

    wait_for(all_sealed, 60, "every event to be inside a sealed block")
    with urllib.request.urlopen(f"{cluster.url}/checkpoints/key", timeout=10) as resp:
        return str(resp.read().decode().strip())


def topic_offsets(settings: Any, expected: int) -> dict[int, list[int]]:
    """The offsets of every record in the events topic, per partition, read from the beginning.

    Read rather than asked for: this broker's ListOffsets answers one past the first
    record of the last batch written, not one past the last record.
    """
    from kafka import KafkaConsumer, TopicPartition

    topic = settings.topics.name(settings.topics.events)
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: dict[int, list[int]] = {tp.partition: [] for tp in tps}
        idle = 0
        for _ in range(300):  # bounded: ends after three empty polls once `expected` were read
            polled = consumer.poll(timeout_ms=200, max_records=10_000)
            for tp, messages in polled.items():
                out[tp.partition] += [m.offset for m in messages]
            idle = 0 if polled else idle + 1
            if idle >= 3 and sum(map(len, out.values())) >= expected:
                break
        return out
    finally:
        consumer.close()


def check_outcome(cluster: Cluster, stream: Stream, key: str) -> None:
    """After the store stopped: exactly once, nothing lost, no fork, chains contiguous, audit clean."""
    settings = cluster.settings
    offsets = topic_offsets(settings, len(stream.records))
    assert sum(map(len, offsets.values())) == len(stream.records), "the events topic holds other than was produced"
    events_topic = settings.topics.name(settings.topics.events)

    db = Database(settings.db_path, read_only=True)
    try:
        twice = db.fetch("SELECT event_id, count(*) FROM events GROUP BY 1 HAVING count(*) > 1")
        assert twice == [], f"events recorded twice: {twice[:5]}"
        recorded = {r[0] for r in db.fetch("SELECT event_id FROM events")}
        missing, extra = stream.ids - recorded, recorded - stream.ids
        assert not missing and not extra, f"{len(missing)} events lost (e.g. {sorted(missing)[:3]}), {len(extra)} unknown"
        duplicate_leaves = db.fetch("SELECT log_id, leaf_index, event_id FROM duplicate_leaves ORDER BY 1, 2")
        assert duplicate_leaves == [], f"{len(duplicate_leaves)} duplicate leaves, e.g. {duplicate_leaves[:5]}"
        conflicts = db.fetch("SELECT log_id, height, block_hash FROM block_conflicts ORDER BY 1, 2")
        assert conflicts == [], f"forks: {conflicts[:5]}"
        dead = db.fetch("SELECT count(*) FROM dead_letters")[0][0]
        assert dead == stream.malformed

        # Every offset of the events topic is a leaf or a dead letter, exactly once.
        for p, in_topic in sorted(offsets.items()):
            assert in_topic == list(range(len(in_topic))), f"partition {p}: offsets not contiguous"
            end = len(in_topic)
            log_id = f"{events_topic}/{p}"
            leaves = [r[0] for r in db.fetch("SELECT kafka_offset FROM events WHERE log_id = ? ORDER BY 1", [log_id])]
            rejected = [r[0] for r in db.fetch(
                "SELECT source_offset FROM dead_letters WHERE source_topic = ? AND source_partition = ? ORDER BY 1",
                [events_topic, p])]
            seen = sorted(leaves + rejected)
            assert seen == list(range(end)), (
                f"{log_id}: offsets 0..{end - 1} not each seen once "
                f"(first missing: {next((o for o in range(end) if o not in set(seen)), None)})")

        # The committed offset may pass the last block only over dead-lettered records.
        for worker, log_id, expected, got in cluster.offset_jumps():
            p = int(log_id.rsplit("/", 1)[1])
            skipped = {r[0] for r in db.fetch(
                "SELECT source_offset FROM dead_letters WHERE source_topic = ? AND source_partition = ?"
                " AND source_offset >= ? AND source_offset < ?", [events_topic, p, expected, got])}
            assert skipped == set(range(expected, got)), (
                f"{worker} resumed {log_id} at offset {got}, not {expected}, over records that are not dead letters")

        logs = [r[0] for r in db.fetch("SELECT DISTINCT log_id FROM events ORDER BY 1")]
        assert len(logs) == len(offsets)
        for log_id in logs:
            check_chain(db, log_id)
    finally:
        db.close()

    assert_audit_clean(settings.db_path, key, cluster.env)


# ---- the tests ----------------------------------------------------------------------------


def progress(cluster: Cluster, events: int, what: str, rng: random.Random) -> None:
    """Until `events` more events are in the store, then a random moment more.

    Relative, so every kill comes after the restarted worker did real work, and
    the random extra lands it anywhere in a block's life (appending, sealing,
    publishing, acking, committing).
    """
    target = cluster.events() + events
    wait_events(cluster, target, what)
    threading.Event().wait(rng.uniform(0.0, 1.5))


def test_kill_9_under_load(cluster: Cluster) -> None:
    """One worker, killed with SIGKILL four times while events stream in, restarted each time."""
    rng = random.Random(5)
    step = VALID // 10
    cluster.start_store()
    cluster.start_worker("worker-a")
    producer = Producer(cluster.settings, seed=23, rate=RATE, limit=4 * VALID).start()

    progress(cluster, step, "before the first kill", rng)
    cluster.kill("worker-a")
    cluster.start_worker("worker-a")
    # Killed once the restarted worker caught up on what was produced while it was down ...
    progress(cluster, step, "before the second kill", rng)
    cluster.kill("worker-a")
    cluster.start_worker("worker-a")
    # ... once while it has just loaded a partition's state and is replaying from the committed offset ...
    wait_resumed(cluster, "worker-a", "before the third kill")
    cluster.kill("worker-a")
    cluster.start_worker("worker-a")
    # ... and once more under load.
    progress(cluster, step, "before the fourth kill", rng)
    cluster.kill("worker-a")
    cluster.start_worker("worker-a")
    progress(cluster, step, "after the last restart", rng)

    stream = producer.stop(LANDED_TIMEOUT)
    key = wait_landed(cluster, stream)
    tables = cluster.tables()
    cluster.stop_all()
    assert tables["duplicate_leaves"] == 0 and tables["block_conflicts"] == 0, tables
    check_outcome(cluster, stream, key)


def test_partitions_move_between_two_workers(cluster: Cluster) -> None:
    """Two workers in one group: one leaves (SIGTERM, later SIGKILL) and comes back, under load."""
    valid = VALID * 3 // 4
    rng = random.Random(7)
    step = valid // 12
    every = set(range(cluster.settings.topics.partitions))
    cluster.start_store()
    cluster.start_worker("worker-a")
    # worker-a first holds every partition, so worker-b's arrival is a real move.
    wait_for(lambda: cluster.owns("worker-a") == every, RESTART_TIMEOUT, "worker-a to get every partition")
    cluster.start_worker("worker-b")
    producer = Producer(cluster.settings, seed=31, rate=RATE, limit=4 * valid).start()

    def split() -> bool:
        b = cluster.owns("worker-b")
        return bool(b) and b != every and cluster.owns("worker-a") == every - b

    for round_, sig in enumerate((signal.SIGTERM, signal.SIGKILL), 1):
        what = f"round {round_}, {signal.Signals(sig).name}"
        wait_for(split, RESTART_TIMEOUT, f"the partitions to be split between worker-a and worker-b ({what})")
        # Longer than the burst that follows every rebalance (consumption pauses while the group re-forms).
        progress(cluster, 2 * step, f"both workers ({what})", rng)
        rebalances = len(cluster.assignments("worker-a"))
        cluster.kill("worker-b", sig)
        # worker-b's partitions move to worker-a ...
        wait_for(lambda: len(cluster.assignments("worker-a")) > rebalances and cluster.owns("worker-a") == every,
                 RESTART_TIMEOUT, f"worker-b's partitions to move to worker-a ({what})")
        progress(cluster, step, f"worker-a alone ({what})", rng)
        # ... and back to worker-b when it is started again.
        cluster.start_worker("worker-b")

    wait_for(split, RESTART_TIMEOUT, "worker-b to take partitions back")
    progress(cluster, step, "both workers again", rng)
    stream = producer.stop(LANDED_TIMEOUT)
    key = wait_landed(cluster, stream)
    tables = cluster.tables()
    cluster.stop_all()
    assert tables["duplicate_leaves"] == 0 and tables["block_conflicts"] == 0, tables
    check_outcome(cluster, stream, key)
