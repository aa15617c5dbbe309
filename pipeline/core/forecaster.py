"""The one API every daily demand forecaster follows (river-style), and the simple ones.

`learn_one(y)` appends the next day's actual, `learn_many(ys)` several;
`forecast(horizon)` returns the next `horizon` days, never negative. Models refit
lazily: learning only marks them stale, so a refresh costs one fit however many
days arrived. Constructor arguments are the hyper-parameters, stored under the
same names, so `clone()` and JSON round trips need nothing else. A caller that
wants fit and predict times sets `timer` (the core reads no clock itself). `to_json()`
gives a JSON-safe dict (never pickle); `forecaster_from_json` rebuilds any model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date
from typing import Any

import numpy as np

from pipeline.errors import ConfigError

_REGISTRY: dict[str, Callable[..., Forecaster]] = {}


def register(cls: type[Forecaster]) -> type[Forecaster]:
    """Class decorator: make a forecaster rebuildable from its JSON by `name`."""
    _REGISTRY[cls.name] = cls
    return cls


class Forecaster:
    """A daily series model: history in, the next days out."""

    name = "forecaster"
    version = "1"
    max_history: int | None = None  # days a fit looks back; None: all
    timer: Callable[[], float] | None = None  # a caller may pass a monotonic clock to time fits

    def __init__(self) -> None:
        self.first_day: date | None = None
        self.history: list[float] = []
        self._stale = True
        self.fit_seconds = 0.0
        self.predict_seconds = 0.0

    def _get_params(self) -> dict[str, Any]:
        params = {}
        for k in self.__init__.__code__.co_varnames[1:self.__init__.__code__.co_argcount]:  # type: ignore[misc]
            params[k] = getattr(self, k)
        return params

    def clone(self) -> Forecaster:
        """A fresh, unfitted model with the same hyper-parameters."""
        return type(self)(**self._get_params())

    def start(self, first_day: date) -> None:
        """Say which day the first learned value is for (models with a calendar need it)."""
        self.first_day = first_day

    def learn_one(self, y: float) -> None:
        if not np.isfinite(y) or y < 0:
            raise ConfigError(f"{self.name}: demand must be a finite number >= 0, got {y!r}")
        self.history.append(float(y))
        self._stale = True

    def learn_many(self, ys: Iterable[float]) -> None:
        for y in ys:
            self.learn_one(y)

    def forecast(self, horizon: int) -> np.ndarray:
        """The next `horizon` days after the last one learned; never negative."""
        if horizon < 1:
            raise ConfigError(f"horizon must be at least 1 day, got {horizon}")
        if not self.history:
            return np.zeros(horizon)
        y = np.asarray(self.history if self.max_history is None else self.history[-self.max_history:])
        clock = self.timer
        t0 = clock() if clock else 0.0
        if self._stale:
            self._fit(y)
            self._stale = False
        t1 = clock() if clock else 0.0
        out = np.asarray(self._predict(y, horizon), dtype=float)
        if clock:
            self.fit_seconds, self.predict_seconds = t1 - t0, clock() - t1
        return np.where(np.isfinite(out), np.maximum(out, 0.0), float(np.mean(y)))

    def applies(self, y: np.ndarray) -> bool:
        """Whether this model's forecast of a series with history `y` should count in a combination."""
        return True

    def _fit(self, y: np.ndarray) -> None:
        """Refit on `y` (the last `max_history` days); default: nothing to fit."""

    def _predict(self, y: np.ndarray, horizon: int) -> np.ndarray:
        raise NotImplementedError

    @property
    def last_day_index(self) -> int:
        return len(self.history) - 1

    def describe(self) -> str:
        return f"{self.name}@{self.version}"

    def to_json(self) -> dict[str, Any]:
        """Hyper-parameters, history and fitted state as JSON-safe values."""
        return {"name": self.name, "version": self.version, "params": self._get_params(),
                "first_day": self.first_day.isoformat() if self.first_day else None,
                "history": list(self.history), "state": self._state()}

    def _state(self) -> Any:
        return None

    def _load_state(self, state: Any) -> None:
        """Restore what `_state` returned; the model stays stale unless it says otherwise."""


def forecaster_from_json(data: dict[str, Any]) -> Forecaster:
    """Rebuild a model from `to_json()` output."""
    try:
        cls = _REGISTRY[data["name"]]
    except KeyError:
        raise ConfigError(f"unknown forecaster {data.get('name')!r}; known: {', '.join(sorted(_REGISTRY))}") from None
    model = cls(**data["params"])
    if data.get("first_day"):
        model.start(date.fromisoformat(data["first_day"]))
    model.history = [float(v) for v in data["history"]]
    model._stale = True
    model._load_state(data.get("state"))
    return model


