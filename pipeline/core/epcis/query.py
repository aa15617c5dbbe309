"""The EPCIS query interface's simple event filters, expiring next-page tokens, and the EPCISQueryDocument.

`GET /epcis/events?eventType=&bizStep=&EPC=&GE_eventTime=&LT_eventTime=&perPage=`
reads as a `SimpleEventQuery`. Pages are keyset pages over (eventTime, log,
leaf); the `nextPageToken` carries the last row's position, the filters it was
made for and when it expires, signed with HMAC-SHA256 under a key the store
holds, so a token cannot be forged, reused for other filters, or used late.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from pipeline.core.epcis.standard import CONTEXT_URL, EVENT_TYPES
from pipeline.core.epcis.view import cbv_name
from pipeline.errors import InvalidChallenge

FILTERS = ("eventType", "bizStep", "EPC", "GE_eventTime", "LT_eventTime")


class ExpiredToken(InvalidChallenge):
    """A next-page token past its expiry: run the query again from the first page."""


@dataclass(frozen=True, slots=True)
class SimpleEventQuery:
    """The filters of one query; each is optional, `event_types` and `biz_steps` match any listed."""

    event_types: tuple[str, ...] = ()
    biz_steps: tuple[str, ...] = ()  # bare CBV names
    epcs: tuple[str, ...] = ()
    ge_event_time: str | None = None  # UTC, RFC 3339
    lt_event_time: str | None = None
    per_page: int = 30

    def fingerprint(self) -> str:
        body = {k: v for k, v in asdict(self).items() if k != "per_page"}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _time(name: str, text: str) -> str:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidChallenge(f"{name} must be an RFC 3339 date-time, got {text!r}") from None
    if moment.tzinfo is None:
        raise InvalidChallenge(f"{name} needs a UTC offset (e.g. Z), got {text!r}")
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _list(params: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = params.get(name)
    return tuple(v for v in (p.strip() for p in raw.split("|")) if v) if raw else ()


def parse_query(params: Mapping[str, str], default_per_page: int, max_per_page: int) -> SimpleEventQuery:
    """Read the query parameters (values may list alternatives with `|`); InvalidChallenge names a bad one.

    >>> parse_query({"eventType": "ObjectEvent", "bizStep": "urn:epcglobal:cbv:bizstep:shipping"}, 30, 100)
    SimpleEventQuery(event_types=('ObjectEvent',), biz_steps=('shipping',), epcs=(), ge_event_time=None, lt_event_time=None, per_page=30)
    """
    known = set(FILTERS) | {"perPage", "nextPageToken"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise InvalidChallenge(f"unknown query parameter(s) {', '.join(unknown)}; supported: {', '.join(sorted(known))}")
    types = _list(params, "eventType")
    for t in types:
        if t not in EVENT_TYPES and ":" not in t:
            raise InvalidChallenge(f"eventType {t!r} is not an EPCIS event type ({', '.join(EVENT_TYPES)}) or a URI")
    try:
        per_page = int(params.get("perPage", default_per_page))
    except ValueError:
        raise InvalidChallenge("perPage must be an integer") from None
    if not 1 <= per_page <= max_per_page:
        raise InvalidChallenge(f"perPage must be between 1 and {max_per_page}")
    return SimpleEventQuery(
        event_types=types, biz_steps=tuple(cbv_name(s) for s in _list(params, "bizStep")), epcs=_list(params, "EPC"),
        ge_event_time=_time("GE_eventTime", params["GE_eventTime"]) if params.get("GE_eventTime") else None,
        lt_event_time=_time("LT_eventTime", params["LT_eventTime"]) if params.get("LT_eventTime") else None,
        per_page=per_page,
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def make_page_token(query: SimpleEventQuery, after: list[Any], expires: float, key: bytes) -> str:
    """A signed token for the page after the row at `after` (its sort key), valid until `expires` (epoch s)."""
    body = json.dumps({"q": query.fingerprint(), "after": after, "exp": round(expires, 3)},
                      separators=(",", ":")).encode()
    return _b64(body) + "." + _b64(hmac.new(key, body, hashlib.sha256).digest())


def read_page_token(token: str, query: SimpleEventQuery, now: float, key: bytes) -> list[Any]:
    """The sort key a token continues after; InvalidChallenge if forged or for other filters, ExpiredToken if late."""
    try:
        head, _, sig = token.partition(".")
        body = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))
        claimed = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    except (ValueError, TypeError):
        raise InvalidChallenge("nextPageToken is malformed") from None
    if not hmac.compare_digest(claimed, hmac.new(key, body, hashlib.sha256).digest()):
        raise InvalidChallenge("nextPageToken was not issued by this store (or the store restarted)")
    data = json.loads(body)
    if data["q"] != query.fingerprint():
        raise InvalidChallenge("nextPageToken belongs to a query with other filters")
    if now >= data["exp"]:
        raise ExpiredToken("nextPageToken expired: run the query again from the first page")
    after: list[Any] = data["after"]
    return after


def query_document(events: list[dict[str, Any]], contexts: list[Any], created: str) -> dict[str, Any]:
    """An EPCISQueryDocument holding `events` as they were sent; its @context joins theirs."""
    context: list[Any] = [CONTEXT_URL]
    for c in contexts:
        for item in c if isinstance(c, list) else [c]:
            if item is not None and item not in context and item != {}:
                context.append(item)
    return {
        "@context": context, "type": "EPCISQueryDocument", "schemaVersion": "2.0", "creationDate": created,
        "epcisBody": {"queryResults": {"queryName": "SimpleEventQuery", "resultsBody": {"eventList": events}}},
    }
