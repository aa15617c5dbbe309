"""A seeded fleet simulator: shipments on lanes between real sites, as ShipmentEvent dicts.

It feeds demos, benchmarks and tests with data that has the shape of the real
thing: transit times that depend on mode and distance, lanes and carriers that
are reliably late, demand with weekly and yearly seasons, exceptions and
cancellations. Pure: the caller passes the seed and the start time; the same
seed always yields the same stream. The sites, SKUs, carriers and lanes it
runs on are in :mod:`pipeline.core.fleet_catalog`.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import random
from collections.abc import Iterator, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Any, NamedTuple

from pipeline.core.demand_profile import DemandProfile
from pipeline.core.fleet_catalog import (
    B2B_WEEKLY,
    CARRIERS,
    EXCEPTION_REASONS,
    MODES,
    SITES,
    SKUS,
    Carrier,
    Lane,
    Site,
    Sku,
    build_lanes,
)
from pipeline.errors import ConfigError

LIFECYCLE = ("created", "picked_up", "departed", "arrived", "out_for_delivery", "delivered")

MALFORMED_KINDS = (
    "bad_json", "not_utf8", "missing_field", "unknown_event_type",
    "naive_datetime", "zero_quantity", "unknown_field", "wrong_schema_version",
)


class Record(NamedTuple):
    """One line for the events topic, tagged so a test knows which lines must be dead-lettered."""

    key: bytes | None
    value: bytes
    is_valid: bool


def malform(event: dict[str, Any], kind: str, rng: random.Random) -> bytes:
    """Spoil a valid event in one of the ways real producers do (`MALFORMED_KINDS`).

    >>> ev = {"event_id": "e", "shipment_id": "s", "event_type": "created", "schema_version": 1}
    >>> malform(ev, "wrong_schema_version", random.Random(0))
    b'{"event_id":"e","shipment_id":"s","event_type":"created","schema_version":2}'
    """
    bad = dict(event)
    if kind == "bad_json":
        text = _dumps(bad)
        return text[: rng.randint(1, len(text) - 1)].encode()
    if kind == "not_utf8":
        bad["carrier"] = f"{bad.get('carrier', '')} Logística"
        return json.dumps(bad, ensure_ascii=False).encode("latin-1", "replace")
    if kind == "missing_field":
        del bad[rng.choice(["event_id", "shipment_id", "event_type", "event_time", "origin", "mode"])]
    elif kind == "unknown_event_type":
        bad["event_type"] = rng.choice(["in_transit", "DELIVERED", "returned", ""])
    elif kind == "naive_datetime":
        bad["event_time"] = str(bad["event_time"])[:19]
    elif kind == "zero_quantity":
        sku = (bad.get("items") or [{"sku": "FOOD-0007"}])[0]["sku"]
        bad["items"] = [{"sku": sku, "quantity": 0}]
    elif kind == "unknown_field":
        bad["shipmentId"] = bad.get("shipment_id")
    elif kind == "wrong_schema_version":
        bad["schema_version"] = 2
    else:
        raise ConfigError(f"unknown malformed kind {kind!r}; expected one of {', '.join(MALFORMED_KINDS)}")
    return _dumps(bad).encode()


_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _dumps(obj: dict[str, Any]) -> str:
    return _ENCODER.encode(obj)


class Fleet:
    """A deterministic, endless stream of shipment events for one seed.

    Simulated time runs `tick` ahead per event on average (30 s by default), so a
    demo sending a few hundred events a second covers weeks in minutes.

    >>> fleet = Fleet(7, datetime(2026, 1, 5, tzinfo=timezone.utc))
    >>> first = next(fleet.events())
    >>> first["event_type"], first["event_time"][:10]
    ('created', '2026-01-05')
    """

    def __init__(
        self,
        seed: int,
        start: datetime,
        sites: Sequence[Site] = SITES,
        skus: Sequence[Sku] = SKUS,
        carriers: Sequence[Carrier] = CARRIERS,
        lane_count: int = 60,
        tick: timedelta = timedelta(seconds=30),
        cancel_share: float = 0.025,
        malformed_share: float = 0.0,
    ) -> None:
        if start.tzinfo is None or start.utcoffset() is None:
            raise ConfigError("the simulator's start must be timezone-aware, e.g. datetime(..., tzinfo=UTC)")
        if tick.total_seconds() <= 0:
            raise ConfigError(f"tick must be positive, got {tick}")
        if not 0.0 <= malformed_share < 1.0:
            raise ConfigError(f"malformed_share must be in [0, 1), got {malformed_share}")
        if not 0.0 <= cancel_share <= 1.0:
            raise ConfigError(f"cancel_share must be in [0, 1], got {cancel_share}")
        if not skus or lane_count < 1:
            raise ConfigError("the simulator needs at least one SKU and one lane")
        self.seed = seed
        self.start = start
        self.sites = tuple(sites)
        self.skus = tuple(skus)
        self.carriers = tuple(carriers)
        self.tick = tick
        self.cancel_share = cancel_share
        self.malformed_share = malformed_share
        self.lanes = build_lanes(self.sites, self.carriers, lane_count, random.Random(f"lanes:{seed}"))
        self.shipment_prefix = f"SHP-{hashlib.blake2b(str(seed).encode(), digest_size=3).hexdigest().upper()}-"

    def events(self) -> Iterator[dict[str, Any]]:
        """Every event in `event_time` order; each call starts the same stream afresh."""
        return _Run(self).run()

    def records(self) -> Iterator[Record]:
        """Events encoded for Kafka, keyed by shipment_id, with spoiled lines mixed in.

        `malformed_share` is the fraction of all records that are spoiled. The spoiling
        draws from its own random stream, so the valid records are exactly `events()`.
        """
        share = self.malformed_share
        spoil = random.Random(f"malformed:{self.seed}")
        for event in self.events():
            key = event["shipment_id"].encode()
            while share and spoil.random() < share:
                kind = spoil.choice(MALFORMED_KINDS)
                yield Record(None if kind == "bad_json" else key, malform(event, kind, spoil), False)
            yield Record(key, _dumps(event).encode(), True)


class _Shipment:
    __slots__ = ("id", "lane", "carrier", "planned", "items", "steps", "next")

    def __init__(self, sid: str, lane: Lane, carrier: Carrier, planned: str, items: list[dict[str, Any]]) -> None:
        self.id, self.lane, self.carrier, self.planned, self.items = sid, lane, carrier, planned, items
        self.steps: list[tuple[int, str, Any, dict[str, Any] | None]] = []
        self.next = 0


def _between(a: Site, b: Site, f: float) -> dict[str, float]:
    """A point a fraction `f` along the great circle from a to b, for in-transit events."""
    va = _unit(a.lat, a.lon)
    vb = _unit(b.lat, b.lon)
    x, y, z = ((1 - f) * p + f * q for p, q in zip(va, vb))
    n = math.sqrt(x * x + y * y + z * z) or 1.0
    return {"lat": round(math.degrees(math.asin(z / n)), 4), "lon": round(math.degrees(math.atan2(y, x)), 4)}


def _unit(lat: float, lon: float) -> tuple[float, float, float]:
    p, l = math.radians(lat), math.radians(lon)
    return (math.cos(p) * math.cos(l), math.cos(p) * math.sin(l), math.sin(p))


class _Run:
    """One pass of the discrete-event simulation: a heap of shipments keyed by their next event."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.rng = random.Random(f"fleet:{fleet.seed}")
        # Event times are whole seconds: the start's fraction of a second is dropped.
        self.epoch = int(fleet.start.replace(microsecond=0).timestamp())
        utc = fleet.start.astimezone(timezone.utc)
        self.weekday0 = utc.weekday() + (utc.hour * 3600 + utc.minute * 60 + utc.second) / 86400
        self.tz = {s.gln: timezone(timedelta(hours=s.utc_offset)) for s in fleet.sites}
        self.lane_cum = _cumulative([lane.volume for lane in fleet.lanes])
        self.arrival_rate = 1.0 / (fleet.tick.total_seconds() * 6.0)
        self.demand = DemandProfile(fleet.seed, fleet.skus, fleet.sites)
        self.mixes: dict[tuple[str, int], _Mix] = {}
        self.shipments = 0
        self.emitted = 0

    def run(self) -> Iterator[dict[str, Any]]:
        heap: list[tuple[int, int, _Shipment | None]] = [(0, 0, None)]
        seq = 1
        while True:
            t, _, ship = heapq.heappop(heap)
            if ship is None:
                ship = self.new_shipment(t)
                gap = self.rng.expovariate(self.arrival_rate * B2B_WEEKLY[self.weekday(t)])
                heapq.heappush(heap, (t + max(1, round(gap)), seq, None))
                seq += 1
            step = ship.steps[ship.next]
            ship.next += 1
            if ship.next < len(ship.steps):
                heapq.heappush(heap, (ship.steps[ship.next][0], seq, ship))
                seq += 1
            yield self.event(ship, step)

    def weekday(self, t: int) -> int:
        return int(self.weekday0 + t / 86400) % 7

    def event(self, ship: _Shipment, step: tuple[int, str, Any, dict[str, Any] | None]) -> dict[str, Any]:
        t, event_type, where, attributes = step
        lane = ship.lane
        if where == "o" or where == "d":
            site = lane.origin if where == "o" else lane.destination
            location: dict[str, Any] = {"site_id": site.gln, "lat": site.lat, "lon": site.lon}
            tz = self.tz[site.gln]
        else:
            location, tz = where, timezone.utc
        n = self.emitted
        self.emitted += 1
        h = hashlib.blake2b(b"%d:%d" % (self.fleet.seed, n), digest_size=16).hexdigest()
        event: dict[str, Any] = {
            "event_id": f"{h[:8]}-{h[8:12]}-8{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}",
            "shipment_id": ship.id,
            "event_type": event_type,
            "event_time": datetime.fromtimestamp(self.epoch + t, tz).isoformat(),
            "origin": lane.origin.gln,
            "destination": lane.destination.gln,
            "carrier": ship.carrier.name,
            "mode": lane.mode,
            "location": location,
            "planned_delivery": ship.planned,
        }
        if event_type == "created":
            event["items"] = ship.items
        if attributes:
            event["attributes"] = attributes
        event["schema_version"] = 1
        return event

    def new_shipment(self, t0: int) -> _Shipment:
        rng = self.rng
        lane = rng.choices(self.fleet.lanes, cum_weights=self.lane_cum)[0]
        carrier = lane.carriers[0] if len(lane.carriers) == 1 else rng.choice(lane.carriers)
        items, setpoint = self.items(t0, lane.origin)
        m = MODES[lane.mode]
        promise = self.epoch + t0 + sum(lane.segments) * m.buffer
        planned = datetime.fromtimestamp(math.ceil(promise / 3600) * 3600, self.tz[lane.destination.gln])
        self.shipments += 1
        ship = _Shipment(f"{self.fleet.shipment_prefix}{self.shipments:07d}", lane, carrier, planned.isoformat(), items)
        bias = lane.bias * carrier.reliability
        seg = [max(300, int(e * bias * rng.lognormvariate(0, m.sigma))) for e in lane.segments]

        def reading() -> dict[str, Any] | None:
            return None if setpoint is None else {"temperature_c": round(setpoint + rng.gauss(0, 0.5), 1)}

        created = None if setpoint is None else {"reefer": True, "setpoint_c": setpoint}
        steps = ship.steps
        steps.append((t0, "created", "o", created))
        if rng.random() < self.fleet.cancel_share:
            t = t0
            if rng.random() < 0.3:
                t += seg[0]
                steps.append((t, "picked_up", "o", reading()))
            reason = rng.choice(("customer_request", "stock_unavailable", "duplicate_order"))
            steps.append((t + 60 + int(rng.random() * seg[len(steps) - 1]), "cancelled", "o", {"reason": reason}))
            return ship
        exc_at = -1
        if rng.random() < m.exception * (1.4 if setpoint is not None else 1.0):
            exc_at = rng.choices((1, 2, 4), (0.15, 0.7, 0.15))[0]
        seal = f"SL{rng.randrange(10**7):07d}" if lane.mode in ("road", "rail", "sea") else None
        t = t0
        for i, event_type in enumerate(LIFECYCLE[1:]):
            if i == exc_at:
                at = t + max(60, int(seg[i] * rng.uniform(0.1, 0.9)))
                attrs: dict[str, Any]
                if i == 4:
                    attrs = {"reason": rng.choice(("delivery_attempt_failed", "address_issue", "consignee_closed"))}
                    delay = int(rng.uniform(16, 30) * 3600)
                else:
                    reasons = EXCEPTION_REASONS[lane.mode] if i == 2 else ("documentation_missing", "customs_hold")
                    attrs = {"reason": rng.choice(reasons)}
                    if setpoint is not None and i == 2 and rng.random() < 0.4:
                        attrs = {"reason": "temperature_excursion",
                                 "temperature_c": round(setpoint + rng.uniform(5, 12), 1)}
                    delay = int(rng.uniform(0.15, 0.7) * sum(lane.segments))
                attrs["expected_delay_h"] = round(delay / 3600, 1)
                where = "o" if i == 1 else "d" if i == 4 else _between(lane.origin, lane.destination, rng.random())
                steps.append((at, "exception", where, attrs))
                seg[i] += delay
            t += seg[i]
            attributes = reading()
            if seal is not None and event_type in ("departed", "arrived"):
                attributes = {**(attributes or {}), "seal_id": seal}
            steps.append((t, event_type, "o" if i < 2 else "d", attributes))
        return ship

    def items(self, t: int, site: Site) -> tuple[list[dict[str, Any]], float | None]:
        """What the shipment carries: SKUs drawn by their demand at `site` on its local day, one temperature class."""
        day = 719163 + (self.epoch + t + site.utc_offset * 3600) // 86400  # proleptic ordinal of the local day
        mix = self.mixes.get((site.gln, day))
        if mix is None:
            if len(self.mixes) > 4096:
                self.mixes.clear()
            mix = self.mixes[(site.gln, day)] = self.mix(site, day)
        rng = self.rng
        pool, cum = mix.everything
        first = rng.choices(pool, cum_weights=cum)[0]
        lines = [first]
        pool, cum = mix.by_setpoint[first.setpoint_c]
        for p in (0.45, 0.2, 0.08):
            if rng.random() < p:
                extra = rng.choices(pool, cum_weights=cum)[0]
                if extra not in lines:
                    lines.append(extra)
        items = []
        for sku in lines:
            mean = mix.cases[sku.sku]
            cases = max(1, round(rng.gauss(mean, 0.3 * mean)))
            items.append({"sku": sku.sku, "quantity": cases * sku.case_pack})
        return items, first.setpoint_c

    def mix(self, site: Site, ordinal: int) -> _Mix:
        """The SKU weights and order sizes at `site` on one local day, from the demand profile.

        Shipments leave at a fixed weekly rhythm, so the profile's level (trend, season,
        holidays) goes into the order size and its SKU shares into which SKUs are drawn.
        """
        day = date.fromordinal(ordinal)
        profiles = [self.demand.get(s.sku, site.gln) for s in self.fleet.skus]
        rates = [self.demand.rate(p, day) for p in profiles]
        base = sum(p.base for p in profiles) or 1.0
        level = min(5.0, max(0.1, sum(rates) / base / B2B_WEEKLY[(ordinal - 1) % 7] * _MEAN_B2B))
        weights = {p.sku.sku: r + 1e-9 for p, r in zip(profiles, rates)}
        cases = {p.sku.sku: max(1.0, p.order_cases * level) for p in profiles}
        skus = self.fleet.skus
        by_setpoint = {}
        for setpoint in {s.setpoint_c for s in skus}:
            same = [s for s in skus if s.setpoint_c == setpoint]
            by_setpoint[setpoint] = (same, _cumulative([weights[s.sku] for s in same]))
        return _Mix((list(skus), _cumulative([weights[s.sku] for s in skus])), by_setpoint, cases)


_MEAN_B2B = sum(B2B_WEEKLY) / 7


class _Mix(NamedTuple):
    everything: tuple[list[Sku], list[float]]
    by_setpoint: dict[float | None, tuple[list[Sku], list[float]]]
    cases: dict[str, float]


def _cumulative(weights: Sequence[float]) -> list[float]:
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out
