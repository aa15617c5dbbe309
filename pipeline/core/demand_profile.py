"""What customers order: a seeded daily demand profile per SKU and site.

Each SKU×site series has a level, a weekly pattern, a trend, a yearly season,
its region's holidays, promotions (with a dip after them), one-day spikes and
gamma-Poisson noise; about a quarter of the series are intermittent (a few large
orders, many zero days). The fleet simulator draws the SKUs and quantities of
its `created` events from this profile, and the forecast backtest samples daily
series from it directly, so both see the same demand. Pure: the seed picks
everything.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

from pipeline.core.fleet_catalog import SITES, SKUS, Site, Sku
from pipeline.core.holiday_calendar import holidays

EPOCH = date(2024, 1, 1)  # trends are measured from here
_CLOSED, _BLACK_FRIDAY, _PRE_CHRISTMAS = 0.15, 2.4, 1.25


@dataclass(frozen=True, slots=True)
class SeriesProfile:
    """The demand of one SKU at one site: `base` cases a day before every effect."""

    sku: Sku
    site: Site
    base: float
    weekly: tuple[float, ...]
    trend: float
    amplitude: float
    peak_day: float
    order_cases: float
    dispersion: float
    intermittent: bool
    seed: int

    @property
    def key(self) -> str:
        return f"sku={self.sku.sku}|site={self.site.gln}"

    @property
    def retail(self) -> bool:
        return self.weekly[4] > self.weekly[0]


class DemandProfile:
    """Daily demand rates for every SKU at every site, for one seed.

    >>> p = DemandProfile(3)
    >>> s = p.series()[0]
    >>> rates = p.rates(s, date(2026, 3, 2), 7)
    >>> len(rates), bool((rates >= 0).all())
    (7, True)
    """

    def __init__(self, seed: int, skus: Sequence[Sku] = SKUS, sites: Sequence[Site] = SITES) -> None:
        self.seed = seed
        self.skus = tuple(skus)
        self.sites = tuple(sites)
        self._series: dict[tuple[str, str], SeriesProfile] = {}
        self._years: dict[tuple[str, str, int], np.ndarray] = {}
        site_rng = random.Random(f"demand-sites:{seed}")
        self.site_factor = {s.gln: site_rng.lognormvariate(0, 0.7) for s in self.sites}
        for sku in self.skus:
            for site in self.sites:
                self._series[(sku.sku, site.gln)] = self._draw(sku, site)

    def _draw(self, sku: Sku, site: Site) -> SeriesProfile:
        rng = random.Random(f"demand:{self.seed}:{sku.sku}:{site.gln}")
        intermittent = rng.random() < 0.25 or sku.cases >= 30 or sku.case_pack >= 50
        base = sku.weight * self.site_factor[site.gln] * rng.lognormvariate(0, 0.5) * 2.0
        order_cases = 1.0 + rng.expovariate(1 / 1.5)
        if intermittent:
            base *= rng.uniform(0.05, 0.25)
            order_cases = rng.uniform(3, 10)
        weekly = tuple(w * rng.lognormvariate(0, 0.08) for w in sku.weekly)
        mean = sum(weekly) / 7
        return SeriesProfile(
            sku, site, base, tuple(w / mean for w in weekly), rng.gauss(0.15, 0.25),
            sku.amplitude * rng.uniform(0.6, 1.3), sku.peak_day + rng.gauss(0, 10), order_cases,
            rng.uniform(4, 15), intermittent, rng.randrange(2**31),
        )

    def series(self) -> list[SeriesProfile]:
        """Every SKU×site series, SKU-major."""
        return list(self._series.values())

    def get(self, sku: str, site: str) -> SeriesProfile:
        return self._series[(sku, site)]

    def rate(self, s: SeriesProfile, day: date) -> float:
        """Expected cases ordered of `s` on the local day `day`."""
        key = (s.sku.sku, s.site.gln, day.year)
        year = self._years.get(key)
        if year is None:
            if len(self._years) >= 3 * len(self._series):  # a few years a series: a long run does not hoard them
                self._years.clear()
            first = date(day.year, 1, 1)
            year = self._years[key] = self.rates(s, first, (date(day.year + 1, 1, 1) - first).days)
        return float(year[day.timetuple().tm_yday - 1])

    def rates(self, s: SeriesProfile, first: date, days: int) -> np.ndarray:
        """Expected cases a day for `days` local days from `first`: every effect but the noise."""
        ordinal = np.arange(first.toordinal(), first.toordinal() + days)
        weekday = (ordinal - 1) % 7  # date.fromordinal(1) is a Monday
        years = (ordinal - EPOCH.toordinal()) / 365.25
        doy = ordinal - np.array([date(date.fromordinal(int(o)).year, 1, 1).toordinal() for o in ordinal]) + 1
        season = 1.0 + s.amplitude * np.cos(2 * math.pi * (doy - s.peak_day) / 365.25)
        trend = np.maximum(0.2, 1.0 + s.trend * years)
        out: np.ndarray = s.base * np.asarray(s.weekly)[weekday] * np.maximum(season, 0.05) * trend
        last = first + timedelta(days=days - 1)
        for year in range(first.year - 1, last.year + 1):
            for h in holidays(s.site.region, year):
                i = h.day.toordinal() - first.toordinal()
                if 0 <= i < days:
                    out[i] *= _CLOSED if h.closed else (_BLACK_FRIDAY if s.retail else 1.2)
            if s.retail:
                lo = date(year, 12, 1).toordinal() - first.toordinal()
                out[max(lo, 0):max(lo + 23, 0)] *= _PRE_CHRISTMAS
            for start, length, lift in self._promotions(s, year):
                i = start - first.toordinal()
                out[max(i, 0):max(i + length, 0)] *= lift
                out[max(i + length, 0):max(i + length + 4, 0)] *= 0.8
            for day, mult in self._spikes(s, year):
                i = day - first.toordinal()
                if 0 <= i < days:
                    out[i] *= mult
        return out

    def _promotions(self, s: SeriesProfile, year: int) -> list[tuple[int, int, float]]:
        rng = random.Random(f"promo:{s.seed}:{year}")
        jan1 = date(year, 1, 1).toordinal()
        return [(jan1 + rng.randrange(365), rng.randint(3, 10), rng.uniform(1.4, 2.5))
                for _ in range(rng.randint(2, 5))]

    def _spikes(self, s: SeriesProfile, year: int) -> list[tuple[int, float]]:
        rng = random.Random(f"spike:{s.seed}:{year}")
        jan1 = date(year, 1, 1).toordinal()
        return [(jan1 + rng.randrange(365), rng.uniform(3, 6)) for _ in range(rng.randint(1, 5))]

    def sample(self, s: SeriesProfile, first: date, days: int) -> np.ndarray:
        """Units ordered of `s` on each of `days` local days from `first`: a noisy draw around the rates.

        Orders arrive as a gamma-mixed Poisson stream; each order takes a few cases.
        """
        gen = np.random.default_rng([self.seed, s.seed, first.toordinal(), days])
        lam = self.rates(s, first, days) / s.order_cases
        lam = lam * gen.gamma(s.dispersion, 1.0 / s.dispersion, size=days)
        orders = gen.poisson(lam)
        cases = orders + gen.poisson((s.order_cases - 1.0) * orders)
        return (cases * s.sku.case_pack).astype(float)


def synthetic_skus(count: int, seed: int) -> list[Sku]:
    """`count` SKUs drawn around the catalogue's, for benchmarks that need many series."""
    rng = random.Random(f"skus:{seed}")
    out = []
    for i in range(count):
        base = SKUS[i % len(SKUS)]
        out.append(Sku(f"{base.sku}-{i // len(SKUS):02d}", base.weight * rng.uniform(0.5, 1.5), base.case_pack,
                       base.cases, (base.peak_day + rng.randint(-20, 20)) % 365, base.amplitude, base.weekly,
                       base.setpoint_c))
    return out
