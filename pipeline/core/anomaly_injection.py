"""Labelled delay anomalies on top of the fleet simulator: late, silent, sequence, dwell.

`LabelledFleet` is a `Fleet` whose shipments are, by a share each, made slow
(late), held at a site (dwell), made to go quiet (silent: reports lost for a
while or for good), given an impossible order (sequence: a step dated before
an earlier one, or a second terminal event), or slowed to land just around
their promise (naturally a little late, unlabelled). Some events are also sent
a little out of order (within the allowed lateness), which is legal. The
labels stay beside the stream in `labels`; nothing in an event tells.

Only timings and lifecycles change, drawn from their own random stream: what
shipments carry (items, demand) is exactly the plain fleet's.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pipeline.core.simulator import Fleet, _Run, _Shipment
from pipeline.errors import ConfigError

INJECTED_KINDS = ("late", "dwell", "silent", "sequence")
DEFAULT_SHARES = {"late": 0.03, "dwell": 0.02, "silent": 0.02, "sequence": 0.01, "little_late": 0.04}
_HOUR = 3600


class LabelledFleet(Fleet):
    """A fleet with injected, labelled delay anomalies and legal reorderings.

    >>> from datetime import timezone
    >>> fleet = LabelledFleet(3, datetime(2026, 1, 5, tzinfo=timezone.utc), shares={"dwell": 1.0})
    >>> events = [e for _, e in zip(range(200), fleet.events())]
    >>> sorted({k for kinds in fleet.labels.values() for k in kinds})
    ['dwell']
    >>> any("label" in str(e) or "inject" in str(e) for e in events)
    False
    """

    def __init__(self, seed: int, start: datetime, shares: dict[str, float] | None = None,
                 reorder_share: float = 0.05, max_reorder: float = 1.5 * _HOUR, **kwargs: Any) -> None:
        super().__init__(seed, start, **kwargs)
        self.shares = dict(DEFAULT_SHARES if shares is None else shares)
        unknown = set(self.shares) - set(DEFAULT_SHARES)
        if unknown or any(v < 0 for v in self.shares.values()) or sum(self.shares.values()) > 1.0:
            raise ConfigError(f"shares must be non-negative, sum to at most 1, over {sorted(DEFAULT_SHARES)}")
        if not 0.0 <= reorder_share < 1.0 or max_reorder < 0:
            raise ConfigError("reorder_share must be in [0, 1) and max_reorder non-negative")
        self.reorder_share = reorder_share
        self.max_reorder = max_reorder
        self.labels: dict[str, set[str]] = {}
        self.reordered: set[str] = set()

    def events(self) -> Iterator[dict[str, Any]]:
        """The stream as sent: injected lifecycles, a few events held back within the lateness."""
        self.labels.clear()
        self.reordered.clear()
        rng = random.Random(f"reorder:{self.seed}")
        held: list[tuple[float, int, dict[str, Any]]] = []
        n = 0
        for event in _InjectingRun(self).run():
            t = datetime.fromisoformat(event["event_time"]).timestamp()
            while held and held[0][0] <= t:
                yield heapq.heappop(held)[2]
            if event["event_type"] != "created" and rng.random() < self.reorder_share:
                n += 1
                self.reordered.add(event["shipment_id"])
                heapq.heappush(held, (t + rng.uniform(600, max(600.0, self.max_reorder)), n, event))
                continue
            yield event


class _InjectingRun(_Run):
    """The simulation with each new shipment's steps reshaped before its first event is sent."""

    def __init__(self, fleet: LabelledFleet) -> None:
        super().__init__(fleet)
        self.labelled = fleet
        self.inject = random.Random(f"anomalies:{fleet.seed}")

    def new_shipment(self, t0: int) -> _Shipment:
        ship = super().new_shipment(t0)
        rng = self.inject
        u = rng.random()
        if ship.steps[-1][1] == "cancelled":
            return ship
        for kind, share in self.labelled.shares.items():
            if u < share:
                if getattr(self, f"_{kind}")(ship, rng):
                    if kind != "little_late":
                        self.labelled.labels.setdefault(ship.id, set()).add(kind)
                break
            u -= share
        return ship

    def _promise(self, ship: _Shipment) -> int:
        return int(datetime.fromisoformat(ship.planned).timestamp()) - self.epoch

    def _scale(self, ship: _Shipment, factor: float) -> None:
        t0 = ship.steps[0][0]
        ship.steps[:] = [(t0 + int((t - t0) * factor), kind, where, attrs) for t, kind, where, attrs in ship.steps]

    def _late(self, ship: _Shipment, rng: random.Random) -> bool:
        """A slow run: every step takes 25-60 % longer."""
        self._scale(ship, rng.uniform(1.25, 1.6))
        return True

    def _little_late(self, ship: _Shipment, rng: random.Random) -> bool:
        """Slowed just enough to be delivered around the promise: an hour early to 2.5 hours late."""
        t0, delivered = ship.steps[0][0], ship.steps[-1][0]
        target = self._promise(ship) + int(rng.uniform(-1, 2.5) * _HOUR)
        if target > delivered > t0:
            self._scale(ship, (target - t0) / (delivered - t0))
        return True

    def _dwell(self, ship: _Shipment, rng: random.Random) -> bool:
        """Held at the origin or destination site for 3-7 times the planned dwell, plus 2 h."""
        stage, segment = rng.choice((("picked_up", 1), ("arrived", 3)))
        at = next(i for i, s in enumerate(ship.steps) if s[1] == stage)
        extra = int(rng.uniform(3, 7) * ship.lane.segments[segment] + 2 * _HOUR)
        ship.steps[at + 1:] = [(t + extra, kind, where, attrs) for t, kind, where, attrs in ship.steps[at + 1:]]
        return True

    def _silent(self, ship: _Shipment, rng: random.Random) -> bool:
        """Reports lost for 4-8 times the stage's planned length plus 2 h, or (a third of them) for good."""
        stage, segment = rng.choice((("created", 0), ("departed", 2), ("out_for_delivery", 4)))
        at = next(i for i, s in enumerate(ship.steps) if s[1] == stage)
        t = ship.steps[at][0]
        if rng.random() < 1 / 3:
            keep = ship.steps[: at + 1]
        else:
            hole = int(rng.uniform(4, 8) * ship.lane.segments[segment] + 2 * _HOUR)
            keep = ship.steps[: at + 1] + [s for s in ship.steps[at + 1:] if s[0] > t + hole]
        dropped = len(ship.steps) - len(keep)
        ship.steps[:] = keep
        return dropped > 0

    def _sequence(self, ship: _Shipment, rng: random.Random) -> bool:
        """A step dated before an earlier step, or a second delivery."""
        steps = ship.steps
        if rng.random() < 0.4:
            steps.append((steps[-1][0] + int(rng.uniform(1, 12) * _HOUR), "delivered", "d", None))
            return True
        life = [i for i, s in enumerate(steps) if s[1] in ("picked_up", "departed", "arrived", "out_for_delivery",
                                                            "delivered")]
        i, j = sorted(rng.sample(life, 2))
        t, kind, where, attrs = steps[j]
        steps[j] = (steps[i][0] - int(rng.uniform(0.5, 3) * _HOUR), kind, where, attrs)
        return True
