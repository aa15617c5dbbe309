"""The point forecast for absolute error: a series' mean forecast times the ratio that minimises |actual - c·forecast|.

Members such as Prophet and ETS forecast the mean. Daily demand is skewed
(a few large orders, many small days, zeros on intermittent items), and under
absolute error (MAE, MASE) the best point forecast is the median, which lies
below the mean, by an amount that depends on the series. So the ensemble
multiplies its mean forecast by a factor `c` fitted to the series itself:

- out of sample: the `c` minimising Σ|y - c·f| over the recently scored days
  (forecast f, actual y), which is the median of y/f weighted by f;
- in sample: the same weighted median of y/m over the last half-year, where m
  is the series' local mean (a centred 29-day average times its weekday profile).

The first sees the ensemble's own bias but only a few weeks of days; the second
sees many days but not the bias; the factor is their geometric mean (the
in-sample one alone while fewer than 7 days are scored). Both are pure
functions of the series' history and its scored forecasts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_SCORED = 7  # scored days before the out-of-sample ratio counts
IN_SAMPLE_DAYS = 182
HALF_WINDOW = 14  # the local mean is a centred (2 * 14 + 1)-day average


def weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    """The smallest x whose cumulative weight reaches half the total.

    >>> weighted_median(np.array([3.0, 1.0, 2.0]), np.array([1.0, 1.0, 5.0]))
    2.0
    """
    order = np.argsort(x, kind="stable")
    cum = np.cumsum(w[order])
    return float(x[order][np.searchsorted(cum, 0.5 * cum[-1])])


def ratio_scale(forecasts: np.ndarray, actuals: np.ndarray) -> float | None:
    """argmin over c of Σ|actual - c·forecast| (None with fewer than `MIN_SCORED` positive forecasts).

    >>> ratio_scale(np.array([10.0] * 8), np.array([0, 5, 6, 7, 8, 30, 40, 50.0]))
    0.7
    """
    ok = forecasts > 1e-9
    if int(ok.sum()) < MIN_SCORED:
        return None
    return weighted_median(actuals[ok] / forecasts[ok], forecasts[ok])


def in_sample_scale(y: np.ndarray, days: int = IN_SAMPLE_DAYS, half: int = HALF_WINDOW) -> float:
    """The weighted median of y / local mean over the last `days` days with a full window (1.0 when too short).

    >>> rng = np.random.default_rng(0)
    >>> y = rng.choice([1.0, 1.0, 1.0, 1.0, 10.0], 400)  # mean 2.8, median 1: the point forecast is about a third
    >>> bool(0.25 < in_sample_scale(y) < 0.5), in_sample_scale(np.tile([2.0, 2, 2, 2, 2, 2, 16], 30))
    (True, 1.0)
    """
    y = np.asarray(y[-(days + half):], dtype=float)
    if len(y) < 2 * half + 14 or float(y.sum()) <= 0:
        return 1.0
    cum = np.concatenate([[0.0], np.cumsum(y)])
    idx = np.arange(half, len(y) - half)
    level = (cum[idx + half + 1] - cum[idx - half]) / (2 * half + 1)
    actual = y[idx]
    weekday = idx % 7
    profile = np.array([actual[weekday == d].sum() / max(float(level[weekday == d].sum()), 1e-9) for d in range(7)])
    mean = level * profile[weekday]
    ok = mean > 1e-9
    if int(ok.sum()) < 14:
        return 1.0
    return weighted_median(actual[ok] / mean[ok], mean[ok])


def point_scale(y: np.ndarray, scored: Sequence[tuple[float, float]]) -> float:
    """The factor from a mean forecast to the absolute-error point forecast, given (forecast, actual) pairs.

    >>> y = np.tile([2.0, 2, 2, 2, 2, 2, 16], 30)  # a steady weekly pattern: the local mean is the median
    >>> point_scale(y, []), round(point_scale(y, [(4.0, 2.0)] * 6), 3), round(point_scale(y, [(4.0, 2.0)] * 7), 3)
    (1.0, 1.0, 0.707)
    """
    inside = in_sample_scale(y)
    pairs = np.asarray(scored, dtype=float).reshape(-1, 2)
    outside = ratio_scale(pairs[:, 0], pairs[:, 1])
    if outside is None:
        return inside
    return float(np.sqrt(max(outside, 1e-6) * inside))
