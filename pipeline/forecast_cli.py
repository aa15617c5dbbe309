"""`provenance forecast backtest`: rolling-origin figures for Prophet, the baselines and the ensemble.

Without `--db` it samples daily demand from the simulator's demand profile (the
same profile the fleet simulator draws its `created` events from), one run per
seed, so a backtest needs no broker; with `--db` it reads the `demand` table of
a store's DuckDB file. Fits run in a process pool of `--jobs` workers.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import click
import numpy as np

from pipeline.core.backtest import BASELINES, ENSEMBLE_METHODS, BacktestResult, Series, levels, run_backtest
from pipeline.core.demand import series_keys
from pipeline.core.demand_profile import DemandProfile
from pipeline.core.fleet_catalog import SITES
from pipeline.errors import ConfigError, PipelineError

_REGION = {s.gln: s.region for s in SITES}


def simulated_series(seed: int, sites: int, days: int, end: date = date(2026, 11, 30)) -> list[Series]:
    """SKU×site series for the `sites` busiest sites of a seed, with their SKU and total aggregates."""
    profile = DemandProfile(seed)
    chosen = sorted(profile.sites, key=lambda s: -profile.site_factor[s.gln])[:sites]
    first = end - timedelta(days=days - 1)
    sums: dict[str, np.ndarray] = {}
    out = []
    for s in profile.series():
        if s.site not in chosen:
            continue
        y = profile.sample(s, first, days)
        out.append(Series(s.key, first, y, s.site.region))
        for key in series_keys(s.sku.sku, s.site.gln)[1:]:
            sums[key] = sums.get(key, np.zeros(days)) + y
    return out + [Series(k, first, v) for k, v in sums.items()]


def stored_series(db_file: Path) -> list[Series]:
    """Every series of the `demand` table, zero-filled and padded to the latest day."""
    from pipeline.store.db import Database

    db = Database(db_file, read_only=True)
    try:
        rows = db.fetch("SELECT series_key, ds, y FROM demand ORDER BY series_key, ds")
    finally:
        db.close()
    if not rows:
        raise ConfigError(f"{db_file} has no demand rows yet")
    end = max(r[1] for r in rows)
    by_key: dict[str, dict[date, float]] = {}
    for key, ds, y in rows:
        by_key.setdefault(key, {})[ds] = float(y)
    out = []
    for key, days in by_key.items():
        first = min(days)
        y = np.zeros((end - first).days + 1)
        for d, v in days.items():
            y[(d - first).days] = v
        site = key.split("|site=")[1] if "|site=" in key else None
        out.append(Series(key, first, y, _REGION.get(site or "")))
    return out


def _table(result: BacktestResult) -> list[dict[str, Any]]:
    lv = levels(result)
    rows = []
    for model in list(BASELINES) + [f"ensemble/{m}" for m in ENSEMBLE_METHODS]:
        row: dict[str, Any] = {"model": model, **result.summary(model)}
        for name, keys in sorted(lv.items()):
            row[f"mase_{name}"] = result.summary(model, keys)["mase"]
        rows.append(row)
    return rows


def _print_table(rows: list[dict[str, Any]], best: str, live: str) -> None:
    cols = ["mase", "rmsse", "bias", "coverage80", "coverage95"] + sorted(c for c in rows[0] if c.startswith("mase_"))
    click.echo(f"{'model':<30}" + "".join(f"{c:>13}" for c in cols))
    for r in rows:
        name = r["model"] + (" *" if r["model"] == f"ensemble/{best}" else "") + (
            " (live)" if r["model"] == f"ensemble/{live}" else "")
        click.echo(f"{name:<30}" + "".join(f"{r[c]:>13.3f}" for c in cols))


def _per_series(result: BacktestResult, live: str) -> None:
    models = list(BASELINES) + [f"ensemble/{live}"]
    click.echo(f"{'series (MASE)':<44}" + "".join(f"{m:>22}" for m in models))
    for key in sorted(result.scores["prophet"]):
        vals = [result.scores[m][key].mase for m in models]
        click.echo(f"{key:<44}" + "".join(f"{float(np.mean(v)) if v else float('nan'):>22.3f}" for v in vals))


@click.group()
def forecast() -> None:
    """Demand forecasts: backtests of the models."""


@forecast.command()
@click.option("--db", "db_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Backtest the demand table of this DuckDB file (while a store runs: its snapshot.duckdb) instead of simulated demand.")
@click.option("--horizon", type=click.IntRange(1, 90), default=14, show_default=True)
@click.option("--folds", type=click.IntRange(1, 50), default=4, show_default=True, help="Scored origins.")
@click.option("--warmup", type=click.IntRange(0, 20), default=2, show_default=True,
              help="Origins before the scored ones: they fill error windows and conformal pools.")
@click.option("--seed", "seeds", multiple=True, type=int, help="Simulator seed (repeat for several; default 1).")
@click.option("--sites", type=click.IntRange(1, len(SITES)), default=4, show_default=True,
              help="Simulated sites (16 SKUs each, plus the SKU and total aggregates).")
@click.option("--days", type=click.IntRange(60, 3000), default=800, show_default=True, help="Simulated days.")
@click.option("--jobs", type=click.IntRange(1, 64), default=2, show_default=True, help="Fit processes.")
@click.option("--holidays/--no-holidays", default=None,
              help="Holiday factors for the ensemble from the sites' regional calendar (default: the live setting).")
@click.option("--per-series/--summary", default=True, show_default=True, help="Print each series' MASE too.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def backtest(db_file: Path | None, horizon: int, folds: int, warmup: int, seeds: tuple[int, ...], sites: int,
             days: int, jobs: int, holidays: bool | None, per_series: bool, fmt: str) -> None:
    """Rolling-origin backtest: MASE, RMSSE, bias and interval coverage per model, per series and overall.

    MASE and RMSSE are scaled by the in-sample weekly seasonal naive error; every
    model gets conformal intervals from its own past residuals. The ensemble is
    shown with each reconciliation; * marks the best on these folds, (live) the
    one a live run uses (PROVENANCE_FORECAST__RECONCILIATION), which the
    comparison with plain Prophet is made on.
    """
    from pipeline.cli import BadInput, fail_on
    from pipeline.settings import Settings

    live = Settings().forecast.reconciliation
    if holidays is None:
        holidays = Settings().forecast.holidays

    runs: list[tuple[str, list[Series]]] = []
    try:
        if db_file is not None:
            runs.append((str(db_file), stored_series(db_file)))
        else:
            for seed in seeds or (1,):
                runs.append((f"seed {seed}", simulated_series(seed, sites, days)))
        results = []
        with ProcessPoolExecutor(jobs) as pool:
            for label, series in runs:
                need = (warmup + folds) * horizon + 1
                if max(len(s.y) for s in series) < need:
                    raise BadInput(f"{label}: {max(len(s.y) for s in series)} days of demand; "
                                   f"--warmup {warmup} + --folds {folds} at --horizon {horizon} need {need}")
                result = run_backtest(series, horizon, folds, warmup,
                                      lambda fn, js: pool.map(fn, js, chunksize=2), holidays)
                results.append((label, len(series), result))
    except PipelineError as exc:
        raise fail_on(exc) from None
    report = []
    for label, n, result in results:
        rows = _table(result)
        report.append({"run": label, "series": n, "best_reconciliation": result.ensemble_method, "live_reconciliation": live,
                       "mean_weights": result.weights, "models": rows})
        if fmt == "table":
            click.echo(f"\n== {label}: {n} series, horizon {horizon}, {folds} folds (+{warmup} warm-up) ==")
            _print_table(rows, result.ensemble_method, live)
            ens = next(r for r in rows if r["model"] == f"ensemble/{live}")
            plain = next(r for r in rows if r["model"] == "prophet")
            click.echo(f"ensemble ({live}) vs plain Prophet: MASE {100 * (ens['mase'] / plain['mase'] - 1):+.1f} %; "
                       f"80 % coverage {100 * ens['coverage80']:.1f} %; negative forecasts {int(ens['negative'])}; "
                       "mean weights " + ", ".join(f"{k} {v:.2f}" for k, v in result.weights.items()))
            if per_series:
                _per_series(result, live)
    if fmt == "json":
        click.echo(json.dumps(report, indent=2, default=float))
    elif len(results) > 1:
        click.echo(f"\n== over {len(results)} runs (median) ==")
        for model in list(BASELINES) + ["ensemble"]:
            vals = [next(r for r in rep["models"] if r["model"] == (
                model if model != "ensemble" else f"ensemble/{live}")) for rep in report]
            click.echo(f"{model:<16} MASE {np.median([v['mase'] for v in vals]):.3f}  "
                       f"coverage80 {np.median([v['coverage80'] for v in vals]):.3f}")
        ratios = [next(r for r in rep["models"] if r["model"] == f"ensemble/{live}")["mase"]
                  / next(r for r in rep["models"] if r["model"] == "prophet")["mase"] - 1 for rep in report]
        click.echo(f"ensemble ({live}) vs plain Prophet per run: " + ", ".join(f"{100 * r:+.1f} %" for r in ratios)
                   + f"; mean {100 * float(np.mean(ratios)):+.1f} %")

