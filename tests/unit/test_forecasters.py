"""One contract every demand forecaster passes (after river's estimator checks), and the edge series."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pytest

from pipeline.core.ensemble import Ensemble
from pipeline.core.ets import ETS
from pipeline.core.forecaster import Forecaster, SeasonalMedian, SeasonalNaive, WeekdayProfile, forecaster_from_json
from pipeline.core.intermittent import TSB
from pipeline.core.prophet_model import ProphetForecaster, point_forecast
from pipeline.errors import ConfigError

FIRST = date(2026, 1, 5)


def weekly(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.maximum(0, 40 + 15 * np.sin(np.arange(n) * 2 * np.pi / 7) + rng.normal(0, 4, n)).round()


EDGE = {
    "one_day": np.array([7.0]),
    "all_zero": np.zeros(60),
    "gapped": np.concatenate([weekly(30), np.zeros(25), weekly(10)]),
    "spiky": np.where(np.arange(70) % 23 == 5, 900.0, weekly(70, 1)),
    "intermittent": np.where(np.random.default_rng(3).random(90) < 0.15, 24.0, 0.0),
}

MODELS = [
    lambda: SeasonalNaive(7),
    lambda: SeasonalMedian(7, 8),
    lambda: WeekdayProfile(52, 56),
    lambda: ETS(),
    lambda: TSB(),
    lambda: ProphetForecaster(),
    lambda: Ensemble([SeasonalNaive(7), ETS(), TSB(), SeasonalMedian()]),
]
IDS = ["seasonal_naive", "seasonal_median", "weekday_profile", "ets", "tsb", "prophet", "ensemble"]


@pytest.fixture(params=MODELS, ids=IDS)
def make(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    return request.param


def fitted(model: Forecaster, y: np.ndarray) -> Forecaster:
    model.start(FIRST)
    model.learn_many(y)
    return model


def test_hyper_parameters_are_stored_under_their_names(make) -> None:  # type: ignore[no-untyped-def]
    model = make()
    clone = model.clone()
    assert type(clone) is type(model)
    assert set(model._get_params()) == set(clone._get_params())
    for k in model._get_params():
        assert hasattr(model, k)


def test_forecast_shape_non_negative_and_finite(make) -> None:  # type: ignore[no-untyped-def]
    f = fitted(make(), weekly(84)).forecast(28)
    assert f.shape == (28,) and np.isfinite(f).all() and (f >= 0).all()
    assert 10 < float(f.mean()) < 80


def test_json_round_trip_forecasts_the_same(make) -> None:  # type: ignore[no-untyped-def]
    model = fitted(make(), weekly(84, 2))
    before = model.forecast(14)
    again = forecaster_from_json(json.loads(json.dumps(model.to_json())))
    if isinstance(again, Ensemble):  # members' histories travel separately in live state
        assert again.history == [] or len(again.history) == 84
        return
    assert np.allclose(again.forecast(14), before, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("edge", list(EDGE))
def test_edge_series_neither_crash_nor_produce_nonsense(make, edge: str) -> None:  # type: ignore[no-untyped-def]
    y = EDGE[edge]
    f = fitted(make(), y).forecast(28)
    assert f.shape == (28,) and np.isfinite(f).all() and (f >= 0).all()
    assert float(f.max()) <= 3 * float(y.max()) + 1e-9
    if edge == "all_zero":
        assert float(f.max()) < 1e-6


def test_bad_input_is_refused(make) -> None:  # type: ignore[no-untyped-def]
    model = make()
    with pytest.raises(ConfigError):
        model.learn_one(-1.0)
    with pytest.raises(ConfigError):
        model.learn_one(float("nan"))
    with pytest.raises(ConfigError):
        model.forecast(0)


def test_prophet_refits_warm_and_keeps_json_parameters() -> None:
    m = fitted(ProphetForecaster(), weekly(120))
    m.forecast(7)
    assert not m.warm and m.init is not None
    m.learn_many(weekly(3, 9))
    m.forecast(7)
    assert m.warm
    state = json.loads(json.dumps(m.to_json()))
    assert state["state"]["init"]["k"] == pytest.approx(m.init["k"])
    assert json.loads(m.to_prophet_json() or "{}")["history"]  # Prophet's own JSON, not pickle


@pytest.mark.parametrize("days,holidays,mode", [(120, False, "additive"), (800, True, "additive"),
                                                 (200, True, "multiplicative")], ids=["weekly", "yearly+holidays", "mult"])
def test_prophet_point_forecast_is_prophets_own_predict(days: int, holidays: bool, mode: str) -> None:
    import pandas as pd

    rng = np.random.default_rng(days)
    y = weekly(days, 5) * (1 + 0.3 * np.cos(np.arange(days) * 2 * np.pi / 365.25)) + rng.poisson(3, days)
    m = fitted(ProphetForecaster(region="EU", holidays=holidays, seasonality_mode=mode), y)
    m.forecast(28)
    model = m._model
    assert model is not None and (len(model.seasonalities) == 2) == (days >= 731)
    assert (model.holidays is not None) == holidays
    future = pd.DataFrame({"ds": pd.date_range(model.history["ds"].iloc[-1] + pd.Timedelta(days=1), periods=28)})
    assert point_forecast(model, future) == pytest.approx(model.predict(future)["yhat"].to_numpy(), rel=1e-9, abs=1e-9)


def test_ensemble_weights_follow_recent_errors() -> None:
    e = Ensemble([SeasonalNaive(7), TSB()])
    y = weekly(140, 4)
    e.learn_many(y[:84])
    for start in range(84, 140, 7):
        e.forecast(7)
        e.learn_many(y[start:start + 7])
    w = e.member_weights()
    assert abs(sum(w) - 1) < 1e-9 and w[0] > w[1]
    assert "seasonal_naive" in e.describe()


def test_weekday_profile_scales_every_weekday_with_the_level() -> None:
    week = np.array([10.0, 10, 10, 10, 20, 30, 0])
    m = WeekdayProfile(weeks=8, level_days=14)
    m.learn_many(np.concatenate([np.tile(week, 6), np.tile(1.5 * week, 2)]))
    f = m.forecast(7)
    assert np.allclose(f / f.sum(), week / week.sum()) and f.sum() == pytest.approx(1.5 * week.sum())
    with pytest.raises(ConfigError):
        WeekdayProfile(weeks=0)


def test_tsb_weighs_nothing_on_a_smooth_series_and_counts_on_an_intermittent_one() -> None:
    smooth = Ensemble([SeasonalMedian(7, 8), TSB()])
    smooth.learn_many(weekly(70))
    smooth.forecast(7)
    assert smooth.weights == [1.0, 0.0]
    lumpy = Ensemble([SeasonalMedian(7, 8), TSB()])
    lumpy.learn_many(EDGE["intermittent"])
    lumpy.forecast(7)
    assert lumpy.weights[1] > 0
