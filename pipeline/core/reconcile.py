"""Coherent forecasts for the hierarchy SKU×site → SKU → total.

Four ways to make the levels add up: `bottom_up` (sum the SKU×site forecasts),
`top_down` (split the total by each SKU×site's share of the last `window` days),
`middle_out` (split each SKU's forecast by its sites' shares of the SKU over the
last `window` days, then sum the SKUs: the site series borrow the weekly and
yearly shape of their SKU, which is seen on more orders)
and `mint_wls` (MinT with a diagonal covariance: the least-squares coherent
forecast, each series weighted by the inverse variance of its past errors,
Wickramasuriya, Athanasopoulos and Hyndman 2019). The backtest chooses between
them. Negative bottom values are clipped before summing up, so every level stays
non-negative and coherent. Per-day `factors` (holiday effects, `holiday_effect.py`)
multiply the coherent SKU×site forecasts before they are summed, so the aggregates
carry their sites' holidays and still add up.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pipeline.core.demand import TOTAL
from pipeline.errors import ConfigError

METHODS = ("none", "bottom_up", "top_down", "middle_out", "mint_wls")


def _sku_of(key: str) -> str:
    return key.split("|", 1)[0]


def hierarchy(keys: list[str]) -> tuple[list[str], dict[str, list[int]]]:
    """The bottom keys (SKU×site, sorted) and, for every aggregate key, the bottom indices under it.

    >>> hierarchy(["total", "sku=A", "sku=A|site=1", "sku=A|site=2"])
    (['sku=A|site=1', 'sku=A|site=2'], {'sku=A': [0, 1], 'total': [0, 1]})
    """
    bottom = sorted(k for k in keys if "|site=" in k)
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(bottom):
        groups.setdefault(_sku_of(k), []).append(i)
    out = {g: idx for g, idx in groups.items() if g in keys}
    if TOTAL in keys:
        out[TOTAL] = list(range(len(bottom)))
    return bottom, out


def reconcile(forecasts: Mapping[str, np.ndarray], method: str,
              variances: Mapping[str, float] | None = None,
              history: Mapping[str, np.ndarray] | None = None, window: int = 91,
              factors: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Coherent versions of `forecasts` (series key -> horizon array).

    >>> f = {"total": np.array([12.0]), "sku=A": np.array([9.0]), "sku=A|site=1": np.array([4.0]),
    ...      "sku=A|site=2": np.array([4.0])}
    >>> {k: v.round(2).tolist() for k, v in sorted(reconcile(f, "bottom_up").items())}
    {'sku=A': [8.0], 'sku=A|site=1': [4.0], 'sku=A|site=2': [4.0], 'total': [8.0]}
    >>> h = {"sku=A|site=1": np.array([3.0, 3.0]), "sku=A|site=2": np.array([1.0, 1.0])}
    >>> {k: v.round(2).tolist() for k, v in sorted(reconcile(f, "middle_out", history=h).items())}
    {'sku=A': [9.0], 'sku=A|site=1': [6.75], 'sku=A|site=2': [2.25], 'total': [9.0]}
    """
    if method not in METHODS:
        raise ConfigError(f"unknown reconciliation {method!r}; expected one of {', '.join(METHODS)}")
    keys = list(forecasts)
    bottom, groups = hierarchy(keys)
    factors = factors or {}
    if method == "none" or not bottom:
        return {k: np.maximum(v, 0.0) * factors.get(k, 1.0) for k, v in forecasts.items()}
    yb = np.asarray([forecasts[k] for k in bottom], dtype=float)
    if method == "top_down" and TOTAL in forecasts and history is not None:
        recent = np.asarray([float(np.sum(history[k][-window:])) if k in history else 0.0 for k in bottom])
        share = recent / recent.sum() if recent.sum() > 0 else np.full(len(bottom), 1.0 / len(bottom))
        yb = share[:, None] * np.asarray(forecasts[TOTAL], dtype=float)[None, :]
    elif method == "middle_out" and history is not None:
        for g, idx in groups.items():
            if g == TOTAL or g not in forecasts:
                continue
            recent = np.asarray([float(np.sum(history[bottom[i]][-window:])) if bottom[i] in history else 0.0
                                 for i in idx])
            share = recent / recent.sum() if recent.sum() > 0 else np.full(len(idx), 1.0 / len(idx))
            yb[idx] = share[:, None] * np.asarray(forecasts[g], dtype=float)[None, :]
    elif method == "mint_wls":
        yb = _mint_wls(forecasts, bottom, groups, variances)
    yb = np.maximum(yb, 0.0)
    for i, k in enumerate(bottom):
        if k in factors:
            yb[i] = yb[i] * factors[k]
    out = {k: yb[i] for i, k in enumerate(bottom)}
    for g, idx in groups.items():
        out[g] = yb[idx].sum(axis=0)
    for k in keys:  # series outside the hierarchy (none today) pass through
        out.setdefault(k, np.maximum(forecasts[k], 0.0) * factors.get(k, 1.0))
    return out


def _mint_wls(forecasts: Mapping[str, np.ndarray], bottom: list[str], groups: dict[str, list[int]],
              variances: Mapping[str, float] | None) -> np.ndarray:
    """Solve (S'W⁻¹S) b = S'W⁻¹ŷ with W diagonal; without variances W counts the bottom series (structural)."""
    n = len(bottom)

    def weight(key: str, size: int) -> float:
        v = variances.get(key) if variances else None
        return 1.0 / (v if v and v > 0 else float(size))

    wb = np.asarray([weight(k, 1) for k in bottom])
    a = np.diag(wb)
    rhs: np.ndarray = wb[:, None] * np.asarray([forecasts[k] for k in bottom], dtype=float)
    for g, idx in groups.items():
        w = weight(g, len(idx))
        ix = np.asarray(idx)
        a[np.ix_(ix, ix)] += w
        rhs[ix] += w * np.asarray(forecasts[g], dtype=float)[None, :]
    if n == 0:
        return rhs
    return np.asarray(np.linalg.solve(a, rhs))
