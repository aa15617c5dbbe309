"""The plain ShipmentEvent: a well-formed event object built without pydantic's validators.

`plain_event(obj)` returns exactly the ShipmentEvent `ShipmentEvent.model_validate(obj)`
returns (the same values, types, time zones and fields set, nested models
included) when every field has its plain form, and None for anything else, which
then goes to pydantic: refusals and their messages stay pydantic's alone. A
differential test holds the two to each other on valid and hostile objects.

Why: on the worker's hot path pydantic's validation was the largest stage; the
checks a well-formed event needs are a handful of type and length tests.
Parsed times are kept in a small bounded cache: many events share a second or
a promised delivery time, and datetimes are immutable.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic_core import TzInfo

from pipeline.schema import EventType, Item, Location, Mode, ShipmentEvent

# What the schema's RFC 3339 check and pydantic's parser both accept, narrowed to the form
# whose parse by `datetime.fromisoformat` is the same instant, fraction and offset.
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
                   r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])")
_TIMES_KEPT = 4096
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


def _built(cls: type[Any], values: dict[str, Any], fields_set: set[str]) -> Any:
    """A model instance holding checked values, in the four slots pydantic's validation fills."""
    model = _new(cls)
    _set(model, "__dict__", values)
    _set(model, "__pydantic_fields_set__", fields_set)
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model


def _time(value: Any) -> datetime | None:
    """`YYYY-MM-DDThh:mm:ss[.ffffff](Z|±hh:mm)` as pydantic parses it (a TzInfo offset), else None."""
    if type(value) is not str:
        return None
    parsed = _times.get(value)
    if parsed is not None:
        return parsed
    if not _TIME.fullmatch(value):
        return None
    try:
        local = datetime.fromisoformat(value)
    except ValueError:  # February 30th and the like: pydantic says why
        return None
    suffix = "Z" if value[-1] == "Z" else value[-6:]
    zone = _zones.get(suffix)
    if zone is None:
        zone = _zones[suffix] = TzInfo(int(local.utcoffset().total_seconds()))  # type: ignore[union-attr]
    parsed = local.replace(tzinfo=zone)
    if len(_times) >= _TIMES_KEPT:
        _times.clear()
    _times[value] = parsed
    return parsed


_REFUSED = object()


def _coordinate(value: Any, bound: float) -> Any:
    """A latitude or longitude as pydantic keeps it (an int becomes a float); `_REFUSED` outside ±bound."""
    if value is None:
        return None
    if type(value) is int:
        value = float(value)
    elif type(value) is not float:
        return _REFUSED
    return value if -bound <= value <= bound else _REFUSED


def _location(value: Any) -> Location | None:
    if type(value) is not dict or not value.keys() <= _LOCATION_FIELDS:
        return None
    site, lat, lon = value.get("site_id"), value.get("lat"), value.get("lon")
    if site is not None and not (type(site) is str and 0 < len(site) <= 256):
        return None
    lat, lon = _coordinate(lat, 90.0), _coordinate(lon, 180.0)
    if lat is _REFUSED or lon is _REFUSED:
        return None
    return _built(Location, {"site_id": site, "lat": lat, "lon": lon}, set(value))  # type: ignore[no-any-return]


def _items(value: Any) -> list[Item] | None:
    if type(value) is not list:
        return None
    items = []
    for item in value:
        if type(item) is not dict or item.keys() != _ITEM_FIELDS:
            return None
        sku, quantity = item["sku"], item["quantity"]
        if not (type(sku) is str and 0 < len(sku) <= 256) or type(quantity) is not int or quantity <= 0:
            return None
        items.append(_built(Item, {"sku": sku, "quantity": quantity}, {"sku", "quantity"}))
    return items


def _attributes(value: Any) -> dict[str, Any] | None:
    if type(value) is not dict:
        return None
    for key in value:
        if type(key) is not str:
            return None
    return dict(value)


def plain_event(obj: dict[str, Any]) -> ShipmentEvent | None:  # noqa: C901 - one check per field
    """The ShipmentEvent pydantic would build from a plain, well-formed object; None for anything else.

    >>> plain_event({"event_id": "e1", "shipment_id": "s1", "event_type": "created",
    ...     "event_time": "2026-01-01T00:00:00Z", "origin": "A", "destination": "B",
    ...     "carrier": "C", "mode": "road"}).event_time
    datetime.datetime(2026, 1, 1, 0, 0, tzinfo=TzInfo(0))
    >>> plain_event({"event_id": ""}) is None
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
    event_type = _EVENT_TYPES.get(event_type) if type(event_type) is str else None
    mode = _MODES.get(mode) if type(mode) is str else None
    event_time = _time(obj["event_time"])
    if event_type is None or mode is None or event_time is None:
        return None
    location, planned, items, attributes = (
        obj.get("location"), obj.get("planned_delivery"), obj.get("items"), obj.get("attributes"))
    if location is not None and (location := _location(location)) is None:
        return None
    if planned is not None and (planned := _time(planned)) is None:
        return None
    if items is not None and (items := _items(items)) is None:
        return None
    if attributes is not None and (attributes := _attributes(attributes)) is None:
        return None
    version = obj.get("schema_version", 1)
    if type(version) is not int or version != 1:
        return None
    return _built(ShipmentEvent, {  # type: ignore[no-any-return]
        "event_id": event_id, "shipment_id": shipment, "event_type": event_type, "event_time": event_time,
        "origin": origin, "destination": destination, "carrier": carrier, "mode": mode, "location": location,
        "planned_delivery": planned, "items": items, "attributes": attributes, "schema_version": 1,
    }, set(keys))
