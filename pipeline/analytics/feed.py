"""What the analytics process hands its models: sealed events per partition, and the rows they send.

Every model of the analytics process is a `SealedHandler`. The app gives each
handler the same decoded batches of one `ledger.entries` partition, in leaf
order, and sends what `drain` returns. A handler's state for a partition is a
pure function of that partition's entries from offset 0: when a partition is
assigned (start, restart after kill -9, rebalance), the app replays it from the
beginning up to its end at that moment (`replay=True`), at once rather than when
the next live message arrives (after a restart on a quiet stream none may come),
and only then hands over live batches from that offset on. So a restarted
process reproduces every row exactly, and there is one commit point, the ledger
itself; nothing is checkpointed beside it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import NamedTuple, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.core.sealed import SealedEvent, decode_bundle
from pipeline.errors import InvalidChallenge

log = logging.getLogger(__name__)


class Output(NamedTuple):
    """One record for an output topic."""

    topic: str
    key: bytes
    value: bytes


class SealedHandler(Protocol):
    """A model fed by the analytics process (delay anomalies, demand, forecasts ...)."""

    name: str

    def assign(self, partition: int) -> None:
        """Start a fresh state for the partition (a replay from offset 0 follows)."""

    def revoke(self, partition: int) -> None:
        """Drop the partition's state: another process owns it now."""

    def handle(self, partition: int, events: list[SealedEvent], replay: bool) -> None:
        """Take the next sealed events of the partition, in leaf order."""

    def drain(self, partition: int) -> list[Output]:
        """Rows that changed since the last drain (the app sends them)."""


def decode_messages(values: list[bytes], where: str) -> list[SealedEvent]:
    """Sealed events of several `ledger.entries` values; a malformed bundle is logged and skipped."""
    out: list[SealedEvent] = []
    for value in values:
        try:
            out.extend(decode_bundle(value))
        except InvalidChallenge as exc:
            log.error("skipping a malformed ledger.entries message on %s: %s", where, exc)
    return out


class PartitionReplay:
    """Reads one `ledger.entries` partition from offset 0 up to (not including) an offset, or its end."""

    def __init__(self, bootstrap: str, topic: str, chunk: int = 200) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.chunk = chunk

    async def __call__(self, partition: int, until: int | None,
                       feed: Callable[[list[bytes]], Awaitable[None]]) -> int:
        """Hand every value below `until` (None: the partition's end now) to `feed` in chunks; return `until`."""
        if until is not None and until <= 0:
            return 0
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                    client_id="provenance-analytics-replay",
                                    max_partition_fetch_bytes=8 * 1024 * 1024)
        await consumer.start()
        read = 0
        try:
            tp = TopicPartition(self.topic, partition)
            consumer.assign([tp])
            if until is None:
                until = int((await consumer.end_offsets([tp]))[tp])
                if until <= 0:
                    return 0
            await consumer.seek_to_beginning(tp)
            idle = 0
            while True:
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=self.chunk)
                messages = [m for m in batch.get(tp, []) if m.offset < until]
                if messages:
                    idle = 0
                    read += len(messages)
                    await feed([m.value for m in messages])
                    if messages[-1].offset >= until - 1:
                        break
                else:
                    if await consumer.position(tp) >= until:
                        break
                    idle += 1
                    if idle % 10 == 0:
                        log.warning("replay of %s[%d] waits for offset %d", self.topic, partition, until - 1)
        finally:
            await consumer.stop()
        log.info("replayed %d messages of %s[%d] (offsets below %d)", read, self.topic, partition, until)
        return until
