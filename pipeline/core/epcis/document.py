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

from pipeline.core.canonical import canonical_bytes, parse_json
from pipeline.core.epcis.event_hash import document_pre_hashes, hash_of
from pipeline.core.epcis.validator import SchemaError, pointer, schema_errors
from pipeline.errors import InvalidEvent

MAX_DEPTH = 64  # an EPCIS event nests about eight levels; far deeper is an attack, not a document


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


def nesting_depth(text: str, limit: int = MAX_DEPTH) -> int:
    """How deep arrays and objects nest (stops counting past `limit`), strings skipped.

    >>> nesting_depth('{"a": [[1], "]]]"]}')
    3
    """
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def decode_body(raw: bytes) -> Any:
    """UTF-8 JSON with bounded nesting, strictly (no NaN, no BOM); InvalidCapture otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidCapture(f"not UTF-8: byte {exc.start} ({raw[exc.start:exc.start + 1]!r})") from None
    if text.startswith("\ufeff"):
        raise InvalidCapture("not JSON: a byte order mark precedes the document")
    if nesting_depth(text) > MAX_DEPTH:
        raise InvalidCapture(f"not an EPCIS body: nested deeper than {MAX_DEPTH} levels")
    try:
        return parse_json(text).value
    except InvalidEvent as exc:
        raise InvalidCapture(exc.reason) from None


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
        capture = Capture("EPCISDocument", value.get("@context"), total=len(events))
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
    """The CBV 2.0 hash of each event, read in the document ("" where the hash cannot be computed)."""
    try:
        return [hash_of(p) for p in document_pre_hashes({**doc, "epcisBody": {"eventList": events}})]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
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
