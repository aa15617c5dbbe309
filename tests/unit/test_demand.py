"""Daily demand from sealed `created` events: local days, three levels, counted once, zeros not gaps."""

from __future__ import annotations

import json
from datetime import date

import numpy as np

from pipeline.core.demand import DailyDemand, DemandRow, last_complete_day
from pipeline.core.demand_profile import DemandProfile, synthetic_skus
from pipeline.core.simulator import Fleet
from datetime import datetime, timezone


def entry(leaf: int, event_id: str, when: str, items: list[tuple[str, int]], origin: str = "S1",
          event_type: str = "created", log_id: str = "shipment-events/0") -> dict:
    payload = {"event_id": event_id, "event_type": event_type, "event_time": when, "origin": origin,
               "items": [{"sku": s, "quantity": q} for s, q in items]}
    return {"log_id": log_id, "leaf_index": leaf, "event_type": event_type, "payload": json.dumps(payload)}


def test_three_levels_by_local_day() -> None:
    d = DailyDemand()
    rows = d.add([
        entry(0, "a", "2026-03-02T23:30:00+09:00", [("A", 5), ("B", 2)]),  # 14:30 UTC, but the 2nd locally
        entry(1, "b", "2026-03-02T00:10:00-05:00", [("A", 1)], origin="S2"),
    ])
    by = {(r.series_key, r.ds): r.y for r in rows}
    assert by[("sku=A|site=S1", date(2026, 3, 2))] == 5
    assert by[("sku=A|site=S2", date(2026, 3, 2))] == 1
    assert by[("sku=A", date(2026, 3, 2))] == 6
    assert by[("total", date(2026, 3, 2))] == 8
    assert by[("sku=B", date(2026, 3, 2))] == 2


def test_replays_and_retries_count_once_and_late_events_rewrite_their_day() -> None:
    d = DailyDemand()
    d.add([entry(0, "a", "2026-03-02T10:00:00+01:00", [("A", 5)])])
    assert d.add([entry(0, "a", "2026-03-02T10:00:00+01:00", [("A", 5)])]) == []  # replayed leaf
    assert d.add([entry(1, "a", "2026-03-02T10:00:00+01:00", [("A", 5)])]) == []  # producer retry: same id
    d.add([entry(2, "c", "2026-03-09T10:00:00+01:00", [("A", 1)])])
    late = d.add([entry(3, "late", "2026-03-03T08:00:00+01:00", [("A", 4)])])
    assert DemandRow("sku=A|site=S1", date(2026, 3, 3), 4.0) in late
    assert d.days["total"][date(2026, 3, 2)] == 5.0
    assert d.tree_sizes == {"shipment-events/0": 4}


def test_days_without_orders_are_zeros_once_complete() -> None:
    d = DailyDemand()
    d.add([entry(0, "a", "2026-03-02T10:00:00+00:00", [("A", 5)]),
           entry(1, "b", "2026-03-06T20:00:00+00:00", [("A", 1)]),
           entry(2, "x", "2026-03-06T21:00:00+00:00", [], event_type="picked_up")])
    zeros = d.close_days()
    assert last_complete_day(datetime(2026, 3, 6, 20, tzinfo=timezone.utc)) == date(2026, 3, 5)
    assert {(r.series_key, r.ds) for r in zeros if r.series_key == "total"} == {
        ("total", date(2026, 3, d)) for d in (3, 4, 5)}
    assert d.close_days() == []  # written once
    first, y = d.history("sku=A|site=S1")
    assert first == date(2026, 3, 2) and y.tolist() == [5, 0, 0, 0]
    # a late event earlier than the series' first day gets its own zeros in between
    d.add([entry(3, "early", "2026-02-27T12:00:00+00:00", [("A", 2)])])
    assert {r.ds for r in d.close_days() if r.series_key == "total"} == {date(2026, 2, 28), date(2026, 3, 1)}


def test_simulator_demand_comes_from_the_profile() -> None:
    fleet = Fleet(5, datetime(2026, 1, 5, tzinfo=timezone.utc))
    d = DailyDemand()
    events = fleet.events()
    for i in range(6000):
        ev = next(events)
        d.add([{"log_id": "l", "leaf_index": i, "event_type": ev["event_type"], "payload": ev}])
    assert d.counted > 500
    assert all(k == "total" or k.startswith("sku=") for k in d.days)
    assert sum(d.days["total"].values()) == sum(
        sum(v.values()) for k, v in d.days.items() if "|site=" in k)


def test_profile_is_seeded_and_realistic() -> None:
    a, b = DemandProfile(1), DemandProfile(2)
    s = a.series()[0]
    y1 = a.sample(s, date(2025, 1, 1), 365)
    assert np.array_equal(y1, DemandProfile(1).sample(s, date(2025, 1, 1), 365))
    assert not np.array_equal(y1, b.sample(b.series()[0], date(2025, 1, 1), 365))
    zero = [float(np.mean(a.sample(x, date(2025, 1, 1), 365) == 0)) for x in a.series()[:64]]
    assert min(zero) < 0.2 and max(zero) > 0.6  # smooth and intermittent series both exist
    rates = a.rates(s, date(2025, 1, 6), 28)
    assert rates[:7].argmax() != rates[:7].argmin()  # a weekly pattern
    assert len(synthetic_skus(40, 1)) == 40
