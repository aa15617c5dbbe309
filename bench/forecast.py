"""Forecast refresh at scale: 1,000 SKU×site series plus their SKU and total aggregates.

A refresh is what the analytics process does when a day completes: every
series gains one day and is refitted warm (Prophet from its previous
parameters), then the hierarchy is reconciled and conformal intervals added.
Fits run in a pool of `--processes` spawned processes, as in the analytics
process. Prints the cold round (first fits) and the median warm refresh, each
model's fit and predict time and share, and the wall time next to the CPU the
fits took. Member times are CPU seconds (user + sys of the pool process and of
the Stan subprocess each Prophet fit runs), so a shared machine's load does not
inflate them; CPU / processes is the wall time the round needs when the pool has
its cores to itself, and the load average is printed with each round.

    .venv/bin/python bench/forecast.py [--series 1000] [--days 800] [--refreshes 3] [--processes 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from datetime import date, timedelta

import numpy as np

from pipeline.analytics.forecast_pool import FitPool
from pipeline.core.conformal import ConformalIntervals
from pipeline.core.demand import series_keys
from pipeline.core.demand_profile import DemandProfile, synthetic_skus
from pipeline.core.fleet_catalog import SITES
from pipeline.core.forecast_round import SeriesFit, SeriesJob, assemble


_REGION = {s.gln: s.region for s in SITES}


def build(series: int, days: int, seed: int) -> tuple[date, dict[str, np.ndarray]]:
    sites = SITES[:25]
    profile = DemandProfile(seed, synthetic_skus(max(1, series // len(sites)), seed), sites)
    first = date(2026, 11, 30) - timedelta(days=days - 1)
    out: dict[str, np.ndarray] = {}
    for s in profile.series()[:series]:
        y = profile.sample(s, first, days + 10)  # ten more days for the refreshes
        out[s.key] = y
        for key in series_keys(s.sku.sku, s.site.gln)[1:]:
            out[key] = out.get(key, np.zeros(days + 10)) + y
    return first, out


async def round_(pool: FitPool, first: date, data: dict[str, np.ndarray], days: int, horizon: int,
                 states: dict[str, dict | None]) -> tuple[float, list[SeriesFit]]:
    jobs = [SeriesJob(k, first, y[:days], horizon, states.get(k), _REGION.get(k.split("|site=")[-1]), True)
            for k, y in data.items()]  # as a live round: the sites' regions, holiday factors on
    t, c = time.perf_counter(), time.process_time()
    fits = await pool.fit(jobs)
    assemble(fits, {k: y[:days] for k, y in data.items()}, ConformalIntervals(), "middle_out")
    wall = time.perf_counter() - t
    global PARENT_CPU
    PARENT_CPU = time.process_time() - c  # this process: sending jobs, reading fits, reconciling, intervals
    for f in fits:
        states[f.series_key] = f.state
    return wall, fits


def shares(fits: list[SeriesFit]) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for f in fits:
        for m, (fit_s, pred_s) in f.seconds.items():
            a, b = out.get(m, (0.0, 0.0))
            out[m] = (a + fit_s, b + pred_s)
    return out


PARENT_CPU = 0.0


def report(label: str, wall: float, fits: list[SeriesFit], processes: int) -> float:
    """Print one round; return its CPU seconds (every fit whole, plus this process's part)."""
    per = shares(fits)
    members = sum(a + b for a, b in per.values())
    cpu = sum(f.cpu_seconds for f in fits) + PARENT_CPU
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{label}: {wall:.1f} s wall for {len(fits)} series (load average {load}); the round took {cpu:.1f} s of "
          f"CPU ({1000 * cpu / len(fits):.1f} ms per series; members {members:.1f} s, the rest of each fit "
          f"{sum(f.cpu_seconds for f in fits) - members:.1f} s, reconciliation and intervals here {PARENT_CPU:.1f} s); "
          f"CPU / {processes} processes = {cpu / processes:.1f} s")
    for m, (fit_s, pred_s) in sorted(per.items(), key=lambda kv: -sum(kv[1])):
        n = sum(1 for f in fits if m in f.seconds)
        print(f"  {m:<16} fit {1000 * fit_s / n:7.1f} ms  predict {1000 * pred_s / n:6.1f} ms CPU per series"
              f"  share {100 * (fit_s + pred_s) / cpu:5.1f} % of the round")
    return cpu


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series", type=int, default=1000, help="SKU×site series (aggregates come on top)")
    ap.add_argument("--days", type=int, default=800, help="history per series (over two years: yearly seasonality on)")
    ap.add_argument("--horizon", type=int, default=28)
    ap.add_argument("--refreshes", type=int, default=3)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    first, data = build(args.series, args.days, args.seed)
    print(f"{len(data)} series ({args.series} SKU×site + aggregates), {args.days} days, horizon {args.horizon}, "
          f"{args.processes} processes on {os.cpu_count()} cores")
    pool = FitPool(args.processes, cpu=True)
    await pool.fit([SeriesJob("warm-up", first, data[next(iter(data))][:30], 7)] * args.processes)
    states: dict[str, dict | None] = {}
    cold, fits = await round_(pool, first, data, args.days, args.horizon, states)
    report("cold round (first fits)", cold, fits, args.processes)
    walls, cpus = [], []
    for i in range(1, args.refreshes + 1):
        wall, fits = await round_(pool, first, data, args.days + i, args.horizon, states)
        walls.append(wall)
        warm = sum(1 for f in fits if f.model.get("prophet_warm_start"))
        cpus.append(report(f"refresh {i} (+1 day, {warm} Prophet fits warm)", wall, fits, args.processes))
    cpu = statistics.median(cpus)
    print(f"median refresh: {statistics.median(walls):.1f} s wall, {cpu:.1f} s CPU = {cpu / args.processes:.1f} s "
          f"on {args.processes} free cores (target < 45 s on 2 cores); refresh / cold = "
          f"{statistics.median(walls) / max(cold, 1e-9):.2f} wall")
    pool.close()


if __name__ == "__main__":
    asyncio.run(main())
