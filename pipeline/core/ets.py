"""Exponential smoothing (ETS) with a weekly season, fitted by statsforecast.

Additive error and season, no trend by default: on noisy daily demand a trend
term mostly extrapolates noise, and the ensemble carries Prophet for trends.
A fit looks back `max_history` days, which keeps it fast without losing the
weekly pattern. A series ETS cannot fit (too short, constant) falls back to the
weekly seasonal naive forecast and says so in `describe()`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.core.forecaster import Forecaster, SeasonalNaive, register


@register
class ETS(Forecaster):
    """statsforecast's AutoETS with a fixed model string (`model="ANA"`: additive error, no trend, additive season).

    >>> m = ETS()
    >>> m.learn_many([10, 12, 9, 11, 14, 5, 4] * 8)
    >>> f = m.forecast(7)
    >>> bool(abs(f[0] - 10) < 2 and f[5] < f[4])
    True
    """

    name = "ets"
    version = "statsforecast-autoets-1"

    def __init__(self, model: str = "ANA", season_length: int = 7, damped: bool = False,
                 max_history: int = 182) -> None:
        super().__init__()
        self.model = model
        self.season_length = season_length
        self.damped = damped
        self.max_history = max_history
        self._fitted: Any = None
        self.fell_back = False

    def _fit(self, y: np.ndarray) -> None:
        from statsforecast.models import AutoETS

        self.fell_back = False
        if len(y) >= 2 * self.season_length + 2 and float(np.ptp(y)) > 0:
            try:
                self._fitted = AutoETS(season_length=self.season_length, model=self.model,
                                       damped=self.damped if "d" not in self.model else None)
                self._fitted.fit(y.astype(float))
                return
            except Exception:  # statsforecast raises bare ValueErrors on degenerate series
                pass
        self.fell_back = True
        self._fitted = None

    def _predict(self, y: np.ndarray, horizon: int) -> np.ndarray:
        if self._fitted is None:
            naive = SeasonalNaive(self.season_length)
            naive.learn_many(y)
            return naive.forecast(horizon)
        out: dict[str, Any] = self._fitted.predict(h=horizon)
        return np.asarray(out["mean"], dtype=float)

    def describe(self) -> str:
        return f"{self.name}@{self.version}" + ("(seasonal_naive fallback)" if self.fell_back else "")
