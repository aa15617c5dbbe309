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

from dataclasses import dataclass, field
from typing import NamedTuple

from pipeline.core.quantile_window import PairWindow, QuantileWindow

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
        found = _SCOPES.get(self)
        if found is None:
            found = _SCOPES[self] = (self, Lane("*", "*", self.mode, self.carrier), Lane("*", "*", self.mode, "*"))
        return found


_SCOPES: dict[Lane, tuple[Lane, Lane, Lane]] = {}


def scope_name(key: Lane) -> str:
    return "lane" if key.origin != "*" else "carrier×mode" if key.carrier != "*" else "mode"


@dataclass(frozen=True, slots=True)
class Trip:
    """A delivered shipment as the model learns it: when each lifecycle event happened."""

    lane: Lane
    times: dict[str, float]
    sites: dict[str, str] = field(default_factory=dict)
    disturbed: frozenset[str] = frozenset()  # stages with an exception or an anomaly: not a norm
    planned: float | None = None  # promised transit (promise - created), seconds


class Threshold(NamedTuple):
    """A high quantile of the lane's history and the alarm level drawn from it."""

    seconds: float
    quantile: float
    q: float
    n: int
    scope: str
    scaled: bool = False  # learned relative to the promised transit, scaled to this shipment's


class Risk(NamedTuple):
    """`score_one`'s answer with its evidence: P(miss), stage-to-delivery quantile and sample size."""

    p: float
    typical: float
    q: float
    n: int
    scope: str
    scaled: bool = False


class _Scope:
    """One lane, carrier×mode or mode: windows in seconds and relative to the promised transit."""

    __slots__ = ("deliveries", "raw", "rel", "pairs_raw", "pairs_rel")

    def __init__(self, window: int) -> None:
        self.deliveries = 0
        self.raw = {s: QuantileWindow(window) for s in STAGES}
        self.rel = {s: QuantileWindow(window) for s in STAGES}
        self.pairs_raw = {s: PairWindow(window) for s in STAGES}
        self.pairs_rel = {s: PairWindow(window) for s in STAGES}


class _Choice(NamedTuple):
    key: Lane
    scope: _Scope
    relative: bool
    q_raw: float
    q_rel: float
    n_raw: int
    n_rel: int
    raw: Threshold  # the gap threshold in seconds


def _spread(w: QuantileWindow, q: float) -> float:
    """How wide a window is: its high quantile over its median."""
    mid = w.quantile(0.5)
    return w.quantile(q) / mid if mid > 0 else float("inf")


