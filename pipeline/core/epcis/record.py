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
