"""The world the fleet simulator runs in: sites, SKUs, carriers, transport modes and the lanes between sites.

Reference data with the shape of the real thing: site codes that are valid
GLNs, SKUs with weekly and yearly demand seasons, carriers that are reliably
early or late, per-mode transit times and exception reasons. Lanes are drawn
from these tables with a seeded random stream, so the same seed always yields
the same network.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

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

# Demand by weekday, Monday first: business buyers order in the week, shoppers on Friday.
B2B_WEEKLY = (1.3, 1.2, 1.15, 1.15, 1.1, 0.6, 0.5)
RETAIL_WEEKLY = (1.0, 0.9, 0.95, 1.1, 1.35, 1.0, 0.7)
SKUS: tuple[Sku, ...] = (
    Sku("ELEC-0101", 3.0, 4, 6, 330, 0.55, RETAIL_WEEKLY, None),
    Sku("ELEC-0217", 2.0, 10, 4, 335, 0.45, RETAIL_WEEKLY, None),
    Sku("TOY-0042", 1.5, 12, 5, 325, 0.85, RETAIL_WEEKLY, None),
    Sku("APP-0310", 2.5, 20, 8, 80, 0.35, RETAIL_WEEKLY, None),
    Sku("APP-0388", 2.0, 20, 6, 260, 0.35, RETAIL_WEEKLY, None),
    Sku("HOME-0120", 2.0, 6, 5, 110, 0.6, B2B_WEEKLY, None),
    Sku("HOME-0155", 1.0, 2, 8, 120, 0.5, B2B_WEEKLY, None),
    Sku("FOOD-0007", 4.0, 24, 20, 350, 0.12, B2B_WEEKLY, None),
    Sku("FOOD-0019", 3.0, 12, 16, 200, 0.15, B2B_WEEKLY, None),
    Sku("CHIL-0003", 2.5, 12, 14, 190, 0.3, B2B_WEEKLY, 4.0),
    Sku("CHIL-0011", 1.5, 6, 10, 170, 0.25, B2B_WEEKLY, 4.0),
    Sku("FROZ-0005", 2.0, 8, 12, 200, 0.5, B2B_WEEKLY, -18.0),
    Sku("FROZ-0008", 1.0, 8, 9, 355, 0.3, B2B_WEEKLY, -18.0),
    Sku("PHAR-0001", 1.5, 10, 6, 20, 0.3, B2B_WEEKLY, 5.0),
    Sku("PHAR-0024", 1.0, 50, 3, 35, 0.4, B2B_WEEKLY, 5.0),
    Sku("AUTO-0600", 1.5, 1, 30, 100, 0.1, B2B_WEEKLY, None),
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


class Mode(NamedTuple):
    """How one transport mode moves a shipment: segment hours, spread, promise slack, exception rate."""

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
MODES = {
    "parcel": Mode(4, 6, 60, 0, 8, 4, 0.3, 1.4, 0.05),
    "road": Mode(6, 3, 55, 1, 4, 3, 0.25, 1.25, 0.05),
    "rail": Mode(12, 18, 30, 4, 12, 6, 0.3, 1.35, 0.07),
    "sea": Mode(24, 72, 28, 12, 60, 24, 0.22, 1.2, 0.1),
    "air": Mode(8, 14, 650, 3, 12, 8, 0.35, 1.3, 0.08),
}
# Relative volume per mode: road and parcel carry most shipments, air the fewest.
_SHARE = {"parcel": 1.5, "road": 1.0, "rail": 0.8, "sea": 0.7, "air": 0.25}
_ROUTE = {"road": 1.3, "rail": 1.3, "sea": 1.6, "parcel": 1.3, "air": 1.05}

EXCEPTION_REASONS = {
    "parcel": ("sorting_delay", "damaged_goods", "weather_delay"),
    "road": ("vehicle_breakdown", "traffic_congestion", "weather_delay", "damaged_goods"),
    "rail": ("track_closure", "terminal_congestion", "weather_delay"),
    "sea": ("customs_hold", "port_congestion", "vessel_rollover", "weather_delay"),
    "air": ("customs_hold", "flight_cancelled", "offloaded"),
}


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
        m = MODES[mode]
        haul = m.fixed + km * _ROUTE[mode] / m.kmh
        segments = tuple(int(h * 3600) for h in (m.pickup, m.origin, haul, m.dest, m.last))
        bias = rng.lognormvariate(0, 0.06) * (1.2 if rng.random() < 0.12 else 1.0)
        volume = min(rng.paretovariate(1.4), 8.0) * _SHARE[mode]
        lanes.append(Lane(a, b, mode, km, chosen, segments, bias, volume))
    if not lanes:
        raise ConfigError("the simulator found no lane with a carrier for its sites")
    return lanes
