"""Public holidays and retail peaks per region: the calendar demand follows and Prophet may be told of.

Closed days cut demand, the days before Christmas and Black Friday lift retail
demand. The simulator's demand profile and the Prophet forecaster read the same
table, so a model that is given holidays is given the true ones.
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache
from typing import NamedTuple

# Lunar new year (first day) for the years the simulator is likely to cover.
_LUNAR_NEW_YEAR = {
    2022: date(2022, 2, 1), 2023: date(2023, 1, 22), 2024: date(2024, 2, 10), 2025: date(2025, 1, 29),
    2026: date(2026, 2, 17), 2027: date(2027, 2, 6), 2028: date(2028, 1, 26), 2029: date(2029, 2, 13),
    2030: date(2030, 2, 3),
}


class Holiday(NamedTuple):
    """One holiday on one day: `closed` days cut demand, `peak` days lift retail demand."""

    day: date
    name: str
    closed: bool


def easter(year: int) -> date:
    """Western Easter Sunday (anonymous Gregorian algorithm).

    >>> easter(2026)
    datetime.date(2026, 4, 5)
    """
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    l = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l) // 451
    month = (h + l - 7 * m + 114) // 31
    return date(year, month, (h + l - 7 * m + 114) % 31 + 1)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


@lru_cache(maxsize=256)
def holidays(region: str, year: int) -> tuple[Holiday, ...]:
    """The holidays of one region in one year, in day order.

    >>> [h.name for h in holidays("NA", 2026)][:3]
    ['new_year', 'independence_day', 'thanksgiving']
    """
    out = [Holiday(date(year, 1, 1), "new_year", True)]
    if region == "EU":
        e = easter(year)
        out += [Holiday(e - timedelta(days=2), "good_friday", True), Holiday(e + timedelta(days=1), "easter_monday", True),
                Holiday(date(year, 5, 1), "labour_day", True)]
    elif region == "NA":
        thanksgiving = _nth_weekday(year, 11, 3, 4)
        out += [Holiday(date(year, 7, 4), "independence_day", True), Holiday(thanksgiving, "thanksgiving", True),
                Holiday(thanksgiving + timedelta(days=1), "black_friday", False)]
    elif region == "APAC" and year in _LUNAR_NEW_YEAR:
        lny = _LUNAR_NEW_YEAR[year]
        out += [Holiday(lny + timedelta(days=i), "lunar_new_year", True) for i in range(3)]
    elif region == "LATAM":
        carnival = easter(year) - timedelta(days=47)
        out += [Holiday(carnival - timedelta(days=1), "carnival", True), Holiday(carnival, "carnival", True)]
    if region != "APAC":
        out += [Holiday(date(year, 12, 25), "christmas", True)]
        if region == "EU":
            out.append(Holiday(date(year, 12, 26), "christmas", True))
    return tuple(sorted(out))


def holiday_on(region: str, day: date) -> Holiday | None:
    """The holiday of `region` on `day`, if any.

    >>> holiday_on("EU", date(2026, 12, 25)).name
    'christmas'
    """
    for h in holidays(region, day.year):
        if h.day == day:
            return h
    return None


def holiday_table(region: str, first: date, last: date) -> list[tuple[str, date]]:
    """(name, day) for every holiday of `region` between two days, inclusive: Prophet's holidays frame."""
    return [(h.name, h.day) for year in range(first.year, last.year + 1)
            for h in holidays(region, year) if first <= h.day <= last]
