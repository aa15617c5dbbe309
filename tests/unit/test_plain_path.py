"""The short way for common records against the strict way: the same verdicts, events and leaf bytes.

`accept` takes `plain_accept` (orjson parse and JCS bytes, `plain_event`) when it
can vouch for a record and `strict_accept` (the strict decoder, pydantic, the
RFC 8785 reference) otherwise. Each test here is a differential one: whatever
the short way returns must be exactly what the strict way returns, down to the
type of every number, the time zone object of every time and the fields set of
every model; and whatever the strict way refuses, the short way must pass on.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest
from factories import as_bytes, make_event, make_events
from hostile import HOSTILE
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_fuzz_records import ANY_EVENT, JSON_VALUES, MUTATIONS, _valid, dumps, event_objects

from pydantic import BaseModel

from pipeline.core import plain_record
from pipeline.core.canonical import canonical_bytes
from pipeline.core.ledger import LeafFacts, accept, accept_shipment, plain_accept, plain_leaf, strict_accept, utc_text
from pipeline.core.simulator import Fleet
from pipeline.core.strict_json import LIMITS, Limits, decode
from pipeline.errors import InvalidEvent
from pipeline.core.plain_event import plain_event, plain_facts, utc_time
from pipeline.schema import ShipmentEvent

DIFF = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.data_too_large])

# Number literals where parsers and JCS part ways: exponents, integral and negative-zero floats,
# integers near and beyond 2^53 and 2^64, the smallest and largest doubles, long fractions.
NUMBER_TEXTS = [
    "5.0", "-5.0", "0.0", "-0.0", "-0", "0", "1e16", "1E2", "1.0e2", "1e-7", "2.5e-5", "0.00001", "0.0001",
    "0.001", "0.00123", "10.0001", "0.1", "123456789012345.6", "1000000000000000.0", "999999999999999",
    "9007199254740991", "9007199254740993", "18446744073709551615", "18446744073709551616",
    "-9223372036854775809", "123456789012345678", "12345678901234567890123", "1.7976931348623157e308",
    "5e-324", "1e400", "-1e400", "4.50", "100", "-1", "1.000000000000000000001", "51.22", "4.4", "-18.0",
]


def model_state(model: Any) -> Any:
    """Everything that tells two pydantic models apart: repr (types, zones, -0.0) and fields sets."""
    if isinstance(model, list):
        return [model_state(m) for m in model]
    if not isinstance(model, BaseModel):  # its repr says it all
        return repr(model)
    return (type(model).__name__, sorted(model.model_fields_set), model.__pydantic_extra__,
            model.__pydantic_private__, {k: model_state(v) for k, v in model.__dict__.items()},
            [type(v.tzinfo).__name__ for v in model.__dict__.values() if isinstance(v, datetime)])


def strict_verdict(raw: Any, limits: Limits = LIMITS) -> tuple[str, Any]:
    try:
        event, leaf = strict_accept(raw, limits)
    except InvalidEvent as exc:
        return "refused", (exc.reason, exc.errors)
    return "accepted", (model_state(event), leaf)


def entry_facts(event: ShipmentEvent) -> LeafFacts:
    """What a log records of a strict way's event."""
    return LeafFacts(event.event_id, event.shipment_id, event.event_type.value, utc_text(event))


def check(raw: Any, limits: Limits = LIMITS) -> str:
    """Hold the short way to the strict way on one record; returns which way `accept` took."""
    reference = strict_verdict(raw, limits)
    plain = plain_accept(raw, limits)
    if plain is not None:
        assert reference == ("accepted", (model_state(plain[0]), plain[1])), raw[:300]
        read = plain_record.read(raw, limits)
        parsed = decode(raw, limits)
        assert read is not None and repr(read[0]) == repr(parsed.value)
    short = plain_leaf(raw, limits)
    assert (short is None) == (plain is None), raw[:300]  # both short ways take the very same records
    if short is not None:
        event, leaf = strict_accept(raw, limits)
        assert short == (entry_facts(event), leaf), raw[:300]
        assert accept_shipment(raw, limits) == [short]
    try:
        event, leaf = accept(raw, limits)
    except InvalidEvent as exc:
        assert reference == ("refused", (exc.reason, exc.errors))
    else:
        assert reference == ("accepted", (model_state(event), leaf))
    return "plain" if plain is not None else "strict"


def test_common_records_take_the_short_way() -> None:
    """Not vacuous: simulated records and factory events (no escapes) all go the short way."""
    fleet = Fleet(3, datetime(2026, 1, 5, tzinfo=timezone.utc))
    records = [r.value for r, _ in zip(fleet.records(), range(2_000))]
    records += [as_bytes(e) for e in make_events(500, seed=3)]
    ways = [check(raw) for raw in records]
    escaped = sum(b"\\" in raw for raw in records)
    assert ways.count("plain") == len(records) - escaped, (ways.count("plain"), len(records), escaped)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_records_are_refused_by_the_strict_way_alone(name: str) -> None:
    raw, _ = HOSTILE[name]
    assert plain_accept(raw) is None
    assert check(raw) == "strict"


