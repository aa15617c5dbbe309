"""A capture body: an EPCISDocument or one bare event, parsed, validated and split into events.

Each event keeps the exact JSON object the producer sent (its leaf is the RFC
8785 form of that object), the `@context` it was read with, its identity (the
producer's `eventID`, else the CBV 2.0 event hash) and the hash itself.
Schema errors inside one event belong to that event, so a capture can refuse
the document (`rollback`) or record the others (`proceed`); any other error
refuses the body as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pipeline.core.canonical import canonical_bytes
from pipeline.core.epcis.event_hash import document_pre_hashes, hash_of
from pipeline.core.epcis.validator import SchemaError, pointer, schema_errors
from pipeline.core.strict_json import JSONRefused, Limits, decode
from pipeline.errors import InvalidEvent

# An EPCIS event nests about eight levels and a document may list many EPCs; the HTTP body size
# is bounded before decoding (PROVENANCE_EPCIS__MAX_BODY).
EPCIS_LIMITS = Limits(max_bytes=64 * 1_048_576, max_depth=64, max_string=65_536, max_fields=1_000,
                      max_array=1_000_000)


class InvalidCapture(InvalidEvent):
    """A capture body that cannot be read as EPCIS at all; `status` is the HTTP status it earns."""

    def __init__(self, reason: str, errors: list[dict[str, str]] | None = None, status: int = 400) -> None:
        super().__init__(reason, errors)
        self.status = status


@dataclass(frozen=True, slots=True)
class CapturedEvent:
    """One event of a capture, as sent, with its identity."""

    index: int
    event: dict[str, Any]
    leaf: bytes
    event_id: str
    id_source: str  # "eventID" (the producer's) or "hash" (the CBV 2.0 event hash)
    event_hash: str
    event_time: str  # UTC, RFC 3339
    context: Any

    @property
    def event_type(self) -> str:
        return str(self.event.get("type", ""))

    @property
    def is_declaration(self) -> bool:
        return "errorDeclaration" in self.event


@dataclass
class Capture:
    """A parsed body: the valid events, and the schema errors of each invalid one (by index)."""

    kind: str  # "EPCISDocument" or "event"
    context: Any
    events: list[CapturedEvent] = field(default_factory=list)
    problems: dict[int, list[SchemaError]] = field(default_factory=dict)
    total: int = 0
    document: dict[str, Any] | None = None  # the EPCISDocument as sent (None for a bare event)


def decode_body(raw: bytes, limits: Limits = EPCIS_LIMITS) -> Any:
    """UTF-8 JSON through the strict bounded decoder (depth, size, duplicate keys, NaN, BOM, ...)."""
    try:
        return decode(raw, limits).value
    except JSONRefused as exc:
        raise InvalidCapture(exc.reason, exc.errors, status=413 if exc.code == "too_large" else 400) from None


def utc_event_time(text: str) -> str:
    """An event time in UTC, e.g. `2005-04-03T20:33:31.116Z` (the schema checked the format)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def read_capture(value: Any) -> Capture:
    """Validate a decoded body and split it into events; InvalidCapture for a body that is not EPCIS."""
    if not isinstance(value, dict):
        raise InvalidCapture(f"an EPCIS capture is a JSON object (EPCISDocument or event), got {type(value).__name__}")
    kind = value.get("type")
    errors = schema_errors(value)
    if kind == "EPCISDocument":
        body = value.get("epcisBody")
        events = body.get("eventList") if isinstance(body, dict) else None
        if not isinstance(events, list):
            raise InvalidCapture("an EPCISDocument needs epcisBody.eventList", [e.to_dict() for e in errors])
        base: tuple[Any, ...] = ("epcisBody", "eventList")
        capture = Capture("EPCISDocument", value.get("@context"), total=len(events), document=value)
    elif kind == "EPCISQueryDocument":
        raise InvalidCapture("an EPCISQueryDocument is a query result, not a capture: send an EPCISDocument")
    else:
        events, base = [value], ()
        capture = Capture("event", value.get("@context"), total=1)
    document_level = []
    for error in errors:
        index = _event_index(error.pointer, base)
        if index is None:
            document_level.append(error)
        else:
            capture.problems.setdefault(index, []).append(error)
    if document_level:
        raise InvalidCapture("the body does not conform to the EPCIS 2.0 schema: "
                             + "; ".join(f"{e.pointer or '/'}: {e.message}" for e in document_level[:3]),
                             [e.to_dict() for e in errors])
    if not events:
        raise InvalidCapture("the document holds no event")
    good = [i for i in range(len(events)) if i not in capture.problems]
    if good:
        doc = dict(value) if kind == "EPCISDocument" else _as_document(value)
        for i, h in zip(good, _hashes(doc, [events[i] for i in good])):
            event = events[i]
            own = event.get("eventID")
            if not own and not h:
                capture.problems[i] = [SchemaError(pointer(base + (i,)), "the event has no eventID and its CBV 2.0 "
                                                   "event hash cannot be computed", "eventID")]
                continue
            capture.events.append(CapturedEvent(
                index=i, event=event, leaf=canonical_bytes(event), event_id=own if own else h,
                id_source="eventID" if own else "hash", event_hash=h,
                event_time=utc_event_time(event["eventTime"]), context=capture.context,
            ))
    return capture


def _hashes(doc: dict[str, Any], events: list[Any]) -> list[str]:
    """The CBV 2.0 hash of each event, each read in a one-event copy of its document (as the worker
    reads it from `epcis-events`), "" where the hash cannot be computed."""
    out = []
    for event in events:
        try:
            out.append(hash_of(document_pre_hashes({**doc, "epcisBody": {"eventList": [event]}})[0]))
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            out.append("")
    return out


def _as_document(event: dict[str, Any]) -> dict[str, Any]:
    return {"@context": event.get("@context", []), "type": "EPCISDocument", "schemaVersion": "2.0",
            "creationDate": event.get("eventTime"), "epcisBody": {}}


def _event_index(ptr: str, base: tuple[Any, ...]) -> int | None:
    """The event a schema error is about, or None for the document itself."""
    if not base:
        return None  # a bare event is the whole body
    prefix = pointer(base) + "/"
    if not ptr.startswith(prefix):
        return None
    head = ptr[len(prefix):].split("/", 1)[0]
    return int(head) if head.isdigit() else None