@register
class SeasonalNaive(Forecaster):
    """Each day repeats the same weekday of the last complete week; the mean while there is less than a week.

    >>> m = SeasonalNaive(season=7)
    >>> m.learn_many([1, 2, 3, 4, 5, 6, 7, 8])
    >>> m.forecast(3).tolist()
    [2.0, 3.0, 4.0]
    """

    name = "seasonal_naive"

    def __init__(self, season: int = 7) -> None:
        super().__init__()
        if season < 1:
            raise ConfigError(f"season must be at least 1, got {season}")
        self.season = season

    def _predict(self, y: np.ndarray, horizon: int) -> np.ndarray:
        if len(y) < self.season:
            return np.full(horizon, float(np.mean(y)))
        last = y[-self.season:]
        return np.array([last[i % self.season] for i in range(horizon)])


def seasonal_naive_scale(y: np.ndarray, season: int = 7) -> float:
    """In-sample MAE of the seasonal naive method: the MASE/RMSSE denominator (0 when undefined).

    >>> seasonal_naive_scale(np.array([1.0] * 7 + [3.0] * 7))
    2.0
    """
    if len(y) <= season:
        return float(np.mean(np.abs(np.diff(y)))) if len(y) > 1 else 0.0
    return float(np.mean(np.abs(y[season:] - y[:-season])))


@register
class SeasonalMedian(Forecaster):
    """Each weekday forecast as the median of its last `window` values: what minimises absolute error.

    Robust to promotions and spikes, and zero on a mostly-zero (intermittent) series,
    which is the best a point forecast can do there under MAE/MASE.

    >>> m = SeasonalMedian(season=7, window=3)
    >>> m.learn_many([0, 0, 0, 0, 0, 0, 9] * 2 + [0, 0, 0, 0, 0, 0, 0])
    >>> m.forecast(7).tolist()
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 9.0]
    """

    name = "seasonal_median"

    def __init__(self, season: int = 7, window: int = 8) -> None:
        super().__init__()
        if season < 1 or window < 1:
            raise ConfigError(f"season and window must be at least 1, got {season}, {window}")
        self.season = season
        self.window = window

    def _predict(self, y: np.ndarray, horizon: int) -> np.ndarray:
        if len(y) < self.season:
            return np.full(horizon, float(np.median(y)))
        n = len(y)
        out = np.empty(horizon)
        for step in range(horizon):
            same = y[n - self.season + (step % self.season)::-self.season][: self.window]
            out[step] = float(np.median(same))
        return out


@register
class WeekdayProfile(Forecaster):
    """The recent level times a weekday profile: multiplicative weekly season, as demand has it.

    ETS and Prophet add the weekly pattern; on demand that moves with the season
    the weekday swing moves with it. Here the profile is each weekday's share over
    the last `weeks` weeks and the level the last `level_days` days over their
    profile, so a busier season scales every weekday alike.

    >>> m = WeekdayProfile(weeks=4, level_days=7)
    >>> m.learn_many([2, 2, 2, 2, 2, 1, 3] * 3 + [4, 4, 4, 4, 4, 2, 6])
    >>> m.forecast(7).tolist()  # last week twice as busy: every weekday twice its share
    [4.0, 4.0, 4.0, 4.0, 4.0, 2.0, 6.0]
    """

    name = "weekday_profile"

    def __init__(self, weeks: int = 52, level_days: int = 56) -> None:
        super().__init__()
        if weeks < 1 or level_days < 7:
            raise ConfigError(f"need weeks >= 1 and level_days >= 7, got {weeks}, {level_days}")
        self.weeks = weeks
        self.level_days = level_days

    def _predict(self, y: np.ndarray, horizon: int) -> np.ndarray:
        n = len(y)
        if n < 7:
            return np.full(horizon, float(np.mean(y)))
        weekday = np.arange(n) % 7
        recent, days = y[-7 * self.weeks:], weekday[-7 * self.weeks:]
        profile = np.array([recent[days == d].mean() for d in range(7)])
        mean = float(profile.mean())
        if mean <= 0:
            return np.zeros(horizon)
        profile /= mean
        level = float(y[-self.level_days:].sum()) / max(float(profile[weekday[-self.level_days:]].sum()), 1e-9)
        return np.asarray(level * profile[np.arange(n, n + horizon) % 7])
