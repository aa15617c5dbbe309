"""Prophet as a daily demand forecaster: weekly season, yearly once there are two years, optional holidays.

Refits start from the previous fit's parameters (`init=`), which is what makes
refreshing a thousand series affordable. Intervals come from the conformal
layer, so Prophet runs with `uncertainty_samples=0` (its own intervals
under-cover). The fitted parameters are kept as JSON; `to_prophet_json()` gives
Prophet's own JSON serialisation of the fitted model. cmdstanpy's and Prophet's
INFO chatter is silenced on every fit (cheap), since importing Prophet resets its logger.
"""

from __future__ import annotations

import logging
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
        return np.asarray(self._model.predict(future)["yhat"], dtype=float)

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
