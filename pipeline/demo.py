"""`provenance demo`: broker, worker, store and simulated fleet as real processes on one machine.

The demo is an orchestrator only: every part it starts is the same command a
user would run by hand (`provenance worker`, `serve`, `produce`), so what the
demo shows is what production runs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.broker import EmbeddedBroker, free_port
from pipeline.errors import PipelineError
from pipeline.procs import spawn, stop
from pipeline.settings import Settings


BACKFILL_DAYS = 21


@dataclass
class Status:
    produced: int = 0
    accepted: int = 0
    dead_lettered: int = 0
    blocks: int = 0
    checkpoints: int = 0
    cosigned: int = 0
    anomalies: int = 0

    def line(self, elapsed: float) -> str:
        return (f"[{elapsed:5.0f}s] produced {self.produced:,}  accepted {self.accepted:,}  "
                f"dead-lettered {self.dead_lettered:,}  blocks {self.blocks:,}  checkpoints {self.checkpoints:,}"
                f" (witnessed {self.cosigned:,})  anomalies {self.anomalies:,}")


def _child_env(settings: Settings, bootstrap: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "PROVENANCE_KAFKA": bootstrap,
        "PROVENANCE_DATA_DIR": str(settings.data_dir.resolve()),
        "PROVENANCE_STORE__PORT": str(settings.store.port),
        "PROVENANCE_STORE__HOST": settings.store.host,
        "PROVENANCE_STORE__DB_FILE": str(settings.db_path.resolve()),
        "PYTHONUNBUFFERED": "1",
    })
    return env


def _get(url: str, timeout: float = 5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


class _Produced:
    """Records on the events topic: the sum of its partitions' end offsets, through one consumer."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from kafka import KafkaConsumer

        self.topic = topic
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id="provenance-demo", group_id=None,
                                      enable_auto_commit=False)

    def __call__(self) -> int:
        from kafka import TopicPartition

        parts = self.consumer.partitions_for_topic(self.topic) or set()
        ends = self.consumer.end_offsets([TopicPartition(self.topic, p) for p in parts])
        return int(sum(ends.values()))

    def close(self) -> None:
        self.consumer.close()


def _status(url: str, produced: _Produced) -> Status:
    t = _get(f"{url}/health")["tables"]
    return Status(produced(), t["events"] + t["duplicate_leaves"], t["dead_letters"], t["blocks"],
                  t["checkpoints"], t["cosigned_checkpoints"], t.get("anomalies", 0))


