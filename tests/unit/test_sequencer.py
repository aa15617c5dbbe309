"""LedgerSequencer against a fake broker: what is sent, in which order, and when offsets are committed.

The fake publisher hands back a future per send that the test resolves or
fails, so every interleaving is chosen by the test, not by timing. Every
commit is checked when it is marked: the committed offset may pass an accepted
record only once a block covering it was delivered, a rejected one only once
its dead letter was. `acked(p)` lists the offsets the committed offset passed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
from factories import as_bytes, make_event, make_events

from pipeline.core import wire
from pipeline.core.blocks import GENESIS_HASH, verify_link
from pipeline.core.ledger import accept
from pipeline.core.merkle import leaf_hash, root_of
from pipeline.worker import sequencer as sequencer_module
from pipeline.worker.sequencer import LedgerSequencer

SOURCE = "shipment-events"
ENTRIES = "ledger.entries"
BLOCKS = "ledger.blocks"
DEAD = "events.dead-letter"
CREATED = "2026-03-01T09:00:00.000Z"


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None
    headers: list[tuple[str, bytes]] | None
    delivery: asyncio.Future[Any]

    @property
    def delivered(self) -> bool:
        return self.delivery.done() and not self.delivery.cancelled() and self.delivery.exception() is None


@dataclass
class Broker:
    """A fake Kafka: records sends, lets the test deliver or fail them, and audits every ack."""

    auto: bool = True
    sent: list[Sent] = field(default_factory=list)
    commits: dict[int, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    fatal: int = 0
    flushes: int = 0

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.auto:
            delivery.set_result(None)
        self.sent.append(Sent(topic, key, value, partition, headers, delivery))
        return delivery

    def on_fatal(self) -> None:
        self.fatal += 1

    # -- what was sent --

    def on(self, topic: str, partition: int | None = 0) -> list[Sent]:
        return [s for s in self.sent if s.topic == topic and (topic == DEAD or s.partition == partition)]

    def blocks(self, partition: int = 0) -> list[wire.BlockMessage]:
        return [wire.decode_block(s.value) for s in self.on(BLOCKS, partition)]

    def entries(self, partition: int = 0) -> list[dict[str, Any]]:
        return [row for s in self.on(ENTRIES, partition) for row in wire.decode_entries(s.value)]

    def deliver(self, sends: list[Sent]) -> None:
        for s in sends:
            if not s.delivery.done():
                s.delivery.set_result(None)

    def deliver_all(self) -> None:
        self.deliver(self.sent)

    # -- acks --

    def covered(self, partition: int, offset: int) -> bool:
        for s in self.sent:
            if not s.delivered:
                continue
            if s.topic == BLOCKS and s.partition == partition and offset <= json.loads(s.value)["last_offset"]:
                return True
            if s.topic == DEAD:
                h = wire.read_headers(s.headers)
                if (h["source.partition"], h["source.offset"]) == (str(partition), str(offset)):
                    return True
        return False

    def mark(self, topic: str, partition: int, next_offset: int) -> None:
        previous = self.commits.get(partition, 0)
        if next_offset < previous:
            self.violations.append(f"partition {partition}: commit moved back from {previous} to {next_offset}")
        for offset in range(previous, next_offset):
            if not self.covered(partition, offset):
                self.violations.append(f"offset {offset} of partition {partition} committed before delivery")
        self.commits[partition] = max(previous, next_offset)

    async def flush(self) -> None:
        self.flushes += 1

    @property
    def acks(self) -> list[int]:
        return [o for p in self.commits for o in self.acked(p)]

    def acked(self, partition: int = 0) -> list[int]:
        return list(range(self.commits.get(partition, 0)))


@dataclass
class Record:
    broker: Broker
    partition: int
    offset: int
    value: bytes
    key: bytes | None = None
    headers: Any = None


def records(broker: Broker, values: list[bytes], first_offset: int = 0, partition: int = 0) -> list[Record]:
    return [Record(broker, partition, first_offset + i, v, key=b"k%d" % (first_offset + i))
            for i, v in enumerate(values)]


def event_values(n: int, seed: int = 0) -> list[bytes]:
    return [as_bytes(e) for e in make_events(n, seed=seed)]


Loader = Callable[[int], Awaitable[wire.BlockMessage | None]]


def no_block() -> Loader:
    async def load(p: int) -> wire.BlockMessage | None:
        return None
    return load


def sequencer(broker: Broker, load_block: Loader | None = None, **options: Any) -> LedgerSequencer:
    args: dict[str, Any] = {"max_events": 3, "max_age": 60.0, "bundle_size": 2, "on_fatal": broker.on_fatal}
    args.update(options)
    return LedgerSequencer(
        source_topic=SOURCE, entries_topic=ENTRIES, blocks_topic=BLOCKS, dead_letter_topic=DEAD,
        publisher=broker, committer=broker, load_block=load_block or no_block(), **args,
    )


async def settle() -> None:
    """Let every background publish run until it waits on a delivery the test has not made."""
    for _ in range(100):
        await asyncio.sleep(0)


async def collect_failures(seq: LedgerSequencer) -> None:
    """Await every failed publish, so none is left to report "exception never retrieved" when collected."""
    for state in seq.partitions.values():
        while state.publishing:
            try:
                await seq.flush(state)
            except RuntimeError:
                pass


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


@pytest.fixture(autouse=True)
def fixed_created_at(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks sealed at different wall-clock times would differ in created_at alone."""
    monkeypatch.setattr(sequencer_module, "now_utc", lambda: CREATED)


