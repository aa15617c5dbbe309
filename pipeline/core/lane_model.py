"""The per-lane delay model, learned online from delivered shipments (river's API).

A lane is (origin, destination, mode, carrier). For every lane the model keeps
exact windows of recent stage durations (created→picked_up→departed→arrived→
out_for_delivery→delivered), of the time from each stage to delivery, and of
dwell per site. `learn_one` takes a delivered trip; `score_one` is the
probability that a shipment still in transit misses its promise, given its
stage and the time already spent in it: an empirical conditional survival
estimate over the lane's recent trips that lasted at least as long in that
stage. A lane with fewer than `min_deliveries` falls back to carrier×mode, then
to mode. Everything is a pure function of the trips learned, in order.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from pipeline.core.quantile_window import QuantileWindow

LIFECYCLE = ("created", "picked_up", "departed", "arrived", "out_for_delivery", "delivered")
RANK = {t: i for i, t in enumerate(LIFECYCLE)}
STAGES = LIFECYCLE[:-1]
# Stages spent at a site (dwell) and their end; the others are judged for silence.
DWELL_STAGES = {"picked_up": "origin", "arrived": "destination"}
SILENT_STAGES = ("created", "departed", "out_for_delivery")


class Lane(NamedTuple):
    origin: str
    destination: str
    mode: str
    carrier: str

    def scopes(self) -> tuple[Lane, Lane, Lane]:
        """The lane, its carrier×mode and its mode: from most to least specific."""
        return (self, Lane("*", "*", self.mode, self.carrier), Lane("*", "*", self.mode, "*"))


def scope_name(key: Lane) -> str:
    return "lane" if key.origin != "*" else "carrier×mode" if key.carrier != "*" else "mode"


@dataclass(frozen=True, slots=True)
class Trip:
    """A delivered shipment as the model learns it: when each lifecycle event happened."""

    lane: Lane
    times: dict[str, float]
    sites: dict[str, str] = field(default_factory=dict)
    disturbed: frozenset[str] = frozenset()  # stages with an exception or an anomaly: not a norm


class Threshold(NamedTuple):
    """A high quantile of the lane's history and the alarm level drawn from it."""

    seconds: float
    quantile: float
    q: float
    n: int
    scope: str


class Risk(NamedTuple):
    """`score_one`'s answer with its evidence: P(miss), stage-to-delivery quantile and sample size."""

    p: float
    typical: float
    q: float
    n: int
    scope: str


class _Scope:
    __slots__ = ("deliveries", "stages", "pairs")

    def __init__(self, window: int) -> None:
        self.deliveries = 0
        self.stages = {s: QuantileWindow(window) for s in STAGES}
        self.pairs: dict[str, deque[tuple[float, float]]] = {s: deque(maxlen=window) for s in STAGES}


