"""Scores every issued forecast as its actuals arrive: the online backtest behind intervals and reconciliation.

Each final (reconciled) forecast is kept until its days are complete; then its
scaled residual at each horizon step goes into the conformal pools, its squared
error into the series' error variance (MinT's weights), and its interval hits
into the coverage counts. A day is scored once per forecast that covered it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np

from pipeline.core.conformal import ConformalIntervals


@dataclass
class _Issued:
    first_ds: date
    yhat: np.ndarray
    lo80: np.ndarray
    hi80: np.ndarray
    lo95: np.ndarray
    hi95: np.ndarray
    scale: float
    cls: str
    scored: set[int] = field(default_factory=set)


@dataclass
class Coverage:
    """Counts of scored forecast days and how many fell inside each interval."""

    n: int = 0
    in80: int = 0
    in95: int = 0
    abs_error: float = 0.0

    @property
    def rate80(self) -> float:
        return self.in80 / self.n if self.n else float("nan")

    @property
    def rate95(self) -> float:
        return self.in95 / self.n if self.n else float("nan")


class ForecastScorer:
    """Outstanding forecasts per series; `observe` scores them against an actual.

    >>> c = ConformalIntervals(min_pool=1)
    >>> s = ForecastScorer(c)
    >>> one = np.array([10.0])
    >>> s.issue("total", date(2026, 3, 2), one, one - 2, one + 2, one - 4, one + 4, 2.0, "aggregate/smooth")
    >>> s.observe("total", date(2026, 3, 2), 11.0)
    >>> s.coverage["aggregate/smooth"].in80, list(c.pools[("aggregate/smooth", 0)])
    (1, [0.5])
    """

    def __init__(self, conformal: ConformalIntervals, keep: int = 4, variance_window: int = 56) -> None:
        self.conformal = conformal
        self.keep = keep
        self.issued: dict[str, deque[_Issued]] = {}
        self.squared: dict[str, deque[float]] = {}
        self.variance_window = variance_window
        self.coverage: dict[str, Coverage] = {}

    def issue(self, key: str, first_ds: date, yhat: np.ndarray, lo80: np.ndarray, hi80: np.ndarray,
              lo95: np.ndarray, hi95: np.ndarray, scale: float, cls: str) -> None:
        """Remember a forecast until its days are observed; the oldest of `keep` per series are dropped."""
        q = self.issued.setdefault(key, deque(maxlen=self.keep * 28))
        q.append(_Issued(first_ds, yhat, lo80, hi80, lo95, hi95, scale, cls))

    def observe(self, key: str, ds: date, y: float) -> None:
        """Score every outstanding forecast of `key` that covers the complete day `ds`."""
        for f in self.issued.get(key, ()):
            step = (ds - f.first_ds).days
            if not 0 <= step < len(f.yhat) or step in f.scored:
                continue
            f.scored.add(step)
            err = y - float(f.yhat[step])
            self.conformal.update(f.cls, step, err / f.scale)
            self.squared.setdefault(key, deque(maxlen=self.variance_window)).append(err * err)
            cov = self.coverage.setdefault(f.cls, Coverage())
            cov.n += 1
            cov.in80 += int(f.lo80[step] <= y <= f.hi80[step])
            cov.in95 += int(f.lo95[step] <= y <= f.hi95[step])
            cov.abs_error += abs(err)

    def observe_many(self, key: str, first_day: date, ys: Iterable[float]) -> None:
        for i, y in enumerate(ys):
            self.observe(key, first_day + timedelta(days=i), float(y))

    def variances(self) -> dict[str, float]:
        """Mean squared error of each series' scored forecasts: MinT's diagonal."""
        return {k: float(np.mean(v)) for k, v in self.squared.items() if v}
