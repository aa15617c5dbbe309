"""`provenance produce --file` with EPCIS files: documents and NDJSON become one-event records; others pass by."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.epcis_file import epcis_records
from pipeline.errors import InvalidEvent

EXAMPLES = Path(__file__).resolve().parents[1] / "vectors" / "epcis" / "examples"


def test_a_document_becomes_one_record_per_event(tmp_path: Path) -> None:
    path = EXAMPLES / "Example_9.6.1-ObjectEvent.jsonld"
    records = epcis_records(path)
    assert records is not None and len(records) == 2
    doc = json.loads(path.read_text())
    for (key, value), event in zip(records, doc["epcisBody"]["eventList"]):
        one = json.loads(value)
        assert one["epcisBody"]["eventList"] == [event] and one["@context"] == doc["@context"]
        assert key == b"https://id.gs1.org/01/10614141073464/21/" + event["epcList"][0].rsplit(".", 1)[1].encode()


def test_ndjson_of_events_and_documents(tmp_path: Path) -> None:
    doc = json.loads((EXAMPLES / "Example_9.6.2-ObjectEvent.jsonld").read_text())
    event = {**doc["epcisBody"]["eventList"][0], "@context": doc["@context"]}
    path = tmp_path / "events.ndjson"
    path.write_text(json.dumps(event) + "\n\n" + json.dumps(doc) + "\n")
    records = epcis_records(path)
    assert records is not None and [json.loads(v) for _, v in records][0] == event
    assert len(records) == 2


def test_shipment_jsonl_is_not_epcis(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"event_id": "e1", "shipment_id": "s"}\n')
    assert epcis_records(path) is None
    assert epcis_records(Path("-")) is None


def test_an_invalid_event_refuses_the_file(tmp_path: Path) -> None:
    doc = json.loads((EXAMPLES / "Example_9.6.1-ObjectEvent.jsonld").read_text())
    del doc["epcisBody"]["eventList"][1]["eventTime"]
    path = tmp_path / "bad.jsonld"
    path.write_text(json.dumps(doc, indent=2))
    with pytest.raises(InvalidEvent, match="eventTime"):
        epcis_records(path)
