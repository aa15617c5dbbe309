"""ShipmentEvent v1: what is accepted, every rejection the schema promises, and the published JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from factories import as_bytes, make_event, make_events

from pipeline.errors import InvalidEvent
from pipeline.schema import ShipmentEvent, json_schema_text, parse_event, validate_object

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schemas" / "shipment-event.v1.json"

FULL_EVENT = make_event(
    event_id="01J9ZK3Q8V6N2X4M7R5T0W1Y2B",
    shipment_id="shp-42",
    event_type="departed",
    event_time="2026-11-25T10:00:00.250+01:00",
    origin="4012345000009",
    destination="NL-RTM",
    carrier="Nordfracht",
    mode="sea",
    location={"site_id": "DE-HAM-T3", "lat": 53.5, "lon": 9.93},
    planned_delivery="2026-11-30T17:00:00Z",
    items=[{"sku": "SKU-1", "quantity": 12}, {"sku": "SKU-2", "quantity": 1}],
    attributes={"temperature_c": 4.5, "seal": "S-77", "nested": {"ok": [1, 2]}},
    schema_version=1,
)


def rejection(obj: Any) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as info:
        validate_object(obj)
    return info.value


def fields_of(exc: InvalidEvent) -> set[str]:
    return {e["field"] for e in exc.errors}


# ---- accepted ------------------------------------------------------------------------


def test_minimal_event_is_valid() -> None:
    event = validate_object(make_event())
    assert event.event_id == "evt-0001"
    assert event.schema_version == 1
    assert event.location is None and event.items is None and event.attributes is None


def test_full_event_is_valid_and_keeps_every_field() -> None:
    event, obj = parse_event(as_bytes(FULL_EVENT))
    assert obj == FULL_EVENT  # the producer's object, not a re-serialisation
    assert event.mode.value == "sea"
    assert event.location is not None and event.location.lat == 53.5
    assert [(i.sku, i.quantity) for i in event.items or []] == [("SKU-1", 12), ("SKU-2", 1)]
    assert event.event_time.utcoffset() is not None
    assert event.event_time.isoformat() == "2026-11-25T10:00:00.250000+01:00"


def test_factory_events_are_valid_and_distinct() -> None:
    events = make_events(200, seed=7)
    assert len({e["event_id"] for e in events}) == 200
    for e in events:
        validate_object(e)
    assert make_events(200, seed=7) == events
    assert make_events(50, seed=7) == events[:50]
    assert make_events(200, seed=8) != events


@pytest.mark.parametrize("event_type", ["created", "picked_up", "departed", "arrived",
                                        "out_for_delivery", "delivered", "exception", "cancelled"])
def test_every_event_type_is_accepted(event_type: str) -> None:
    assert validate_object(make_event(event_type=event_type)).event_type.value == event_type


@pytest.mark.parametrize("mode", ["road", "rail", "sea", "air", "parcel"])
def test_every_mode_is_accepted(mode: str) -> None:
    assert validate_object(make_event(mode=mode)).mode.value == mode


@pytest.mark.parametrize("when", [
    "2026-01-01T00:00:00Z",
    "2026-01-01T00:00:00.123456Z",
    "2026-01-01T00:00:00-05:30",
    "2026-01-01T00:00:00+14:00",
])
def test_rfc3339_times_with_offset_are_accepted(when: str) -> None:
    assert validate_object(make_event(event_time=when, planned_delivery=when)).event_time.tzinfo is not None


def test_event_id_of_128_chars_is_accepted() -> None:
    assert len(validate_object(make_event(event_id="x" * 128)).event_id) == 128


# ---- rejected, each naming its field -------------------------------------------------


@pytest.mark.parametrize(("overrides", "field"), [
    ({"event_type": "teleported"}, "event_type"),
    ({"event_type": "Created"}, "event_type"),
    ({"mode": "truck"}, "mode"),
    ({"event_time": "2026-01-01T00:00:00"}, "event_time"),
    ({"event_time": "2026-01-01"}, "event_time"),
    ({"event_time": "2026-01-01T00:00:00+0100"}, "event_time"),
    ({"event_time": 1767225600}, "event_time"),
    ({"event_time": 1767225600.5}, "event_time"),
    ({"planned_delivery": "2026-01-01T00:00:00"}, "planned_delivery"),
    ({"planned_delivery": 1767225600}, "planned_delivery"),
    ({"event_id": ""}, "event_id"),
    ({"event_id": "x" * 129}, "event_id"),
    ({"event_id": 17}, "event_id"),
    ({"items": [{"sku": "A", "quantity": 0}]}, "items.0.quantity"),
    ({"items": [{"sku": "A", "quantity": 1}, {"sku": "B", "quantity": -3}]}, "items.1.quantity"),
    ({"items": [{"sku": "A", "quantity": 2.5}]}, "items.0.quantity"),
    ({"items": [{"sku": "A", "quantity": 2.0}]}, "items.0.quantity"),
    ({"items": [{"sku": "A", "quantity": "2"}]}, "items.0.quantity"),
    ({"items": [{"sku": "A", "quantity": True}]}, "items.0.quantity"),
    ({"items": [{"sku": "A", "quantity": 1, "price": 3}]}, "items.0.price"),
    ({"schema_version": 2}, "schema_version"),
    ({"schema_version": "1"}, "schema_version"),
    ({"priority": "high"}, "priority"),
    ({"location": {"lat": 91}}, "location.lat"),
    ({"location": {"lon": -181}}, "location.lon"),
    ({"location": {"site_id": "X", "altitude": 3}}, "location.altitude"),
    ({"shipment_id": ""}, "shipment_id"),
])
def test_rejection_names_the_field(overrides: dict[str, Any], field: str) -> None:
    exc = rejection(make_event(**overrides))
    assert field in fields_of(exc), exc.errors
    assert field in exc.reason
    assert all(e["message"] for e in exc.errors)


@pytest.mark.parametrize("missing", ["event_id", "shipment_id", "event_type", "event_time",
                                     "origin", "destination", "carrier", "mode"])
def test_missing_required_field_is_named(missing: str) -> None:
    obj = make_event()
    del obj[missing]
    assert fields_of(rejection(obj)) == {missing}


def test_every_bad_field_is_reported_at_once() -> None:
    exc = rejection(make_event(event_type="x", mode="y", event_id=""))
    assert {"event_type", "mode", "event_id"} <= fields_of(exc)


@pytest.mark.parametrize("value", [[make_event()], "event", 3, None, True])
def test_non_object_json_is_rejected(value: Any) -> None:
    with pytest.raises(InvalidEvent, match="not a JSON object"):
        parse_event(json.dumps(value).encode())


def test_non_utf8_bytes_are_rejected() -> None:
    raw = as_bytes(make_event(carrier="Nordfracht")).replace(b"Nordfracht", b"Nordfr\xe4cht")
    with pytest.raises(InvalidEvent, match="not UTF-8"):
        parse_event(raw)


@pytest.mark.parametrize("raw", [b"", b"{", b'{"event_id": "e1",}', b"{'event_id': 'e1'}", b"\x00"])
def test_bad_json_is_rejected(raw: bytes) -> None:
    with pytest.raises(InvalidEvent, match="not JSON"):
        parse_event(raw)


def test_str_input_is_parsed_like_bytes() -> None:
    event, obj = parse_event(json.dumps(FULL_EVENT))
    assert obj == FULL_EVENT and event.event_id == FULL_EVENT["event_id"]


# Lax coercions the published JSON Schema does not allow: the pipeline accepts
# (and hashes) an event that a producer validating against schemas/ is told is invalid.
@pytest.mark.parametrize("version", [True, 1.0])
def test_schema_version_must_be_the_integer_one(version: Any) -> None:
    assert "schema_version" in fields_of(rejection(make_event(schema_version=version)))


@pytest.mark.parametrize("lat", ["53.5", True])
def test_location_coordinates_must_be_numbers(lat: Any) -> None:
    assert "location.lat" in fields_of(rejection(make_event(location={"lat": lat})))


# ---- the published JSON Schema -------------------------------------------------------


def test_published_schema_matches_the_model() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == json_schema_text(), (
        "schemas/shipment-event.v1.json drifted from pipeline.schema: run `provenance schema --write`"
    )


def test_published_schema_names_every_model_field() -> None:
    published = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert set(published["properties"]) == set(ShipmentEvent.model_fields)
    assert published["additionalProperties"] is False
    assert set(published["required"]) == {
        "event_id", "shipment_id", "event_type", "event_time", "origin", "destination", "carrier", "mode",
    }


def test_published_schema_agrees_with_the_model_on_events() -> None:
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema is not installed in .venv: the published schema is not exercised"
    )
    published = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(published, format_checker=jsonschema.FormatChecker())
    for event in make_events(100, seed=3):
        assert not list(validator.iter_errors(event)), event
    for bad in (
        make_event(event_type="teleported"),
        make_event(mode="truck"),
        make_event(event_id=""),
        make_event(event_id="x" * 129),
        make_event(items=[{"sku": "A", "quantity": 0}]),
        make_event(items=[{"sku": "A", "quantity": 1.5}]),
        make_event(schema_version=2),
        make_event(priority="high"),
    ):
        assert list(validator.iter_errors(bad)), bad
