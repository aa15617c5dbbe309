"""Delay anomalies judged in event time: a per-partition watermark and timers on it.

The detector of one partition takes sealed events in leaf order. Its clock is
the watermark, the latest event time seen minus the allowed lateness; nothing
reads the wall clock. Each shipment keeps its events sorted by event time and
one timer: the next watermark at which one of its judgments could change
without a new event (promise passed, a gap or a dwell outgrowing its norm, the
next at-risk check, expiry). Every judgment is recomputed from the shipment's
events, so an event that arrives late simply revises or withdraws the rows it
affects. The output is one row per (shipment, kind) whose `revision` grows
with each change; the same events in the same order give the same rows.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from pipeline.core import delay_explain as say
from pipeline.core.anomaly import Anomaly
from pipeline.core.lane_model import DWELL_STAGES, RANK, SILENT_STAGES, Lane, Risk, Threshold, Trip
from pipeline.core.sealed import SealedEvent, parse_time

TERMINAL = ("delivered", "cancelled")
_ORDER = {**RANK, "cancelled": RANK["delivered"]}


class DelayModel(Protocol):
    """What the detector needs of a model: `LaneDelayModel` and the fixed-threshold baselines."""

    name: str
    late_before_delivery: bool

    def learn_one(self, trip: Trip) -> None: ...
    def gap_threshold(self, lane: Lane, stage: str, planned: float | None = None) -> Threshold | None: ...
    def dwell_threshold(self, site: str, mode: str, stage: str) -> Threshold | None: ...
    def risk(self, lane: Lane, stage: str, entered: float, now: float, deadline: float,
             pending: float = 0.0, planned: float | None = None) -> Risk | None: ...


class Seen(NamedTuple):
    """What the detector keeps of one event."""

    time: float
    type: str
    event_id: str
    log_id: str
    leaf_index: int
    site: str
    delay: float  # announced delay (exceptions), seconds


class Verdict(NamedTuple):
    status: str
    score: float
    expected: float | None
    actual: float | None
    explanation: Callable[[], str]  # called only when the row changes
    event: Seen
    evidence: dict[str, Any]


class _Ship:
    """One shipment in transit: its events in event time and what the judges read of them."""

    __slots__ = ("id", "lane", "promise", "events", "ids", "timer", "learned", "next_check", "fresh", "version",
                 "_terminal", "_delivered", "_planned", "_inverted", "stage_i")

    def __init__(self, sid: str, lane: Lane, promise: float | None) -> None:
        self.id, self.lane, self.promise = sid, lane, promise
        self.events: list[Seen] = []
        self.ids: set[str] = set()
        self.timer = math.inf
        self.learned = False
        self.next_check = -math.inf
        self.fresh = True  # an event arrived since the last at-risk check
        self.version = 0  # events taken so far
        self._terminal: Seen | None = None
        self._delivered: Seen | None = None
        self._planned: float | None = None
        self._inverted = False
        self.stage_i: int | None = None  # position of the last lifecycle event

    def add(self, seen: Seen) -> None:
        """Take a new event; what depends only on the events is worked out here, once."""
        self.events.append(seen)
        self.events.sort(key=_event_order)
        self.fresh = True
        self.version += 1
        self._terminal = next((e for e in self.events if e.type in TERMINAL), None)
        self._delivered = next((e for e in self.events if e.type == "delivered"), None)
        created = next((e for e in self.events if e.type == "created"), None)
        self._planned = (None if self.promise is None or created is None or self.promise <= created.time
                         else self.promise - created.time)
        self._inverted = self._order_broken()
        self.stage_i = max((i for i, e in enumerate(self.events) if e.type in RANK), default=None)

    def terminal(self) -> Seen | None:
        return self._terminal

    def delivered(self) -> Seen | None:
        return self._delivered

    def planned(self) -> float | None:
        """The promised transit time: promise minus creation, when both are known."""
        return self._planned

    def inverted(self) -> bool:
        """Whether the known events, in event time, go back in the lifecycle or end twice."""
        return self._inverted

    def _order_broken(self) -> bool:
        top, ends = -1, 0
        for e in self.events:
            rank = _ORDER.get(e.type)
            if rank is None:
                continue
            if rank < top:
                return True
            ends += e.type in TERMINAL
            top = max(top, rank)
        return ends > 1

    def stage_at(self, i: int) -> Seen | None:
        """The last lifecycle event at or before position i (exceptions belong to it)."""
        for e in reversed(self.events[: i + 1]):
            if e.type in RANK:
                return e
        return None


def _event_order(s: Seen) -> tuple[float, int, int]:
    return (s.time, _ORDER.get(s.type, -1), s.leaf_index)


_NOWHERE = Seen(0.0, "", "", "", -1, "", 0.0)
_UNCHANGED = Verdict("", 0.0, None, None, lambda: "", _NOWHERE, {})  # a row left as it stands


def _text(fn: Callable[..., str], *args: Any) -> Callable[[], str]:
    return lambda: fn(*args)


def seen_of(ev: SealedEvent) -> Seen:
    e = ev.event
    loc = e.get("location") if isinstance(e.get("location"), dict) else None
    site = str(loc.get("site_id")) if loc and loc.get("site_id") else ""
    delay = 0.0
    attrs = e.get("attributes")
    if ev.event_type == "exception" and isinstance(attrs, dict):
        try:
            delay = max(0.0, float(attrs.get("expected_delay_h") or 0.0)) * 3600
        except (TypeError, ValueError):
            delay = 0.0
    return Seen(ev.time, ev.event_type, ev.event_id, ev.log_id, ev.leaf_index, site, delay)


class DelayDetector:
    """One partition's detector: `observe` sealed events in leaf order, take rows from `changed`."""

    def __init__(self, model: DelayModel, allowed_lateness: float = 7200.0, late_tolerance: float = 3600.0,
                 retention: float = 72 * 3600.0, risk_high: float = 0.65, risk_low: float = 0.35,
                 risk_step: float = 5400.0) -> None:
        self.model = model
        self.allowed_lateness = allowed_lateness
        self.late_tolerance = late_tolerance
        self.retention = retention
        self.risk_high = risk_high
        self.risk_low = risk_low
        self.risk_step = risk_step
        self.max_time = -math.inf
        self.ships: dict[str, _Ship] = {}
        self.rows: dict[tuple[str, str], Anomaly] = {}
        self.pending: dict[tuple[str, str], Anomaly] = {}
        self.row_version: dict[tuple[str, str], int] = {}
        self.timers: list[tuple[float, int, str]] = []
        self.expired: dict[str, float] = {}
        self.expired_order: deque[tuple[float, str]] = deque()
        self.seq = 0
        self.revision = 0
        self.raised: list[str] = []

    @property
    def watermark(self) -> float:
        return self.max_time - self.allowed_lateness

    # ---- the stream ---------------------------------------------------------------------

    def observe(self, ev: SealedEvent) -> None:
        """Take one sealed event; judge its shipment and every timer the watermark has passed."""
        self.max_time = max(self.max_time, ev.time)
        sid = ev.shipment_id
        if sid in self.expired:
            return  # a straggler of a shipment already closed: its rows are final
        ship = self.ships.get(sid)
        if ship is None:
            e = ev.event
            try:
                promise = parse_time(e["planned_delivery"]) if e.get("planned_delivery") else None
            except (TypeError, ValueError):
                promise = None
            lane = Lane(str(e.get("origin")), str(e.get("destination")), str(e.get("mode")), str(e.get("carrier")))
            ship = self.ships[sid] = _Ship(sid, lane, promise)
        if ev.event_id not in ship.ids:  # a producer retry of the same event changes nothing
            ship.ids.add(ev.event_id)
            ship.add(seen_of(ev))
        self.judge(ship)
        self.fire()

    def fire(self) -> None:
        w = self.watermark
        while self.timers and self.timers[0][0] <= w:
            deadline, _, sid = heapq.heappop(self.timers)
            ship = self.ships.get(sid)
            if ship is not None and ship.timer == deadline:
                ship.timer = math.inf
                limit = self._only_risk_due(ship, w) if deadline == ship.next_check else None
                self.judge(ship, open_limit=limit)
        while self.expired_order and self.expired_order[0][0] <= w:
            _, sid = self.expired_order.popleft()
            self.expired.pop(sid, None)

    def changed(self) -> list[Anomaly]:
        """Rows that changed since the last call, in a stable order."""
        out = [self.pending[k] for k in sorted(self.pending)]
        self.pending.clear()
        return out

    def take_raised(self) -> list[str]:
        """Kinds of the rows raised for the first time since the last call (for metrics)."""
        out, self.raised = self.raised, []
        return out

    # ---- judging one shipment -----------------------------------------------------------

    def _only_risk_due(self, ship: _Ship, w: float) -> float | None:
        """At an at-risk check: the open gap's limit if nothing but the risk can have changed, else None.

        Late, silent and dwell verdicts move with the watermark only once it passes the promise or
        the open gap's limit, and those instants have timers of their own.
        """
        if ship.terminal() is not None or ship.inverted():
            return None
        if ship.promise is not None and w >= ship.promise + self.late_tolerance:
            return None
        limit = self._open_limit(ship)
        return limit if ship.events[-1].time + limit > w else None

    def judge(self, ship: _Ship, open_limit: float | None = None) -> None:
        """Every verdict on one shipment; given `open_limit` (see `_only_risk_due`), only the risk."""
        w = self.watermark
        terminal = ship.terminal()
        if open_limit is not None:
            self.put(ship, "at_risk", self.at_risk(ship, terminal, w), withdrawable=False)
            self.schedule(ship, terminal, w, open_limit)
            return
        judges = (("late", self.late), ("silent", self.silent), ("dwell", self.dwell))
        for kind, judge_kind in judges:
            # A row stands until a new event of its shipment says otherwise: a model that has
            # learned more since does not take back what it raised.
            if self.row_version.get((ship.id, kind)) != ship.version:
                self.put(ship, kind, judge_kind(ship, terminal, w), withdrawable=True)
        if ship.inverted() and self.row_version.get((ship.id, "sequence")) != ship.version:
            self.put(ship, "sequence", self.sequence(ship, w), withdrawable=False)
        self.put(ship, "at_risk", self.at_risk(ship, terminal, w), withdrawable=False)
        delivered = ship.delivered()
        if delivered is not None and not ship.learned and delivered.time <= w:
            ship.learned = True
            order = self.rows.get((ship.id, "sequence"))
            if order is None or order.status == "withdrawn":  # a trip in an impossible order teaches nothing
                self.model.learn_one(self.trip(ship))
        self.schedule(ship, terminal, w)

    def trip(self, ship: _Ship) -> Trip:
        times: dict[str, float] = {}
        sites: dict[str, str] = {}
        disturbed: set[str] = set()
        stage = None
        for e in ship.events:
            if e.type in RANK:
                stage = e.type
                if e.type not in times:
                    times[e.type] = e.time
                    sites[e.type] = e.site or (ship.lane.origin if RANK[e.type] < 3 else ship.lane.destination)
            elif e.type == "exception" and stage is not None:
                disturbed.add(stage)
        for kind in ("silent", "dwell"):
            row = self.rows.get((ship.id, kind))
            if row is not None and row.status != "withdrawn":
                disturbed.add(str(row.evidence.get("stage")))
        return Trip(ship.lane, times, sites, frozenset(disturbed), ship.planned())

    def late(self, ship: _Ship, terminal: Seen | None, w: float) -> Verdict | None:
        if ship.promise is None:
            return None
        lane, promise = ship.lane, ship.promise
        deadline = promise + self.late_tolerance
        evidence = {"promise": promise, "tolerance_h": self.late_tolerance / 3600}
        if terminal is not None:
            if terminal.type == "delivered" and terminal.time > deadline:
                return Verdict("resolved", 1.0, self.late_tolerance / 3600, (terminal.time - ship.promise) / 3600,
                               lambda: say.late_delivered(lane, promise, terminal.time, self.late_tolerance),
                               terminal, evidence)
            return None
        if self.model.late_before_delivery and w >= deadline:
            last = ship.events[-1]
            return Verdict("open", 1.0, self.late_tolerance / 3600, (w - ship.promise) / 3600,
                           lambda: say.late_open(lane, promise, w, last.type, last.time), last, evidence)
        return None

    def silent(self, ship: _Ship, terminal: Seen | None, w: float) -> Verdict | None:
        worst: tuple[float, Verdict] | None = None
        pending = 0.0
        planned = ship.planned()
        thresholds: dict[str, Threshold | None] = {}
        stage_event: Seen | None = None
        events = ship.events
        for i, e in enumerate(events):
            if e.type in TERMINAL:
                break
            if e.type in RANK:
                stage_event = e
            if stage_event is None or stage_event.type not in SILENT_STAGES:
                continue
            pending = pending + e.delay if e.type == "exception" else 0.0
            ongoing = i + 1 == len(ship.events)
            end = w if ongoing else ship.events[i + 1].time
            if stage_event.type not in thresholds:
                thresholds[stage_event.type] = self.model.gap_threshold(ship.lane, stage_event.type, planned)
            th = thresholds[stage_event.type]
            if th is None:
                continue
            limit = th.seconds + pending
            gap = end - e.time
            if gap > limit and (worst is None or gap / limit > worst[0]):
                evidence = {"stage": stage_event.type, "quantile_h": th.quantile / 3600, "q": th.q, "n": th.n,
                            "scope": th.scope, "announced_delay_h": pending / 3600}
                worst = (gap / limit, Verdict(
                    "open" if ongoing else "resolved", min(1.0, 1 - limit / gap), limit / 3600, gap / 3600,
                    _text(say.silent, ship.lane, stage_event.type, gap, th, ongoing, pending), e, evidence))
        return None if worst is None else worst[1]

    def dwell(self, ship: _Ship, terminal: Seen | None, w: float) -> Verdict | None:
        worst: tuple[float, Verdict] | None = None
        for i, e in enumerate(ship.events):
            if e.type not in DWELL_STAGES:
                continue
            nxt = next((x for x in ship.events[i + 1:] if x.type in _ORDER and _ORDER[x.type] > RANK[e.type]), None)
            if nxt is None and terminal is not None:
                continue
            ongoing = nxt is None
            end = w if nxt is None else nxt.time
            site = e.site or (ship.lane.origin if e.type == "picked_up" else ship.lane.destination)
            th = self.model.dwell_threshold(site, ship.lane.mode, e.type)
            if th is None:
                continue
            pending = sum(x.delay for x in ship.events[i + 1:] if x.type == "exception" and x.time <= end)
            limit = th.seconds + pending
            duration = end - e.time
            if duration > limit and (worst is None or duration / limit > worst[0]):
                evidence = {"stage": e.type, "site": site, "quantile_h": th.quantile / 3600, "q": th.q, "n": th.n,
                            "scope": th.scope, "announced_delay_h": pending / 3600}
                worst = (duration / limit, Verdict(
                    "open" if ongoing else "resolved", min(1.0, 1 - limit / duration), limit / 3600,
                    duration / 3600, _text(say.dwell, ship.lane, site, e.type, duration, th, ongoing, pending), e,
                    evidence))
        return None if worst is None else worst[1]

    def sequence(self, ship: _Ship, w: float) -> Verdict | None:
        """Impossible orders among events the lateness buffer has closed on."""
        closed = [e for e in ship.events if e.time <= w and e.type in _ORDER]
        terminals = [e for e in closed if e.type in TERMINAL]
        if len(terminals) > 1:
            a, b = terminals[0], terminals[1]
            problem = f"two terminal events, {a.type} at {say.when(a.time)} and {b.type} at {say.when(b.time)}"
            return Verdict("open", 1.0, None, None, _text(say.sequence, ship.lane, problem), b,
                           {"events": [a.event_id, b.event_id]})
        highest: Seen | None = None
        for e in closed:
            if highest is not None and _ORDER[e.type] < _ORDER[highest.type]:
                problem = f"{highest.type} at {say.when(highest.time)} before {e.type} at {say.when(e.time)}"
                return Verdict("open", 1.0, None, None, _text(say.sequence, ship.lane, problem), e,
                               {"events": [highest.event_id, e.event_id]})
            if highest is None or _ORDER[e.type] > _ORDER[highest.type]:
                highest = e
        return None

    def at_risk(self, ship: _Ship, terminal: Seen | None, w: float) -> Verdict | None:
        """Whether to warn now; `_UNCHANGED` (the row as it stands) when there is nothing new to say."""
        row = self.rows.get((ship.id, "at_risk"))
        is_open = row is not None and row.status == "open"
        if terminal is not None or ship.promise is None:
            return None if row is None else self._closed(row, "resolved")
        if self.max_time >= ship.promise:  # a warning is worth raising only before the promise
            return None if row is None else _UNCHANGED
        stage_i = ship.stage_i
        if stage_i is None:
            return None if row is None else _UNCHANGED
        stage = ship.events[stage_i]
        now = max(w, stage.time)
        if not ship.fresh and now < ship.next_check:
            return None if row is None else _UNCHANGED
        ship.fresh = False
        pending = sum(e.delay for e in ship.events[stage_i + 1:] if e.type == "exception")
        deadline = ship.promise + self.late_tolerance
        # Checked more often as the promise nears: a step of an eighth of the time left, at least risk_step.
        r = self.model.risk(ship.lane, stage.type, stage.time, now, deadline, pending, ship.planned())
        if r is None:
            return None if row is None else _UNCHANGED
        ship.next_check = now + max(self.risk_step, (ship.promise - self.allowed_lateness - now) / 8)
        if r.p >= self.risk_high or (is_open and r.p > self.risk_low):
            if is_open:
                return _UNCHANGED
            evidence = {"stage": stage.type, "p": r.p, "stage_to_delivery_h": r.typical / 3600, "q": r.q, "n": r.n,
                        "scope": r.scope, "announced_delay_h": pending / 3600, "promise": ship.promise}
            return Verdict("open", r.p, r.typical / 3600, (now - stage.time) / 3600,
                           _text(say.at_risk, ship.lane, stage.type, now - stage.time, r, ship.promise,
                                 self.max_time, pending), stage, evidence)
        return None if row is None else self._closed(row, "resolved") if row.status == "open" else _UNCHANGED

    def _closed(self, row: Anomaly, status: str) -> Verdict:
        """The row as it stands, with a new status."""
        e = Seen(0.0, "", row.event_id, row.log_id, row.leaf_index, "", 0.0)
        text = row.explanation
        return Verdict(status, row.score, row.expected, row.actual, lambda: text, e, row.evidence)

    # ---- rows and timers ----------------------------------------------------------------

    def put(self, ship: _Ship, kind: str, v: Verdict | None, withdrawable: bool) -> None:
        if v is _UNCHANGED:
            return
        key = (ship.id, kind)
        row = self.rows.get(key)
        if v is None:
            if row is None or not withdrawable or row.status == "withdrawn":
                return
            v = self._closed(row, "withdrawn")
        if row is not None and row.status == v.status and (row.status != "resolved" or row.actual == v.actual):
            return
        self.revision += 1
        if row is None:
            self.raised.append(kind)
        observed = self.max_time if row is None or row.status == "withdrawn" else row.observed_at
        new = Anomaly(ship.id, kind, say.lane_name(ship.lane), v.status, v.score, v.expected, v.actual, observed,
                      v.explanation(), self.model.name, v.event.event_id, v.event.log_id, v.event.leaf_index,
                      self.revision, v.evidence)
        self.rows[key] = self.pending[key] = new
        self.row_version[key] = ship.version

    def schedule(self, ship: _Ship, terminal: Seen | None, w: float, open_limit: float | None = None) -> None:
        last = ship.events[-1].time
        if terminal is not None:
            expiry = max(terminal.time, last) + self.retention
        else:  # a shipment gone quiet is kept until its silence could be judged, and its promise passed
            if open_limit is None:
                open_limit = self._open_limit(ship)
            expiry = max(last + open_limit, ship.promise or last) + self.retention
        if expiry <= w:
            self.expire(ship)
            return
        candidates = [expiry]
        if terminal is None:
            if ship.promise is not None:
                candidates.append(ship.promise + self.late_tolerance)
                if ship.next_check < ship.promise:
                    candidates.append(ship.next_check)
            candidates.append(last + open_limit)  # type: ignore[operator]
        elif (delivered := ship.delivered()) is not None:
            candidates.append(delivered.time)
        if ship.inverted():  # an impossible order is judged once the lateness buffer closes on it
            candidates.append(last)
        deadline = min((c for c in candidates if c > w), default=expiry)
        if deadline < ship.timer or ship.timer <= w:
            ship.timer = deadline
            self.seq += 1
            heapq.heappush(self.timers, (deadline, self.seq, ship.id))

    def _open_limit(self, ship: _Ship) -> float:
        """When the open gap or dwell of a shipment in transit outgrows its norm, from its last event."""
        stage_event = ship.stage_at(len(ship.events) - 1)
        if stage_event is None:
            return self.retention
        if stage_event.type in DWELL_STAGES:
            th = self.model.dwell_threshold(stage_event.site or ship.lane.origin, ship.lane.mode, stage_event.type)
            start = stage_event.time
        else:
            th = self.model.gap_threshold(ship.lane, stage_event.type, ship.planned())
            start = ship.events[-1].time
        if th is None:
            return self.retention
        pending = sum(e.delay for e in ship.events if e.type == "exception" and e.time >= stage_event.time)
        return max(1.0, start + th.seconds + pending - ship.events[-1].time + 1.0)

    def expire(self, ship: _Ship) -> None:
        """Forget a finished shipment; its rows are final. Stragglers are ignored for a while after."""
        del self.ships[ship.id]
        for kind in ("late", "at_risk", "silent", "sequence", "dwell"):
            self.rows.pop((ship.id, kind), None)
            self.row_version.pop((ship.id, kind), None)
        until = self.watermark + 4 * self.retention
        self.expired[ship.id] = until
        self.expired_order.append((until, ship.id))

    def stats(self) -> dict[str, int]:
        """State sizes, to show it stays bounded."""
        return {"shipments": len(self.ships), "rows": len(self.rows), "timers": len(self.timers),
                "expired": len(self.expired)}
