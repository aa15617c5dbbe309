"""Test factories: valid ShipmentEvent JSON objects, one at a time or many, deterministic.

`make_event(**overrides)` is the minimal valid event with fields replaced;
`make_events(n, seed=...)` varies every field the schema allows, so tests see
optional fields, offsets other than UTC, fractional seconds and non-ASCII text.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from typing import Any

EVENT_TYPES = (
    "created", "picked_up", "departed", "arrived", "out_for_delivery", "delivered", "exception", "cancelled",
)
MODES = ("road", "rail", "sea", "air", "parcel")
SITES = ("DE-HAM", "NL-RTM", "FR-LEH", "PL-GDN", "ES-VLC", "CN-SHA", "US-LAX", "SE-GOT")
CARRIERS = ("Nordfracht", "Rail Cargo", "Évora Logística", "北方物流", "BlueSea Lines")

_BASE_TIME = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)


def make_event(**overrides: Any) -> dict[str, Any]:
    """A minimal valid ShipmentEvent object with `overrides` applied."""
    event: dict[str, Any] = {
        "event_id": "evt-0001",
        "shipment_id": "shp-0001",
        "event_type": "created",
        "event_time": "2026-03-01T08:00:00Z",
        "origin": "DE-HAM",
        "destination": "NL-RTM",
        "carrier": "Nordfracht",
        "mode": "road",
    }
    event.update(overrides)
    return event


def _rfc3339(t: datetime, rng: random.Random) -> str:
    """`t` written with a random offset and sometimes fractional seconds."""
    offset = timedelta(minutes=rng.choice((0, 0, 60, -300, 330, 540)))
    local = t.astimezone(timezone(offset))
    if rng.random() < 0.3:
        local = local.replace(microsecond=rng.randrange(1, 1_000_000))
    text = local.isoformat()
    return text.replace("+00:00", "Z") if rng.random() < 0.5 else text


def make_events(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` valid, varied events; the same `n` and `seed` always give the same list."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        shipment = rng.randrange(i // 3 + 1)  # depends on i only: make_events(k) is a prefix of make_events(n)
        t = _BASE_TIME + timedelta(seconds=rng.randrange(0, 30 * 86400))
        event_type = EVENT_TYPES[i % len(EVENT_TYPES)] if i < len(EVENT_TYPES) else rng.choice(EVENT_TYPES)
        origin, destination = rng.sample(SITES, 2)
        event = make_event(
            event_id=f"evt-{seed}-{i:06d}",
            shipment_id=f"shp-{seed}-{shipment:05d}",
            event_type=event_type,
            event_time=_rfc3339(t, rng),
            origin=origin,
            destination=destination,
            carrier=rng.choice(CARRIERS),
            mode=MODES[i % len(MODES)],
        )
        if rng.random() < 0.5:
            event["location"] = {
                "site_id": rng.choice(SITES),
                "lat": round(rng.uniform(-90, 90), rng.choice((0, 3, 6))),
                "lon": round(rng.uniform(-180, 180), 4),
            }
        if rng.random() < 0.5:
            event["planned_delivery"] = _rfc3339(t + timedelta(hours=rng.randrange(1, 240)), rng)
        if event_type == "created" or rng.random() < 0.2:
            event["items"] = [
                {"sku": f"SKU-{rng.randrange(1000):04d}", "quantity": rng.randrange(1, 500)}
                for _ in range(rng.randrange(1, 4))
            ]
        if rng.random() < 0.4:
            event["attributes"] = {
                "temperature_c": round(rng.uniform(-25, 8), 1),
                "seal": f"S{rng.randrange(10**6)}",
                "note": rng.choice(("ok", "Zoll geprüft", "温度正常", "delayed\tat gate")),
                "pallets": rng.randrange(1, 40),
            }
        if rng.random() < 0.5:
            event["schema_version"] = 1
        events.append(event)
    return events


def as_bytes(event: dict[str, Any]) -> bytes:
    """An event as a producer would send it: compact UTF-8 JSON."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
