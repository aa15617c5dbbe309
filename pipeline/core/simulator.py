"""A seeded fleet simulator: shipments on lanes between real sites, as ShipmentEvent dicts.

It feeds demos, benchmarks and tests with data that has the shape of the real
thing: transit times that depend on mode and distance, lanes and carriers that
are reliably late, demand with weekly and yearly seasons, exceptions and
cancellations. Pure: the caller passes the seed and the start time; the same
seed always yields the same stream.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

from pipeline.errors import ConfigError


def gs1_check_digit(body: str) -> str:
    """The GS1 mod-10 check digit of a GLN/GTIN body, so site codes look like real GLNs.

    >>> gs1_check_digit("400638133393")
    '1'
    """
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return str(-total % 10)


@dataclass(frozen=True, slots=True)
class Site:
    """A warehouse, port or hub that shipments leave from and arrive at."""

    gln: str
    city: str
    region: str
    lat: float
    lon: float
    utc_offset: int
    port: bool


@dataclass(frozen=True, slots=True)
class Sku:
    """A product line with its own demand pattern, so a forecaster has signal to find."""

    sku: str
    weight: float
    case_pack: int
    cases: float
    peak_day: int
    amplitude: float
    weekly: tuple[float, ...]
    setpoint_c: float | None


@dataclass(frozen=True, slots=True)
class Carrier:
    """A carrier on one mode in some regions; `reliability` above 1 means slower than planned."""

    name: str
    mode: str
    regions: frozenset[str]
    reliability: float


@dataclass(frozen=True, slots=True)
class Lane:
    """A directed origin-destination pair served by one mode and a few carriers."""

    origin: Site
    destination: Site
    mode: str
    km: float
    carriers: tuple[Carrier, ...]
    segments: tuple[int, ...]
    bias: float
    volume: float


def _site(prefix: str, n: int, city: str, region: str, lat: float, lon: float, off: int, port: bool) -> Site:
    body = (prefix + f"{n * 2654435761 % 10**10:010d}")[:12]
    return Site(body + gs1_check_digit(body), city, region, lat, lon, off, port)


SITES: tuple[Site, ...] = (
    _site("87", 1, "Rotterdam", "EU", 51.92, 4.48, 1, True),
    _site("40", 2, "Hamburg", "EU", 53.55, 9.99, 1, True),
    _site("54", 3, "Antwerp", "EU", 51.22, 4.40, 1, True),
    _site("41", 4, "Duisburg", "EU", 51.43, 6.76, 1, False),
    _site("42", 5, "Frankfurt", "EU", 50.11, 8.68, 1, False),
    _site("43", 6, "Munich", "EU", 48.14, 11.58, 1, False),
    _site("30", 7, "Paris", "EU", 48.86, 2.35, 1, False),
    _site("31", 8, "Lyon", "EU", 45.76, 4.84, 1, False),
    _site("80", 9, "Milan", "EU", 45.46, 9.19, 1, False),
    _site("84", 10, "Madrid", "EU", 40.42, -3.70, 1, False),
    _site("84", 11, "Barcelona", "EU", 41.39, 2.17, 1, True),
    _site("590", 12, "Warsaw", "EU", 52.23, 21.01, 1, False),
    _site("859", 13, "Prague", "EU", 50.08, 14.44, 1, False),
    _site("90", 14, "Vienna", "EU", 48.21, 16.37, 1, False),
    _site("87", 15, "Venlo", "EU", 51.37, 6.17, 1, False),
    _site("50", 16, "London", "EU", 51.51, -0.13, 0, False),
    _site("73", 17, "Stockholm", "EU", 59.33, 18.07, 1, False),
    _site("03", 18, "New York", "NA", 40.71, -74.01, -5, True),
    _site("04", 19, "Chicago", "NA", 41.88, -87.63, -6, False),
    _site("05", 20, "Los Angeles", "NA", 34.05, -118.24, -8, True),
    _site("06", 21, "Atlanta", "NA", 33.75, -84.39, -5, False),
    _site("690", 22, "Shanghai", "APAC", 31.23, 121.47, 8, True),
    _site("692", 23, "Shenzhen", "APAC", 22.54, 114.06, 8, True),
    _site("888", 24, "Singapore", "APAC", 1.35, 103.82, 8, True),
    _site("45", 25, "Tokyo", "APAC", 35.68, 139.69, 9, True),
    _site("789", 26, "Sao Paulo", "LATAM", -23.55, -46.63, -3, True),
)

_B2B = (1.3, 1.2, 1.15, 1.15, 1.1, 0.6, 0.5)
_RETAIL = (1.0, 0.9, 0.95, 1.1, 1.35, 1.0, 0.7)
SKUS: tuple[Sku, ...] = (
    Sku("ELEC-0101", 3.0, 4, 6, 330, 0.55, _RETAIL, None),
    Sku("ELEC-0217", 2.0, 10, 4, 335, 0.45, _RETAIL, None),
    Sku("TOY-0042", 1.5, 12, 5, 325, 0.85, _RETAIL, None),
    Sku("APP-0310", 2.5, 20, 8, 80, 0.35, _RETAIL, None),
    Sku("APP-0388", 2.0, 20, 6, 260, 0.35, _RETAIL, None),
    Sku("HOME-0120", 2.0, 6, 5, 110, 0.6, _B2B, None),
    Sku("HOME-0155", 1.0, 2, 8, 120, 0.5, _B2B, None),
    Sku("FOOD-0007", 4.0, 24, 20, 350, 0.12, _B2B, None),
    Sku("FOOD-0019", 3.0, 12, 16, 200, 0.15, _B2B, None),
    Sku("CHIL-0003", 2.5, 12, 14, 190, 0.3, _B2B, 4.0),
    Sku("CHIL-0011", 1.5, 6, 10, 170, 0.25, _B2B, 4.0),
    Sku("FROZ-0005", 2.0, 8, 12, 200, 0.5, _B2B, -18.0),
    Sku("FROZ-0008", 1.0, 8, 9, 355, 0.3, _B2B, -18.0),
    Sku("PHAR-0001", 1.5, 10, 6, 20, 0.3, _B2B, 5.0),
    Sku("PHAR-0024", 1.0, 50, 3, 35, 0.4, _B2B, 5.0),
    Sku("AUTO-0600", 1.5, 1, 30, 100, 0.1, _B2B, None),
)

_ALL = frozenset({"EU", "NA", "APAC", "LATAM", "GLOBAL"})
CARRIERS: tuple[Carrier, ...] = tuple(
    Carrier(name, mode, frozenset(regions.split()) if regions != "*" else _ALL, rel)
    for name, mode, regions, rel in (
        ("DHL Parcel", "parcel", "EU", 0.97), ("DPD", "parcel", "EU", 1.03), ("GLS", "parcel", "EU", 1.08),
        ("UPS", "parcel", "NA", 0.98), ("FedEx Ground", "parcel", "NA", 1.02),
        ("SF Express", "parcel", "APAC", 0.97), ("Yamato", "parcel", "APAC", 0.95),
        ("DSV Road", "road", "EU", 0.98), ("Girteka", "road", "EU", 1.06), ("Dachser", "road", "EU", 0.96),
        ("Raben", "road", "EU", 1.1), ("J.B. Hunt", "road", "NA", 1.0), ("Schneider", "road", "NA", 1.05),
        ("SF Freight", "road", "APAC", 1.02), ("Braspress", "road", "LATAM", 1.1),
        ("DB Cargo", "rail", "EU", 1.08), ("PKP Cargo", "rail", "EU", 1.15), ("Rail Cargo Austria", "rail", "EU", 1.02),
        ("Union Pacific", "rail", "NA", 1.04), ("BNSF", "rail", "NA", 1.0), ("China Railway", "rail", "APAC", 1.05),
        ("Maersk", "sea", "*", 0.98), ("MSC", "sea", "*", 1.04), ("CMA CGM", "sea", "*", 1.02),
        ("Hapag-Lloyd", "sea", "*", 0.97), ("COSCO", "sea", "*", 1.06),
        ("Lufthansa Cargo", "air", "*", 0.98), ("Cargolux", "air", "*", 1.0), ("Cathay Cargo", "air", "*", 1.03),
        ("FedEx Express", "air", "*", 0.96),
    )
)


class _Mode(NamedTuple):
    pickup: float
    origin: float
    kmh: float
    fixed: float
    dest: float
    last: float
    sigma: float
    buffer: float
    exception: float


# Hours per segment (pickup wait, origin dwell, line-haul speed and fixed part,
# destination dwell, last mile); `buffer` is how much slack the promise has.
_MODES = {
    "parcel": _Mode(4, 6, 60, 0, 8, 4, 0.3, 1.4, 0.05),
    "road": _Mode(6, 3, 55, 1, 4, 3, 0.25, 1.25, 0.05),
    "rail": _Mode(12, 18, 30, 4, 12, 6, 0.3, 1.35, 0.07),
    "sea": _Mode(24, 72, 28, 12, 60, 24, 0.22, 1.2, 0.1),
    "air": _Mode(8, 14, 650, 3, 12, 8, 0.35, 1.3, 0.08),
}
# Relative volume per mode: road and parcel carry most shipments, air the fewest.
_SHARE = {"parcel": 1.5, "road": 1.0, "rail": 0.8, "sea": 0.7, "air": 0.25}
_ROUTE = {"road": 1.3, "rail": 1.3, "sea": 1.6, "parcel": 1.3, "air": 1.05}

_EXCEPTIONS = {
    "parcel": ("sorting_delay", "damaged_goods", "weather_delay"),
    "road": ("vehicle_breakdown", "traffic_congestion", "weather_delay", "damaged_goods"),
    "rail": ("track_closure", "terminal_congestion", "weather_delay"),
    "sea": ("customs_hold", "port_congestion", "vessel_rollover", "weather_delay"),
    "air": ("customs_hold", "flight_cancelled", "offloaded"),
}

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


def haversine_km(a: Site, b: Site) -> float:
    """Great-circle distance between two sites.

    >>> round(haversine_km(SITES[0], SITES[1]))
    413
    """
    p1, p2 = math.radians(a.lat), math.radians(b.lat)
    dp, dl = p2 - p1, math.radians(b.lon - a.lon)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 12742.0 * math.asin(math.sqrt(h))


def lane_mode(a: Site, b: Site, km: float, rng: random.Random) -> str:
    """Pick the mode a shipper would use for this pair: sea or air across regions, by distance within."""
    if a.region != b.region:
        return "sea" if a.port and b.port and rng.random() < 0.85 else "air"
    if km < 300:
        return "parcel"
    if km < 900:
        return "road" if rng.random() < 0.8 else "parcel"
    return rng.choices(("road", "rail", "air"), (0.45, 0.4, 0.15))[0]


def build_lanes(sites: Sequence[Site], carriers: Sequence[Carrier], count: int, rng: random.Random) -> list[Lane]:
    """Draw `count` lanes, favouring short intra-region ones, each with its own bias and volume."""
    weighted = []
    for a in sites:
        for b in sites:
            if a is b:
                continue
            km = haversine_km(a, b)
            w = 1.0 / (1.0 + km / 600.0) if a.region == b.region else 0.15 if a.port and b.port else 0.03
            weighted.append((rng.random() ** (1.0 / w), a, b, km))
    weighted.sort(key=lambda x: x[0], reverse=True)
    lanes = []
    for _, a, b, km in weighted[:count]:
        mode = lane_mode(a, b, km, rng)
        region = a.region if a.region == b.region else "GLOBAL"
        pool = [c for c in carriers if c.mode == mode and region in c.regions]
        if not pool:
            continue
        chosen = tuple(rng.sample(pool, min(len(pool), rng.choice((1, 2, 2, 3)))))
        m = _MODES[mode]
        haul = m.fixed + km * _ROUTE[mode] / m.kmh
        segments = tuple(int(h * 3600) for h in (m.pickup, m.origin, haul, m.dest, m.last))
        bias = rng.lognormvariate(0, 0.06) * (1.2 if rng.random() < 0.12 else 1.0)
        volume = min(rng.paretovariate(1.4), 8.0) * _SHARE[mode]
        lanes.append(Lane(a, b, mode, km, chosen, segments, bias, volume))
    if not lanes:
        raise ConfigError("the simulator found no lane with a carrier for its sites")
    return lanes


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
        self.day0 = (utc - datetime(utc.year, 1, 1, tzinfo=timezone.utc)).total_seconds() / 86400
        self.weekday0 = utc.weekday() + (utc.hour * 3600 + utc.minute * 60 + utc.second) / 86400
        self.tz = {s.gln: timezone(timedelta(hours=s.utc_offset)) for s in fleet.sites}
        self.lane_cum = _cumulative([lane.volume for lane in fleet.lanes])
        self.arrival_rate = 1.0 / (fleet.tick.total_seconds() * 6.0)
        self.hour = -1
        self.everything: tuple[list[Sku], list[float]] = ([], [])
        self.by_setpoint: dict[float | None, tuple[list[Sku], list[float]]] = {}
        self.cases: dict[str, float] = {}
        self.shipments = 0
        self.emitted = 0

    def run(self) -> Iterator[dict[str, Any]]:
        heap: list[tuple[int, int, _Shipment | None]] = [(0, 0, None)]
        seq = 1
        while True:
            t, _, ship = heapq.heappop(heap)
            if ship is None:
                ship = self.new_shipment(t)
                gap = self.rng.expovariate(self.arrival_rate * _B2B[self.weekday(t)])
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
        items, setpoint = self.items(t0)
        m = _MODES[lane.mode]
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
                    reasons = _EXCEPTIONS[lane.mode] if i == 2 else ("documentation_missing", "customs_hold")
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

    def items(self, t: int) -> tuple[list[dict[str, Any]], float | None]:
        """What the shipment carries: SKUs drawn by their demand at `t`, one temperature class."""
        if t // 3600 != self.hour:
            self.hour = t // 3600
            self.refresh_mix(t)
        rng = self.rng
        pool, cum = self.everything
        first = rng.choices(pool, cum_weights=cum)[0]
        lines = [first]
        pool, cum = self.by_setpoint[first.setpoint_c]
        for p in (0.45, 0.2, 0.08):
            if rng.random() < p:
                extra = rng.choices(pool, cum_weights=cum)[0]
                if extra not in lines:
                    lines.append(extra)
        items = []
        for sku in lines:
            mean = self.cases[sku.sku]
            cases = max(1, round(rng.gauss(mean, 0.3 * mean)))
            items.append({"sku": sku.sku, "quantity": cases * sku.case_pack})
        return items, first.setpoint_c

    def refresh_mix(self, t: int) -> None:
        day = self.day0 + t / 86400
        wd = self.weekday(t)
        weights: dict[str, float] = {}
        for sku in self.fleet.skus:
            season = 1.0 + sku.amplitude * math.cos(2 * math.pi * (day - sku.peak_day) / 365.25)
            self.cases[sku.sku] = sku.cases * season
            weights[sku.sku] = sku.weight * season * sku.weekly[wd]
        skus = self.fleet.skus
        self.everything = (list(skus), _cumulative([weights[s.sku] for s in skus]))
        for setpoint in {s.setpoint_c for s in skus}:
            same = [s for s in skus if s.setpoint_c == setpoint]
            self.by_setpoint[setpoint] = (same, _cumulative([weights[s.sku] for s in same]))


def _cumulative(weights: Sequence[float]) -> list[float]:
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out
