"""The ledger sequencer on the EPCIS topic: per-topic accept, documents as several leaves, own ledger partitions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from test_sequencer import BLOCKS, DEAD, ENTRIES, Broker, Record, run, settle

from pipeline.core import wire
from pipeline.core.canonical import canonical_bytes
from pipeline.core.epcis.record import accept_epcis_record
from pipeline.core.merkle import leaf_hash, root_of
from pipeline.settings import TopicSettings
from pipeline.worker.sequencer import LedgerSequencer

EXAMPLES = Path(__file__).resolve().parents[1] / "vectors" / "epcis" / "examples"
SOURCE = "epcis-events"


class LedgerBroker(Broker):
    """The fake broker, with blocks audited on the ledger partition `base + p`."""

    base = 4

    def covered(self, partition: int, offset: int) -> bool:
        for s in self.sent:
            if s.delivered and s.topic == BLOCKS and s.partition == self.base + partition \
                    and offset <= json.loads(s.value)["last_offset"]:
                return True
            if s.delivered and s.topic == DEAD:
                h = wire.read_headers(s.headers)
                if (h["source.partition"], h["source.offset"]) == (str(partition), str(offset)):
                    return True
        return False


def epcis_sequencer(broker: Broker, **options: Any) -> LedgerSequencer:
    args: dict[str, Any] = {"max_events": 2, "max_age": 60.0, "bundle_size": 2, "on_fatal": broker.on_fatal}
    args.update(options)
    return LedgerSequencer(source_topic=SOURCE, entries_topic=ENTRIES, blocks_topic=BLOCKS, dead_letter_topic=DEAD,
                           publisher=broker, committer=broker, load_block=lambda p: _none(), accept=accept_epcis_record,
                           ledger_partition_base=4, **args)


async def _none() -> None:
    return None


def test_ledger_partitions_give_every_log_its_own_commit_point() -> None:
    topics = TopicSettings(partitions=4)
    assert topics.ledger_partitions == 8
    assert [topics.ledger_partition("shipment-events", p) for p in range(4)] == [0, 1, 2, 3]
    assert [topics.ledger_partition("epcis-events", p) for p in range(4)] == [4, 5, 6, 7]


def test_a_document_becomes_one_leaf_per_event_in_one_block_on_its_own_partition() -> None:
    async def scenario() -> None:
        broker = LedgerBroker()
        seq = epcis_sequencer(broker, max_events=1)  # a block may not split a record's events
        doc = (EXAMPLES / "Example_9.6.1-ObjectEvent.jsonld").read_bytes()
        bare = json.loads((EXAMPLES / "Example_9.6.2-ObjectEvent.jsonld").read_bytes())
        event = {**bare["epcisBody"]["eventList"][0], "@context": bare["@context"]}
        bad = json.loads(doc)
        del bad["epcisBody"]["eventList"][1]["eventTime"]
        values = [doc, json.dumps(bad).encode(), json.dumps(event).encode()]
        await seq.handle([Record(broker, 0, i, v) for i, v in enumerate(values)])
        await settle()

        blocks = [wire.decode_block(s.value) for s in broker.sent if s.topic == BLOCKS]
        assert {s.partition for s in broker.sent if s.topic in (BLOCKS, ENTRIES)} == {4}
        assert [(b.header.first_offset, b.header.last_offset, b.header.tree_size) for b in blocks] == \
            [(0, 0, 2), (2, 2, 3)]
        assert blocks[0].header.log_id == "epcis-events/0"
        rows = [r for s in broker.sent if s.topic == ENTRIES for r in wire.decode_entries(s.value)]
        sent_events = json.loads(doc)["epcisBody"]["eventList"] + [event]
        assert [r["payload"].encode() for r in rows] == [canonical_bytes(e) for e in sent_events]
        assert blocks[1].header.root == root_of([leaf_hash(canonical_bytes(e)) for e in sent_events]).hex()
        assert [r["event_type"] for r in rows] == ["departed", "arrived", "arrived"]
        assert rows[0]["view"]["event_type"] == "departed" and rows[0]["epcis"]["type"] == "ObjectEvent"
        assert rows[2]["event_id"].startswith("ni:///sha-256;")  # no eventID: the CBV 2.0 hash

        dead = [s for s in broker.sent if s.topic == DEAD]
        assert len(dead) == 1 and dead[0].value == values[1]
        reasons = json.loads(wire.read_headers(dead[0].headers)["error.fields"])
        assert reasons[0]["field"] == "/epcisBody/eventList/1"
        assert "eventTime" in reasons[0]["message"]
        assert broker.acked() == [0, 1, 2] and broker.violations == []
    run(scenario)
