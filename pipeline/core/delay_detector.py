"""Delay anomalies judged in event time: a per-partition watermark and timers on it.

(First cut: `late` only; the lane model and the other kinds build on this frame.)
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

from pipeline.core.anomaly import Anomaly, iso
from pipeline.core.sealed import SealedEvent, parse_time

TERMINAL = ("delivered", "cancelled")


@dataclass(slots=True)
class _Ship:
    id: str
    lane: str
    promise: float | None
    events: list[SealedEvent] = field(default_factory=list)


class DelayDetector:
    """One partition's detector: feed sealed events in leaf order, take the rows that changed."""

    def __init__(self, allowed_lateness: float = 7200.0, late_tolerance: float = 3600.0,
                 model_name: str = "lane-delay/1") -> None:
        self.allowed_lateness = allowed_lateness
        self.late_tolerance = late_tolerance
        self.model_name = model_name
        self.max_time = -math.inf
        self.ships: dict[str, _Ship] = {}
        self.rows: dict[tuple[str, str], Anomaly] = {}
        self.timers: list[tuple[float, str]] = []
        self.dirty: set[tuple[str, str]] = set()
        self.revision = 0
        self.raised: list[str] = []

    @property
    def watermark(self) -> float:
        return self.max_time - self.allowed_lateness

    def observe(self, ev: SealedEvent) -> None:
        ship = self.ships.get(ev.shipment_id)
        if ship is None:
            e = ev.event
            promise = parse_time(e["planned_delivery"]) if e.get("planned_delivery") else None
            ship = self.ships[ev.shipment_id] = _Ship(ev.shipment_id, lane_of(e), promise)
            if promise is not None:
                heapq.heappush(self.timers, (promise + self.late_tolerance, ship.id))
        ship.events.append(ev)
        self.max_time = max(self.max_time, ev.time)
        self.judge(ship)
        while self.timers and self.timers[0][0] <= self.watermark:
            _, sid = heapq.heappop(self.timers)
            if sid in self.ships:
                self.judge(self.ships[sid])

    def judge(self, ship: _Ship) -> None:
        if ship.promise is None:
            return
        deadline = ship.promise + self.late_tolerance
        delivered = [e for e in ship.events if e.event_type == "delivered"]
        if delivered:
            first = min(delivered, key=lambda e: e.time)
            if first.time > deadline:
                self.put(ship, "late", first, "resolved", (first.time - ship.promise) / 3600,
                         f"{ship.lane}: delivered {(first.time - ship.promise) / 3600:.1f} h after the promise of "
                         f"{iso(ship.promise)[:16]}")
        elif self.watermark > deadline and not any(e.event_type == "cancelled" for e in ship.events):
            last = max(ship.events, key=lambda e: e.time)
            self.put(ship, "late", last, "open", (self.watermark - ship.promise) / 3600,
                     f"{ship.lane}: promised for {iso(ship.promise)[:16]}, no delivery "
                     f"{(self.watermark - ship.promise) / 3600:.1f} h after it")

    def put(self, ship: _Ship, kind: str, ev: SealedEvent, status: str, actual: float, text: str) -> None:
        key = (ship.id, kind)
        row = self.rows.get(key)
        if row is not None and row.status == status:
            return
        self.revision += 1
        if row is None:
            self.raised.append(kind)
        self.rows[key] = Anomaly(ship.id, kind, ship.lane, status, 1.0, self.late_tolerance / 3600, actual,
                                 self.max_time, text, self.model_name, ev.event_id, ev.log_id, ev.leaf_index,
                                 self.revision)
        self.dirty.add(key)

    def take_raised(self) -> list[str]:
        """Kinds of the rows raised for the first time since the last call (for metrics)."""
        out, self.raised = self.raised, []
        return out

    def changed(self) -> list[Anomaly]:
        out = [self.rows[k] for k in sorted(self.dirty) if k in self.rows]
        self.dirty.clear()
        return out


def lane_of(event: dict[str, object]) -> str:
    """The lane's name: carrier, mode, origin→destination."""
    return f"{event.get('carrier')} {event.get('mode')} {event.get('origin')}→{event.get('destination')}"
