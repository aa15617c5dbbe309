"""The fleet simulator: deterministic, schema-valid, lifecycle-ordered, and realistic enough to learn from."""

from __future__ import annotations

import functools
import itertools
import json
import random
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.simulator import LIFECYCLE, MALFORMED_KINDS, Fleet, malform
from pipeline.errors import ConfigError, InvalidEvent
from pipeline.schema import parse_event

START = datetime(2026, 3, 2, tzinfo=timezone.utc)


def make_events(n: int, seed: int = 3, **overrides: Any) -> list[dict[str, Any]]:
    """The first `n` events of a fleet."""
    return list(itertools.islice(Fleet(seed, overrides.pop("start", START), **overrides).events(), n))


@functools.lru_cache(maxsize=None)
def window(seed: int = 3, n: int = 20_000) -> tuple[dict[str, Any], ...]:
    """A shared, read-only slice of the stream: about a week of simulated time."""
    return tuple(make_events(n, seed))


def by_shipment(events: tuple[dict[str, Any], ...]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        out[event["shipment_id"]].append(event)
    return out


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_same_seed_same_stream() -> None:
    fleet = Fleet(11, START)
    first = list(itertools.islice(fleet.events(), 2_000))
    assert first == list(itertools.islice(fleet.events(), 2_000))
    assert first == make_events(2_000, seed=11)
    assert first != make_events(2_000, seed=12)


def test_same_seed_same_bytes() -> None:
    a = list(itertools.islice(Fleet(5, START, malformed_share=0.1).records(), 3_000))
    b = list(itertools.islice(Fleet(5, START, malformed_share=0.1).records(), 3_000))
    assert a == b


def test_every_event_validates() -> None:
    for event in window():
        parsed, obj = parse_event(json.dumps(event))
        assert obj == event
        assert parsed.event_time.utcoffset() is not None


def test_event_ids_are_unique_uuids() -> None:
    ids = [event["event_id"] for event in window()]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 8 for i in ids[:500])


def test_valid_records_validate_and_malformed_ones_fail() -> None:
    records = list(itertools.islice(Fleet(9, START, malformed_share=0.05).records(), 6_000))
    assert any(not r.is_valid for r in records)
    for key, value, is_valid in records:
        if is_valid:
            event, _ = parse_event(value)
            assert key == event.shipment_id.encode()
        else:
            with pytest.raises(InvalidEvent):
                parse_event(value)


def test_malformed_lines_leave_the_valid_stream_unchanged() -> None:
    valid = [r.value for r in itertools.islice(Fleet(4, START, malformed_share=0.2).records(), 5_000) if r.is_valid]
    clean = [json.dumps(e, separators=(",", ":")).encode() for e in make_events(len(valid), seed=4)]
    assert valid == clean


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
@pytest.mark.parametrize("event_type", ["created", "delivered", "exception"])
def test_each_malformed_kind_fails_validation(kind: str, event_type: str) -> None:
    source = next(e for e in window() if e["event_type"] == event_type)
    rng = random.Random(kind)
    for _ in range(20):
        with pytest.raises(InvalidEvent):
            parse_event(malform(source, kind, rng))


def test_unknown_malformed_kind_is_refused() -> None:
    with pytest.raises(ConfigError):
        malform(window()[0], "cosmic_ray", random.Random(0))


@pytest.mark.parametrize("share", [0.0, 0.01, 0.1])
def test_malformed_share_is_about_as_configured(share: float) -> None:
    records = list(itertools.islice(Fleet(2, START, malformed_share=share).records(), 30_000))
    observed = sum(not r.is_valid for r in records) / len(records)
    assert abs(observed - share) <= 0.2 * share


def test_lifecycle_order_per_shipment() -> None:
    for shipment_id, events in by_shipment(window()).items():
        steps = [e["event_type"] for e in events if e["event_type"] != "exception"]
        assert steps[0] == "created", shipment_id
        if "cancelled" in steps:
            assert steps[-1] == "cancelled" and steps.count("cancelled") == 1
            assert steps[:-1] in (["created"], ["created", "picked_up"]), steps
        else:
            assert steps == list(LIFECYCLE[: len(steps)]), steps
        assert events[-1]["event_type"] != "exception" or steps[-1] not in ("delivered", "cancelled")
        assert all(("items" in e) == (e["event_type"] == "created") for e in events)
        fixed = {(e["origin"], e["destination"], e["carrier"], e["mode"], e["planned_delivery"]) for e in events}
        assert len(fixed) == 1


