"""Daily demand from sealed `created` events: item quantities per SKU×site, SKU and total, per local day.

A day is the event's own local day (the UTC offset it carries). Each event
counts once: a replayed ledger entry is recognised by its leaf index, a producer
retry by its event id. Rows always carry the whole day's total, so writing one
twice changes nothing, and a late event simply rewrites its day. Days without
orders are zeros, written once the day is complete everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta, timezone
from typing import Any, NamedTuple

import numpy as np

TOTAL = "total"
# A day is complete once it has ended in every time zone (the last one is UTC-12).
_LAST_ZONE = timedelta(hours=12)
_ID_MEMORY_DAYS = 35


class DemandRow(NamedTuple):
    """One day of one series: the `demand` table's row."""

    series_key: str
    ds: date
    y: float


def series_keys(sku: str, site: str) -> tuple[str, str, str]:
    """The three series an order line of `sku` from `site` counts in.

    >>> series_keys("FOOD-0007", "8712345678906")
    ('sku=FOOD-0007|site=8712345678906', 'sku=FOOD-0007', 'total')
    """
    return (f"sku={sku}|site={site}", f"sku={sku}", TOTAL)


def level(series_key: str) -> str:
    """'site', 'sku' or 'total': where a key sits in the hierarchy.

    >>> level("sku=A|site=B"), level("sku=A"), level("total")
    ('site', 'sku', 'total')
    """
    if series_key == TOTAL:
        return "total"
    return "site" if "|site=" in series_key else "sku"


def last_complete_day(watermark: datetime) -> date:
    """The latest local day that has ended everywhere by event time `watermark`.

    >>> last_complete_day(datetime(2026, 3, 5, 11, 0, tzinfo=timezone.utc))
    datetime.date(2026, 3, 3)
    """
    return (watermark.astimezone(timezone.utc) - _LAST_ZONE).date() - timedelta(days=1)


