"""A forecast combination whose weights come from each member's recent errors on this series.

Every forecast the ensemble issues is kept until its actuals arrive; `learn_one`
scores the members' forecasts for that day (all lead times), so the weights are
an online, rolling-origin backtest of the series itself. A member's weight is
proportional to its recent mean absolute error to the power `-power`; with no
scored day yet the members weigh the same.

`forecast` returns the weighted mean. `point_scale()` is the factor that turns
it into the forecast for absolute error (see `point_scale.py`), fitted on the
same scored days: per day, the mean of what the combination forecast for it
against what came true.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.core.forecaster import Forecaster, forecaster_from_json, register
from pipeline.core.point_scale import point_scale
from pipeline.errors import ConfigError


@register
class Ensemble(Forecaster):
    """Weighted mean of member forecasts, weights from errors over the last `window` scored days.

    >>> from pipeline.core.forecaster import SeasonalNaive
    >>> from pipeline.core.intermittent import TSB
    >>> e = Ensemble([SeasonalNaive(), TSB()])
    >>> week = [5, 1, 1, 1, 1, 1, 9]
    >>> e.learn_many(week * 4)
    >>> _ = e.forecast(7); e.learn_many(week)
    >>> w = e.member_weights(); bool(w[0] > w[1])
    True
    """

    name = "ensemble"
    version = "1"

    def __init__(self, members: Sequence[Forecaster | dict[str, Any]] = (), window: int = 28,
                 power: float = 2.0) -> None:
        super().__init__()
        if not members:
            raise ConfigError("an ensemble needs at least one member")
        self.members = [m if isinstance(m, Forecaster) else forecaster_from_json(m) for m in members]
        self.window = window
        self.power = power
        self.pending: dict[int, list[list[float]]] = {}  # day index -> member forecasts made for it
        self.combined: dict[int, list[float]] = {}  # day index -> the combination's forecasts for it
        self.errors: deque[list[float]] = deque(maxlen=window)  # per scored day: members' mean abs error
        self.scored: deque[tuple[float, float]] = deque(maxlen=window)  # per scored day: (combination, actual)
        self.weights: list[float] = [1.0 / len(self.members)] * len(self.members)
        self.last_forecasts: dict[str, np.ndarray] = {}  # each member's part of the last forecast

    def _get_params(self) -> dict[str, Any]:
        return {"members": [m.clone() for m in self.members], "window": self.window, "power": self.power}

    def start(self, first_day: Any) -> None:
        super().start(first_day)
        for m in self.members:
            m.start(first_day)

    def learn_one(self, y: float) -> None:
        super().learn_one(y)
        for m in self.members:
            m.learn_one(y)
        day = len(self.history) - 1
        made = self.pending.pop(day, None)
        if made:
            errs = np.abs(np.asarray(made) - float(y)).mean(axis=0)
            self.errors.append([float(e) for e in errs])
        combined = self.combined.pop(day, None)
        if combined:
            self.scored.append((float(np.mean(combined)), float(y)))

    def point_scale(self) -> float:
        """The factor from the mean forecast to the absolute-error point forecast of this series."""
        return point_scale(np.asarray(self.history), self.scored)

    def member_weights(self) -> list[float]:
        """Current weights, summing to 1; a member that does not apply to this series (`applies`) weighs 0."""
        y = np.asarray(self.history)
        on = np.asarray([m.applies(y) for m in self.members], dtype=float)
        if not on.any():
            on[:] = 1.0
        if not self.errors:
            return [float(w) for w in on / on.sum()]
        mae = np.asarray(self.errors).mean(axis=0)
        scale = float(mae[on > 0].max()) or 1.0
        inv = on * (np.maximum(mae / scale, 1e-3)) ** -self.power
        return [float(w) for w in inv / inv.sum()]

    def forecast(self, horizon: int) -> np.ndarray:
        if horizon < 1:
            raise ConfigError(f"horizon must be at least 1 day, got {horizon}")
        forecasts = np.asarray([m.forecast(horizon) for m in self.members])
        self.last_forecasts = {m.name: forecasts[i] for i, m in enumerate(self.members)}
        self.weights = self.member_weights()
        base = len(self.history)
        for step in range(horizon):
            self.pending.setdefault(base + step, []).append([float(v) for v in forecasts[:, step]])
        combined: np.ndarray = np.maximum(np.asarray(self.weights) @ forecasts, 0.0)
        for step in range(horizon):
            self.combined.setdefault(base + step, []).append(float(combined[step]))
        for made in (self.pending, self.combined):
            for d in [d for d in made if d < base - 1]:
                del made[d]
        return combined

    def describe(self) -> str:
        parts = ", ".join(f"{m.describe()}={w:.2f}" for m, w in zip(self.members, self.weights))
        return f"{self.name}@{self.version}[{parts}]"

    def describe_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version,
                "members": [{"name": m.name, "version": m.version, "weight": round(w, 4)}
                            for m, w in zip(self.members, self.weights)]}

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["params"] = {"members": [m.to_json() for m in self.members], "window": self.window, "power": self.power}
        out["history"] = []  # members hold it
        return out

    def _state(self) -> Any:
        return {"pending": {str(k): v for k, v in self.pending.items()}, "errors": list(self.errors),
                "combined": {str(k): v for k, v in self.combined.items()}, "scored": [list(p) for p in self.scored],
                "n": len(self.history)}

    def _load_state(self, state: Any) -> None:
        if not state:
            return
        self.pending = {int(k): v for k, v in state["pending"].items()}
        self.errors = deque(state["errors"], maxlen=self.window)
        self.combined = {int(k): v for k, v in state.get("combined", {}).items()}
        self.scored = deque((tuple(p) for p in state.get("scored", ())), maxlen=self.window)
        self.history = list(self.members[0].history)
