"""The pipeline's processes as bench/ingest.py runs them: workers and a store, and what they cost."""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from pipeline.broker import create_topics, free_port
from pipeline.procs import spawn, stop
from pipeline.settings import Settings

_TICK = os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    """CPU seconds of this process and of its children that have exited (producer processes)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child_env(settings: Settings, workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVENANCE_")}
    env.update(PROVENANCE_KAFKA=settings.kafka, PROVENANCE_DATA_DIR=str(workdir),
               PROVENANCE_STORE__PORT=str(settings.store.port), PROVENANCE_TOPICS__PREFIX=settings.topics.prefix,
               PROVENANCE_TOPICS__PARTITIONS=str(settings.topics.partitions),
               PROVENANCE_METRICS__WORKER_PORT="0")
    return env


def health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/health", timeout=10) as r:
        return dict(json.loads(r.read()))


def rows(url: str) -> int:
    t = health(url)["tables"]
    return int(t["events"] + t["dead_letters"])


class Pipeline:
    """Workers and a store as real processes, on one topic prefix and data folder."""

    def __init__(self, settings: Settings, workdir: Path, workers: int, broker_pid: int | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.settings, self.workdir, self.n_workers = settings, workdir, workers
        self.broker_pid = broker_pid  # the embedded broker's CPU is counted with the pipeline's
        self.env = child_env(settings, workdir)
        self.url = f"http://127.0.0.1:{settings.store.port}"
        self.workers: list[Any] = []
        self.store: Any = None
        self.rss: list[float] = []
        self.cpu0: dict[str, float] = {}
        self.whole: dict[str, float] = {}

    def start_worker(self, i: int) -> Any:
        # Dynamic membership, the default: on the embedded broker a static member waits a fixed 6 s to rejoin.
        return spawn([sys.executable, "-m", "pipeline.cli", "worker"], self.env, self.workdir / f"worker-{i}.log")

    def start(self) -> None:
        self.workers = [self.start_worker(i) for i in range(self.n_workers)]
        self.store = spawn([sys.executable, "-m", "pipeline.cli", "serve"], self.env, self.workdir / "store.log")

    def cpu(self) -> dict[str, float]:
        out = {f"worker-{i}": cpu_seconds(w.pid) for i, w in enumerate(self.workers) if w.poll() is None}
        if self.store is not None and self.store.poll() is None:
            out["store"] = cpu_seconds(self.store.pid)
        if self.broker_pid is not None:
            out["broker"] = cpu_seconds(self.broker_pid)
        return out

    def drain(self, n: int, timeout: float = 900) -> tuple[float, float, dict[str, float]]:
        """Until n rows are queryable: (rate first → last row, start-up seconds, CPU s/event per process).

        CPU per event counts from the first queryable row, so work done before it (the worker
        drains while the store starts) is left out; `whole` in the result counts all of it.
        """
        t0 = time.perf_counter()
        first = None
        first_rows = 0
        cpu_at_first: dict[str, float] = {}
        last_rss = 0.0
        while True:
            time.sleep(0.25)
            try:
                count = rows(self.url)
            except OSError:
                continue
            now = time.perf_counter()
            if first is None and count > 0:
                first, first_rows, cpu_at_first = now, count, self.cpu()
            if now - last_rss > 2 and self.workers:
                self.rss.append(rss_mib(self.workers[0].pid))
                last_rss = now
            if count >= n:
                assert first is not None
                cpu = self.cpu()
                per_event = {k: (cpu[k] - cpu_at_first.get(k, 0.0)) / max(count - first_rows, 1)
                             for k in cpu}
                # start-up included (not the broker's: it served the pre-load and earlier runs too)
                self.whole = {k: v / max(count, 1) for k, v in cpu.items() if k != "broker"}
                # All rows in the first look (a tiny run): no rate to measure.
                rate = (count - first_rows) / (now - first) if count > first_rows else float("nan")
                return rate, first - t0, per_event
            if now - t0 > timeout:
                raise SystemExit(f"pipeline stalled at {count} of {n}; see {self.workdir}")

    def stop(self) -> None:
        for w in self.workers:
            stop(w, signal.SIGTERM, 20)
        stop(self.store, signal.SIGTERM, 30)


def prefixed(base: Settings, prefix: str) -> Settings:
    s = base.with_overrides(topics={**base.topics.model_dump(), "prefix": prefix}, store__port=free_port())
    create_topics(s)
    return s
