"""The CBV 2.0 event hash reproduces every reference vector; pre-hash strings are compared where given."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.epcis.digital_link import canonical_digital_link, check_digit
from pipeline.core.epcis.event_hash import document_pre_hashes, event_hash, hash_of, utc_millis

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "epcis" / "hash-vectors"
NAMES = sorted(p.stem for p in VECTORS.glob("*.jsonld"))
# Upstream pre-hash lines that do not hash to their own .hashes line (stale files upstream); the
# hashes themselves reproduce, and these lines are checked to stay inconsistent, so a fixed file shows up.
STALE_PRE_HASHES = {("epcisDocWithAllGS1Keys", 0), ("epcisDocWithCustomSchemaInContext", 1),
                    ("epcisDocWithDefaultSchemaInContext", 1)}
# The generator's `ignoreFields` is a document-level key: an event hashed on its own does not see it.
DOCUMENT_LEVEL = {"epcisDocHavingEventWithIgnoreFields", "epcisQueryDocHavingEventWithIgnoreFields"}


def events_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    body = doc["epcisBody"]
    if "eventList" in body:
        return list(body["eventList"])
    if "queryResults" in body:
        return list(body["queryResults"]["resultsBody"]["eventList"])
    return [body["event"]]


def test_every_vector_file_is_here() -> None:
    assert len(NAMES) == 22
    assert all((VECTORS / f"{n}.hashes").exists() for n in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_vector(name: str) -> None:
    doc = json.loads((VECTORS / f"{name}.jsonld").read_text(encoding="utf-8"))
    expected = (VECTORS / f"{name}.hashes").read_text(encoding="utf-8").splitlines()
    pre = document_pre_hashes(doc)
    prehashes = VECTORS / f"{name}.prehashes"
    if prehashes.exists():
        for i, (got, want) in enumerate(zip(pre, prehashes.read_text(encoding="utf-8").splitlines())):
            if (name, i) in STALE_PRE_HASHES:
                assert hash_of(want) != expected[i]
                continue
            at = next((k for k in range(min(len(got), len(want))) if got[k] != want[k]), min(len(got), len(want)))
            assert got == want, f"event {i}: pre-hash differs at {at}: {got[at:at + 80]!r} vs {want[at:at + 80]!r}"
    assert [hash_of(p) for p in pre] == expected
    if name not in DOCUMENT_LEVEL:
        assert [event_hash(e, doc.get("@context")) for e in events_of(doc)] == expected


def test_hashing_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("network access while hashing")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    event = {"type": "ObjectEvent", "action": "OBSERVE", "bizStep": "shipping", "eventTime": "2020-01-01T00:00:00Z",
             "eventTimeZoneOffset": "+00:00", "epcList": ["urn:epc:id:sgtin:0614141.107346.2017"]}
    context = ["https://example.com/unknown-context.jsonld", "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"]
    assert event_hash(event, context).startswith("ni:///sha-256;")


def test_facts_not_hashed_do_not_change_the_hash() -> None:
    event = {"type": "ObjectEvent", "action": "OBSERVE", "eventTime": "2020-01-01T00:00:00.0004Z",
             "eventTimeZoneOffset": "+00:00", "epcList": ["urn:epc:id:sgtin:0614141.107346.2017"]}
    ctx = ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"]
    base = event_hash(event, ctx)
    assert event_hash({**event, "eventID": "urn:uuid:1", "recordTime": "2021-01-01T00:00:00Z"}, ctx) == base
    assert event_hash({**event, "eventTime": "2020-01-01T01:00:00+01:00"}, ctx) == base
    assert event_hash({**event, "action": "ADD"}, ctx) != base


def test_timestamps_round_to_the_millisecond_in_utc() -> None:
    assert utc_millis("2020-01-01T00:00:00.0015+00:00") == "2020-01-01T00:00:00.002Z"
    assert utc_millis("2020-01-01T00:00:00.9996Z") == "2020-01-01T00:00:01.000Z"  # the generator fails here
    assert utc_millis("not a time") == "not a time"


def test_digital_link_normalisation() -> None:
    assert check_digit("061414112345") == 2
    assert canonical_digital_link("urn:epc:id:sscc:0614141.1234567890") == "https://id.gs1.org/00/106141412345678908"
    assert canonical_digital_link("https://example.com/01/9780345418913/10/L1/21/S1?x=1") == \
        "https://id.gs1.org/01/09780345418913/21/S1"
    assert canonical_digital_link("urn:epc:id:sgtin:bad") is None