def leaf_hashes_of(values: list[bytes]) -> list[bytes]:
    return [leaf_hash(accept(v)[1]) for v in values]


# ---- valid and rejected records -------------------------------------------------------


def test_valid_records_become_entries_then_blocks() -> None:
    async def scenario() -> None:
        broker = Broker()
        seq = sequencer(broker, max_events=4, bundle_size=3)
        values = event_values(9)
        await seq.handle(records(broker, values))
        await settle()

        blocks = broker.blocks()
        assert [b.header.height for b in blocks] == [0, 1]  # the ninth event waits for the next block
        assert [b.header.tree_size for b in blocks] == [4, 8]
        assert [(b.header.first_offset, b.header.last_offset) for b in blocks] == [(0, 3), (4, 7)]
        hashes = leaf_hashes_of(values)
        for b in blocks:
            assert b.header.log_id == f"{SOURCE}/0"
            assert b.header.root == root_of(hashes[:b.header.tree_size]).hex()
        verify_link(None, blocks[0].header)
        verify_link(blocks[0].header, blocks[1].header)

        rows = broker.entries()
        assert [r["leaf_index"] for r in rows] == list(range(8))
        assert [r["event_id"] for r in rows] == [json.loads(v)["event_id"] for v in values[:8]]
        assert [len(wire.decode_entries(s.value)) for s in broker.on(ENTRIES)] == [3, 1, 3, 1]
        assert all(s.key == f"{SOURCE}/0".encode() for s in broker.on(ENTRIES) + broker.on(BLOCKS))

        # each block goes out after its own entries
        order = [(s.topic, s.value) for s in broker.sent]
        for b, sent_block in zip(blocks, broker.on(BLOCKS)):
            at = order.index((BLOCKS, sent_block.value))
            entry_positions = [i for i, (t, v) in enumerate(order) if t == ENTRIES
                               and wire.decode_entries(v)[0]["leaf_index"] < b.header.tree_size]
            assert max(entry_positions) < at

        assert broker.acked() == list(range(8))
        assert broker.violations == []
        assert seq.counters.accepted == 9 and seq.counters.blocks == 2
    run(scenario)


