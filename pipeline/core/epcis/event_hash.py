"""The CBV 2.0 canonical event hash: `ni:///sha-256;<hex>?ver=CBV2.0` of an event's pre-hash string.

The pre-hash string concatenates `key=value` of the event's fields in the
order CBV 2.0 fixes (eventTime, eventTimeZoneOffset, certificationInfo,
parentID, the EPC and quantity lists, action, ... sensorElementList), with
times in UTC at millisecond precision, GS1 keys as canonical Digital Link URIs,
CBV values as web-vocabulary URIs and numbers without padding; then every
remaining (extension) field, sorted. `recordTime`, `eventID` and
`errorDeclaration` are left out, so an event and its later correction hash alike
when their facts are alike. The rules follow the GS1-referenced generator
(RalphTro/epcis-event-hash-generator, MIT) so that its reference vectors
reproduce; docs/epcis.md lists where behaviour was defined where it crashes.
"""

from __future__ import annotations

import copy
import hashlib
from datetime import timedelta, timezone
from typing import Any

from dateutil import parser as date_parser  # type: ignore[import-untyped]

from pipeline.core.epcis.digital_link import canonical_digital_link
from pipeline.core.epcis.event_tree import Element, TreeBuilder, correct_structure, expanded_vocabulary
from pipeline.core.epcis.standard import load_context

_Q = [("epcClass", None), ("quantity", None), ("uom", None)]
PROP_ORDER: list[tuple[Any, Any]] = [
    ("eventTime", None), ("eventTimeZoneOffset", None), ("certificationInfo", None), ("parentID", None),
    ("epcList", [("epc", None)]), ("inputEPCList", [("epc", None)]), ("childEPCs", [("epc", None)]),
    ("quantityList", [("quantityElement", _Q)]), ("childQuantityList", [("quantityElement", _Q)]),
    ("inputQuantityList", [("quantityElement", _Q)]), ("outputEPCList", [("epc", None)]),
    ("outputQuantityList", [("quantityElement", _Q)]),
    ("action", None), ("transformationID", None), ("bizStep", None), ("disposition", None),
    ("persistentDisposition", [("set", None), ("unset", None)]),
    ("readPoint", [("id", None)]), ("bizLocation", [("id", None)]),
    ("bizTransactionList", [(("type", None), ("bizTransaction", None))]),
    ("sourceList", [(("type", None), ("source", None))]),
    ("destinationList", [(("type", None), ("destination", None))]),
    ("sensorElementList", [("sensorElement", [
        ("sensorMetadata", [(n, None) for n in (
            "time", "startTime", "endTime", "deviceID", "deviceMetadata", "rawData", "dataProcessingMethod",
            "bizRules")]),
        ("sensorReport", [(n, None) for n in (
            "type", "exception", "deviceID", "deviceMetadata", "rawData", "dataProcessingMethod", "time",
            "microorganism", "chemicalSubstance", "value", "component", "stringValue", "booleanValue",
            "hexBinaryValue", "uriValue", "minValue", "maxValue", "meanValue", "sDev", "percRank", "percValue",
            "uom", "coordinateReferenceSystem")]),
    ])]),
]
_NOT_HASHED = ("recordTime", "eventID", "type", "errorDeclaration")
_VOCABULARY = (("urn:epcglobal:cbv:bizstep:", "https://ref.gs1.org/cbv/BizStep-"),
               ("urn:epcglobal:cbv:disp:", "https://ref.gs1.org/cbv/Disp-"),
               ("urn:epcglobal:cbv:btt:", "https://ref.gs1.org/cbv/BTT-"),
               ("urn:epcglobal:cbv:sdt:", "https://ref.gs1.org/cbv/SDT-"),
               ("urn:epcglobal:cbv:er:", "https://ref.gs1.org/cbv/ER-"))


def utc_millis(text: str) -> str:
    """A timestamp in UTC, rounded to the millisecond, written with `Z`; unparsable text is kept.

    >>> utc_millis("2022-02-16T20:33:31.116000-06:00")
    '2022-02-17T02:33:31.116Z'
    """
    try:
        moment = date_parser.parse(text).astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return text
    micro = moment.microsecond
    # Python's round (half to even), as the generator; a carry into the next second is kept.
    moment = moment.replace(microsecond=0) + timedelta(microseconds=round(micro, -3))
    return str(moment.isoformat(timespec="milliseconds"))[:-6] + "Z"


def _numeric(text: str) -> str:
    try:
        number = float(text)
    except ValueError:
        return text
    if number != number or number in (float("inf"), float("-inf")):
        return text  # the generator keeps NaN as written (and fails on infinities)
    return str(int(number)) if int(number) == number else str(number)


