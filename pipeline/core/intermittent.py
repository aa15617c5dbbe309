"""Forecasts for intermittent demand (many zero days): TSB, fitted by statsforecast.

Croston's method forecasts demand size and interval separately but never lets a
dead item's forecast decay; TSB (Teunter, Syntetos, Babai 2011) smooths the
probability of demand instead, so it does. The forecast is a flat daily rate.
"""

from __future__ import annotations

import numpy as np

from pipeline.core.forecaster import Forecaster, register

RECENT_DAYS = 56  # days whose zero share says whether a series is intermittent now
INTERMITTENT_ZERO_SHARE = 0.3


@register
class TSB(Forecaster):
    """Teunter-Syntetos-Babai: smoothed demand probability times smoothed demand size.

    >>> m = TSB()
    >>> m.learn_many([0, 0, 6, 0, 0, 0, 6, 0, 0, 6] * 5)
    >>> f = m.forecast(3)
    >>> bool(0.5 < f[0] < 3.5 and f[0] == f[2])
    True
    """

    name = "tsb"
    version = "statsforecast-tsb-1"

    def __init__(self, alpha_d: float = 0.1, alpha_p: float = 0.05, max_history: int = 365) -> None:
        super().__init__()
        self.alpha_d = alpha_d
        self.alpha_p = alpha_p
        self.max_history = max_history

    def applies(self, y: np.ndarray) -> bool:
        """Only on intermittent series: on a smooth one its flat rate misses the weekly pattern."""
        return zero_share(y[-RECENT_DAYS:]) > INTERMITTENT_ZERO_SHARE

    def _predict(self, y: np.ndarray, horizon: int) -> np.ndarray:
        if not np.any(y > 0):
            return np.zeros(horizon)
        from statsforecast.models import TSB as _TSB

        out = _TSB(alpha_d=self.alpha_d, alpha_p=self.alpha_p).forecast(y=y.astype(float), h=horizon)
        return np.asarray(out["mean"], dtype=float)


def zero_share(y: np.ndarray) -> float:
    """The share of days without demand: above `INTERMITTENT_ZERO_SHARE` a series is intermittent.

    >>> zero_share(np.array([0.0, 2.0, 0.0, 0.0]))
    0.75
    """
    return float(np.mean(y == 0)) if len(y) else 1.0
