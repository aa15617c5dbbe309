"""A refresh round: fallback below 14 days, coherent hierarchy, ordered intervals, calibrated pools, backtest."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest

from pipeline.core.backtest import Series, run_backtest
from pipeline.core.conformal import ConformalIntervals
from pipeline.core.demand_profile import DemandProfile
from pipeline.core.forecast_round import SeriesJob, assemble, fit_series
from pipeline.core.forecast_scoring import ForecastScorer
from pipeline.core.holiday_calendar import holiday_table
from pipeline.core.holiday_effect import holiday_factors
from pipeline.core.reconcile import METHODS, reconcile
from pipeline.errors import ConfigError

FIRST = date(2026, 1, 5)


def test_short_history_falls_back_to_seasonal_naive_and_says_so() -> None:
    fit = fit_series(SeriesJob("sku=A|site=S", FIRST, np.array([3.0, 0, 4, 5, 1, 0, 2, 3, 4]), 28))
    assert fit.model["name"] == "seasonal_naive" and "< 14" in fit.model["fallback"]
    assert fit.first_ds == FIRST + timedelta(days=9) and len(fit.yhat) == 28


def test_a_refit_is_warm_and_scores_the_forecast_it_made() -> None:
    y = DemandProfile(4).sample(DemandProfile(4).series()[3], FIRST, 90)
    first = fit_series(SeriesJob("sku=A|site=S", FIRST, y[:76], 14))
    again = fit_series(SeriesJob("sku=A|site=S", FIRST, y, 14, first.state))
    assert again.model["prophet_warm_start"] is True
    assert again.state is not None and len(again.state["state"]["errors"]) == 14
    weights = [m["weight"] for m in again.model["members"]]
    assert abs(sum(weights) - 1) < 1e-3 and len(set(weights)) > 1
    assert {m["name"] for m in again.model["members"]} == {"prophet", "ets", "tsb", "seasonal_median", "weekday_profile"}
    assert set(again.members) >= {"prophet", "ets", "seasonal_naive"}  # the baselines a backtest shows
    assert again.model["point_scale"] == pytest.approx(again.scale, abs=1e-4)


def test_the_point_forecast_of_skewed_demand_sits_below_its_mean() -> None:
    rng = np.random.default_rng(5)
    y = rng.choice([0.0, 0.0, 6.0, 6.0, 12.0, 60.0], 200)  # lumpy orders: mean 14, median 6
    fits = [fit_series(SeriesJob("sku=A|site=S", FIRST, y[:186], 14))]
    fits = [fit_series(SeriesJob("sku=A|site=S", FIRST, y, 14, fits[0].state))]
    assert 0.2 < fits[0].scale < 0.8 and fits[0].state is not None and len(fits[0].state["state"]["scored"]) == 14
    rows = assemble(fits, {"sku=A|site=S": y}, ConformalIntervals(), "bottom_up")
    point = np.array([r.yhat for r in rows])
    assert np.allclose(point, fits[0].yhat * fits[0].scale)
    assert abs(np.mean(np.abs(y[-60:] - np.median(point)))) < np.mean(np.abs(y[-60:] - np.mean(fits[0].yhat)))


def hierarchy_forecasts(rng: np.random.Generator) -> dict[str, np.ndarray]:
    f = {f"sku={s}|site={t}": rng.uniform(0, 10, 7) for s in "AB" for t in "123"}
    f.update({"sku=A": rng.uniform(10, 40, 7), "sku=B": rng.uniform(10, 40, 7), "total": rng.uniform(30, 80, 7)})
    return f


@pytest.mark.parametrize("method", [m for m in METHODS if m != "none"])
def test_reconciled_levels_add_up_and_stay_non_negative(method: str) -> None:
    f = hierarchy_forecasts(np.random.default_rng(1))
    hist = {k: np.ones(28) * (i + 1) for i, k in enumerate(f)}
    out = reconcile(f, method, {k: 1.0 + i for i, k in enumerate(f)}, hist)
    for sku in "AB":
        assert np.allclose(out[f"sku={sku}"], sum(out[f"sku={sku}|site={t}"] for t in "123"))
    assert np.allclose(out["total"], out["sku=A"] + out["sku=B"])
    assert all((v >= 0).all() for v in out.values())
    with pytest.raises(ConfigError):
        reconcile(f, "middle_in")


def test_rows_have_ordered_intervals() -> None:
    rng = np.random.default_rng(2)
    hist = {k: rng.poisson(5, 60).astype(float) for k in hierarchy_forecasts(rng)}
    fits = [fit_series(SeriesJob(k, FIRST, y, 7)) for k, y in hist.items()]
    pools = ConformalIntervals(min_pool=5)
    for r in rng.normal(0, 1, 200):
        pools.update("site/smooth", int(rng.integers(0, 7)), float(r))
    rows = assemble(fits, hist, pools, "bottom_up")
    assert len(rows) == 7 * len(hist)
    for r in rows:
        assert 0 <= r.yhat_lower_95 <= r.yhat_lower <= r.yhat <= r.yhat_upper <= r.yhat_upper_95
        assert r.model["reconciliation"] == "bottom_up"


def test_conformal_intervals_cover_what_they_say_on_exchangeable_residuals() -> None:
    rng = np.random.default_rng(7)
    pools = ConformalIntervals(capacity=500, min_pool=50)
    scorer = ForecastScorer(pools)
    day = FIRST
    for i in range(600):
        yhat = np.array([100.0])
        lo, hi, lo95, hi95 = pools.interval("site/smooth", yhat, 10.0)
        scorer.issue("k", day, yhat, lo, hi, lo95, hi95, 10.0, "site/smooth")
        scorer.observe("k", day, float(100 + 10 * rng.standard_t(5)))
        day += timedelta(days=1)
    cov = scorer.coverage["site/smooth"]
    assert 0.75 <= cov.rate80 <= 0.85 and 0.92 <= cov.rate95 <= 0.98


def small_series(seed: int) -> list[Series]:
    p = DemandProfile(seed)
    picked = [s for s in p.series() if s.sku.sku == "FOOD-0007"][:2]
    first = date(2026, 1, 1)
    ys = {s.key: p.sample(s, first, 70) for s in picked}
    out = [Series(k, first, y) for k, y in ys.items()]
    total = sum(ys.values())
    return out + [Series("sku=FOOD-0007", first, total), Series("total", first, total)]


def test_backtest_is_deterministic_for_a_seed() -> None:
    a = run_backtest(small_series(3), horizon=7, folds=1, warmup=1)
    b = run_backtest(small_series(3), horizon=7, folds=1, warmup=1)
    for model in a.scores:
        assert a.summary(model) == b.summary(model)
    assert a.ensemble_method == b.ensemble_method
    assert a.summary("prophet")["series"] == 4
    assert a.summary("ensemble/mint_wls")["negative"] == 0
    with pytest.raises(ConfigError):
        run_backtest(small_series(3)[:1] + [Series("x", date(2026, 1, 2), np.ones(3))])


def na_retail_series(days: int, end: date) -> tuple[date, np.ndarray]:
    """A busy retail SKU at a North American site: closed on Thanksgiving, lifted on Black Friday."""
    p = DemandProfile(2)
    s = max((s for s in p.series() if s.site.region == "NA" and s.retail and not s.intermittent),
            key=lambda s: s.base)
    first = end - timedelta(days=days - 1)
    return first, p.sample(s, first, days)


def test_holiday_factors_are_what_the_series_showed_on_the_same_holidays() -> None:
    first, y = na_retail_series(800, date(2026, 11, 15))
    factors = holiday_factors(y, first, "NA", 28)
    steps = {name: (d - date(2026, 11, 16)).days for name, d in holiday_table("NA", date(2026, 11, 16), date(2026, 12, 13))}
    assert factors[steps["thanksgiving"]] < 0.5 and factors[steps["black_friday"]] > 1.3
    ordinary = np.delete(factors, list(steps.values()))
    assert (ordinary == 1.0).all()
    assert (holiday_factors(y, first, "EU", 28) == 1.0).all() and (holiday_factors(y, first, None, 28) == 1.0).all()
    with pytest.raises(ConfigError):
        holiday_factors(y, first, "NA", 0)


def test_a_fit_asked_for_holidays_carries_their_factors_and_says_so() -> None:
    first, y = na_retail_series(800, date(2026, 11, 15))
    plain = fit_series(SeriesJob("sku=A|site=S", first, y, 14, region="NA"))
    told = fit_series(SeriesJob("sku=A|site=S", first, y, 14, region="NA", holidays=True))
    assert plain.holidays is None and "holiday_factors" not in plain.model
    assert told.holidays is not None and set(told.model["holiday_factors"]) == {"2026-11-26", "2026-11-27"}
    assert np.allclose(told.yhat, plain.yhat)  # the members forecast ordinary days


@pytest.mark.parametrize("method", METHODS)
def test_holiday_factors_scale_the_sites_and_the_sums_carry_them(method: str) -> None:
    f = hierarchy_forecasts(np.random.default_rng(3))
    hist = {k: np.ones(28) * (i + 1) for i, k in enumerate(f)}
    closed = np.ones(7)
    closed[2] = 0.2
    plain = reconcile(f, method, None, hist)
    out = reconcile(f, method, None, hist, factors={"sku=A|site=1": closed})
    assert np.allclose(out["sku=A|site=1"], plain["sku=A|site=1"] * closed)
    assert np.allclose(out["sku=B|site=2"], plain["sku=B|site=2"])
    if method != "none":
        assert np.allclose(out["sku=A"], sum(out[f"sku=A|site={t}"] for t in "123"))
        assert np.allclose(out["total"], out["sku=A"] + out["sku=B"])


def test_conformal_steps_share_their_neighbours_residuals() -> None:
    pools = ConformalIntervals(min_pool=20, spread=3)
    for step in range(1, 5):  # step 0 itself has none
        for r in np.linspace(-1.0, 1.0, 10):
            pools.update("site/smooth", step, float(r))
    lo, hi, _, _ = pools.interval("site/smooth", np.array([5.0]), 1.0)
    assert 3.8 < lo[0] < 5.0 < hi[0] < 6.2  # from steps 1-3, not the fallback width of +-1.9
    narrow = ConformalIntervals(min_pool=20, spread=0)
    lo, hi, _, _ = narrow.interval("site/smooth", np.array([5.0]), 1.0)
    assert hi[0] == pytest.approx(5.0 + 1.28 * 1.5)
    assert ConformalIntervals.from_json(pools.to_json()).spread == 3