def test_event_time_increases_per_shipment_and_overall() -> None:
    times = [at(e["event_time"]) for e in window()]
    assert times == sorted(times)
    for events in by_shipment(window()).values():
        own = [at(e["event_time"]) for e in events]
        assert all(a < b for a, b in zip(own, own[1:]))


def test_items_have_positive_quantities() -> None:
    created = [e for e in window() if e["event_type"] == "created"]
    assert all(item["quantity"] > 0 for e in created for item in e["items"])
    assert len({item["sku"] for e in created for item in e["items"]}) >= 10


def test_share_of_late_deliveries_exceptions_and_cancellations() -> None:
    shipments = by_shipment(window()).values()
    delivered = [s for s in shipments if s[-1]["event_type"] == "delivered"]
    late = sum(at(s[-1]["event_time"]) > at(s[-1]["planned_delivery"]) for s in delivered) / len(delivered)
    excepted = sum(any(e["event_type"] == "exception" for e in s) for s in shipments) / len(shipments)
    cancelled = sum(s[-1]["event_type"] == "cancelled" for s in shipments) / len(shipments)
    assert len(delivered) > 1_000
    assert 0.05 <= late <= 0.35
    assert 0.02 <= excepted <= 0.12
    assert 0.005 <= cancelled <= 0.06


def test_shipments_with_exceptions_are_late_more_often() -> None:
    delivered = [s for s in by_shipment(window()).values() if s[-1]["event_type"] == "delivered"]

    def late_share(group: list[list[dict[str, Any]]]) -> float:
        return sum(at(s[-1]["event_time"]) > at(s[-1]["planned_delivery"]) for s in group) / len(group)

    with_exception = [s for s in delivered if any(e["event_type"] == "exception" for e in s)]
    without = [s for s in delivered if s not in with_exception]
    assert late_share(with_exception) > 2 * late_share(without)


def test_reefer_and_seal_attributes() -> None:
    shipments = by_shipment(window()).values()
    reefers = [s for s in shipments if (s[0].get("attributes") or {}).get("reefer")]
    assert reefers
    for s in reefers:
        readings = [e for e in s[1:] if e["event_type"] not in ("exception", "cancelled")]
        assert all("temperature_c" in e["attributes"] for e in readings)
    for s in shipments:
        seals = {e["attributes"]["seal_id"] for e in s if e["event_type"] in ("departed", "arrived")
                 and "seal_id" in (e.get("attributes") or {})}
        assert len(seals) <= 1


def test_all_modes_and_several_carriers_appear() -> None:
    events = make_events(20_000, seed=0)
    assert {e["mode"] for e in events} == {"road", "rail", "sea", "air", "parcel"}
    assert len({e["carrier"] for e in events}) >= 8


def test_weekdays_ship_more_than_weekends() -> None:
    per_day: Counter[datetime] = Counter()
    for e in make_events(45_000, seed=6):
        if e["event_type"] == "created":
            per_day[at(e["event_time"]).astimezone(timezone.utc).replace(hour=0, minute=0, second=0)] += 1
    days = sorted(per_day)[1:-1]
    weekday = [per_day[d] for d in days if d.weekday() < 5]
    weekend = [per_day[d] for d in days if d.weekday() >= 5]
    assert weekend and sum(weekday) / len(weekday) > 1.5 * sum(weekend) / len(weekend)


def test_simulated_time_advances_by_about_one_tick_per_event() -> None:
    tick = timedelta(minutes=2)
    events = make_events(10_000, seed=8, tick=tick)
    span = at(events[-1]["event_time"]) - at(events[0]["event_time"])
    assert 0.7 < span / (tick * len(events)) < 1.4


def test_start_must_be_timezone_aware() -> None:
    with pytest.raises(ConfigError):
        Fleet(1, datetime(2026, 1, 1))


@pytest.mark.parametrize("share", [-0.1, 1.0])
def test_malformed_share_out_of_range_is_refused(share: float) -> None:
    with pytest.raises(ConfigError):
        Fleet(1, START, malformed_share=share)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**63),
    start=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1),
                       timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-7)),
                                                  timezone(timedelta(hours=5, minutes=30))])),
)
def test_any_seed_and_start_give_valid_ordered_events(seed: int, start: datetime) -> None:
    events = make_events(300, seed=seed, start=start)
    times = [parse_event(json.dumps(e))[0].event_time for e in events]
    assert times == sorted(times)
    assert times[0] == start.replace(microsecond=0)
