"""EPCIS records on the `epcis-events` topic as ledger leaves: the worker's accept function for that topic.

A record holds one EPCISDocument or one bare event. Each event becomes one
leaf, the RFC 8785 form of the event exactly as sent; the entry beside it
carries the EPCIS facts (type, CBV 2.0 hash, context, declaration) and the
derived ShipmentEvent view, so the store and the analytics need not parse
EPCIS again. A record is all or nothing: one invalid event dead-letters the
record, with every event's schema errors as reasons.
"""

from __future__ import annotations

from typing import Any

import json

from pipeline.core.epcis.digital_link import canonical_digital_link
from pipeline.core.epcis.document import CapturedEvent, decode_body, read_capture
from pipeline.core.epcis.view import shipment_view
from pipeline.core.ledger import LeafFacts
from pipeline.errors import InvalidEvent


def entry_extra(captured: CapturedEvent) -> dict[str, Any]:
    """The fields an EPCIS entry carries on `ledger.entries` beside the common ones."""
    view = shipment_view(captured)
    event = captured.event
    declaration = event.get("errorDeclaration") if isinstance(event.get("errorDeclaration"), dict) else None
    return {
        "epcis": {
            "type": captured.event_type,
            "event_hash": captured.event_hash,
            "id_source": captured.id_source,
            "context": captured.context,
            "declaration": declaration is not None,
            "corrective_ids": list(declaration.get("correctiveEventIDs") or []) if declaration else [],
        },
        "view": view,
    }


def leaf_facts(captured: CapturedEvent) -> LeafFacts:
    extra = entry_extra(captured)
    view = extra["view"]
    return LeafFacts(
        event_id=captured.event_id,
        shipment_id=view["shipment_id"] if view else "",
        event_type=view["event_type"] if view else f"epcis:{captured.event_type}",
        event_time=captured.event_time,
        extra=extra,
    )


def accept_epcis_record(raw: bytes) -> list[tuple[LeafFacts | Any, bytes]]:
    """One `epcis-events` record as its leaves, in document order; InvalidEvent names every problem."""
    capture = read_capture(decode_body(bytes(raw)))
    if capture.problems:
        errors = [{"field": e.pointer, "message": e.message, "type": e.keyword}
                  for i in sorted(capture.problems) for e in capture.problems[i]]
        raise InvalidEvent(f"{len(capture.problems)} of {capture.total} EPCIS events do not conform to the "
                           f"schema: {errors[0]['field']}: {errors[0]['message']}", errors)
    return [(leaf_facts(c), c.leaf) for c in capture.events]


def partition_key(event: dict[str, Any]) -> bytes:
    """The Kafka key that keeps related events on one partition (so in one log, in order).

    The parent (a pallet's SSCC, say) when there is one, else the first EPC of
    any list, else the first quantity class, else the business location; GS1
    keys in their canonical Digital Link form, so a URN and a Digital Link of
    the same item share a partition. An errorDeclaration repeats its original's
    fields, so it lands beside it.

    >>> partition_key({"epcList": ["urn:epc:id:sgtin:0614141.107346.2017"]})
    b'https://id.gs1.org/01/10614141073464/21/2017'
    """
    candidates: list[Any] = [event.get("parentID")]
    for name in ("epcList", "childEPCs", "inputEPCList", "outputEPCList"):
        candidates.extend(event.get(name) or [])
    for name in ("quantityList", "childQuantityList", "inputQuantityList", "outputQuantityList"):
        candidates.extend(q.get("epcClass") for q in event.get(name) or [] if isinstance(q, dict))
    for name in ("bizLocation", "readPoint"):
        where = event.get(name)
        candidates.append(where.get("id") if isinstance(where, dict) else None)
    for c in candidates:
        if isinstance(c, str) and c:
            return (canonical_digital_link(c) or c).encode()
    return str(event.get("eventID") or event.get("eventTime") or "").encode()


def event_record(document: dict[str, Any] | None, event: dict[str, Any]) -> bytes:
    """The `epcis-events` value for one captured event: a one-event EPCISDocument keeping the
    document's own fields (its @context above all), or the bare event as sent."""
    if document is None:
        return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
    one = {k: v for k, v in document.items() if k != "epcisBody"}
    one["epcisBody"] = {"eventList": [event]}
    return json.dumps(one, ensure_ascii=False, separators=(",", ":")).encode()
