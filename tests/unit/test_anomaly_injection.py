"""Injected, labelled anomalies: deterministic, invisible in the events, items untouched."""

from __future__ import annotations

from datetime import datetime, timezone
from itertools import islice

import pytest

from pipeline.core.anomaly_injection import LabelledFleet
from pipeline.core.sealed import parse_time
from pipeline.core.simulator import Fleet
from pipeline.errors import ConfigError

START = datetime(2026, 1, 5, tzinfo=timezone.utc)


def take(fleet: Fleet, n: int = 3000) -> list[dict]:
    return list(islice(fleet.events(), n))


def test_same_seed_same_stream_and_labels() -> None:
    a, b = LabelledFleet(4, START), LabelledFleet(4, START)
    assert take(a) == take(b) and a.labels == b.labels and a.labels


def test_labels_do_not_leak_and_items_are_the_plain_fleets() -> None:
    labelled = take(LabelledFleet(5, START), 4000)
    plain = take(Fleet(5, START), 4000)
    keys = {k for e in plain for k in e} | {"attributes"}
    assert {k for e in labelled for k in e} <= keys
    attrs = {k for e in plain for k in e.get("attributes", {})}
    assert {k for e in labelled for k in e.get("attributes", {})} <= attrs
    items = {e["shipment_id"]: e["items"] for e in plain if e["event_type"] == "created"}
    mine = {e["shipment_id"]: e["items"] for e in labelled if e["event_type"] == "created"}
    common = set(items) & set(mine)
    assert len(common) > 500 and all(items[s] == mine[s] for s in common)


@pytest.mark.parametrize("kind", ["late", "dwell", "silent", "sequence"])
def test_each_kind_is_injected_and_labelled(kind: str) -> None:
    fleet = LabelledFleet(6, START, shares={kind: 1.0})
    take(fleet, 600)
    assert fleet.labels and all(kinds == {kind} for kinds in fleet.labels.values())


def test_legal_reorderings_stay_within_the_allowance() -> None:
    fleet = LabelledFleet(7, START, shares={}, reorder_share=0.2, max_reorder=5400)
    latest = -1e18
    late = 0
    for e in take(fleet, 3000):
        t = parse_time(e["event_time"])
        assert t >= latest - 5400 - 60
        late += t < latest
        latest = max(latest, t)
    assert late > 100 and fleet.reordered


def test_bad_shares_are_refused() -> None:
    with pytest.raises(ConfigError):
        LabelledFleet(1, START, shares={"late": 0.8, "dwell": 0.5})
    with pytest.raises(ConfigError):
        LabelledFleet(1, START, shares={"slow": 0.1})