@pytest.mark.parametrize("text", NUMBER_TEXTS)
@pytest.mark.parametrize("where", ["attributes", "lat", "quantity"])
def test_number_forms(text: str, where: str) -> None:
    event = make_event(items=[{"sku": "s", "quantity": 1}], location={"lat": 1.5},
                       attributes={"n": 0, "list": [0, 2]})
    raw = as_bytes(event)
    marker = {"attributes": b'"n":0', "lat": b'"lat":1.5', "quantity": b'"quantity":1'}[where]
    raw = raw.replace(marker, marker.split(b":")[0] + b":" + text.encode())
    check(raw)
    check(as_bytes(make_event(attributes={"k": [1, 2.5, "x"]})).replace(b"2.5", text.encode()))


@given(st.lists(st.sampled_from(NUMBER_TEXTS) | st.floats(allow_nan=False, allow_infinity=False).map(repr)
                | st.integers(-(2**70), 2**70).map(str)
                | st.tuples(st.integers(0, 10**20), st.integers(0, 10**12), st.integers(-330, 330))
                .map(lambda t: f"{t[0]}.{t[1]}e{t[2]}"), min_size=1, max_size=6))
@settings(DIFF, max_examples=600)
def test_numbers_anywhere(texts: list[str]) -> None:
    raw = as_bytes(make_event(attributes={"a": "A"})).replace(b'"A"', ("[" + ",".join(texts) + "]").encode())
    check(raw)