def test_partitions_keep_separate_logs() -> None:
    async def scenario() -> None:
        broker = Broker()
        seq = sequencer(broker, max_events=2)
        batch = records(broker, event_values(4, seed=1), partition=0) + \
            records(broker, event_values(2, seed=2), first_offset=50, partition=5)
        await seq.handle(batch)
        await settle()
        assert [b.header.log_id for b in broker.blocks(0)] == [f"{SOURCE}/0"] * 2
        assert [b.header.log_id for b in broker.blocks(5)] == [f"{SOURCE}/5"]
        assert broker.blocks(5)[0].header.height == 0
        assert (broker.blocks(5)[0].header.first_offset, broker.blocks(5)[0].header.last_offset) == (50, 51)
        assert broker.commits == {0: 4, 5: 52}
        assert broker.violations == []
    run(scenario)


def test_rejected_records_go_to_the_dead_letter_topic() -> None:
    async def scenario() -> None:
        broker = Broker(auto=False)
        seq = sequencer(broker, max_events=10)
        good = event_values(3)
        bad = [b"{not json", as_bytes(make_event(event_id="bad-1", mode="truck")), b"\xff\xfe"]
        batch = records(broker, [good[0], bad[0], good[1], bad[1], bad[2], good[2]])
        handling = asyncio.ensure_future(seq.handle(batch))
        await settle()

        dead = broker.on(DEAD)
        assert [s.value for s in dead] == bad  # the original bytes, untouched
        assert [s.key for s in dead] == [b"k1", b"k3", b"k4"]
        assert all(s.partition is None for s in dead)
        headers = [wire.read_headers(s.headers) for s in dead]
        assert [h["source.offset"] for h in headers] == ["1", "3", "4"]
        assert all(h["source.topic"] == SOURCE and h["source.partition"] == "0" for h in headers)
        assert "not JSON" in headers[0]["error"]
        assert [e["field"] for e in json.loads(headers[1]["error.fields"])] == ["mode"]
        assert "must be UTF-8" in headers[2]["error"]  # b"\xff\xfe" is a UTF-16 byte order mark

        await handling
        assert broker.acks == []  # nothing committed before its dead letter is delivered
        broker.deliver(dead)
        await settle()
        # Delivered, but offset 0 is not sealed yet: the committed offset never passes an unsealed event.
        assert broker.acked() == []
        draining = asyncio.ensure_future(seq.drain())  # seals offsets 0, 2 and 5
        for _ in range(10):  # entries first, then the block: deliver each as it is sent
            await settle()
            broker.deliver_all()
        await draining
        await settle()
        assert broker.acked() == [0, 1, 2, 3, 4, 5]

        await seq.seal_due()  # max_age not reached: nothing sealed
        assert seq.counters.rejected == 3 and seq.counters.accepted == 3
        seq.max_age = 0
        await seq.seal_due()
        for _ in range(2):  # the entries, then the block
            await settle()
            broker.deliver_all()
        await settle()
        (block,) = broker.blocks()
        assert block.header.tree_size == 3  # rejected records take no leaf
        assert (block.header.first_offset, block.header.last_offset) == (0, 5)
        assert [r["kafka_offset"] for r in broker.entries()] == [0, 2, 5]
        assert broker.acked() == [0, 1, 2, 3, 4, 5]
        assert broker.violations == []
    run(scenario)


# ---- acks wait for delivery ----------------------------------------------------------


def test_no_record_is_acked_before_its_block_is_delivered() -> None:
    async def scenario() -> None:
        broker = Broker(auto=False)
        seq = sequencer(broker, max_events=3, bundle_size=2)
        await seq.handle(records(broker, event_values(6)))
        await settle()
        assert broker.on(BLOCKS) == [] and broker.acks == []
        broker.deliver(broker.on(ENTRIES))
        await settle()
        (first,) = broker.on(BLOCKS)  # block 1 waits for block 0's delivery
        assert broker.acks == []
        broker.deliver(broker.on(ENTRIES))
        await settle()
        assert len(broker.on(BLOCKS)) == 1 and broker.acks == []
        broker.deliver([first])
        await settle()
        assert broker.acked() == [0, 1, 2]
        second = broker.on(BLOCKS)[1]
        assert json.loads(second.value)["height"] == 1
        broker.deliver([second])
        await settle()
        assert broker.acked() == [0, 1, 2, 3, 4, 5]
        assert broker.violations == []
    run(scenario)


