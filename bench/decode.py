"""Per-record cost of the worker's record path: strict decoding plus validation, against its peers.

Prints microseconds per record (median of several runs) for the simulator's
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
        t0 = time.perf_counter()
        for r in records:
            fn(r)
        times.append((time.perf_counter() - t0) / len(records) * 1e6)
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
    # Interleave the runs so load on a shared machine hits every peer alike.
    results: dict[str, list[float]] = {name: [] for name in peers}
    for _ in range(args.runs):
        for name, fn in peers.items():
            results[name].append(per_record_us(fn, records, 1))
    med = {name: statistics.median(v) for name, v in results.items()}
    for name, us in med.items():
        print(f"  {name:<16} {us:7.2f} µs   ({us / med['json.loads']:.2f}× json.loads)")
    print(f"decode / json.loads: {med['decode'] / med['json.loads']:.2f}×; "
          f"accept / lenient accept: {med['accept'] / med['lenient accept']:.2f}× "
          f"(+{med['accept'] - med['lenient accept']:.2f} µs per record)")
    deep = b"[" * 60_000 + b"]" * 60_000
    t0 = time.perf_counter()
    try:
        decode(deep)
    except InvalidEvent as exc:
        print(f"60,000-level record refused in {(time.perf_counter() - t0) * 1e3:.1f} ms: {exc}")


if __name__ == "__main__":
    main()
