"""One refresh of every series: fit each (a picklable job, so a caller may use a process pool), then
reconcile the hierarchy and put conformal intervals on it.

`fit_series` is the unit of work: history and the compact state of the last
fit in, member forecasts, the ensemble's (mean) forecast, its point scale and
the new state out. Below `MIN_DAYS` days of history a series gets the weekly
seasonal naive forecast and its `model` says so. `assemble` turns a round of
fits into `forecasts` rows: the mean forecasts are reconciled (so they add up
over the hierarchy), then each series' point forecast is its reconciled mean
times its scale (the absolute-error forecast, `point_scale.py`).
Timings are measured only when the caller passes a timer, and only reported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np

from pipeline.core.conformal import ConformalIntervals, series_class
from pipeline.core.ensemble import Ensemble
from pipeline.core.ets import ETS
from pipeline.core.forecaster import (
    Forecaster,
    SeasonalMedian,
    SeasonalNaive,
    WeekdayProfile,
    forecaster_from_json,
    seasonal_naive_scale,
)
from pipeline.core.holiday_effect import holiday_factors
from pipeline.core.intermittent import TSB
from pipeline.core.prophet_model import ProphetForecaster
from pipeline.core.reconcile import reconcile

MIN_DAYS = 14
POWER = 2.0  # weight ~ recent MAE ** -POWER
WINDOW = 56  # scored days the weights and the point scale look back
DEFAULT_HORIZON = 28


def default_ensemble(power: float | None = None) -> Ensemble:
    """Prophet (the named model), ETS, TSB (intermittent series only), the weekday median and profile.

    Weighted by their recent errors on the series. The weekly seasonal naive forecast is no member (as one it made the
    combination worse on every backtest seed); it stays the fallback and a baseline.
    The members forecast ordinary days; holidays are factors on top (`holiday_effect.py`).
    """
    return Ensemble([ProphetForecaster(), ETS(), TSB(), SeasonalMedian(7, 8), WeekdayProfile(52, 56)],
                    window=WINDOW, power=POWER if power is None else power)


@dataclass(frozen=True)
class SeriesJob:
    """What one fit needs: the zero-filled daily history ending at the last complete day."""

    series_key: str
    first_day: date
    y: np.ndarray
    horizon: int = DEFAULT_HORIZON
    state: dict[str, Any] | None = None
    region: str | None = None
    holidays: bool = False


@dataclass
class SeriesFit:
    """One series' fit: forecasts from the first day after its history, and what made them."""

    series_key: str
    first_ds: date
    yhat: np.ndarray
    members: dict[str, np.ndarray]
    model: dict[str, Any]
    state: dict[str, Any] | None
    seconds: dict[str, tuple[float, float]] = field(default_factory=dict)  # member -> (fit, predict)
    scale: float = 1.0  # point forecast = reconciled yhat * scale
    holidays: np.ndarray | None = None  # per-day factors of the holidays in the horizon, when the job asked
    cpu_seconds: float = 0.0  # the whole fit (restore, members, scale), when the caller measured it


def _compact(model: Forecaster) -> dict[str, Any]:
    data = model.to_json()
    for member in data["params"].get("members", ()):
        member["history"] = []
    return data