@pytest.mark.parametrize("failing", ["entries", "block"])
def test_records_behind_a_failed_delivery_are_never_acked(failing: str) -> None:
    async def scenario() -> None:
        broker = Broker(auto=False)
        seq = sequencer(broker, max_events=3, bundle_size=10)
        await seq.handle(records(broker, event_values(6)))
        await settle()
        entries = broker.on(ENTRIES)
        if failing == "entries":
            entries[0].delivery.set_exception(RuntimeError("broker down"))
            broker.deliver(entries[1:])
        else:
            broker.deliver(entries)
            await settle()
            broker.on(BLOCKS)[0].delivery.set_exception(RuntimeError("broker down"))
        await settle()
        assert broker.fatal >= 1
        assert len(broker.on(BLOCKS)) == (0 if failing == "entries" else 1)  # block 1 never sent

        # the worker is stopping; whatever it still handles must not be acked either
        try:
            await seq.handle(records(broker, event_values(9)[6:], first_offset=6))
        except RuntimeError:
            pass
        broker.deliver_all()
        await settle()
        assert broker.acks == []
        assert [b.header.height for b in broker.blocks()] == ([] if failing == "entries" else [0])
        assert broker.violations == []
        await collect_failures(seq)
    run(scenario)


def test_blocks_are_sent_in_chain_order_when_deliveries_resolve_out_of_order() -> None:
    async def scenario() -> None:
        broker = Broker(auto=False)
        seq = sequencer(broker, max_events=2, bundle_size=1)
        await seq.handle(records(broker, event_values(8)))
        await settle()
        entries = broker.on(ENTRIES)
        assert len(entries) == 8
        broker.deliver(entries[2:][::-1])  # every entry but block 0's, newest first
        await settle()
        assert broker.on(BLOCKS) == []
        broker.deliver(entries[:2])
        for expected_height in range(4):
            await settle()
            blocks = broker.on(BLOCKS)
            assert len(blocks) == expected_height + 1
            broker.deliver(blocks[-1:])
        await settle()
        headers = [b.header for b in broker.blocks()]
        assert [h.height for h in headers] == [0, 1, 2, 3]
        for prev, block in zip([None, *headers], headers):
            verify_link(prev, block)
        assert broker.acked() == list(range(8))
        assert broker.violations == []
    run(scenario)


def test_redelivered_record_is_not_acked_before_its_block_is_delivered() -> None:
    async def scenario() -> None:
        broker = Broker(auto=False)
        seq = sequencer(broker, max_events=3)
        values = event_values(3)
        await seq.handle(records(broker, values))
        await seq.handle(records(broker, values))  # the same offsets again, block 0 still in flight
        await settle()
        assert seq.counters.replayed == 3
        assert broker.acks == []
        assert broker.violations == []
    run(scenario)


# ---- restart: the last delivered block is the commit point ---------------------------


def commit_point(broker: Broker, partition: int = 0) -> Loader:
    """load_block as the worker reads it: the last message of ledger.blocks partition p."""
    async def load(p: int) -> wire.BlockMessage | None:
        sent = [s for s in broker.on(BLOCKS, p) if s.delivered]
        return wire.decode_block(sent[-1].value) if sent else None
    return load


@pytest.mark.parametrize("handled_before_crash", [4, 6, 7])
def test_restart_skips_replays_and_continues_the_same_chain(handled_before_crash: int) -> None:
    async def scenario() -> None:
        values = event_values(12)

        reference = Broker()
        await sequencer(reference).handle(records(reference, values))
        await settle()
        expected = reference.blocks()
        assert len(expected) == 4

        broker = Broker()
        first = sequencer(broker)
        await first.handle(records(broker, values[:handled_before_crash]))
        await settle()
        before = broker.blocks()
        # crash: unsealed records are lost with the process; the consumer replays from the start
        second = sequencer(broker, load_block=commit_point(broker))
        await second.handle(records(broker, values))
        await settle()

        after = broker.blocks()[len(before):]
        assert [b.header for b in before + after] == [b.header for b in expected]
        assert after[0].header.prev_block_hash == before[-1].block_hash
        assert [b.frontier for b in after] == [b.frontier for b in expected[len(before):]]
        replayed = before[-1].header.last_offset + 1
        assert second.counters.replayed == replayed
        assert second.counters.resumed_ahead == 0
        assert [r["leaf_index"] for r in broker.entries()] == list(range(12))  # no event recorded twice
        assert broker.acked() == list(range(12))
        assert broker.violations == []
    run(scenario)


