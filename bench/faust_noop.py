"""A faust worker that only counts: the framework's own ceiling, a peer for bench/ingest.py.

    PROVENANCE_KAFKA=host:port python bench/faust_noop.py TOPIC GROUP N RESULT_FILE

Consumes TOPIC with `take_events` batches (as the ledger agent does), acks,
and writes `done <records> <seconds>` to RESULT_FILE once N records went
through, timed from the first record.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import faust


def main() -> None:
    topic_name, group, n, result = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    app = faust.App(group, broker=f"kafka://{os.environ['PROVENANCE_KAFKA']}", value_serializer="raw",
                    key_serializer="raw", store="memory://", web_enabled=False, topic_allow_declare=False,
                    consumer_auto_offset_reset="earliest", stream_wait_empty=False,
                    datadir=tempfile.mkdtemp(prefix="faust-noop-"))
    topic = app.topic(topic_name, key_type=bytes, value_type=bytes)
    seen = {"n": 0, "t0": 0.0}

    @app.agent(topic)
    async def count(stream):  # type: ignore[no-untyped-def]
        async for events in stream.noack().take_events(2000, 0.2):
            if not seen["n"]:
                seen["t0"] = time.perf_counter()
            seen["n"] += len(events)
            if seen["n"] >= n:
                with open(result, "w") as f:
                    f.write(f"done {seen['n']} {time.perf_counter() - seen['t0']:.3f}\n")

    faust.Worker(app, loglevel="error", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