@given(event_objects(), st.booleans())
@settings(DIFF, max_examples=700)
def test_hostile_fields(event: dict[str, Any], ascii_only: bool) -> None:
    raw = dumps(event, ascii_only)
    check(raw)
    check(json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"))
    key = json.dumps(next(iter(event))).encode("utf-8", "surrogatepass")
    for mutate in ANY_EVENT.values():
        check(mutate(raw, key))


@given(st.sampled_from(sorted(MUTATIONS)), st.integers(0, 10_000))
@settings(DIFF, max_examples=600)
def test_hostile_serialisations(name: str, n: int) -> None:
    check(MUTATIONS[name](as_bytes(_valid()), n))


@given(st.binary(max_size=200) | st.binary(max_size=64).map(lambda b: b'{"a":' + b + b"}"))
@settings(DIFF, max_examples=600)
@example(b'{"a":1,"a":1}')
@example(b'{"a":"x","a":"x"}')
@example(b'{"":{"":0,"":0}}')
@example("{\"a\":\"\U0001f600\"}".encode())
@example(b'{"a":"\x7f\xc2\x85"}')
def test_raw_bytes(raw: bytes) -> None:
    check(raw)


@given(JSON_VALUES)
@settings(DIFF, max_examples=600)
def test_any_json_value_reads_like_the_strict_decoder(value: Any) -> None:
    raw = json.dumps({"v": value}, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    read = plain_record.read(raw, LIMITS)
    if read is not None:
        parsed = decode(raw)
        assert repr(read[0]) == repr(parsed.value)
        assert read[1] == canonical_bytes(parsed.value, parsed.simple)


@pytest.mark.parametrize("limits", [Limits(max_depth=2), Limits(max_string=30), Limits(max_fields=3),
                                    Limits(max_array=2), Limits(max_bytes=100), Limits(max_items=1)])
def test_small_limits_are_the_strict_ways_to_enforce(limits: Limits) -> None:
    event = make_event(items=[{"sku": "s", "quantity": 1}] * 2, location={"lat": 1.0, "lon": 2.0},
                       attributes={"a": [1, 2, 3], "b": {"c": {"d": 1}}})
    assert check(as_bytes(event), limits) == "strict"
    assert check(as_bytes(make_event()), Limits()) == "plain"


def test_plain_event_knows_every_field_of_the_model() -> None:
    """A field added to ShipmentEvent must be taught to plain_event too, or this fails."""
    assert list(ShipmentEvent.model_fields) == [
        "event_id", "shipment_id", "event_type", "event_time", "origin", "destination", "carrier", "mode",
        "location", "planned_delivery", "items", "attributes", "schema_version"]
    full = make_event(location={"site_id": "X", "lat": 1, "lon": -2.5}, planned_delivery="2026-03-02T08:00:00+05:30",
                      items=[{"sku": "s", "quantity": 3}], attributes={"k": [1]}, schema_version=1)
    event = plain_event(full)
    assert event is not None
    assert model_state(event) == model_state(ShipmentEvent.model_validate(full))


@given(event_objects())
@settings(DIFF, max_examples=700)
def test_plain_event_is_pydantic_or_nothing(event: dict[str, Any]) -> None:
    plain = plain_event(event)
    if plain is not None:
        assert model_state(plain) == model_state(ShipmentEvent.model_validate(event))


@given(event_objects())
@settings(DIFF, max_examples=700)
def test_plain_facts_are_pydantic_or_nothing(event: dict[str, Any]) -> None:
    facts = plain_facts(event)
    assert (facts is None) == (plain_event(event) is None)
    if facts is not None:
        assert LeafFacts(*facts) == entry_facts(ShipmentEvent.model_validate(event))


@given(st.datetimes(datetime(2, 1, 1), datetime(9998, 12, 31)), st.integers(-1439, 1439), st.integers(0, 6),
       st.booleans())
@settings(DIFF, max_examples=600)
def test_utc_time_is_isoformat_in_utc(moment: datetime, offset: int, digits: int, zulu: bool) -> None:
    """Every offset and fraction length, minutes that cross a day, a month or a year in UTC."""
    sign, hours, minutes = "-" if offset < 0 else "+", abs(offset) // 60, abs(offset) % 60
    fraction = f"{moment.microsecond:06d}"[:digits]
    text = moment.isoformat(timespec="seconds") + (f".{fraction}" if digits else "") + (
        "Z" if zulu else f"{sign}{hours:02d}:{minutes:02d}")
    parsed = datetime.fromisoformat(text)
    assert utc_time(text) == parsed.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    assert utc_time(text) == utc_time(text)  # from the cache, the same


@pytest.mark.parametrize("value", [True, 1.0, 1, "1", None, 0, 2])
def test_plain_event_on_schema_version(value: Any) -> None:
    event = make_event(schema_version=value)
    plain = plain_event(event)
    if plain is not None:
        assert model_state(plain) == model_state(ShipmentEvent.model_validate(event))
    else:
        assert value != 1 or type(value) is not int


@pytest.mark.parametrize("overrides", [
    {"location": {"lat": lat}} for lat in (-90.5, -90, -90.0, 90, 90.0, 90.000001, True, -0.0, 0, "1", None)
] + [
    {"location": {"lon": lon}} for lon in (-180.5, -180, 180.0, 180.1, False, -0.0)
] + [
    {"location": loc} for loc in ({}, {"site_id": ""}, {"site_id": "x" * 256}, {"site_id": "x" * 257},
                                  {"site_id": None, "lat": None}, {"city": "x"}, [], None)
] + [
    {"items": items} for items in ([], [{"sku": "s", "quantity": 0}], [{"sku": "s", "quantity": True}],
                                   [{"sku": "s", "quantity": 1.0}], [{"sku": "s"}], [{"sku": "", "quantity": 1}],
                                   [{"sku": "s", "quantity": 1, "x": 1}], [None], {"sku": "s"})
] + [
    {name: value} for name in ("event_id", "carrier") for value in ("", "x" * 128, "x" * 129, "x" * 256,
                                                                      "x" * 257, "\U0001f600" * 128, 7, None)
] + [
    {name: t} for name in ("event_time", "planned_delivery") for t in ("2026-03-01T08:00:00+23:59", "2026-03-01T08:00:00-23:59", "2026-03-01T08:00:00+24:00",
                                "2026-03-01t08:00:00z", "2026-03-01 08:00:00Z", "2026-03-01T08:00:00.1234567Z",
                                "2026-03-01T08:00:00.5Z", "2026-02-29T08:00:00Z", "2024-02-29T08:00:00Z",
                                "0001-01-01T00:00:00Z", "0001-01-01T00:30:00+01:00", "9999-12-31T23:59:59Z",
                                "9999-12-31T23:30:00-01:00", "2026-03-01T08:00:00-00:00", "2026-03-01T08:00:60Z",
                                "２０２６-03-01T08:00:00Z", "2026-03-01T08:00Z",
                                "2026-03-01T08:00:00.000Z", "2026-03-01T08:00:00.000001-00:30", "2026-03-01T08:00:0Z",
                                "2026-03-01T08:00:00+0100", "2026-03-01T08:00:00+01:00Z", "2026-03-01T08:00:00.Z",
                                "2026-03-01T24:00:00Z", "2026-12-31T23:59:59-00:01", "2026-03-01T08:00:00Z ")
] + [
    {"event_type": v} for v in ("Created", "created ", "exception", 1)
] + [
    {"mode": v} for v in ("ROAD", "parcel", ["road"])
] + [
    {"attributes": a} for a in ({}, {"": None}, {"a": {"b": [None, True, 1.5]}}, [], "x")
])
def test_field_edges(overrides: dict[str, Any]) -> None:
    event = make_event(**overrides)
    plain = plain_event(event)
    assert (plain is None) == (plain_facts(event) is None)
    if plain is not None:
        assert model_state(plain) == model_state(ShipmentEvent.model_validate(event))
        assert LeafFacts(*plain_facts(event)) == entry_facts(plain)  # type: ignore[misc]
    check(as_bytes(event))
    check(json.dumps(event).encode())
