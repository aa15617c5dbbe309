"""The analytics feeder: a newly assigned partition is replayed to its end without waiting for live messages,
and a live message the replay already covered is not handled twice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from pipeline.analytics.app import Feeder
from pipeline.analytics.feed import Output
from pipeline.core.sealed import SealedEvent


def bundle(partition: int, leaf: int) -> bytes:
    event = {"event_id": f"e{partition}-{leaf}", "shipment_id": "s", "event_type": "created",
             "event_time": "2026-03-01T08:00:00Z"}
    body = {"log_id": f"log/{partition}", "entries": [{"log_id": f"log/{partition}", "leaf_index": leaf,
                                                       "payload": json.dumps(event)}]}
    return json.dumps(body).encode()


class Log:
    """A fake `ledger.entries`: partition -> message values; replays like `PartitionReplay`."""

    def __init__(self, sizes: dict[int, int]) -> None:
        self.values = {p: [bundle(p, i) for i in range(n)] for p, n in sizes.items()}
        self.calls: list[tuple[int, int | None]] = []
        self.fail = 0

    async def __call__(self, partition: int, until: int | None,
                      feed: Callable[[list[bytes]], Awaitable[None]]) -> int:
        self.calls.append((partition, until))
        if self.fail:
            self.fail -= 1
            raise ConnectionError("broker away")
        end = len(self.values[partition]) if until is None else until
        for i in range(0, end, 2):
            await asyncio.sleep(0)
            await feed(self.values[partition][i:min(i + 2, end)])
        return end


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.leaves: dict[int, list[int]] = {}
        self.drains: dict[int, int] = {}

    def assign(self, partition: int) -> None:
        self.leaves[partition] = []

    def revoke(self, partition: int) -> None:
        self.leaves.pop(partition, None)

    def handle(self, partition: int, events: list[SealedEvent], replay: bool) -> None:
        self.leaves[partition].extend(e.leaf_index for e in events)

    def drain(self, partition: int) -> list[Output]:
        self.drains[partition] = self.drains.get(partition, 0) + 1
        return []


async def no_send(o: Output) -> Any:
    raise AssertionError("nothing to send")


def test_assigned_partitions_are_replayed_to_their_end_without_a_live_message() -> None:
    async def run() -> tuple[Recorder, Feeder]:
        rec = Recorder()
        feeder = Feeder([rec], Log({0: 5, 1: 0, 2: 3}), no_send)  # type: ignore[arg-type]
        feeder.catch_up_soon(feeder.assign([0, 1, 2]))
        while feeder.tasks:
            await asyncio.sleep(0.01)
        return rec, feeder

    rec, feeder = asyncio.run(run())
    assert rec.leaves == {0: [0, 1, 2, 3, 4], 1: [], 2: [0, 1, 2]}
    assert feeder.next_offset == {0: 5, 1: 0, 2: 3}
    assert set(rec.drains) == {0, 1, 2}  # every partition drained once, the empty one too


def test_live_messages_the_replay_covered_are_skipped_and_later_ones_handled() -> None:
    async def run() -> Recorder:
        log = Log({0: 6})
        rec = Recorder()
        feeder = Feeder([rec], log, no_send)  # type: ignore[arg-type]
        feeder.catch_up_soon(feeder.assign([0]))
        await asyncio.sleep(0)
        # the consumer resumes at a committed offset (3) below the end the replay reads to (6)
        await feeder.feed(0, [(3, log.values[0][3]), (4, log.values[0][4]), (5, log.values[0][5])])
        log.values[0].append(bundle(0, 6))
        await feeder.feed(0, [(5, log.values[0][5]), (6, log.values[0][6])])
        return rec

    rec = asyncio.run(run())
    assert rec.leaves[0] == [0, 1, 2, 3, 4, 5, 6]


def test_a_live_message_first_replays_up_to_itself() -> None:
    async def run() -> Recorder:
        log = Log({0: 4})
        rec = Recorder()
        feeder = Feeder([rec], log, no_send)  # type: ignore[arg-type]
        feeder.assign([0])  # no background catch-up: the live path alone
        await feeder.feed(0, [(2, log.values[0][2]), (3, log.values[0][3])])
        assert log.calls == [(0, 2)]
        return rec

    assert asyncio.run(run()).leaves[0] == [0, 1, 2, 3]


def test_a_failed_replay_is_retried_and_a_revoked_partition_is_dropped() -> None:
    async def run() -> tuple[Recorder, Feeder, Log]:
        log = Log({0: 3, 1: 2})
        log.fail = 1
        rec = Recorder()
        feeder = Feeder([rec], log, no_send)  # type: ignore[arg-type]
        feeder.catch_up_soon(feeder.assign([0]), retry=0.01)
        while feeder.tasks:
            await asyncio.sleep(0.01)
        feeder.catch_up_soon(feeder.assign([1]))
        feeder.revoke([1])  # before its replay ran
        while feeder.tasks:
            await asyncio.sleep(0.01)
        return rec, feeder, log

    rec, feeder, log = asyncio.run(run())
    assert rec.leaves == {0: [0, 1, 2]}
    assert feeder.next_offset == {0: 3}
    assert log.calls == [(0, None), (0, None)]
