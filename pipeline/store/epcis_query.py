"""EPCIS reads over HTTP: `GET /epcis/events` (simple event query, paged) and the EPCIS side of `GET /events/{id}`.

The query answers with an EPCISQueryDocument of the events exactly as they
were sent; a `Link: <...nextPageToken=...>; rel="next"` header carries the
next page while there is one, with `GS1-Next-Page-Token-Expires` saying until
when the token is good.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from pipeline.core.epcis.query import SimpleEventQuery, make_page_token, parse_query, query_document, read_page_token
from pipeline.errors import InvalidChallenge
from pipeline.settings import Settings
from pipeline.store.capture import problem
from pipeline.store.epcis_rows import epcis_event

_BARE_STEP = r"regexp_replace(coalesce(biz_step, ''), '^(urn:epcglobal:cbv:bizstep:|https://ref\.gs1\.org/cbv/BizStep-|cbv:BizStep-)', '')"
_EPCS = ("list_concat(coalesce(json_extract(original, '$.epcList')::VARCHAR[], []),"
         " coalesce(json_extract(original, '$.childEPCs')::VARCHAR[], []),"
         " coalesce(json_extract(original, '$.inputEPCList')::VARCHAR[], []),"
         " coalesce(json_extract(original, '$.outputEPCList')::VARCHAR[], []),"
         " coalesce([json_extract_string(original, '$.parentID')], []))")


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    return str(value)


def select_events(db: Any, q: SimpleEventQuery, after: list[Any] | None) -> list[dict[str, Any]]:
    """Rows of `epcis_events` matching the query, in (eventTime, log, leaf) order, one more than a page."""
    where, params = [], []
    if q.event_types:
        where.append(f"epcis_type IN ({', '.join('?' * len(q.event_types))})")
        params += list(q.event_types)
    if q.biz_steps:
        where.append(f"{_BARE_STEP} IN ({', '.join('?' * len(q.biz_steps))})")
        params += list(q.biz_steps)
    if q.epcs:
        where.append(f"list_has_any({_EPCS}, ?::VARCHAR[])")
        params.append(list(q.epcs))
    if q.ge_event_time:
        where.append("event_time >= ?::TIMESTAMPTZ")
        params.append(q.ge_event_time)
    if q.lt_event_time:
        where.append("event_time < ?::TIMESTAMPTZ")
        params.append(q.lt_event_time)
    if after is not None:
        where.append("(event_time > ?::TIMESTAMPTZ OR (event_time = ?::TIMESTAMPTZ AND"
                     " (log_id > ? OR (log_id = ? AND leaf_index > ?))))")
        params += [after[0], after[0], after[1], after[1], after[2]]
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    return list(db.fetch_dicts(
        f"SELECT event_time, log_id, leaf_index, original, context FROM epcis_events {clause}"
        " ORDER BY event_time, log_id, leaf_index LIMIT ?", [*params, q.per_page + 1]))


class EpcisQueryRoutes:
    """GET /epcis/events; `describe` serves EPCIS events for GET /events/{id}."""

    def __init__(self, settings: Settings, db: Any) -> None:
        self.settings = settings
        self.db = db
        self.key = secrets.token_bytes(32)  # page tokens die with the process, as they should

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/epcis/events", self.get_events)

    async def get_events(self, request: web.Request) -> web.Response:
        s = self.settings.epcis
        try:
            q = parse_query(request.query, s.per_page, s.max_per_page)
            token = request.query.get("nextPageToken")
            after = read_page_token(token, q, time.time(), self.key) if token else None
        except InvalidChallenge as exc:
            return problem(400, "QueryParameterException", "Bad Request", str(exc))
        rows = await asyncio.to_thread(select_events, self.db, q, after)
        page, more = rows[: q.per_page], len(rows) > q.per_page
        doc = query_document([json.loads(r["original"]) for r in page],
                             [json.loads(r["context"]) if r["context"] else None for r in page], _iso(datetime.now(timezone.utc)))
        headers = {}
        if more:
            last = page[-1]
            expires = time.time() + s.page_token_ttl
            token = make_page_token(q, [_iso(last["event_time"]), last["log_id"], last["leaf_index"]], expires, self.key)
            url = request.url.update_query({"nextPageToken": token})
            headers["Link"] = f'<{url}>; rel="next"'
            headers["GS1-Next-Page-Token-Expires"] = _iso(datetime.fromtimestamp(expires, timezone.utc))
        return web.Response(text=json.dumps(doc, ensure_ascii=False), content_type="application/ld+json",
                            headers=headers)

    def describe(self, event_id: str) -> dict[str, Any] | None:
        """An EPCIS event as GET /events/{id} shows it: as sent, where it sits, its view, its corrections."""
        found = epcis_event(self.db, event_id)
        if found is None:
            return None
        row = found["event"]

        def ledger(r: dict[str, Any]) -> dict[str, Any]:
            block = self.db.covering_block(r["log_id"], r["leaf_index"])
            return {k: r[k] for k in ("log_id", "leaf_index", "leaf_hash", "kafka_partition", "kafka_offset",
                                      "recorded_at")} | {"block": block, "sealed": block is not None}

        meta = {k: row[k] for k in ("event_id", "epcis_type", "event_hash", "id_source", "biz_step", "declaration",
                                    "context")}
        corrections = found["corrections"]
        corrections["declarations"] = [{"event": d["original"], "ledger": ledger(d)}
                                       for d in corrections["declarations"]]
        return {"event": row["original"], "epcis": meta, "view": row["view"], "ledger": ledger(row),
                "corrections": corrections}