def canonical_value(text: str) -> str:
    """A value as the pre-hash string writes it: web vocabulary, plain numbers, Digital Link keys."""
    for urn, web in _VOCABULARY:
        text = text.replace(urn, web)
    text = _numeric(text)
    return canonical_digital_link(text) or text


def _child_text(child: Element, sub_order: Any) -> str:
    grand = _ordered(child[2], sub_order) if sub_order else ""
    text = ""
    if child[1]:
        text = child[1].strip()
        name = child[0].lower()
        text = utc_millis(text) if "time" in name and "offset" not in name else canonical_value(text)
        if text:
            text = "=" + text
    return child[0] + text + grand if text or grand else ""


def _user_extensions(children: list[Any]) -> list[Any]:
    """Namespaced fields inside a nested element (sensorElement, readPoint, ...), taken out to go last."""
    if len(children) <= 1:
        return []
    for child in children:
        if "eventTime" in child[0] or "action" in child[0]:
            return []
    found = [x for x in children if isinstance(x, tuple) and "{" in x[0] and "/}" in x[0]]
    for x in found:
        children.remove(x)
    return found


def _ordered(children: list[Any], order: Any) -> str:
    """The pre-hash of the children named in `order`, in that order; consumes what it writes."""
    pre = ""
    extensions = _user_extensions(children)
    for name, sub_order in order:
        values = []
        for child in [x for x in children if x[0] == name]:
            text = _child_text(child, sub_order)
            if text:
                values.append(text)
            if len(child[2]) == 0:
                children.remove(child)
        values.sort()
        if "".join(values):
            if pre:
                values.insert(0, pre)
            pre = "".join(values)
    if extensions:
        pre = pre + _generic(extensions)
    return pre


def _generic(children: list[Any]) -> str:
    """Fields outside the fixed order: `name=value` recursively, sorted (paired lists keep their order)."""
    values = []
    for child in children:
        if isinstance(child, tuple) and len(child) == 2 and isinstance(child[0], tuple):
            values.append(_generic(list(child)))
        else:
            text = child[1].strip()
            if text:
                text = "=" + canonical_value(text)
            values.append(child[0] + text + _generic(child[2]))
    if len(children) > 1 and not any(c[0] in ("bizTransaction", "source", "destination") for c in children):
        values.sort()
    return "".join(values)


def pre_hash(event: Element) -> str:
    """The pre-hash string of one event's element tree (see `event_tree`)."""
    event = copy.deepcopy(event)
    children = event[2]
    ordered = _ordered(children, PROP_ORDER)
    rest = [c for c in children if c[0] not in _NOT_HASHED]
    return "eventType=" + str(event[0]) + ordered + (_generic(rest) if rest else "")


def hash_of(pre_hash_string: str) -> str:
    """The `ni:` URI of a pre-hash string.

    >>> hash_of("")
    'ni:///sha-256;e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855?ver=CBV2.0'
    """
    return "ni:///sha-256;" + hashlib.sha256(pre_hash_string.encode("utf-8")).hexdigest() + "?ver=CBV2.0"


def _expand(document: Any) -> Any:
    """JSON-LD expansion with the local GS1 context; every context URL goes to `load_context`, none to the network.

    PyLD is imported here, not at module level: importing it loads its (unused)
    HTTP document loaders, which the core must not carry into every process.
    """
    from pyld import jsonld  # type: ignore[import-untyped]

    return jsonld.expand(document, {"documentLoader": lambda url, options=None: load_context(url)})


def document_pre_hashes(document: dict[str, Any]) -> list[str]:
    """The pre-hash string of every event of a document, in document order."""
    document = copy.deepcopy(document)
    context = document.get("@context")
    if isinstance(context, list):
        context = document["@context"] = [c for c in context if not isinstance(c, dict) or c]
    builder = TreeBuilder(context, expanded_vocabulary(document, _expand))
    document = builder.bare_values(document)
    key = builder.ignore_key()
    body = document["epcisBody"]
    if "eventList" in body:
        events, ignore = body["eventList"], document.get(key)
    elif "queryResults" in body:
        events, ignore = body["queryResults"]["resultsBody"]["eventList"], body["queryResults"].get(key)
    else:
        events, ignore = [body["event"]], document.get(key)
    return [pre_hash(correct_structure(builder.element(e, ignore))) for e in events]


def event_pre_hash(event: dict[str, Any], context: Any) -> str:
    """The pre-hash string of one event, read with the `@context` of the document it came in."""
    doc = {"@context": context if context is not None else event.get("@context", []), "type": "EPCISDocument",
           "schemaVersion": "2.0", "creationDate": "2000-01-01T00:00:00Z", "epcisBody": {"eventList": [event]}}
    return document_pre_hashes(doc)[0]


def event_hash(event: dict[str, Any], context: Any = None) -> str:
    """The CBV 2.0 event hash of one event (its own `@context` when `context` is None)."""
    return hash_of(event_pre_hash(event, context))
