"""The demand handler: daily demand per `ledger.entries` partition, and forecast rounds over all of them.

Demand: each partition's `DailyDemand` is a pure function of its entries (a
replay from offset 0 rebuilds it); its changed days go to `analytics.demand`
as that partition's part, and the store sums the parts. Forecasts: a round runs
when the last complete day moves on, or every `interval` seconds while late
events changed history; it fits every series in a process pool, off the event
loop, reconciles, adds conformal intervals and sends one message per series to
`analytics.forecasts`. Before each round the previous forecasts are scored
against the days that became complete, which feeds the intervals and MinT.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta, timezone
from typing import Any

import numpy as np

from pipeline import metrics
from pipeline.analytics.feed import Output
from pipeline.analytics.forecast_pool import FitPool
from pipeline.core.conformal import ConformalIntervals, series_class
from pipeline.core.demand import DailyDemand, DemandRow, combine, last_complete_day
from pipeline.core.fleet_catalog import SITES
from pipeline.core.forecast_round import SeriesJob, assemble, series_scale
from pipeline.core.forecast_scoring import ForecastScorer
from pipeline.core.sealed import SealedEvent
from pipeline.settings import Settings

log = logging.getLogger(__name__)
_REGION = {s.gln: s.region for s in SITES}
_GRACE = 15.0  # seconds after the first drain to wait for every assigned partition's replay


class DemandForecasts:
    """A `SealedHandler`: demand rows on every drain, forecast rounds in the background."""

    name = "forecasts"

    def __init__(self, settings: Settings, pool: FitPool | None = None) -> None:
        self.settings = settings
        t = settings.topics
        self.demand_topic = t.name(t.demand)
        self.forecasts_topic = t.name(t.forecasts)
        self.parts: dict[int, DailyDemand] = {}
        self.changed: dict[int, list[DemandRow]] = defaultdict(list)
        self.pool = pool or FitPool(settings.forecast.processes)
        self.send: Callable[[Output], Awaitable[Any]] | None = None
        self.states: dict[str, dict[str, Any] | None] = {}
        self.scorer = ForecastScorer(ConformalIntervals())
        self.scored: dict[str, date] = {}  # per series: actuals scored up to this day
        self.round_day: date | None = None  # last complete day of the last round
        self.round_at = 0.0
        self.dirty = False
        self.task: asyncio.Task[None] | None = None
        self.rounds = 0
        self.ready: set[int] = set()  # partitions replayed up to live (drained at least once)
        self.first_drain: float | None = None
        self.ticker: asyncio.Task[None] | None = None

    def bind(self, send: Callable[[Output], Awaitable[Any]]) -> None:
        """How rounds send their rows (the app's producer): rounds finish after drain returned."""
        self.send = send

    def assign(self, partition: int) -> None:
        self.parts[partition] = DailyDemand()
        self.ready.discard(partition)

    def revoke(self, partition: int) -> None:
        self.parts.pop(partition, None)
        self.changed.pop(partition, None)
        self.ready.discard(partition)

    def handle(self, partition: int, events: list[SealedEvent], replay: bool) -> None:
        demand = self.parts.setdefault(partition, DailyDemand())
        rows = demand.add({"log_id": e.log_id, "leaf_index": e.leaf_index, "event_type": e.event_type,
                           "payload": e.event} for e in events)
        rows += demand.close_days()
        if rows:
            if self.round_day is not None and any(r.ds <= self.round_day for r in rows):
                self.dirty = True
            self.changed[partition].extend(rows)

    def drain(self, partition: int) -> list[Output]:
        rows = self.changed.pop(partition, [])
        by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            by_key[r.series_key].append({"series_key": r.series_key, "ds": r.ds.isoformat(), "y": r.y,
                                         "part": partition})
        self.ready.add(partition)
        if self.first_drain is None:
            self.first_drain = time.monotonic()
            self.ticker = asyncio.get_running_loop().create_task(self.tick())
        self.maybe_refresh()
        return [Output(self.demand_topic, k.encode(), json.dumps(v).encode()) for k, v in by_key.items()]

    async def tick(self) -> None:
        """The schedule: look for a due round every few seconds, also while no new entries arrive."""
        while True:
            await asyncio.sleep(min(self.settings.forecast.interval, 5.0))
            self.maybe_refresh()

    def maybe_refresh(self) -> None:
        """Start a round if the last complete day moved on, or history changed and the interval passed."""
        if self.send is None or (self.task is not None and not self.task.done()):
            return
        waited = time.monotonic() - (self.first_drain or time.monotonic())
        if not set(self.parts) <= self.ready and waited < _GRACE:
            return  # a round on partly replayed partitions would see part of the history
        marks = [p.watermark for p in self.parts.values() if p.watermark is not None]
        if not marks:
            return
        last = last_complete_day(min(marks))
        new_day = self.round_day is None or last > self.round_day
        due = self.dirty and time.monotonic() - self.round_at >= self.settings.forecast.interval
        if new_day or due:
            self.task = asyncio.get_running_loop().create_task(self.refresh())

    async def refresh(self) -> None:
        """One round: score what came true, fit every series in the pool, send the rows."""
        try:
            await self._round()
        except Exception:  # a failed round must not stop the stream; the next one retries
            log.exception("forecast round failed")

    async def _round(self) -> None:
        assert self.send is not None
        last, series, sizes = combine(self.parts.values())
        if last is None or not series:
            return
        self.round_day, self.round_at, self.dirty = last, time.monotonic(), False
        trained_at = datetime.now(timezone.utc).isoformat()
        for key, (first, y) in series.items():
            since = self.scored.get(key, first - timedelta(days=1))
            start = (since - first).days + 1
            self.scorer.observe_many(key, first + timedelta(days=start), y[start:])
            self.scored[key] = last
        f = self.settings.forecast
        jobs = [SeriesJob(key, first, y, f.horizon, self.states.get(key),
                          _REGION.get(key.split("|site=")[-1]) if "|site=" in key else None, f.holidays)
                for key, (first, y) in series.items()]
        log.info("forecast round %d: fitting %d series, up to %d days (last complete day %s)", self.rounds + 1,
                 len(jobs), max(len(j.y) for j in jobs), last)
        fits = await self.pool.fit(jobs)
        for fit in fits:
            self.states[fit.series_key] = fit.state
            for member, (fit_s, _) in fit.seconds.items():
                metrics.forecast_fitted(member, fit_s)
        histories = {k: y for k, (_, y) in series.items()}
        rows = assemble(fits, histories, self.scorer.conformal, f.reconciliation, self.scorer.variances())
        by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            by_key[r.series_key].append({
                "series_key": r.series_key, "ds": r.ds.isoformat(), "yhat": r.yhat, "yhat_lower": r.yhat_lower,
                "yhat_upper": r.yhat_upper, "yhat_lower_95": r.yhat_lower_95, "yhat_upper_95": r.yhat_upper_95,
                "trained_at": trained_at, "model": r.model, "input_ledger": sizes})
        for key, out in by_key.items():
            arr = {c: np.array([o[c] for o in out]) for c in ("yhat", "yhat_lower", "yhat_upper", "yhat_lower_95",
                                                             "yhat_upper_95")}
            y = histories[key]
            self.scorer.issue(key, date.fromisoformat(out[0]["ds"]), arr["yhat"], arr["yhat_lower"],
                              arr["yhat_upper"], arr["yhat_lower_95"], arr["yhat_upper_95"], series_scale(y),
                              series_class(key, y))
        futures = [await self.send(Output(self.forecasts_topic, k.encode(), json.dumps(v).encode()))
                   for k, v in by_key.items()]
        for fut in futures:
            await fut
        self.rounds += 1
        log.info("forecast round %d: sent %d series", self.rounds, len(by_key))
