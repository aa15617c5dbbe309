"""The parametric alternative for at-risk: a Weibull survival model of the time from a stage to delivery.

`WeibullDelayModel` is the lane model with one thing changed: P(miss) is read
off a Weibull fitted to the recent stage-to-delivery times T of the chosen
scope, as the conditional survival S(elapsed + slack) / S(elapsed), instead of
counted among the recent trips that stayed at least as long. The fit is by
moments of log T (log T of a Weibull is Gumbel: sd = pi / (k sqrt 6)), exact
and deterministic, refitted when the window takes a new trip. Unlike the
empirical count it extrapolates beyond the longest trip seen; `provenance
anomalies evaluate` prints both on the same streams (docs/design.md has the
comparison and which one the detector runs).
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.core.lane_model import LaneDelayModel
from pipeline.core.quantile_window import PairWindow

_EULER = 0.5772156649015329


def weibull_fit(samples: np.ndarray) -> tuple[float, float]:
    """(shape k, scale lambda) of a Weibull by the moments of log T; samples must be positive.

    >>> rng = np.random.default_rng(0)
    >>> k, lam = weibull_fit(10.0 * rng.weibull(2.0, 20000))
    >>> round(k, 1), round(lam, 1)
    (2.0, 10.0)
    """
    logs = np.log(samples)
    sd = float(np.std(logs))
    k = math.pi / (math.sqrt(6.0) * sd) if sd > 0 else 50.0
    return k, math.exp(float(np.mean(logs)) + _EULER / k)


def conditional_survival(k: float, lam: float, elapsed: float, more: float) -> float:
    """P(T > elapsed + more | T > elapsed) for a Weibull(k, lam).

    >>> round(conditional_survival(1.0, 10.0, 5.0, 10.0), 4) == round(math.exp(-1.0), 4)
    True
    """
    if more <= 0:
        return 1.0
    e = max(0.0, elapsed)
    return math.exp((e / lam) ** k - ((e + more) / lam) ** k)


class WeibullDelayModel(LaneDelayModel):
    """The lane model whose at-risk probability comes from a Weibull fit of stage-to-delivery times."""

    def __init__(self, window: int = 256, min_deliveries: int = 30, min_samples: int = 20, quantile: float = 0.99,
                 silent_factor: float = 1.7, dwell_factor: float = 1.8, risk_quantile: float = 0.95) -> None:
        super().__init__(window, min_deliveries, min_samples, quantile, silent_factor, dwell_factor, risk_quantile)
        self.name = f"lane-delay-weibull/1 (window {window}, q{quantile:g})"
        self._fits: dict[int, tuple[int, float, float]] = {}  # id of a window -> (its count, k, lambda)

    def _p_miss(self, pairs: PairWindow, elapsed: float, slack: float) -> float:
        fit = self._fits.get(id(pairs))  # windows live as long as the model: their ids are stable keys
        if fit is None or fit[0] != pairs.count:
            totals = pairs.totals.sorted
            floor = max(float(totals[len(totals) // 2]) * 1e-3, 1e-9)
            k, lam = weibull_fit(np.maximum(totals, floor))
            fit = self._fits[id(pairs)] = (pairs.count, k, lam)
        return conditional_survival(fit[1], fit[2], elapsed, slack)
