"""ShipmentEvent v1: the pydantic model that is the source of truth for the event schema.

`schemas/shipment-event.v1.json` is generated from this model
(`provenance schema --write`) for producers in other languages; a test fails
when the two drift.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from pipeline.errors import InvalidEvent

SCHEMA_ID = "https://provenance.dev/schemas/shipment-event.v1.json"

NonEmpty = Annotated[str, Field(min_length=1, max_length=256)]

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)


def _rfc3339(value: Any) -> Any:
    """Accept only RFC 3339 strings with an offset: no epoch numbers, no naive times."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 date-time with offset, e.g. 2026-11-25T10:00:00+01:00")
    if value[-1] not in "Zz" and (int(value[-5:-3]) > 23 or int(value[-2:]) > 59):
        raise ValueError(f"offset {value[-6:]} is out of range: offsets run from -23:59 to +23:59")
    return value


def _exact_int(value: Any) -> Any:
    """JSON `1`, not `true` or `1.0`: the published schema says integer."""
    if type(value) is not int:
        raise ValueError("must be the integer 1")
    return value


Timestamp = Annotated[
    AwareDatetime,
    BeforeValidator(_rfc3339),
    Field(json_schema_extra={"format": "date-time"}),
]


class EventType(str, Enum):
    created = "created"
    picked_up = "picked_up"
    departed = "departed"
    arrived = "arrived"
    out_for_delivery = "out_for_delivery"
    delivered = "delivered"
    exception = "exception"
    cancelled = "cancelled"


class Mode(str, Enum):
    road = "road"
    rail = "rail"
    sea = "sea"
    air = "air"
    parcel = "parcel"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class Location(_Strict):
    """Where the event happened: a site code and/or coordinates."""

    site_id: NonEmpty | None = None
    lat: Annotated[float, Field(ge=-90, le=90, strict=True)] | None = None
    lon: Annotated[float, Field(ge=-180, le=180, strict=True)] | None = None


class Item(_Strict):
    """One line of a shipment's contents; demand is forecast from these."""

    sku: NonEmpty
    quantity: Annotated[int, Field(gt=0, strict=True)]


class ShipmentEvent(_Strict):
    """One thing that happened to one shipment, as a producer reports it."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="ShipmentEvent",
        json_schema_extra={"$id": SCHEMA_ID, "$schema": "https://json-schema.org/draft/2020-12/schema"},
    )

    event_id: Annotated[str, Field(min_length=1, max_length=128)]
    shipment_id: NonEmpty
    event_type: EventType
    event_time: Timestamp = Field(description="when it happened (RFC 3339 with offset), not when it was sent")
    origin: NonEmpty
    destination: NonEmpty
    carrier: NonEmpty
    mode: Mode
    location: Location | None = None
    planned_delivery: Timestamp | None = Field(
        default=None, description="the promised delivery time; the delay model measures against it"
    )
    items: list[Item] | None = None
    attributes: dict[str, Any] | None = None
    schema_version: Annotated[Literal[1], BeforeValidator(_exact_int)] = 1


def parse_event(raw: bytes | str) -> tuple[ShipmentEvent, dict[str, Any]]:
    """Parse and validate one event; return the model and the producer's JSON object.

    The JSON object (not the model's re-serialisation) is what gets canonicalised
    and hashed, so an auditor can recompute the leaf from what was sent.

    >>> ev, obj = parse_event(b'{"event_id":"e1","shipment_id":"s1","event_type":"created",'
    ...     b'"event_time":"2026-01-01T00:00:00Z","origin":"A","destination":"B",'
    ...     b'"carrier":"C","mode":"road"}')
    >>> ev.event_type.value, obj["event_id"]
    ('created', 'e1')
    """
    try:
        obj = json.loads(decode_text(raw))
    except json.JSONDecodeError as exc:
        raise InvalidEvent(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    return validate_object(obj), obj


def decode_text(raw: bytes | str) -> str:
    """Record bytes as text; anything but UTF-8 is refused with the position."""
    if isinstance(raw, str):
        return raw
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"not UTF-8: {exc}") from None


def validate_object(obj: Any) -> ShipmentEvent:
    """Validate a parsed JSON value as a ShipmentEvent, with field-level reasons on failure."""
    if not isinstance(obj, dict):
        raise InvalidEvent(f"not a JSON object: got {type(obj).__name__}")
    try:
        return ShipmentEvent.model_validate(obj)
    except ValidationError as exc:
        errors = field_errors(exc)
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        raise InvalidEvent(f"invalid ShipmentEvent: {summary}", errors) from None


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Turn pydantic's errors into `[{field, message}]` a person can act on."""
    out = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or "(event)"
        out.append({"field": field, "message": err["msg"], "type": err["type"]})
    return out


def json_schema() -> dict[str, Any]:
    """The JSON Schema published in `schemas/` for producers in other languages."""
    return ShipmentEvent.model_json_schema()


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


def event_time_of(event: ShipmentEvent) -> datetime:
    return event.event_time
