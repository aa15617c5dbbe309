"""Rolling-origin backtest of the forecasters, the way they run live.

Origins are `horizon` days apart; at each one every series is refitted on the
days before it (warm-started from the previous origin, exactly as a live
refresh), and each model's forecast is scored on the next `horizon` days. The
first `warmup` origins are not scored: they fill the ensemble's error windows
and the conformal pools, as a running system's past forecasts would. Every model
gets conformal intervals from its own pools, so coverage is comparable.

MASE and RMSSE divide by the in-sample weekly seasonal naive error of the
training days; bias is the mean error over the same scale (positive: over-forecast).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np

from pipeline.core.conformal import ConformalIntervals, series_class
from pipeline.core.demand import level
from pipeline.core.forecast_round import SeriesFit, SeriesJob, fit_series, point_forecasts, series_scale
from pipeline.core.forecast_scoring import ForecastScorer
from pipeline.errors import ConfigError

BASELINES = ("prophet", "seasonal_naive", "ets")
ENSEMBLE_METHODS = ("none", "bottom_up", "top_down", "middle_out", "mint_wls")

Mapper = Callable[[Callable[[SeriesJob], SeriesFit], Iterable[SeriesJob]], Iterator[SeriesFit]]


@dataclass(frozen=True)
class Series:
    """One daily series: its key, first day and values up to the common last day."""

    key: str
    first_day: date
    y: np.ndarray
    region: str | None = None


@dataclass
class Score:
    """Accumulated errors of one model on one series."""

    mase: list[float] = field(default_factory=list)
    rmsse: list[float] = field(default_factory=list)
    bias: list[float] = field(default_factory=list)
    n: int = 0
    in80: int = 0
    in95: int = 0
    negative: int = 0

    def add(self, y: np.ndarray, f: np.ndarray, lo: np.ndarray, hi: np.ndarray, lo95: np.ndarray,
            hi95: np.ndarray, train: np.ndarray) -> None:
        mae_scale = series_scale(train)
        sq = train[7:] - train[:-7] if len(train) > 7 else np.diff(train)
        mse_scale = float(np.mean(sq * sq)) if len(sq) else 0.0
        err = f - y
        if mae_scale > 1e-9 and mse_scale > 1e-9:
            self.mase.append(float(np.mean(np.abs(err))) / mae_scale)
            self.rmsse.append(float(np.sqrt(np.mean(err * err) / mse_scale)))
            self.bias.append(float(np.mean(err)) / mae_scale)
        self.n += len(y)
        self.in80 += int(np.sum((lo <= y) & (y <= hi)))
        self.in95 += int(np.sum((lo95 <= y) & (y <= hi95)))
        self.negative += int(np.sum(f < 0))


@dataclass
class BacktestResult:
    """Per model, per series scores; `ensemble_method` is the reconciliation that scored best."""

    horizon: int
    folds: int
    scores: dict[str, dict[str, Score]]
    ensemble_method: str = "mint_wls"
    weights: dict[str, float] = field(default_factory=dict)

    def summary(self, model: str, keys: Iterable[str] | None = None) -> dict[str, float]:
        per = self.scores[model]
        chosen = [per[k] for k in (keys if keys is not None else per) if k in per]
        mase = [float(np.mean(s.mase)) for s in chosen if s.mase]
        n = sum(s.n for s in chosen)
        return {
            "series": len(mase),
            "mase": float(np.mean(mase)) if mase else float("nan"),
            "rmsse": float(np.mean([np.mean(s.rmsse) for s in chosen if s.rmsse])) if mase else float("nan"),
            "bias": float(np.mean([np.mean(s.bias) for s in chosen if s.bias])) if mase else float("nan"),
            "coverage80": sum(s.in80 for s in chosen) / n if n else float("nan"),
            "coverage95": sum(s.in95 for s in chosen) / n if n else float("nan"),
            "negative": float(sum(s.negative for s in chosen)),
        }


def _aligned(series: list[Series]) -> date:
    ends = {s.first_day + timedelta(days=len(s.y) - 1) for s in series}
    if len(ends) != 1:
        raise ConfigError(f"backtest series must end on the same day; they end on {sorted(ends)[:3]}")
    return ends.pop()


def run_backtest(series: list[Series], horizon: int = 14, folds: int = 4, warmup: int = 2,
                 mapper: Mapper | None = None, holidays: bool = False) -> BacktestResult:
    """Score Prophet, seasonal naive, ETS and the ensemble (each reconciliation) on rolling origins.

    With `holidays` the ensemble gets each site's regional holiday factors, as a
    live run does with that setting; Prophet, the baselines and the members do not.
    """
    if horizon < 1 or folds < 1 or warmup < 0:
        raise ConfigError(f"need horizon >= 1, folds >= 1, warmup >= 0; got {horizon}, {folds}, {warmup}")
    if not series:
        raise ConfigError("no series to backtest")
    run = mapper or (lambda fn, jobs: map(fn, jobs))
    end = _aligned(series)
    by_key = {s.key: s for s in series}
    models = list(BASELINES) + [f"ensemble/{m}" for m in ENSEMBLE_METHODS]
    scorers = {m: ForecastScorer(ConformalIntervals()) for m in models}
    scores: dict[str, dict[str, Score]] = {m: {} for m in models}
    states: dict[str, dict[str, Any] | None] = {}
    weight_sums: dict[str, float] = {}
    origins = [end + timedelta(days=1) - timedelta(days=horizon * (warmup + folds - i)) for i in range(warmup + folds)]
    for fold, origin in enumerate(origins):
        jobs, train = [], {}
        for s in series:
            n = (origin - s.first_day).days
            if n < 1:
                continue
            train[s.key] = s.y[:n]
            jobs.append(SeriesJob(s.key, s.first_day, s.y[:n], horizon, states.get(s.key), s.region, holidays))
        fits = {f.series_key: f for f in run(fit_series, jobs)}
        for k, f in fits.items():
            states[k] = f.state
        forecasts: dict[str, dict[str, np.ndarray]] = {
            m: {k: f.members.get(m, f.members.get("seasonal_naive", f.yhat)) for k, f in fits.items()} for m in BASELINES}
        for method in ENSEMBLE_METHODS:
            variances = scorers[f"ensemble/{method}"].variances()
            forecasts[f"ensemble/{method}"] = point_forecasts(fits, method, variances, train)
        for model, fc in forecasts.items():
            scorer = scorers[model]
            for key, yhat in fc.items():
                y_train = train[key]
                scale = series_scale(y_train)
                cls = series_class(key, y_train)
                lo, hi, lo95, hi95 = scorer.conformal.interval(cls, yhat, scale)
                scorer.issue(key, origin, yhat, lo, hi, lo95, hi95, scale, cls)
                start = (origin - by_key[key].first_day).days
                actual = by_key[key].y[start:start + horizon]
                scorer.observe_many(key, origin, actual)
                if fold >= warmup:
                    scores[model].setdefault(key, Score()).add(actual, yhat[:len(actual)], lo[:len(actual)],
                                                               hi[:len(actual)], lo95[:len(actual)],
                                                               hi95[:len(actual)], y_train)
        if fold >= warmup:
            for f in fits.values():
                for m in f.model.get("members", ()):
                    weight_sums[m["name"]] = weight_sums.get(m["name"], 0.0) + m["weight"]
    best = min(ENSEMBLE_METHODS, key=lambda m: _overall(scores[f"ensemble/{m}"]))
    total = sum(weight_sums.values()) or 1.0
    return BacktestResult(horizon, folds, scores, best, {k: v / total for k, v in weight_sums.items()})


def _overall(per: dict[str, Score]) -> float:
    mase = [float(np.mean(s.mase)) for s in per.values() if s.mase]
    return float(np.mean(mase)) if mase else float("inf")


def levels(result: BacktestResult) -> dict[str, list[str]]:
    """Series keys by hierarchy level, for per-level summaries."""
    out: dict[str, list[str]] = {}
    for key in result.scores["prophet"]:
        out.setdefault(level(key), []).append(key)
    return out