def test_restart_from_the_committed_offset() -> None:
    async def scenario() -> None:
        values = event_values(7)
        broker = Broker()
        await sequencer(broker).handle(records(broker, values[:5]))
        await settle()
        second = sequencer(broker, load_block=commit_point(broker))
        await second.handle(records(broker, values[3:], first_offset=3))
        await settle()
        heights = [b.header.height for b in broker.blocks()]
        assert heights == [0, 1]
        assert broker.blocks()[1].header.tree_size == 6
        assert [r["kafka_offset"] for r in broker.entries()] == list(range(6))
        assert second.counters.replayed == 0 and second.counters.resumed_ahead == 0
    run(scenario)


def test_restart_after_trailing_dead_letters_resumes_past_them() -> None:
    async def scenario() -> None:
        broker = Broker()
        values = event_values(3) + [b"{broken", b"{broken"] + event_values(6)[3:]
        await sequencer(broker).handle(records(broker, values[:5]))
        await settle()
        committed = len(broker.acked())  # the consumer resumes after the highest contiguous ack
        assert committed == 5
        second = sequencer(broker, load_block=commit_point(broker))
        await second.handle(records(broker, values[committed:], first_offset=committed))
        await settle()
        # The committed offset passed the last block only over the dead letters: a benign jump,
        # and the chain continues with the next valid events and nothing twice.
        assert second.counters.resumed_ahead == 1
        assert [r["leaf_index"] for r in broker.entries()] == list(range(len(broker.entries())))
        assert broker.violations == []
    run(scenario)


# ---- revocation and the timer --------------------------------------------------------


def test_revoke_waits_for_in_flight_publishes() -> None:
    async def scenario() -> None:
        broker = Broker(auto=False)
        loads: list[int] = []

        async def load(p: int) -> wire.BlockMessage | None:
            loads.append(p)
            return await commit_point(broker)(p)

        seq = sequencer(broker, load_block=load, max_events=3)
        await seq.handle(records(broker, event_values(5)))
        await settle()
        revoking = asyncio.ensure_future(seq.revoke([0]))
        await settle()
        assert not revoking.done()
        broker.deliver(broker.on(ENTRIES))
        await settle()
        assert not revoking.done()
        broker.deliver(broker.on(BLOCKS))
        await settle()
        assert revoking.done()
        await revoking
        assert broker.acked() == [0, 1, 2]  # the two unsealed records are left for the next owner

        sent = len(broker.sent)
        await seq.handle(records(broker, event_values(6)[5:], first_offset=5))
        await seq.seal_due()
        await settle()
        assert len(broker.sent) == sent and broker.acked() == [0, 1, 2]

        seq.assign([0])
        broker.auto = True
        await seq.handle(records(broker, event_values(6)[3:], first_offset=3))
        await settle()
        assert loads == [0, 0]
        assert [b.header.height for b in broker.blocks()] == [0, 1]
        assert broker.acked() == [0, 1, 2, 3, 4, 5]
        assert broker.violations == []
    run(scenario)


def test_revoke_during_load_publishes_nothing() -> None:
    async def scenario() -> None:
        broker = Broker()
        release = asyncio.Event()

        async def slow_load(p: int) -> wire.BlockMessage | None:
            await release.wait()
            return None

        seq = sequencer(broker, load_block=slow_load, max_events=1)
        handling = asyncio.ensure_future(seq.handle(records(broker, event_values(2))))
        await settle()
        await seq.revoke([0])
        release.set()
        await handling
        await settle()
        assert broker.sent == []
        assert 0 not in seq.partitions
    run(scenario)


