"""Per-record cost of the worker's record path: strict decoding plus validation, against its peers.

Prints CPU microseconds per record (median of several runs) for the simulator's
events, each next to peers measured in the same run:

- `json.loads`: the bare C parser, the floor of any JSON decoding;
- `decode`: the strict, bounded decoder alone (`pipeline.core.strict_json`);
- `lenient accept`: what the ledger did before the limits (plain `json.loads`
  classification, pydantic, RFC 8785), kept here as the baseline;
- `accept`: what the worker runs on every record now.

Nothing here asserts a time.

    .venv/bin/python bench/decode.py [--events 20000] [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from itertools import islice

from pipeline.core.canonical import canonical_bytes, parse_json
from pipeline.core.ledger import accept
from pipeline.core.simulator import Fleet
from pipeline.core.strict_json import decode
from pipeline.errors import InvalidEvent
from pipeline.schema import decode_text, validate_object


def lenient_accept(raw: bytes) -> object:
    """The record path before strict decoding: no limits, duplicate keys silently last-wins."""
    parsed = parse_json(decode_text(raw))
    event = validate_object(parsed.value)
    return event, canonical_bytes(parsed.value, parsed.simple)


def per_record_us(fn: Callable[[bytes], object], records: list[bytes], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.process_time()  # CPU time: other processes on a shared machine do not count
        for r in records:
            fn(r)
        times.append((time.process_time() - t0) / len(records) * 1e6)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    fleet = Fleet(7, datetime(2026, 1, 5, tzinfo=timezone.utc))
    records = [json.dumps(e, ensure_ascii=False).encode() for e in islice(fleet.events(), args.events)]
    size = statistics.median(len(r) for r in records)
    print(f"{len(records)} simulator events, median {size:.0f} bytes; median of {args.runs} runs, µs per record")
    peers = {"json.loads": json.loads, "decode": decode, "lenient accept": lenient_accept, "accept": accept}
    # Interleave short slices so load on a shared machine hits every peer alike; ratios are taken
    # slice by slice (same records, back to back) and their median quoted.
    results: dict[str, list[float]] = {name: [] for name in peers}
    ratios: dict[str, list[float]] = {"decode / json.loads": [], "accept / lenient accept": []}
    chunk = 1_000
    for _ in range(args.runs):
        for start in range(0, len(records), chunk):
            part = records[start:start + chunk]
            us = {name: per_record_us(fn, part, 1) for name, fn in peers.items()}
            for name, v in us.items():
                results[name].append(v)
            ratios["decode / json.loads"].append(us["decode"] / us["json.loads"])
            ratios["accept / lenient accept"].append(us["accept"] / us["lenient accept"])
    med = {name: statistics.median(v) for name, v in results.items()}
    for name, us in med.items():
        print(f"  {name:<16} {us:7.2f} µs   ({us / med['json.loads']:.2f}× json.loads)")
    for name, values in ratios.items():
        q = statistics.quantiles(values, n=4)
        print(f"{name}: median {statistics.median(values):.3f}× (quartiles {q[0]:.3f}–{q[2]:.3f}, "
              f"{len(values)} paired slices)")
    deep = b"[" * 60_000 + b"]" * 60_000
    t0 = time.perf_counter()
    try:
        decode(deep)
    except InvalidEvent as exc:
        print(f"60,000-level record refused in {(time.perf_counter() - t0) * 1e3:.1f} ms: {exc}")


if __name__ == "__main__":
    main()