class DailyDemand:
    """Running daily totals per series, fed with `ledger.entries` records in any order.

    >>> d = DailyDemand()
    >>> ev = {"event_id": "e1", "event_type": "created", "event_time": "2026-03-02T23:30:00+01:00",
    ...       "origin": "S1", "items": [{"sku": "A", "quantity": 5}]}
    >>> rec = {"log_id": "l/0", "leaf_index": 0, "event_type": "created", "payload": json.dumps(ev)}
    >>> sorted(d.add([rec, rec]))
    [DemandRow(series_key='sku=A', ds=datetime.date(2026, 3, 2), y=5.0), DemandRow(series_key='sku=A|site=S1', ds=datetime.date(2026, 3, 2), y=5.0), DemandRow(series_key='total', ds=datetime.date(2026, 3, 2), y=5.0)]
    """

    def __init__(self) -> None:
        self.days: dict[str, dict[date, float]] = {}
        self.first: dict[str, date] = {}
        self.filled: dict[str, tuple[date, date]] = {}  # per series: the span zeros were written over
        self.watermark: datetime | None = None
        self.tree_sizes: dict[str, int] = {}  # per log: one past the highest leaf index read
        self.seen: dict[str, date] = {}
        self.counted = 0
        self.skipped = 0

    def add(self, records: Iterable[Mapping[str, Any]]) -> list[DemandRow]:
        """Count a batch of ledger entries; return the rows whose day total changed."""
        changed: set[tuple[str, date]] = set()
        for rec in records:
            log_id, leaf = str(rec["log_id"]), int(rec["leaf_index"])
            if leaf < self.tree_sizes.get(log_id, 0):
                self.skipped += 1  # a replay of an entry already read
                continue
            self.tree_sizes[log_id] = leaf + 1
            if rec.get("event_type") != "created":
                continue
            event = rec["payload"] if isinstance(rec["payload"], Mapping) else json.loads(rec["payload"])
            changed.update(self.add_event(event))
        return [DemandRow(k, d, self.days[k][d]) for k, d in sorted(changed)]

    def add_event(self, event: Mapping[str, Any]) -> list[tuple[str, date]]:
        """Count one `created` event (once per event id); the cells it changed."""
        event_id = str(event["event_id"])
        when = datetime.fromisoformat(str(event["event_time"]))
        if event_id in self.seen:
            self.skipped += 1
            return []
        day = when.date()
        self.seen[event_id] = day
        if self.watermark is None or when > self.watermark:
            self.watermark = when
        cells = []
        for item in event.get("items") or ():
            for key in series_keys(str(item["sku"]), str(event["origin"])):
                days = self.days.setdefault(key, {})
                days[day] = days.get(day, 0.0) + float(item["quantity"])
                if key not in self.first or day < self.first[key]:
                    self.first[key] = day
                cells.append((key, day))
        self.counted += 1
        return cells

    def close_days(self) -> list[DemandRow]:
        """Zero rows for every complete day without orders since each series began; call after `add`."""
        if self.watermark is None:
            return []
        until = last_complete_day(self.watermark)
        rows = []
        for key, first in self.first.items():
            days = self.days[key]
            spans = [(first, until)]
            if key in self.filled:
                lo, hi = self.filled[key]  # zeros already written over [lo, hi]
                spans = [(first, lo - timedelta(days=1)), (hi + timedelta(days=1), until)]
            for d0, d1 in spans:
                d = max(d0, first)
                while d <= d1:
                    if d not in days:
                        days[d] = 0.0
                        rows.append(DemandRow(key, d, 0.0))
                    d += timedelta(days=1)
            lo0 = self.filled.get(key, (first, until))[0]
            self.filled[key] = (min(first, lo0), max(until, self.filled.get(key, (first, until))[1]))
        if len(self.seen) > 100_000:
            horizon = until - timedelta(days=_ID_MEMORY_DAYS)
            self.seen = {k: d for k, d in self.seen.items() if d >= horizon}
        return rows

    def history(self, series_key: str, until: date | None = None) -> tuple[date, np.ndarray]:
        """The series from its first day to `until` (default: the last complete day), zeros filled in."""
        days = self.days[series_key]
        first = self.first[series_key]
        last = until if until is not None else (last_complete_day(self.watermark) if self.watermark else first)
        n = max(0, (last - first).days + 1)
        y = np.zeros(n)
        for d, v in days.items():
            i = (d - first).days
            if 0 <= i < n:
                y[i] = v
        return first, y


def combine(parts: Iterable[DailyDemand]) -> tuple[date | None, dict[str, tuple[date, np.ndarray]], dict[str, int]]:
    """Several partitions' demand as one: the last day complete in all of them, every series summed up
    to it, and per log the tree size read.

    >>> a, b = DailyDemand(), DailyDemand()
    >>> ev = {"event_id": "e1", "event_type": "created", "event_time": "2026-03-02T10:00:00+00:00",
    ...       "origin": "S1", "items": [{"sku": "A", "quantity": 5}]}
    >>> later = dict(ev, event_time="2026-03-05T10:00:00+00:00")
    >>> _ = a.add_event(ev), a.add_event(dict(later, event_id="e2")), b.add_event(dict(later, event_id="e3"))
    >>> last, series, _ = combine([a, b])
    >>> last, series["total"][1].tolist()
    (datetime.date(2026, 3, 3), [5.0, 0.0])
    """
    parts = [p for p in parts if p.watermark is not None]
    sizes: dict[str, int] = {}
    for p in parts:
        sizes.update(p.tree_sizes)
    if not parts:
        return None, {}, sizes
    last = min(last_complete_day(p.watermark) for p in parts if p.watermark is not None)
    out: dict[str, tuple[date, np.ndarray]] = {}
    keys = sorted({k for p in parts for k in p.first})
    for key in keys:
        first = min(p.first[key] for p in parts if key in p.first)
        if first > last:
            continue
        total = np.zeros((last - first).days + 1)
        for p in parts:
            if key in p.first:
                f, y = p.history(key, last)
                offset = (f - first).days
                total[offset:offset + len(y)] += y
        out[key] = (first, total)
    return last, out, sizes