def fit_series(job: SeriesJob, timer: Callable[[], float] | None = None) -> SeriesFit:
    """Fit (warm, from `job.state` when given) and forecast one series; `timer` times each member."""
    y = np.asarray(job.y, dtype=float)
    first_ds = job.first_day + timedelta(days=len(y))
    if len(y) < MIN_DAYS:
        naive = SeasonalNaive(7)
        naive.timer = timer
        naive.learn_many(y)
        yhat = naive.forecast(job.horizon)
        model: dict[str, Any] = {"name": "seasonal_naive", "version": naive.version, "fallback": f"{len(y)} days of history < {MIN_DAYS}",
                 "members": [{"name": "seasonal_naive", "version": naive.version, "weight": 1.0}]}
        return SeriesFit(job.series_key, first_ds, yhat, {"seasonal_naive": yhat}, model, None,
                         {"seasonal_naive": (naive.fit_seconds, naive.predict_seconds)})
    ens = _restore(job, y)
    for m in ens.members:
        m.timer = timer
    yhat = ens.forecast(job.horizon)
    members = dict(ens.last_forecasts)
    seconds = {m.name: (m.fit_seconds, m.predict_seconds) for m in ens.members}
    if "seasonal_naive" not in members:  # the baseline every backtest shows
        naive = SeasonalNaive(7)
        naive.learn_many(y)
        members["seasonal_naive"] = naive.forecast(job.horizon)
    scale = ens.point_scale()
    model = ens.describe_json()
    model["name"] = "prophet-ensemble"
    model["point_scale"] = round(scale, 4)
    warm = [m for m in ens.members if isinstance(m, ProphetForecaster)]
    if warm:
        model["prophet_warm_start"] = warm[0].warm
    factors = holiday_factors(y, job.first_day, job.region, job.horizon) if job.holidays else None
    if factors is not None and (factors != 1.0).any():
        model["holiday_factors"] = {(first_ds + timedelta(days=int(i))).isoformat(): round(float(factors[i]), 3)
                                    for i in np.flatnonzero(factors != 1.0)}
    return SeriesFit(job.series_key, first_ds, yhat, members, model, _compact(ens), seconds, scale, holidays=factors)


def _restore(job: SeriesJob, y: np.ndarray) -> Ensemble:
    """The series' ensemble with its scores and warm-start parameters, its history the current data.

    History is replaced, not appended to: a late event may have changed an old day.
    """
    ens: Ensemble
    if job.state is None:
        ens = default_ensemble()
        ens.start(job.first_day)
        ens.learn_many(y)
        return ens
    restored = forecaster_from_json(job.state)
    assert isinstance(restored, Ensemble)
    ens = restored
    seen = min(int(job.state["state"]["n"]), len(y))
    ens.start(job.first_day)
    ens.history = [float(v) for v in y[:seen]]
    for m in ens.members:
        m.history = list(ens.history)
        m._stale = True
    ens.learn_many(y[seen:])
    return ens


@dataclass(frozen=True)
class ForecastRow:
    """One row of the `forecasts` table (trained_at and input_ledger are added by the caller)."""

    series_key: str
    ds: date
    yhat: float
    yhat_lower: float
    yhat_upper: float
    yhat_lower_95: float
    yhat_upper_95: float
    model: dict[str, Any]


def assemble(fits: list[SeriesFit], histories: Mapping[str, np.ndarray], conformal: ConformalIntervals,
             method: str = "mint_wls", variances: Mapping[str, float] | None = None) -> list[ForecastRow]:
    """Reconcile one round of fits, add conformal intervals, and return its rows."""
    by_key = {f.series_key: f for f in fits}
    points = point_forecasts(by_key, method, variances, histories)
    rows = []
    for key, fit in by_key.items():
        yhat = points[key]
        y = histories[key]
        scale = series_scale(y)
        lo, hi, lo95, hi95 = conformal.interval(series_class(key, y), yhat, scale)
        model = dict(fit.model, reconciliation=method)
        for i in range(len(yhat)):
            rows.append(ForecastRow(key, fit.first_ds + timedelta(days=i), float(yhat[i]), float(lo[i]),
                                    float(hi[i]), float(lo95[i]), float(hi95[i]), model))
    return rows


def point_forecasts(fits: Mapping[str, SeriesFit], method: str, variances: Mapping[str, float] | None = None,
                    histories: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Each series' point forecast: the reconciled mean forecasts (holidays applied), each times its point scale."""
    factors = {k: f.holidays for k, f in fits.items() if f.holidays is not None}
    coherent = reconcile({k: f.yhat for k, f in fits.items()}, method, variances, histories, factors=factors)
    return {k: coherent[k] * fits[k].scale for k in fits}


def series_scale(y: np.ndarray) -> float:
    """The scale residuals of a series are divided by before pooling (never zero)."""
    return max(seasonal_naive_scale(y[-365:]), 1e-3 * max(float(np.mean(y)) if len(y) else 0.0, 1.0))
