"""The plain ShipmentEvent: a well-formed event checked and built without pydantic's validators.

`plain_facts(obj)` says whether `ShipmentEvent.model_validate(obj)` takes the object
as it is, every field in its plain form, and returns what a ledger entry needs
of it (ids, type and the event time in UTC); None for anything else, which then
goes to pydantic: refusals and their messages stay pydantic's alone.
`plain_event(obj)` builds, for an object `plain_facts` vouches for, exactly the
ShipmentEvent pydantic returns (the same values, types, time zones and fields
set, nested models included). A differential test holds both to pydantic on
valid and hostile objects.

Why: on the worker's hot path pydantic's validation was the largest stage; the
checks a well-formed event needs are a handful of type and length tests, and
the worker never needs the model, only the facts. Times are checked and turned
to UTC an hour at a time: the date, hour and offset are parsed once per hour
and offset (a small bounded cache; per minute for offsets such as +05:30), the
minutes and seconds are a dictionary's.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from pydantic_core import TzInfo

from pipeline.schema import EventType, Item, Location, Mode, ShipmentEvent

# The times taken here are `YYYY-MM-DDThh:mm:ss[.ffffff](Z|±hh:mm)`, what the schema's RFC 3339
# check and pydantic's parser both accept, narrowed to the form `datetime.fromisoformat` parses
# to the same instant, fraction and offset; years 1 and 9999 are left to pydantic (the UTC range).
_HOUR = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}")
_MINUTE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}")
_ZONE = re.compile(r"Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9]")
_FRACTION = re.compile(r":[0-5][0-9]\.([0-9]{1,6})")
_SECONDS = _MINUTES = {f":{s:02d}": f":{s:02d}" for s in range(60)}
_KEPT = 4096
_hours: dict[str, str] = {}  # hour (or minute) + offset -> the same in UTC ("" for a refused one)
_times: dict[str, datetime] = {}
_zones: dict[str, TzInfo] = {"Z": TzInfo(0)}

_FIELDS = frozenset(ShipmentEvent.model_fields)
_REQUIRED = frozenset(name for name, f in ShipmentEvent.model_fields.items() if f.is_required())
_LOCATION_FIELDS = frozenset(Location.model_fields)
_ITEM_FIELDS = frozenset(Item.model_fields)
_EVENT_TYPES = {e.value: e for e in EventType}
_MODES = {m.value: m for m in Mode}

_new = object.__new__
_set = object.__setattr__


def _utc_hour(hour: str, zone: str) -> str:
    """`YYYY-MM-DDThh` (with `:mm` when the offset has minutes) at offset `zone` in UTC; "" when no valid time."""
    utc = ""
    minutes = len(hour) == 16
    if (_MINUTE if minutes else _HOUR).fullmatch(hour) and _ZONE.fullmatch(zone) and hour[:4] not in ("0001", "9999"):
        try:  # February 30th and the like: pydantic says why
            local = datetime.fromisoformat(f"{hour}:00{zone}" if minutes else f"{hour}:00:00{zone}")
        except ValueError:
            pass
        else:
            utc = local.astimezone(timezone.utc).isoformat()[:len(hour)]
    if len(_hours) >= _KEPT:
        _hours.clear()
    _hours[hour + zone] = utc
    return utc


def utc_time(value: Any) -> str | None:
    """A plain time (see above) as RFC 3339 in UTC, the way `datetime.isoformat` writes it; else None.

    >>> utc_time("2026-01-01T00:30:05.25+01:00"), utc_time("2026-02-30T00:00:00Z")
    ('2025-12-31T23:30:05.250000Z', None)
    """
    if type(value) is not str or len(value) < 20:
        return None
    cut = len(value) - (1 if value[-1] == "Z" else 6)
    rest = value[16:cut]
    seconds = _SECONDS.get(rest)
    if seconds is None:
        fraction = _FRACTION.fullmatch(rest)
        if fraction is None:
            return None
        digits = fraction[1].ljust(6, "0")  # microseconds; isoformat writes none when they are 0
        seconds = rest[:3] if digits == "000000" else f"{rest[:3]}.{digits}"
    zone = value[cut:]
    if zone == "Z" or zone.endswith(":00"):  # a whole-hour offset leaves the minute as it is
        minute = _MINUTES.get(value[13:16])
        if minute is None:
            return None
        hour = value[:13]
    else:
        minute, hour = "", value[:16]
    utc = _hours.get(hour + zone)
    if utc is None:
        utc = _utc_hour(hour, zone)
    return f"{utc}{minute}{seconds}Z" if utc else None


def _coordinate(value: Any, bound: float) -> bool:
    return value is None or (type(value) in (float, int) and -bound <= value <= bound)


def _location(value: Any) -> bool:
    if type(value) is not dict or not value.keys() <= _LOCATION_FIELDS:
        return False
    site = value.get("site_id")
    if site is not None and not (type(site) is str and 0 < len(site) <= 256):
        return False
    return _coordinate(value.get("lat"), 90.0) and _coordinate(value.get("lon"), 180.0)


def _items(value: Any) -> bool:
    if type(value) is not list:
        return False
    for item in value:
        if type(item) is not dict or item.keys() != _ITEM_FIELDS:
            return False
        sku, quantity = item["sku"], item["quantity"]
        if not (type(sku) is str and 0 < len(sku) <= 256) or type(quantity) is not int or quantity <= 0:
            return False
    return True


def _attributes(value: Any) -> bool:
    if type(value) is not dict:
        return False
    for key in value:
        if type(key) is not str:
            return False
    return True


def plain_facts(obj: dict[str, Any]) -> tuple[str, str, str, str] | None:  # noqa: C901 - one check per field
    """(event_id, shipment_id, event_type, event time in UTC) of an object pydantic takes as it is; else None.

    >>> plain_facts({"event_id": "e1", "shipment_id": "s1", "event_type": "created",
    ...     "event_time": "2026-01-01T00:30:00+01:00", "origin": "A", "destination": "B",
    ...     "carrier": "C", "mode": "road"})
    ('e1', 's1', 'created', '2025-12-31T23:30:00Z')
    >>> plain_facts({"event_id": ""}) is None
    True
    """
    keys = obj.keys()
    if not keys <= _FIELDS or not _REQUIRED <= keys:
        return None
    event_id, shipment, origin, destination, carrier = (
        obj["event_id"], obj["shipment_id"], obj["origin"], obj["destination"], obj["carrier"])
    if not (type(event_id) is str and 0 < len(event_id) <= 128 and type(shipment) is str
            and 0 < len(shipment) <= 256 and type(origin) is str and 0 < len(origin) <= 256
            and type(destination) is str and 0 < len(destination) <= 256
            and type(carrier) is str and 0 < len(carrier) <= 256):
        return None
    event_type, mode = obj["event_type"], obj["mode"]
    if type(event_type) is not str or event_type not in _EVENT_TYPES or type(mode) is not str or mode not in _MODES:
        return None
    event_time = utc_time(obj["event_time"])
    if event_time is None:
        return None
    location, planned, items, attributes = (
        obj.get("location"), obj.get("planned_delivery"), obj.get("items"), obj.get("attributes"))
    if location is not None and not _location(location):
        return None
    if planned is not None and utc_time(planned) is None:
        return None
    if items is not None and not _items(items):
        return None
    if attributes is not None and not _attributes(attributes):
        return None
    version = obj.get("schema_version", 1)
    if type(version) is not int or version != 1:
        return None
    return event_id, shipment, event_type, event_time


def _built(cls: type[Any], values: dict[str, Any], fields_set: set[str]) -> Any:
    """A model instance holding checked values, in the four slots pydantic's validation fills."""
    model = _new(cls)
    _set(model, "__dict__", values)
    _set(model, "__pydantic_fields_set__", fields_set)
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model