class LaneDelayModel:
    """Stage, gap and dwell quantiles per lane with fallback; P(miss promise) for shipments in transit.

    >>> m = LaneDelayModel(min_deliveries=2, min_samples=2)
    >>> lane = Lane("A", "B", "road", "Nordfracht")
    >>> for k in range(3):
    ...     m.learn_one(Trip(lane, {"departed": 0.0, "arrived": 36000.0 + k, "delivered": 40000.0 + k}))
    >>> round(m.gap_threshold(lane, "departed").quantile)
    36002
    >>> m.score_one(lane, "departed", entered=0.0, now=30000.0, deadline=39000.0)
    1.0
    """

    def __init__(self, window: int = 256, min_deliveries: int = 30, min_samples: int = 20, quantile: float = 0.99,
                 silent_factor: float = 1.7, dwell_factor: float = 1.8, risk_quantile: float = 0.95) -> None:
        self.window = window
        self.min_deliveries = min_deliveries
        self.min_samples = min_samples
        self.quantile = quantile
        self.silent_factor = silent_factor
        self.dwell_factor = dwell_factor
        self.risk_quantile = risk_quantile
        self.late_before_delivery = True
        self.name = f"lane-delay/1 (window {window}, q{quantile:g})"
        self._scopes: dict[Lane, _Scope] = {}
        self._dwell: dict[tuple[str, str, str], QuantileWindow] = {}
        self._dwell_cache: dict[tuple[str, str, str], tuple[int, int | None, Threshold | None]] = {}
        self._cache: dict[tuple[Lane, str], tuple[tuple[_Scope, ...] | None, tuple[int, ...], _Choice | None]] = {}

    def held(self) -> tuple[int, int]:
        """(samples held in all windows, what they can hold): memory is bounded by the second."""
        windows = [w for sc in self._scopes.values() for group in (sc.raw, sc.rel, sc.pairs_raw, sc.pairs_rel)
                   for w in group.values()]
        windows += list(self._dwell.values())
        return sum(len(w) for w in windows), sum(w.size for w in windows)

    # ---- learning -----------------------------------------------------------------------

    def learn_one(self, trip: Trip) -> None:
        """Learn one delivered trip: stage durations, stage-to-delivery times, dwell per site."""
        times = trip.times
        delivered = times.get("delivered")
        planned = trip.planned if trip.planned and trip.planned > 0 else None
        for key in trip.lane.scopes():
            scope = self._scopes.get(key)
            if scope is None:
                scope = self._scopes[key] = _Scope(self.window)
            scope.deliveries += 1
            for s in STAGES:
                start, end = times.get(s), times.get(LIFECYCLE[RANK[s] + 1])
                if start is None or end is None or end < start or s in trip.disturbed:
                    continue
                scope.raw[s].add(end - start)
                if planned:
                    scope.rel[s].add((end - start) / planned)
                if delivered is not None and delivered >= end:
                    scope.pairs_raw[s].add(end - start, delivered - end)
                    if planned:
                        scope.pairs_rel[s].add((end - start) / planned, (delivered - end) / planned)
        for s, which in DWELL_STAGES.items():
            start, end = times.get(s), times.get(LIFECYCLE[RANK[s] + 1])
            if start is None or end is None or end < start or s in trip.disturbed:
                continue
            for site_key in ((trip.sites.get(s, "?"), trip.lane.mode, which), ("*", trip.lane.mode, which)):
                w = self._dwell.get(site_key)
                if w is None:
                    w = self._dwell[site_key] = QuantileWindow(self.window)
                w.add(end - start)

    # ---- scoring ------------------------------------------------------------------------

    def _scope(self, lane: Lane, stage: str) -> tuple[Lane, _Scope] | None:
        """The most specific scope with enough deliveries, else the coarsest one with enough samples."""
        found = None
        for key in lane.scopes():
            scope = self._scopes.get(key)
            if scope is None or len(scope.raw[stage]) < self.min_samples:
                continue
            if scope.deliveries >= self.min_deliveries:
                return key, scope
            found = (key, scope)
        return found

    def _choice(self, lane: Lane, stage: str) -> _Choice | None:
        """The scope to judge `stage` of `lane` by, and its quantiles; cached until its scopes learn enough.

        Quantiles of a window barely move with one more sample: the choice is worked out again
        once one of the lane's three scopes has 1/16 more deliveries (at least 2, at most 1/16 of a
        window) than it had then.
        """
        cached = self._cache.get((lane, stage))
        if cached is not None:
            refs, marks, choice = cached
            if refs is not None:
                if (refs[0].deliveries <= marks[0] and refs[1].deliveries <= marks[1]
                        and refs[2].deliveries <= marks[2]):
                    return choice
            else:
                get = self._scopes.get
                now = [-1 if x is None else x.deliveries for x in [get(k) for k in lane.scopes()]]
                if now[0] <= marks[0] and now[1] <= marks[1] and now[2] <= marks[2]:
                    return choice
        get = self._scopes.get
        keys = lane.scopes()
        scopes = [get(k) for k in keys]
        version = [-1 if x is None else x.deliveries for x in scopes]
        # At most 1/16 of a window: counted on all deliveries ever, the refresh would come ever more
        # rarely and thresholds would stop following the window.
        limits = [b + max(2, min(b, self.window) // 16) for b in version]
        refs = tuple(x for x in scopes if x is not None)
        choice = None
        found = self._scope(lane, stage)
        if found is not None:
            key, scope = found
            if scope.deliveries >= self.min_deliveries:  # coarser scopes no longer matter
                for i in range(keys.index(key) + 1, 3):
                    limits[i] = 1 << 62
            raw, rel = scope.raw[stage], scope.rel[stage]
            # A fallback scope mixes lanes of different lengths: read it relative to the promised
            # transit when that spreads less than seconds do.
            relative = (key.origin == "*" and len(rel) >= self.min_samples
                        and _spread(rel, self.quantile) < _spread(raw, self.quantile))
            q_raw = raw.quantile(self.quantile)
            choice = _Choice(key, scope, relative, q_raw, rel.quantile(self.quantile) if rel else 0.0, len(raw),
                             len(rel), Threshold(q_raw * self.silent_factor, q_raw, self.quantile, len(raw),
                                                 scope_name(key)))
        self._cache[(lane, stage)] = (refs if len(refs) == 3 else None, tuple(limits), choice)
        return choice

    def gap_threshold(self, lane: Lane, stage: str, planned: float | None = None) -> Threshold | None:
        """How long a shipment may go without its next event after `stage`, or None with no history."""
        c = self._choice(lane, stage)
        if c is None:
            return None
        if planned and c.relative:
            q = c.q_rel * planned
            return Threshold(q * self.silent_factor, q, self.quantile, c.n_rel, scope_name(c.key), True)
        return c.raw

    def dwell_threshold(self, site: str, mode: str, stage: str) -> Threshold | None:
        """How long a shipment may stay at `site` in a dwell stage, or None with no history."""
        which = DWELL_STAGES[stage]
        key = (site, mode, which)
        w = self._dwell.get(key)
        version = -1 if w is None else w.count
        cached = self._dwell_cache.get(key)
        if cached is not None and cached[0] == version:
            if cached[1] is None:  # judged by the site's own window
                return cached[2]
            site_wide = self._dwell.get(("*", mode, which))
            if cached[1] == (-1 if site_wide is None else site_wide.count):
                return cached[2]
        found = None
        for key_, scope in ((key, "site"), (("*", mode, which), "mode")):
            w = self._dwell.get(key_)
            if w is not None and (len(w) >= self.min_deliveries or (scope == "mode" and len(w) >= self.min_samples)):
                q = w.quantile(self.quantile)
                found = Threshold(q * self.dwell_factor, q, self.quantile, len(w), scope)
                break
        site_wide = self._dwell.get(("*", mode, which))
        wide = None if found is not None and found.scope == "site" else -1 if site_wide is None else site_wide.count
        self._dwell_cache[key] = (version, wide, found)
        return found

    def risk(self, lane: Lane, stage: str, entered: float, now: float, deadline: float,
             pending: float = 0.0, planned: float | None = None) -> Risk | None:
        """P(delivered after `deadline`) for a shipment in `stage` since `entered`, seen at `now`.

        Among the recent trips of the lane that stayed in this stage at least as long
        as this one has, the share whose rest of stage plus time to delivery would
        overshoot the deadline. `pending` is delay the carrier has announced.
        """
        c = self._choice(lane, stage)
        if c is None:
            return None
        key, scope = c.key, c.scope
        scale = 1.0
        pairs = scope.pairs_raw[stage]
        if planned and c.relative:
            scale, pairs = planned, scope.pairs_rel[stage]
        if not pairs.n:
            return None
        p = self._p_miss(pairs, (now - entered) / scale, (deadline - now - pending) / scale)
        typical = pairs.totals.quantile(self.risk_quantile) * scale
        return Risk(p, typical, self.risk_quantile, scope.deliveries, scope_name(key), scale != 1.0)

    def _p_miss(self, pairs: PairWindow, elapsed: float, slack: float) -> float:
        """Among recent trips that stayed longer in this stage than this one has so far, the share that overshot.

        One that has stayed longer than any of them is overdue: nothing in the window says it
        will be quick from here, so it is taken to miss.
        """
        longer, over = pairs.longer_than(elapsed, slack)
        return over / longer if longer else 1.0

    def score_one(self, lane: Lane, stage: str, entered: float, now: float, deadline: float,
                  pending: float = 0.0, planned: float | None = None) -> float:
        """The probability of missing the deadline (higher is more anomalous); 0 with no history."""
        r = self.risk(lane, stage, entered, now, deadline, pending, planned)
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

    def gap_threshold(self, lane: Lane, stage: str, planned: float | None = None) -> Threshold | None:
        return Threshold(self.silent_after, self.silent_after, 1.0, 0, "fixed")

    def dwell_threshold(self, site: str, mode: str, stage: str) -> Threshold | None:
        return Threshold(self.dwell_over, self.dwell_over, 1.0, 0, "fixed")

    def risk(self, lane: Lane, stage: str, entered: float, now: float, deadline: float,
             pending: float = 0.0, planned: float | None = None) -> Risk | None:
        return None

    def score_one(self, lane: Lane, stage: str, entered: float, now: float, deadline: float,
                  pending: float = 0.0, planned: float | None = None) -> float:
        return 0.0
