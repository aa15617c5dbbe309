"""Events per second through the delay detector, and its memory over a long run.

A labelled simulated stream (generated ahead in chunks, outside the timing) is
fed to one detector per partition, as the analytics process does. Beside it,
in the same run on the same events, a trivial peer: a per-shipment dict of
the last event time with the same expiry, the least any event-time detector
must do. Prints events/s of both and their ratio (medians over chunks), and
the process RSS, the detector's state sizes and how full the model's windows
are at intervals: flat state over millions of events is what bounded state
means, and RSS grows only while windows of rare lanes fill up to their size.

    .venv/bin/python bench/anomalies.py --events 10000000
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.core.anomaly_injection import LabelledFleet  # noqa: E402
from pipeline.core.delay_detector import DelayDetector  # noqa: E402
from pipeline.core.lane_model import LaneDelayModel  # noqa: E402
from pipeline.core.sealed import SealedEvent, parse_time  # noqa: E402


def rss_mb() -> float:
    """Current resident set size (Linux /proc), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class LastSeen:
    """The trivial peer: last event time per shipment, dropped a retention after it."""

    def __init__(self, retention: float = 72 * 3600.0) -> None:
        self.retention = retention
        self.last: dict[str, float] = {}
        self.max_time = 0.0
        self.n = 0

    def observe(self, ev: SealedEvent) -> None:
        self.max_time = max(self.max_time, ev.time)
        self.last[ev.shipment_id] = ev.time
        self.n += 1
        if self.n % 4096 == 0:
            cut = self.max_time - self.retention
            self.last = {k: t for k, t in self.last.items() if t > cut}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--chunk", type=int, default=20_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    fleet = LabelledFleet(args.seed, datetime(2026, 1, 5, tzinfo=timezone.utc))
    stream = fleet.events()
    detectors = [DelayDetector(LaneDelayModel()) for _ in range(args.partitions)]
    peers = [LastSeen() for _ in range(args.partitions)]
    leaf = [0] * args.partitions
    rates, peer_rates, cpu_us = [], [], []
    done = 0
    print(f"{'events':>11} {'detector ev/s':>14} {'CPU us/ev':>9} {'peer ev/s':>10} {'ratio':>6} {'RSS MiB':>8} "
          f"{'shipments':>9} {'rows':>6} {'timers':>7} {'windows':>7} {'load':>5}")
    while done < args.events:
        chunk = []
        for event in stream:
            p = zlib.crc32(event["shipment_id"].encode()) % args.partitions
            chunk.append((p, SealedEvent(event, f"bench/{p}", leaf[p], parse_time(event["event_time"]))))
            leaf[p] += 1
            if len(chunk) == args.chunk:
                break
        # The labels are the evaluation's, not the detector's: dropped so they do not count as its memory.
        fleet.labels.clear()
        fleet.reordered.clear()
        t, c = time.perf_counter(), time.process_time()
        for p, ev in chunk:
            detectors[p].observe(ev)
            if ev.leaf_index % 256 == 0:  # as the analytics process does: rows out, raised kinds to metrics
                detectors[p].changed()
                detectors[p].take_raised()
        rate = len(chunk) / (time.perf_counter() - t)
        cpu_us.append((time.process_time() - c) / len(chunk) * 1e6)
        t = time.perf_counter()
        for p, ev in chunk:
            peers[p].observe(ev)
        peer_rate = len(chunk) / (time.perf_counter() - t)
        rates.append(rate)
        peer_rates.append(peer_rate)
        done += len(chunk)
        sizes = [d.stats() for d in detectors]
        held = [d.model.held() for d in detectors]  # type: ignore[attr-defined]
        fill = sum(h for h, _ in held) / max(1, sum(c for _, c in held))
        print(f"{done:>11,} {rate:>14,.0f} {cpu_us[-1]:>9.1f} {peer_rate:>10,.0f} {peer_rate / rate:>6.0f} "
              f"{rss_mb():>8.1f} {sum(s['shipments'] for s in sizes):>9,} {sum(s['rows'] for s in sizes):>6,} "
              f"{sum(s['timers'] for s in sizes):>7,} {fill:>7.1%} {os.getloadavg()[0]:>5.2f}", flush=True)
    med, peer_med = statistics.median(rates), statistics.median(peer_rates)
    print(f"\nmedian: detector {med:,.0f} events/s, {statistics.median(cpu_us):.1f} us CPU (user+sys) per event; "
          f"trivial peer {peer_med:,.0f} events/s (the detector takes {peer_med / med:.0f}x the peer's time per "
          f"event); final RSS {rss_mb():.1f} MiB; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