def test_a_caught_up_partition_is_sealed_at_caught_up_age() -> None:
    async def scenario() -> None:
        now = [100.0]
        broker = Broker()
        seq = sequencer(broker, max_events=1000, max_age=5.0, caught_up_age=0.1, clock=lambda: now[0])
        await seq.handle_partition(0, records(broker, event_values(2)), caught_up=False)
        now[0] = 100.2
        await seq.seal_due()  # past caught_up_age, but more records were waiting on the broker
        await settle()
        assert broker.on(BLOCKS) == []
        await seq.handle_partition(0, records(broker, event_values(3)[2:], first_offset=2), caught_up=True)
        await settle()
        assert [b.header.tree_size for b in broker.blocks()] == [3]  # cut at the end of the poll
        now[0] = 101.0
        await seq.handle_partition(0, records(broker, event_values(4)[3:], first_offset=3), caught_up=True)
        now[0] = 101.05
        await seq.seal_due()
        await settle()
        assert len(broker.on(BLOCKS)) == 1  # younger than caught_up_age
        now[0] = 101.2
        await seq.seal_due()
        await settle()
        assert [b.header.tree_size for b in broker.blocks()] == [3, 4]
        assert broker.acked() == [0, 1, 2, 3]
        assert broker.violations == []
    run(scenario)


def test_seal_due_seals_after_max_age() -> None:
    async def scenario() -> None:
        now = [100.0]
        broker = Broker()
        seq = sequencer(broker, max_events=1000, max_age=5.0, clock=lambda: now[0])
        await seq.handle(records(broker, event_values(2)))
        now[0] = 104.9
        await seq.seal_due()
        await settle()
        assert broker.on(BLOCKS) == []
        now[0] = 105.0
        await seq.seal_due()
        await settle()
        assert [b.header.tree_size for b in broker.blocks()] == [2]
        assert broker.acked() == [0, 1]

        now[0] = 106.0
        await seq.handle(records(broker, event_values(4)[2:], first_offset=2))
        now[0] = 110.5
        await seq.seal_due()  # the clock restarts at the first event after a seal
        await settle()
        assert len(broker.on(BLOCKS)) == 1
        now[0] = 111.0
        await seq.seal_due()
        await seq.seal_due()
        await settle()
        assert [b.header.tree_size for b in broker.blocks()] == [2, 4]
        assert broker.violations == []
    run(scenario)


def test_offset_jump_is_counted_and_the_record_is_kept() -> None:
    async def scenario() -> None:
        broker = Broker()
        seq = sequencer(broker, max_events=3)
        values = event_values(3)
        batch = records(broker, values[:2]) + records(broker, values[2:], first_offset=9)
        await seq.handle(batch)
        await settle()
        assert seq.counters.resumed_ahead == 1
        (block,) = broker.blocks()
        assert (block.header.first_offset, block.header.last_offset, block.header.tree_size) == (0, 9, 3)
    run(scenario)


def test_block_genesis_link() -> None:
    async def scenario() -> None:
        broker = Broker()
        await sequencer(broker, max_events=1).handle(records(broker, event_values(1)))
        await settle()
        (block,) = broker.blocks()
        assert block.header.prev_block_hash == GENESIS_HASH and block.header.created_at == CREATED
    run(scenario)


# ---- the batch path: generations and commits -----------------------------------------


def test_records_of_an_earlier_generation_are_left_for_a_re_read() -> None:
    async def scenario() -> None:
        broker = Broker()
        generation = [3]
        seq = sequencer(broker, max_events=2, current_generation=lambda: generation[0])
        values = event_values(4)
        await seq.handle_partition(0, records(broker, values[:2]), 3)
        generation[0] = 4  # a rebalance happened between the fetch and the handling
        await seq.handle_partition(0, records(broker, values[2:], first_offset=2), 3)
        await settle()
        assert seq.counters.stale == 2 and seq.counters.accepted == 2
        assert [b.header.tree_size for b in broker.blocks()] == [2]
        assert broker.commits == {0: 2}
        # read again under the new generation, they continue the chain
        await seq.handle_partition(0, records(broker, values[2:], first_offset=2), 4)
        await settle()
        assert [b.header.tree_size for b in broker.blocks()] == [2, 4] and broker.commits == {0: 4}
        assert broker.violations == []
    run(scenario)