def _time(value: str) -> datetime:
    """A time `utc_time` took, as pydantic parses it (a TzInfo offset)."""
    parsed = _times.get(value)
    if parsed is None:
        local = datetime.fromisoformat(value)
        suffix = "Z" if value[-1] == "Z" else value[-6:]
        zone = _zones.get(suffix)
        if zone is None:
            zone = _zones[suffix] = TzInfo(int(local.utcoffset().total_seconds()))  # type: ignore[union-attr]
        parsed = local.replace(tzinfo=zone)
        if len(_times) >= _KEPT:
            _times.clear()
        _times[value] = parsed
    return parsed


def _float(value: Any) -> float | None:
    """A coordinate as pydantic keeps it: an int becomes a float."""
    return float(value) if type(value) is int else value


def plain_event(obj: dict[str, Any]) -> ShipmentEvent | None:
    """The ShipmentEvent pydantic would build from a plain, well-formed object; None for anything else.

    >>> plain_event({"event_id": "e1", "shipment_id": "s1", "event_type": "created",
    ...     "event_time": "2026-01-01T00:00:00Z", "origin": "A", "destination": "B",
    ...     "carrier": "C", "mode": "road"}).event_time
    datetime.datetime(2026, 1, 1, 0, 0, tzinfo=TzInfo(0))
    >>> plain_event({"event_id": ""}) is None
    True
    """
    if plain_facts(obj) is None:
        return None
    location, planned, items = obj.get("location"), obj.get("planned_delivery"), obj.get("items")
    if location is not None:
        location = _built(Location, {"site_id": location.get("site_id"), "lat": _float(location.get("lat")),
                                     "lon": _float(location.get("lon"))}, set(location))
    if items is not None:
        items = [_built(Item, {"sku": item["sku"], "quantity": item["quantity"]}, {"sku", "quantity"})
                 for item in items]
    attributes = obj.get("attributes")
    return _built(ShipmentEvent, {  # type: ignore[no-any-return]
        "event_id": obj["event_id"], "shipment_id": obj["shipment_id"],
        "event_type": _EVENT_TYPES[obj["event_type"]], "event_time": _time(obj["event_time"]),
        "origin": obj["origin"], "destination": obj["destination"], "carrier": obj["carrier"],
        "mode": _MODES[obj["mode"]], "location": location,
        "planned_delivery": None if planned is None else _time(planned), "items": items,
        "attributes": None if attributes is None else dict(attributes), "schema_version": 1,
    }, set(obj))