def run_demo(settings: Settings, duration: float | None, rate: float, seed: int, workers: int = 1) -> int:
    """Run until Ctrl-C or `duration`; return the exit code."""
    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    logs = data / "logs"
    logs.mkdir(exist_ok=True)
    # A new in-memory broker is a new cluster: logs the DuckDB file holds from earlier runs continue in
    # a new epoch (the heights the workers noted in data/worker/commit-points say which).
    cli = [sys.executable, "-m", "pipeline.cli"]
    broker = EmbeddedBroker(settings, log_file=logs / "broker.log")
    children: dict[str, Any] = {}
    interrupted = False
    started = time.monotonic()
    print("starting the embedded broker ...", flush=True)
    broker.start()
    try:
        env = _child_env(settings, broker.bootstrap)
        print(f"broker at {broker.bootstrap}; starting worker and store (logs in {logs}) ...", flush=True)
        # Workers form one consumer group: partitions are shared out, one core each at most.
        # Each worker and the analytics process serve Prometheus /metrics on a port of their own.
        exporters = {f"worker-{n}": free_port() for n in range(workers)} | {"analytics": free_port()}
        for n in range(workers):
            children[f"worker-{n}"] = spawn([*cli, "worker"], env | {
                "PROVENANCE_METRICS__WORKER_PORT": str(exporters[f"worker-{n}"])}, logs / f"worker-{n}.log")
        children["store"] = spawn([*cli, "serve"], env, logs / "store.log")
        # The models read the sealed stream in their own consumer group.
        children["analytics"] = spawn([*cli, "analytics"], env | {
            "PROVENANCE_METRICS__ANALYTICS_PORT": str(exporters["analytics"])}, logs / "analytics.log")
        url = _wait_for_store(settings, children["store"], logs / "store.log")
        producer_env = dict(env, PROVENANCE_PRODUCER__MALFORMED_SHARE=str(max(settings.producer.malformed_share, 0.01)))
        # Three weeks of history first, through the ledger like every event, so the forecasts have demand to fit.
        children["producer"] = spawn([*cli, "produce", "--simulate", "--rate", str(rate), "--seed", str(seed), "--quiet",
                                      "--anomalies", "--backfill", str(BACKFILL_DAYS)],
                                     producer_env, logs / "producer.log")
        with urllib.request.urlopen(f"{url}/checkpoints/key", timeout=5) as resp:
            key = resp.read().decode().strip()
        # A witness with its own key: cosigns each checkpoint consistent with the last one it saw.
        children["witness"] = spawn([*cli, "witness", "--store", url, "--log-key", key], env, logs / "witness.log")
        witness_key = _witness_key(logs / "witness.log", children["witness"])
        print(f"\n  dashboard:  {url}/\n  SQL:        provenance sql \"select event_type, count(*) from events group by 1\"\n"
              f"  anomalies:  provenance sql \"select kind, explanation from anomalies\"  (or {url}/anomalies)\n"
              f"  forecasts:  provenance sql \"select series_key, ds, yhat, yhat_lower, yhat_upper, model->>'name' AS model"
              f" from forecasts where series_key = 'total' order by trained_at desc, ds limit 28\"\n"
              f"              (the simulator first sends the last {BACKFILL_DAYS} days unpaced, so forecasts appear"
              f" within a minute or two)\n"
              f"  proofs:     provenance prove EVENT_ID -o proof.json && provenance verify proof.json --key {key}\n"
              f"              (add --witness-key {witness_key} to require the witness's cosignature)\n"
              f"  metrics:    {url}/metrics  " + "  ".join(f"http://127.0.0.1:{p}/metrics ({name})"
                                                           for name, p in exporters.items()) + "\n"
              f"  Ctrl-C stops everything.\n", flush=True)
        produced = _Produced(broker.bootstrap, settings.topics.name(settings.topics.events))
        deadline = None if duration is None else time.monotonic() + duration
        status = Status()
        try:
            while deadline is None or time.monotonic() < deadline:
                time.sleep(1)
                for name, proc in children.items():
                    if proc.poll() is not None and name != "producer":
                        raise PipelineError(f"the {name} exited with code {proc.returncode}; see {logs / (name + '.log')}")
                try:
                    status = _status(url, produced)
                except (OSError, ValueError, KeyError):
                    continue
                print("\r" + status.line(time.monotonic() - started), end="", flush=True)
        except KeyboardInterrupt:
            interrupted = True
        print("\nstopping: producer first, then letting the pipeline drain ...", flush=True)
        stop(children.pop("producer"), signal.SIGINT)
        status = _drain(url, produced, status, _sent_by_producer(logs / "producer.log"))
        produced.close()
        print(status.line(time.monotonic() - started), flush=True)
    finally:
        for name in ["producer", "witness", "analytics", *[n for n in children if n.startswith("worker")], "store"]:
            proc = children.pop(name, None)
            if proc is not None:
                stop(proc, signal.SIGTERM, timeout=15)
        broker.stop()
    print(f"\nsummary: {status.produced:,} produced, {status.accepted:,} accepted into the ledger, "
          f"{status.dead_lettered:,} dead-lettered, {status.blocks:,} blocks sealed.")
    print(f"DuckDB file kept at {settings.db_path}: try  provenance sql \"select event_type, count(*) from events group by 1\"")
    return 130 if interrupted else 0


def _wait_for_store(settings: Settings, proc: Any, log_file: Path, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PipelineError(f"the store exited with code {proc.returncode}; see {log_file}")
        try:
            info = json.loads(settings.run_file.read_text())
            if info.get("pid") == proc.pid:
                _get(f"{info['url']}/health")
                return str(info["url"])
        except (OSError, ValueError, KeyError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    raise PipelineError(f"the store did not answer within {timeout:.0f}s; see {log_file}")


def _witness_key(log_file: Path, proc: Any, timeout: float = 20) -> str:
    """The verifier key the witness prints when it starts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for line in log_file.read_text(errors="replace").splitlines():
                if line.startswith("witness key: "):
                    return line.split(": ", 1)[1].strip()
        except OSError:
            pass
        if proc.poll() is not None:
            raise PipelineError(f"the witness exited with code {proc.returncode}; see {log_file}")
        time.sleep(0.2)
    raise PipelineError(f"the witness did not start within {timeout:.0f}s; see {log_file}")


def _sent_by_producer(log_file: Path) -> int | None:
    """What the producer reported as acknowledged by the broker (its last words), if it said."""
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        match = re.search(r"sent ([\d,]+) events", line)
        if match:
            return int(match.group(1).replace(",", ""))
    return None


def _drain(url: str, produced: _Produced, last: Status, sent: int | None, timeout: float = 30) -> Status:
    """Wait until everything produced is in DuckDB (accepted or dead-lettered), or the timeout.

    The producer's own count is the truth when it has one: some brokers report a
    topic's end offset short of a batch that has just landed.
    """
    deadline = time.monotonic() + timeout
    status, previous = last, None
    while time.monotonic() < deadline:
        try:
            status = _status(url, produced)
        except (OSError, ValueError, KeyError):
            time.sleep(0.5)
            continue
        if sent is not None:
            status.produced = max(status.produced, sent)
        # Done when everything produced is in DuckDB and nothing moved since the last look.
        if status.accepted + status.dead_lettered >= status.produced and status == previous:
            return status
        previous = status
        time.sleep(0.5)
    return status
