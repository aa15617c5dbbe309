"""The process pool demand fits run in, so a refresh never blocks the analytics event loop."""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import os
import resource
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

from pipeline.core.forecast_round import SeriesFit, SeriesJob, fit_series


def _exit_with_parent(parent: int) -> None:
    """Pool initializer: a worker whose analytics process died (even by kill -9) exits too."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def cpu_clock() -> float:
    """CPU seconds (user + sys) of this process and its finished children: Stan runs in a subprocess per fit."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def fit_timed(jobs: Sequence[SeriesJob], clock: Callable[[], float] = time.perf_counter) -> list[SeriesFit]:
    """Fit a chunk of series in a pool process, timing each member with `clock` and each whole fit in CPU."""
    out = []
    for job in jobs:
        before = cpu_clock()
        fit = fit_series(job, timer=clock)
        fit.cpu_seconds = cpu_clock() - before
        out.append(fit)
    return out


class FitPool:
    """`processes` spawned workers (not forked: the parent runs threads and an event loop).

    Member times are wall seconds by default; `cpu=True` times them in CPU
    seconds instead (`cpu_clock`), which a shared machine's load does not inflate.
    """

    def __init__(self, processes: int, chunk: int = 8, cpu: bool = False) -> None:
        self.processes = processes
        self.chunk = chunk
        self.clock = cpu_clock if cpu else time.perf_counter
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_exit_with_parent, initargs=(os.getpid(),))
        return self._pool

    async def fit(self, jobs: Sequence[SeriesJob]) -> list[SeriesFit]:
        """Every job's fit, in job order; the event loop keeps running meanwhile."""
        loop = asyncio.get_running_loop()
        pool = self._executor()
        chunks = [jobs[i:i + self.chunk] for i in range(0, len(jobs), self.chunk)]
        fit = functools.partial(fit_timed, clock=self.clock)
        done = await asyncio.gather(*(loop.run_in_executor(pool, fit, c) for c in chunks))
        return [fit for chunk in done for fit in chunk]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
