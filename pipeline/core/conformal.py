"""Split-conformal prediction intervals per horizon step, pooled within a class of similar series.

A residual is the actual minus the stored forecast, divided by the series'
scale (the in-sample MAE of the weekly seasonal naive method), so series of
different sizes can share one pool. For each class and horizon step the pool
keeps the last `capacity` scaled residuals; an interval is the forecast plus the
scale times the pool's empirical quantiles (the finite-sample conformal rank).
Demand cannot be negative, so lower bounds stop at zero.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from pipeline.core.intermittent import INTERMITTENT_ZERO_SHARE, RECENT_DAYS, zero_share

LEVELS = (0.8, 0.95)


def series_class(series_key: str, y: np.ndarray) -> str:
    """The pool a series shares residuals with: its hierarchy level and whether it is intermittent.

    >>> series_class("sku=A|site=B", np.array([0.0, 0.0, 3.0, 0.0]))
    'site/intermittent'
    >>> series_class("total", np.array([5.0, 6.0]))
    'aggregate/smooth'
    """
    level = "site" if "|site=" in series_key else "aggregate"
    recent = y[-RECENT_DAYS:]
    pattern = "intermittent" if zero_share(recent) > INTERMITTENT_ZERO_SHARE else "smooth"
    return f"{level}/{pattern}"


def conformal_quantile(scores: np.ndarray, q: float) -> float:
    """The ceil((n+1)q)/n empirical quantile: split conformal's finite-sample correction.

    >>> conformal_quantile(np.arange(1.0, 10.0), 0.8)
    8.0
    """
    n = len(scores)
    rank = min(n, max(1, math.ceil((n + 1) * q)))
    return float(np.sort(scores)[rank - 1])


class ConformalIntervals:
    """Pools of scaled residuals by (class, horizon step); intervals from their quantiles.

    >>> c = ConformalIntervals(min_pool=5)
    >>> for r in [-2.0, -1.0, 0.0, 1.0, 2.0] * 4:
    ...     c.update("site/smooth", 0, r)
    >>> lo, hi, lo95, hi95 = c.interval("site/smooth", np.array([10.0]), 1.0)
    >>> bool(lo95[0] <= lo[0] < 10.0 < hi[0] <= hi95[0])
    True
    """

    def __init__(self, capacity: int = 2000, min_pool: int = 30, fallback_width: float = 1.5, spread: int = 3) -> None:
        self.capacity = capacity
        self.spread = spread
        self.min_pool = min_pool
        self.fallback_width = fallback_width
        self.pools: dict[tuple[str, int], deque[float]] = {}

    def update(self, cls: str, step: int, scaled_residual: float) -> None:
        """Add one scored forecast: (actual - forecast) / scale at horizon step `step` (0 = next day)."""
        if math.isfinite(scaled_residual):
            self.pools.setdefault((cls, step), deque(maxlen=self.capacity)).append(scaled_residual)

    def _scores(self, cls: str, step: int) -> np.ndarray | None:
        """The class's residuals at `step` and the `spread` steps either side (None below `min_pool`).

        Errors change slowly with the lead time, and a pool of one step holds
        few residuals: its finite-sample rank then widens the interval well past
        the level it is for.
        """
        near: list[float] = []
        for s in range(max(0, step - self.spread), step + self.spread + 1):
            near += self.pools.get((cls, s), ())
        return np.asarray(near) if len(near) >= self.min_pool else None

    def interval(self, cls: str, yhat: np.ndarray, scale: float) -> tuple[np.ndarray, ...]:
        """(lower80, upper80, lower95, upper95) around `yhat`, ordered and never below zero."""
        scale = max(scale, 1e-9)
        bounds = []
        for level in LEVELS:
            lo = np.empty_like(yhat, dtype=float)
            hi = np.empty_like(yhat, dtype=float)
            for step in range(len(yhat)):
                scores = self._scores(cls, step)
                if scores is None:
                    z = {0.8: 1.28, 0.95: 1.96}[level] * self.fallback_width
                    q_lo, q_hi = -z, z
                else:
                    q_lo = -conformal_quantile(-scores, (1 + level) / 2)
                    q_hi = conformal_quantile(scores, (1 + level) / 2)
                lo[step] = yhat[step] + scale * min(q_lo, 0.0)
                hi[step] = yhat[step] + scale * max(q_hi, 0.0)
            bounds += [np.maximum(lo, 0.0), np.maximum(hi, yhat)]
        lo80, hi80, lo95, hi95 = bounds
        return lo80, hi80, np.minimum(lo95, lo80), np.maximum(hi95, hi80)

    def to_json(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "min_pool": self.min_pool, "fallback_width": self.fallback_width,
                "spread": self.spread,
                "pools": [[c, s, list(p)] for (c, s), p in self.pools.items()]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ConformalIntervals:
        out = cls(data["capacity"], data["min_pool"], data["fallback_width"], int(data.get("spread", 3)))
        for c, s, p in data["pools"]:
            out.pools[(c, int(s))] = deque(p, maxlen=out.capacity)
        return out
