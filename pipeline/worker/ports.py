"""The seams of the ledger sequencer: what it needs of a consumed record, a producer and a committer.

Kafka is reached only through these, so tests drive the sequencer without a broker.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from pipeline.core import wire


class Record(Protocol):
    """One consumed record: what the sequencer needs of an aiokafka ConsumerRecord."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Any


class TopicPartition(Protocol):
    topic: str
    partition: int


class Publisher(Protocol):
    """Sends one record and returns an awaitable that resolves on broker delivery."""

    async def send(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Any]: ...


class Committer(Protocol):
    """Takes the consumer offsets to commit; `flush` returns once those marked so far are committed."""

    def mark(self, topic: str, partition: int, next_offset: int) -> None: ...

    async def flush(self) -> None: ...


BlockLoader = Callable[[int], Awaitable[wire.BlockMessage | None]]
