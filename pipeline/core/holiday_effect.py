"""Holiday factors for a series' forecast, learnt from the same holidays in its own history.

A calendar (the site's regional public holidays, `holiday_calendar.py`) says which
days are special but not by how much: a closed day cuts an item's demand, Black
Friday lifts a retail item and barely moves a pallet of chemicals. So each holiday
in the horizon gets the factor this series showed on that holiday's past
occurrences: its actuals there over the level it had around them (the same
weekday one to three weeks either side, none of them holidays). A series sold in
small numbers says little on two or three days, so `prior` occurrences of "no
effect" are added before dividing. The members forecast ordinary days; the
factors are applied to the reconciled means of the SKU×site series, and the
aggregates are their sums (`reconcile.py`), so the hierarchy stays coherent.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np

from pipeline.core.holiday_calendar import holiday_table
from pipeline.errors import ConfigError

PRIOR = 0.5  # occurrences of "no effect" each holiday's factor is shrunk with
NEIGHBOUR_WEEKS = 3  # the level on a holiday: its weekday this many weeks either side
MAX_FACTOR = 5.0


def _expected(y: np.ndarray, i: int, special: set[int]) -> float | None:
    """Mean of the same weekday up to `NEIGHBOUR_WEEKS` weeks before and after day `i`, holidays left out."""
    near = [y[j] for k in range(1, NEIGHBOUR_WEEKS + 1) for j in (i - 7 * k, i + 7 * k)
            if 0 <= j < len(y) and j not in special]
    return float(np.mean(near)) if near else None


def holiday_factors(y: np.ndarray, first_day: date, region: str | None, horizon: int,
                    prior: float = PRIOR) -> np.ndarray:
    """Per forecast day (from the day after the history), the factor its holiday had here; 1.0 on other days.

    >>> first = date(2024, 11, 1)
    >>> y = np.full(400, 10.0); y[(date(2024, 11, 28) - first).days] = 2.0  # a closed Thanksgiving
    >>> f = holiday_factors(y, first, "NA", 30)  # from 2025-12-06: Christmas, ordinary last year
    >>> float(f.min()), float(f.max())
    (1.0, 1.0)
    >>> f = holiday_factors(y[:380], first, "NA", 14)  # from 2025-11-16: Thanksgiving on step 11
    >>> round(float(f[11]), 3), float(np.delete(f, 11).max())
    (0.467, 1.0)
    """
    if horizon < 1:
        raise ConfigError(f"horizon must be at least 1 day, got {horizon}")
    out = np.ones(horizon)
    if region is None or len(y) == 0:
        return out
    first_ds = first_day + timedelta(days=len(y))
    ahead = holiday_table(region, first_ds, first_ds + timedelta(days=horizon - 1))
    if not ahead:
        return out
    past = [(name, (d - first_day).days) for name, d in holiday_table(region, first_day, first_ds - timedelta(days=1))]
    special = {i for _, i in past}
    for name, day in ahead:
        actual = expected = 0.0
        seen = 0
        for i in (i for n, i in past if n == name):
            level = _expected(y, i, special)
            if level is not None:
                actual, expected, seen = actual + float(y[i]), expected + level, seen + 1
        if seen and expected > 0:
            typical = expected / seen
            factor = (actual + prior * typical) / (expected + prior * typical)
            out[(day - first_ds).days] = min(factor, MAX_FACTOR)
    return out
