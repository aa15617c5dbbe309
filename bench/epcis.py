"""What an EPCIS event costs to accept: schema validation, the CBV 2.0 event hash, the leaf.

    python bench/epcis.py [--rounds 5]

Prints medians per event over the 15 official examples, each beside the leaf
alone (RFC 8785 + SHA-256, what a shipment event costs to hash) measured in the
same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from pipeline.core.canonical import canonical_bytes
from pipeline.core.epcis.document import read_capture
from pipeline.core.epcis.event_hash import document_pre_hashes
from pipeline.core.epcis.validator import schema_errors
from pipeline.core.merkle import leaf_hash

EXAMPLES = Path(__file__).resolve().parents[1] / "tests" / "vectors" / "epcis" / "examples"


def per_event(fn, docs: list[dict], events: int, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for doc in docs:
            fn(doc)
        times.append((time.perf_counter() - start) / events)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    docs = [json.loads(p.read_text()) for p in sorted(EXAMPLES.glob("*.jsonld"))]
    events = sum(len(d["epcisBody"]["eventList"]) for d in docs)
    leaf = per_event(lambda d: [leaf_hash(canonical_bytes(e)) for e in d["epcisBody"]["eventList"]], docs, events, rounds)
    rows = {
        "leaf (RFC 8785 + SHA-256)": leaf,
        "schema validation (format checks on)": per_event(schema_errors, docs, events, rounds),
        "CBV 2.0 hash, whole document": per_event(document_pre_hashes, docs, events, rounds),
        "capture: validate + hash each event": per_event(read_capture, docs, events, rounds),
    }
    print(f"{events} events in {len(docs)} documents, median of {rounds} rounds, per event:")
    for name, seconds in rows.items():
        print(f"  {name:40s} {seconds * 1e3:8.3f} ms   {seconds / leaf:8.0f} x leaf")


if __name__ == "__main__":
    main()
