"""Prophet as a daily demand forecaster: weekly season, yearly once there are two years, optional holidays.

Refits start from the previous fit's parameters (`init=`), which is what makes
refreshing a thousand series affordable. Intervals come from the conformal
layer, so Prophet runs with `uncertainty_samples=0` (its own intervals
under-cover). The fitted parameters are kept as JSON; `to_prophet_json()` gives
Prophet's own JSON serialisation of the fitted model. cmdstanpy's and Prophet's
INFO chatter is silenced on every fit (cheap), since importing Prophet resets its logger.

Stan reads its data from a JSON file. cmdstanpy writes it with the standard
library's streaming (pure Python) encoder, which took about half of a fit of two
years of history; `_FastDataBackend` writes the same JSON with orjson instead and
hands cmdstanpy the file, so the optimiser sees identical input.
"""

from __future__ import annotations

import logging
import os
import tempfile
from datetime import date, timedelta
from typing import Any

import numpy as np

from pipeline.core.forecaster import Forecaster, register
from pipeline.core.holiday_calendar import holiday_table

_PARAMS = ("k", "m", "sigma_obs", "delta", "beta")
_DEFAULT_START = date(2024, 1, 1)


def silence_prophet_logs() -> None:
    """Keep cmdstanpy's per-fit INFO lines and Prophet's notices out of the logs."""
    for name in ("cmdstanpy", "prophet", "prophet.plot", "prophet.models", "prophet.forecaster"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.ERROR)
        logger.propagate = False
    logging.getLogger("cmdstanpy").disabled = True
    logging.getLogger("prophet.plot").disabled = True  # "Importing plotly failed" is logged as an error


_BACKEND: Any = None


def _fast_backend() -> Any:
    """Prophet's cmdstanpy backend with Stan's input files written by orjson (one per process)."""
    global _BACKEND
    if _BACKEND is None:
        import orjson
        from prophet.models import CmdStanPyBackend

        class _FastDataBackend(CmdStanPyBackend):
            def fit(self, stan_init: dict[str, Any], stan_data: dict[str, Any], **kwargs: Any) -> Any:
                if "inits" not in kwargs and "init" in kwargs:
                    stan_init = self.sanitize_custom_inits(stan_init, kwargs.pop("init"))
                inits, data = self.prepare_data(stan_init, stan_data)
                with tempfile.TemporaryDirectory(prefix="prophet-") as tmp:
                    paths = {}
                    for name, content in (("data", data), ("inits", inits)):
                        paths[name] = os.path.join(tmp, f"{name}.json")
                        with open(paths[name], "wb") as fh:
                            fh.write(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY))
                    return super().fit(stan_init, stan_data, data=paths["data"], inits=paths["inits"], **kwargs)

        _BACKEND = _FastDataBackend()
    return _BACKEND


def point_forecast(model: Any, future: Any) -> np.ndarray:
    """`model.predict(future)["yhat"]` without the per-component frames (no intervals are asked for).

    Prophet's `predict` builds every seasonal component, and the indicator matrix
    of which feature belongs to which, again for each call; this takes the
    trend and the same features and applies the fit's additive and
    multiplicative columns (`train_component_cols`) directly. Should the layout
    ever differ, it is Prophet's own `predict`.
    """
    df = model.setup_dataframe(future.copy())
    features = []
    for name, props in model.seasonalities.items():
        block = model.make_seasonality_features(df["ds"], props["period"], props["fourier_order"], name)
        if props["condition_name"] is not None:
            block[~df[props["condition_name"]]] = 0
        features.append(block.to_numpy())
    holidays = model.construct_holiday_dataframe(df["ds"])
    if len(holidays) > 0:
        features.append(model.make_holiday_features(df["ds"], holidays)[0].to_numpy())
    cols = model.train_component_cols
    if model.extra_regressors or not features or cols is None or "additive_terms" not in cols:
        return np.asarray(model.predict(future)["yhat"], dtype=float)
    x = np.hstack(features)
    if x.shape[1] != len(cols):
        return np.asarray(model.predict(future)["yhat"], dtype=float)
    beta = np.asarray(model.params["beta"], dtype=float).mean(axis=0)
    additive = x @ (beta * cols["additive_terms"].to_numpy()) * model.y_scale
    multiplicative = x @ (beta * cols["multiplicative_terms"].to_numpy())
    trend = np.asarray(model.predict_trend(df), dtype=float)
    return np.asarray(trend * (1 + multiplicative) + additive, dtype=float)


