"""Capture bodies: contexts of every shape, format checks really on, per-event errors, bad bytes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.epcis.document import InvalidCapture, decode_body, read_capture
from pipeline.core.epcis.validator import FORMAT_CHECKS, schema_errors

EXAMPLES = Path(__file__).resolve().parents[1] / "vectors" / "epcis" / "examples"
GS1 = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"


def bare_event(context: Any) -> dict[str, Any]:
    doc = json.loads((EXAMPLES / "Example_9.6.1-ObjectEvent.jsonld").read_text())
    event = dict(doc["epcisBody"]["eventList"][0], **{"@context": context})
    del event["eventID"]
    return event


@pytest.mark.parametrize("context", [GS1, [GS1, {"example": "http://ns.example.com/epcis/"}], {"@vocab": "x:"}])
def test_context_as_string_array_or_object(context: Any) -> None:
    capture = read_capture(bare_event(context))
    (event,) = capture.events
    assert capture.kind == "event" and event.id_source == "hash" and event.event_id == event.event_hash
    assert event.context == context


def test_the_context_changes_nothing_but_bare_cbv_values() -> None:
    a, b = read_capture(bare_event(GS1)).events[0], read_capture(bare_event([GS1])).events[0]
    assert a.event_hash == b.event_hash


def test_format_checks_are_on() -> None:
    from jsonschema import FormatChecker

    assert set(FORMAT_CHECKS) <= set(FormatChecker().checkers)
    event = bare_event(GS1)
    event["eventTime"] = "2005-13-45T99:00:00Z"  # matches no pattern check: only the date-time format
    assert [e.keyword for e in schema_errors(event)] == ["format"]


def test_errors_belong_to_their_event_in_document_order() -> None:
    doc = json.loads((EXAMPLES / "Example_9.6.1-ObjectEvent.jsonld").read_text())
    events = doc["epcisBody"]["eventList"]
    doc["epcisBody"]["eventList"] = [dict(events[i % 2], eventID=f"urn:uuid:00000000-0000-4000-8000-{i:012d}")
                                     for i in range(12)]
    del doc["epcisBody"]["eventList"][2]["eventTime"]
    doc["epcisBody"]["eventList"][10]["eventTimeZoneOffset"] = "+25:00"
    capture = read_capture(doc)
    assert sorted(capture.problems) == [2, 10] and len(capture.events) == 10
    assert capture.problems[10][0].pointer == "/epcisBody/eventList/10/eventTimeZoneOffset"


@pytest.mark.parametrize("raw, code", [
    (b"", 400), (b"\xef\xbb\xbf{}", 400), (b'{"a": 1, "a": 2}', 400), (b"[" * 10_000 + b"]" * 10_000, 400),
    (b'{"a": NaN}', 400), ("{}".encode("utf-16"), 400), (b"\xff", 400),
])
def test_bad_bytes_are_refused(raw: bytes, code: int) -> None:
    with pytest.raises(InvalidCapture) as caught:
        decode_body(raw)
    assert caught.value.status == code


def test_a_query_document_is_not_a_capture() -> None:
    with pytest.raises(InvalidCapture, match="query result"):
        read_capture({"type": "EPCISQueryDocument"})