def test_trailing_dead_letters_are_committed_once_delivered_and_after_earlier_blocks() -> None:
    async def scenario() -> None:
        broker = Broker(auto=False)
        seq = sequencer(broker, max_events=2)
        await seq.handle(records(broker, event_values(2) + [b"{broken", b"{broken"]))
        await settle()
        assert broker.commits == {}
        broker.deliver(broker.on(DEAD))  # the dead letters first: the block below them is not delivered yet
        await settle()
        assert broker.commits == {}
        broker.deliver(broker.on(ENTRIES))
        await settle()
        broker.deliver(broker.on(BLOCKS))
        await settle()
        assert broker.commits == {0: 4}
        assert broker.violations == []
    run(scenario)


def test_revoke_flushes_the_commits() -> None:
    async def scenario() -> None:
        broker = Broker()
        seq = sequencer(broker, max_events=2)
        await seq.handle(records(broker, event_values(2)))
        await settle()
        await seq.revoke([0])
        assert broker.flushes == 1 and broker.commits == {0: 2}
    run(scenario)


def test_handle_poll_hands_each_partition_of_its_topic() -> None:
    async def scenario() -> None:
        @dataclass(frozen=True)
        class TP:
            topic: str
            partition: int

        broker = Broker()
        seq = sequencer(broker, max_events=2)
        values = event_values(4)
        await seq.handle_poll({TP(SOURCE, 0): records(broker, values[:2]),
                               TP(SOURCE, 1): records(broker, values[2:], partition=1),
                               TP("other", 0): records(broker, values[:2])}, None)
        await settle()
        assert broker.commits == {0: 2, 1: 2}
    run(scenario)


def test_a_broker_that_lost_its_data_gets_a_new_epoch_of_the_log_not_a_fork(tmp_path: Any) -> None:
    """The commit point is gone but this machine delivered blocks: the log goes on as its next epoch."""
    from pipeline.worker.commit_points import CommitPoints

    async def scenario() -> None:
        before = Broker()
        first = sequencer(before, commit_points=CommitPoints(tmp_path / "cp"))
        await first.handle(records(before, event_values(7)))
        await settle()
        assert [b.header.log_id for b in before.blocks()] == [f"{SOURCE}/0"] * 2

        # The broker restarts empty: no commit point, and the topic's offsets start at 0 again.
        lost = Broker()
        second = sequencer(lost, commit_points=CommitPoints(tmp_path / "cp"))
        fresh = event_values(5, seed=1)
        await second.handle(records(lost, fresh))
        await settle()
        epoch = lost.blocks()
        assert [b.header.log_id for b in epoch] == [f"{SOURCE}@1/0"]
        assert (epoch[0].header.height, epoch[0].header.first_offset, epoch[0].header.last_offset) == (0, 0, 2)
        verify_link(None, epoch[0].header)  # a chain of its own, from genesis
        assert {r["log_id"] for r in lost.entries()} == {f"{SOURCE}@1/0"}
        assert [r["leaf_index"] for r in lost.entries()] == [0, 1, 2]
        assert second.log_id(0) == f"{SOURCE}@1/0"

        # A restart within the new epoch resumes it from its own commit point.
        third = sequencer(lost, load_block=commit_point(lost), commit_points=CommitPoints(tmp_path / "cp"))
        await third.handle(records(lost, fresh + event_values(1, seed=2)))
        await settle()
        again = lost.blocks()
        assert [(b.header.log_id, b.header.height) for b in again] == [(f"{SOURCE}@1/0", 0), (f"{SOURCE}@1/0", 1)]
        verify_link(again[0].header, again[1].header)
        assert third.counters.replayed == 3 and lost.violations == []
    run(scenario)