@register
class ProphetForecaster(Forecaster):
    """Prophet on the daily series; yearly seasonality only with at least `yearly_after` days.

    >>> m = ProphetForecaster()
    >>> m.start(date(2026, 1, 5))
    >>> m.learn_many([10, 12, 11, 13, 15, 6, 5] * 6)
    >>> f = m.forecast(7)
    >>> bool(f[4] > f[6]), bool((f >= 0).all())
    (True, True)
    """

    name = "prophet"
    version = "prophet-1.5-1"

    def __init__(self, region: str | None = None, holidays: bool = False, yearly_after: int = 731,
                 seasonality_mode: str = "additive", changepoint_prior_scale: float = 0.05,
                 max_history: int = 1095) -> None:
        super().__init__()
        self.region = region
        self.holidays = holidays
        self.yearly_after = yearly_after
        self.seasonality_mode = seasonality_mode
        self.changepoint_prior_scale = changepoint_prior_scale
        self.max_history = max_history
        self.init: dict[str, Any] | None = None
        self.warm = False
        self._model: Any = None

    def _dates(self, n: int, offset: int) -> Any:
        import pandas as pd  # type: ignore[import-untyped]

        first = (self.first_day or _DEFAULT_START) + timedelta(days=offset)
        return pd.date_range(first, periods=n, freq="D")

    def _fit(self, y: np.ndarray) -> None:
        import pandas as pd

        silence_prophet_logs()  # before the import: prophet.plot logs a notice while importing
        from prophet import Prophet

        silence_prophet_logs()  # after it: importing prophet resets its logger's level

        self._model = None
        if len(y) < 2 or float(np.ptp(y)) == 0:
            return  # Prophet cannot fit a constant; _predict repeats it
        offset = len(self.history) - len(y)
        df = pd.DataFrame({"ds": self._dates(len(y), offset), "y": y})
        holidays = None
        if self.holidays and self.region:
            table = holiday_table(self.region, df.ds.iloc[0].date(), df.ds.iloc[-1].date() + timedelta(days=366))
            if table:
                holidays = pd.DataFrame({"holiday": [n for n, _ in table], "ds": pd.to_datetime([d for _, d in table])})
        model = Prophet(weekly_seasonality=True, yearly_seasonality=len(y) >= self.yearly_after,
                        daily_seasonality=False, holidays=holidays, uncertainty_samples=0,
                        seasonality_mode=self.seasonality_mode,  # type: ignore[arg-type]
                        changepoint_prior_scale=self.changepoint_prior_scale)
        model.stan_backend = _fast_backend()
        init = self.init
        try:
            if init is not None:  # Prophet ignores any parameter whose shape no longer fits
                model.fit(df, init={k: np.asarray(v) if isinstance(v, list) else v for k, v in init.items()})
            else:
                model.fit(df)
        except RuntimeError:
            return  # Stan failed to optimise: _predict falls back to the recent mean
        self.warm = init is not None and all(
            len(init[k]) == np.shape(model.params[k])[-1] for k in ("delta", "beta"))
        self._model = model
        self.init = {k: (model.params[k][0].tolist() if k in ("delta", "beta") else float(model.params[k][0][0]
                     if np.ndim(model.params[k]) > 1 else model.params[k][0])) for k in _PARAMS}

    def _predict(self, y: np.ndarray, horizon: int) -> np.ndarray:
        if self._model is None:
            return np.full(horizon, float(np.mean(y[-28:])))
        import pandas as pd

        future = pd.DataFrame({"ds": self._dates(horizon, len(self.history))})
        return point_forecast(self._model, future)

    def _state(self) -> Any:
        return {"init": self.init}

    def _load_state(self, state: Any) -> None:
        if state and state.get("init"):
            self.init = state["init"]

    def to_prophet_json(self) -> str | None:
        """Prophet's own JSON serialisation of the current fit (None before the first fit)."""
        if self._model is None:
            return None
        from prophet.serialize import model_to_json

        return str(model_to_json(self._model))