class LaneDelayModel:
    """Stage, gap and dwell quantiles per lane with fallback; P(miss promise) for shipments in transit.

    >>> m = LaneDelayModel(min_deliveries=2)
    >>> lane = Lane("A", "B", "road", "Nordfracht")
    >>> for k in range(3):
    ...     m.learn_one(Trip(lane, {"departed": 0.0, "arrived": 36000.0 + k, "delivered": 40000.0 + k}))
    >>> round(m.gap_threshold(lane, "departed").quantile)
    36002
    >>> m.score_one(lane, "departed", entered=0.0, now=30000.0, deadline=39000.0)
    1.0
    """

    def __init__(self, window: int = 256, min_deliveries: int = 30, quantile: float = 0.99,
                 silent_factor: float = 1.5, dwell_factor: float = 2.0, risk_quantile: float = 0.95) -> None:
        self.window = window
        self.min_deliveries = min_deliveries
        self.quantile = quantile
        self.silent_factor = silent_factor
        self.dwell_factor = dwell_factor
        self.risk_quantile = risk_quantile
        self.late_before_delivery = True
        self.name = f"lane-delay/1 (window {window}, q{quantile:g})"
        self._scopes: dict[Lane, _Scope] = {}
        self._dwell: dict[tuple[str, str, str], QuantileWindow] = {}

    # ---- learning -----------------------------------------------------------------------

    def learn_one(self, trip: Trip) -> None:
        """Learn one delivered trip: stage durations, stage-to-delivery times, dwell per site."""
        times = trip.times
        delivered = times.get("delivered")
        for key in trip.lane.scopes():
            scope = self._scopes.get(key)
            if scope is None:
                scope = self._scopes[key] = _Scope(self.window)
            scope.deliveries += 1
            for s in STAGES:
                start, end = times.get(s), times.get(LIFECYCLE[RANK[s] + 1])
                if start is None or end is None or end < start or s in trip.disturbed:
                    continue
                scope.stages[s].add(end - start)
                if delivered is not None and delivered >= end:
                    scope.pairs[s].append((end - start, delivered - end))
        for s, which in DWELL_STAGES.items():
            start, end = times.get(s), times.get(LIFECYCLE[RANK[s] + 1])
            if start is None or end is None or end < start or s in trip.disturbed:
                continue
            for key in ((trip.sites.get(s, "?"), trip.lane.mode, which), ("*", trip.lane.mode, which)):
                w = self._dwell.get(key)
                if w is None:
                    w = self._dwell[key] = QuantileWindow(self.window)
                w.add(end - start)

    # ---- scoring ------------------------------------------------------------------------

    def _scope(self, lane: Lane, stage: str) -> tuple[Lane, _Scope] | None:
        """The most specific scope with enough deliveries, else the coarsest one with any samples."""
        found = None
        for key in lane.scopes():
            scope = self._scopes.get(key)
            if scope is None or not scope.stages[stage]:
                continue
            if scope.deliveries >= self.min_deliveries:
                return key, scope
            found = (key, scope)
        return found

    def gap_threshold(self, lane: Lane, stage: str) -> Threshold | None:
        """How long a shipment may go without its next event after `stage`, or None with no history."""
        found = self._scope(lane, stage)
        if found is None:
            return None
        key, scope = found
        w = scope.stages[stage]
        q = w.quantile(self.quantile)
        return Threshold(q * self.silent_factor, q, self.quantile, len(w), scope_name(key))

    def dwell_threshold(self, site: str, mode: str, stage: str) -> Threshold | None:
        """How long a shipment may stay at `site` in a dwell stage, or None with no history."""
        which = DWELL_STAGES[stage]
        for key, scope in (((site, mode, which), "site"), (("*", mode, which), "mode")):
            w = self._dwell.get(key)
            if w is not None and (len(w) >= self.min_deliveries or (scope == "mode" and len(w))):
                q = w.quantile(self.quantile)
                return Threshold(q * self.dwell_factor, q, self.quantile, len(w), scope)
        return None

    def risk(self, lane: Lane, stage: str, entered: float, now: float, deadline: float,
             pending: float = 0.0) -> Risk | None:
        """P(delivered after `deadline`) for a shipment in `stage` since `entered`, seen at `now`.

        Among the recent trips of the lane that stayed in this stage at least as long
        as this one has, the share whose rest of stage plus time to delivery would
        overshoot the deadline. `pending` is delay the carrier has announced.
        """
        found = self._scope(lane, stage)
        if found is None:
            return None
        key, scope = found
        pairs = scope.pairs[stage]
        if not pairs:
            return None
        elapsed = now - entered
        slack = deadline - now - pending
        longer = [(d - elapsed) + r for d, r in pairs if d > elapsed]
        if not longer:
            rest = sorted(r for _, r in pairs)
            longer = [rest[len(rest) // 2]]
        p = sum(1 for x in longer if x > slack) / len(longer)
        totals = sorted(d + r for d, r in pairs)
        typical = totals[max(0, int(self.risk_quantile * len(totals) + 0.999999) - 1)]
        return Risk(p, typical, self.risk_quantile, scope.deliveries, scope_name(key))

    def score_one(self, lane: Lane, stage: str, entered: float, now: float, deadline: float,
                  pending: float = 0.0) -> float:
        """The probability of missing the deadline (higher is more anomalous); 0 with no history."""
        r = self.risk(lane, stage, entered, now, deadline, pending)
        return 0.0 if r is None else r.p


class FixedThresholds:
    """The baselines: silent after a fixed time, dwell over a fixed time, late only once delivered."""

    def __init__(self, silent_after: float = 24 * 3600.0, dwell_over: float = 2 * 3600.0) -> None:
        self.silent_after = silent_after
        self.dwell_over = dwell_over
        self.late_before_delivery = False
        self.name = f"baseline (silent {silent_after / 3600:g} h, dwell {dwell_over / 3600:g} h)"

    def learn_one(self, trip: Trip) -> None:
        """Nothing to learn."""

    def gap_threshold(self, lane: Lane, stage: str) -> Threshold | None:
        return Threshold(self.silent_after, self.silent_after, 1.0, 0, "fixed")

    def dwell_threshold(self, site: str, mode: str, stage: str) -> Threshold | None:
        return Threshold(self.dwell_over, self.dwell_over, 1.0, 0, "fixed")

    def risk(self, lane: Lane, stage: str, entered: float, now: float, deadline: float,
             pending: float = 0.0) -> Risk | None:
        return None

    def score_one(self, lane: Lane, stage: str, entered: float, now: float, deadline: float,
                  pending: float = 0.0) -> float:
        return 0.0
