"""Where a worker's time goes, per record: each stage of decode → validate → canonicalise → hash → forward → store.

    python bench/worker_profile.py [--records 20000]

CPU time (process_time, best of three) per record of each stage alone, on
simulated events, with `json.loads` of the same bytes as the yardstick: on a
shared machine the microseconds move with the load, the multiples much less.
Records take the short way (`plain_leaf`: orjson read with JCS bytes, then
`plain_facts`, the entry's facts without a pydantic model) when it can vouch for
them; the strict way's stages are shown too, as that is what every other record
costs. Figures, not a test.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from pipeline.core import wire
from pipeline.core.canonical import canonical_bytes
from pipeline.core import plain_record
from pipeline.core.ledger import PartitionLog, accept_shipment, plain_accept, plain_leaf, strict_accept
from pipeline.core.plain_event import plain_event, plain_facts
from pipeline.core.simulator import Fleet
from pipeline.core.strict_json import LIMITS, decode
from pipeline.schema import validate_object


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=20_000)
    n = ap.parse_args().records
    fleet = Fleet(3, datetime(2026, 1, 5, tzinfo=timezone.utc))
    recs = [r.value for r, _ in zip(fleet.records(), range(n))]
    results: dict[str, float] = {}
    parsed = [decode(r) for r in recs]
    short = sum(plain_leaf(r) is not None for r in recs)

    def stage(name: str, body: Callable[[], Any]) -> None:
        best = float("inf")
        for _ in range(3):
            t0 = time.process_time()
            body()
            best = min(best, time.process_time() - t0)
        results[name] = best / n * 1e6

    stage("json.loads (yardstick)", lambda: [json.loads(r) for r in recs])
    stage("read + JCS: plain_record", lambda: [plain_record.read(r, LIMITS) for r in recs])
    stage("validate: plain_facts", lambda: [plain_facts(p.value) for p in parsed])
    stage("accept: short way (both above)", lambda: [plain_leaf(r) for r in recs])
    stage("short way with a model: plain_event", lambda: [plain_event(p.value) for p in parsed])
    stage("short way with a model: plain_accept", lambda: [plain_accept(r) for r in recs])
    stage("strict way: decode (strict_json)", lambda: [decode(r) for r in recs])
    stage("strict way: validate (pydantic)", lambda: [validate_object(p.value) for p in parsed])
    stage("strict way: canonicalise", lambda: [canonical_bytes(p.value, p.simple) for p in parsed])
    stage("strict way: accept (all three)", lambda: [strict_accept(r) for r in recs])
    stage("accept (what the worker calls)", lambda: [accept_shipment(r) for r in recs])
    accepted = [accept_shipment(r)[0] for r in recs]

    def append_and_seal() -> None:
        plog = PartitionLog("bench/0")
        for i, (event, payload) in enumerate(accepted):
            plog.append(i, event, payload)
        plog.seal("2026-01-01T00:00:00Z")

    stage("hash: leaves + tree (batch)", append_and_seal)
    plog = PartitionLog("bench/0")
    for i, (event, payload) in enumerate(accepted):
        plog.append(i, event, payload)
    sealed = plog.seal("2026-01-01T00:00:00Z")
    assert sealed is not None
    stage("forward: entry bundles", lambda: wire.encode_entries("bench/0", sealed.entries, 256))
    bundles = wire.encode_entries("bench/0", sealed.entries, 256)
    stage("store: decode bundles", lambda: [wire.decode_entries(v) for v in bundles])
    unit = results["json.loads (yardstick)"]
    print(f"{n:,} simulated events, {sum(map(len, recs)) / n:.0f} bytes each, {short / n:.1%} take the short way")
    for name, us in results.items():
        print(f"{name:36s} {us:8.2f} CPU µs/record  ({us / unit:4.1f} × json.loads)")


if __name__ == "__main__":
    main()
