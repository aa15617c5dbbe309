"""The store's HTTP API (aiohttp): events in, SQL, ledger state and proofs out.

Handlers are thin: parse the request, call the database or core, shape JSON.
Blocking DuckDB calls run in threads with their own cursors.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from pipeline import metrics
from pipeline.core.anomaly import KINDS, STATUSES
from pipeline.core.ledger import accept
from pipeline.core.strict_json import JSONRefused, Limits, decode
from pipeline.errors import InvalidChallenge, InvalidEvent, NotFound, PipelineError, QueryRejected
from pipeline.settings import LimitSettings, Settings
from pipeline.store.capture import CaptureService
from pipeline.store.db import Database
from pipeline.store.epcis_query import EpcisQueryRoutes
from pipeline.store.gauges import refresh_store_gauges
from pipeline.store.sandbox import json_value

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024 * 1024  # the default of `limits.max_body`

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(json_value(data), status=status, headers=headers,
                             dumps=lambda o: json.dumps(o, ensure_ascii=False))


def errors_as_json(request_timeout: float) -> Any:
    """Middleware: every refused request gets a JSON body that says why, and no request outlives the timeout.

    Nothing unexpected reaches a client as a stack trace: it is logged, and the
    client gets a 500 that says so.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            async with asyncio.timeout(request_timeout):
                return await handler(request)
        except web.HTTPException as exc:
            if exc.content_type == "application/json" or exc.status < 400:
                raise
            return _json({"error": exc.reason}, exc.status)
        except NotFound as exc:
            return _json({"error": str(exc)}, 404)
        except (QueryRejected, InvalidChallenge, InvalidEvent) as exc:
            return _json({"error": str(exc)}, 400)
        except TimeoutError:
            return _json({"error": f"the request took longer than {request_timeout:g}s and was stopped"}, 503)
        except PipelineError as exc:
            log.exception("request failed")
            return _json({"error": str(exc)}, 500)
        except Exception:
            log.exception("unexpected error answering %s %s", request.method, request.path)
            return _json({"error": "internal error: the store logged it"}, 500)

    return middleware


def split_events(body: bytes, limits: LimitSettings | None = None) -> list[tuple[int, bytes]]:
    """One JSON object, a JSON array of objects, or NDJSON lines: (line or item number, raw bytes).

    The body is decoded strictly (one level deeper than a record, for the
    array); each item or line is then a record, checked against the record
    limits by `accept`. More than `max_request_events` is refused.
    """
    limits = limits or LimitSettings()
    text = body.strip()
    if not text:
        raise InvalidChallenge("empty body: send one ShipmentEvent JSON object or NDJSON lines")
    whole_limits = Limits(max_bytes=max(limits.max_body, limits.max_bytes), max_depth=limits.max_depth + 1,
                          max_string=limits.max_string, max_fields=limits.max_fields,
                          max_array=max(limits.max_array, limits.max_request_events))
    if text[:1] in (b"{", b"["):
        try:
            whole: Any = decode(text, whole_limits).value
        except JSONRefused as exc:
            if exc.code == "array" and text[:1] == b"[":
                raise InvalidChallenge(f"more than {limits.max_request_events} events in one request") from None
            whole = None
        if isinstance(whole, dict):
            return [(1, text)]
        if isinstance(whole, list):
            if len(whole) > limits.max_request_events:
                raise InvalidChallenge(f"{len(whole)} events in one request, more than the limit of "
                                       f"{limits.max_request_events}")
            return [(n, json.dumps(item, ensure_ascii=False).encode()) for n, item in enumerate(whole, 1)]
    lines = [(n, line) for n, line in enumerate(body.split(b"\n"), 1) if line.strip()]
    if len(lines) > limits.max_request_events:
        raise InvalidChallenge(f"{len(lines)} events in one request, more than the limit of "
                               f"{limits.max_request_events}")
    return lines


class Api:
    """Routes of `provenance serve`; the page at `/` and its JSON routes are in `pipeline.store.dashboard`."""

    def __init__(self, settings: Settings, db: Database, produce: Callable[[list[tuple[bytes | None, bytes]]], Awaitable[None]],
                 status: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self.settings = settings
        self.db = db
        self.produce = produce
        self.status = status
        limits = settings.limits
        self.limits = limits.record()
        self.writes = asyncio.Semaphore(limits.max_concurrent_writes)
        self.app = web.Application(client_max_size=limits.max_body,
                                   middlewares=[errors_as_json(limits.request_timeout)])
        r = self.app.router
        r.add_get("/health", self.health)
        r.add_post("/events", self.post_events)
        r.add_get("/events/{event_id:.+}", self.get_event)
        r.add_get("/blocks", self.get_blocks)
        r.add_get("/anomalies", self.get_anomalies)
        r.add_post("/sql", self.post_sql)
        r.add_get("/metrics", self.metrics)
        r.add_get("/proofs/consistency", self.get_consistency)
        r.add_get("/proofs/{event_id:.+}", self.get_proof)
        r.add_get("/checkpoints/latest", self.get_checkpoint)
        r.add_get("/checkpoints/key", self.get_key)
        self.ledger: Any = None  # set by the store: pipeline.store.ledger.LedgerService
        self.capture = CaptureService(settings, db, produce)  # EPCIS 2.0: POST /capture, GET /capture/{id}
        self.capture.register(r)
        self.epcis = EpcisQueryRoutes(settings, db)  # GET /epcis/events
        self.epcis.register(r)

    async def health(self, request: web.Request) -> web.Response:
        return _json(await self.status())

    async def post_events(self, request: web.Request) -> web.Response:
        if self.writes.locked():
            return _json({"error": f"{self.settings.limits.max_concurrent_writes} writes are in progress; "
                          "retry shortly"}, 429, headers={"Retry-After": "1"})
        async with self.writes:
            return await self._post_events(request)

    async def _post_events(self, request: web.Request) -> web.Response:
        body = await request.read()
        lines = split_events(body, self.settings.limits)
        records: list[tuple[bytes | None, bytes]] = []
        problems = []
        for n, raw in lines:
            try:
                event, _ = accept(raw, self.limits)
            except InvalidEvent as exc:
                problems.append({"line": n, "error": exc.reason, "fields": exc.errors})
                continue
            records.append((event.shipment_id.encode(), raw))
        if problems:
            return _json({"error": f"{len(problems)} of {len(lines)} events are invalid; nothing was sent",
                          "invalid": problems}, 400)
        await self.produce(records)
        return _json({"accepted": len(records), "topic": self.settings.topics.name(self.settings.topics.events)}, 202)

    async def get_event(self, request: web.Request) -> web.Response:
        event_id = request.match_info["event_id"]
        try:
            row = await asyncio.to_thread(self.db.event, event_id)
        except NotFound:
            found = await asyncio.to_thread(self.epcis.describe, event_id)
            if found is None:
                raise
            return _json(found)
        block = await asyncio.to_thread(self.db.covering_block, row["log_id"], row["leaf_index"])
        row["payload"] = json.loads(row["payload"])
        return _json({"event": row.pop("payload"), "ledger": {**row, "block": block, "sealed": block is not None}})

    async def get_blocks(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            limit = min(int(q.get("limit", "100")), 10_000)
            before = int(q["before"]) if "before" in q else None
        except ValueError:
            raise InvalidChallenge("limit and before must be integers") from None
        rows = await asyncio.to_thread(self.db.blocks, q.get("log_id"), limit, before)
        return _json({"blocks": rows})

    async def get_anomalies(self, request: web.Request) -> web.Response:
        q = request.query
        kind, status = q.get("kind") or None, q.get("status") or None
        if kind is not None and kind not in KINDS:
            raise InvalidChallenge(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
        if status is not None and status not in STATUSES:
            raise InvalidChallenge(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
        try:
            limit = int(q.get("limit", "100"))
        except ValueError:
            raise InvalidChallenge("limit must be an integer") from None
        if not 1 <= limit <= 10_000:
            raise InvalidChallenge("limit must be between 1 and 10000")
        rows = await asyncio.to_thread(self.db.anomalies, kind, status, q.get("lane") or None, limit)
        return _json({"anomalies": rows})

    async def post_sql(self, request: web.Request) -> web.Response:
        try:
            body = decode(await request.read(), self.limits).value
        except JSONRefused as exc:
            raise InvalidChallenge(f'body must be JSON: {{"query": "SELECT ..."}} ({exc.reason})') from None
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            raise InvalidChallenge('body must be JSON: {"query": "SELECT ..."}')
        shape = request.query.get("shape", "arrays")
        if shape not in ("arrays", "objects"):
            raise InvalidChallenge(f"shape must be arrays or objects, not {shape!r}")
        cap = self.settings.store.row_cap
        result = await asyncio.to_thread(self.db.query, body["query"], cap, self.settings.store.query_timeout)
        rows: list[Any] = result.rows
        if shape == "objects":  # one JSON object per row, for JSON dashboards such as Grafana's Infinity
            rows = [dict(zip(result.columns, row)) for row in result.rows]
        return _json({"columns": result.columns, "rows": rows, "truncated": result.truncated})

    async def get_proof(self, request: web.Request) -> web.Response:
        with metrics.PROOF_SECONDS.labels("inclusion").time():
            bundle = await asyncio.to_thread(self.ledger.proofs.bundle, request.match_info["event_id"])
            return _json(bundle)

    async def get_consistency(self, request: web.Request) -> web.Response:
        with metrics.PROOF_SECONDS.labels("consistency").time():
            return await self._consistency(request)

    async def _consistency(self, request: web.Request) -> web.Response:
        q = request.query
        log_id = q.get("log_id")
        if not log_id:
            raise InvalidChallenge("log_id is required")
        try:
            if "from" in q and "to" in q:
                answer = await asyncio.to_thread(self.ledger.proofs.consistency, log_id, int(q["from"]), int(q["to"]))
            elif "from_size" in q and "to_size" in q:
                path = await asyncio.to_thread(self.ledger.proofs.consistency_sizes, log_id,
                                               int(q["from_size"]), int(q["to_size"]))
                answer = {"log_id": log_id, "from_size": int(q["from_size"]), "to_size": int(q["to_size"]),
                          "consistency_path": path}
            else:
                raise InvalidChallenge("give from and to (block heights), or from_size and to_size (tree sizes)")
        except ValueError:
            raise InvalidChallenge("from, to, from_size and to_size must be integers") from None
        return _json(answer)

    async def get_checkpoint(self, request: web.Request) -> web.Response:
        return _json(await asyncio.to_thread(self.ledger.proofs.latest_checkpoint))

    async def get_key(self, request: web.Request) -> web.Response:
        return web.Response(text=self.ledger.signer.verifier_key + "\n", content_type="text/plain")

    async def metrics(self, request: web.Request) -> web.Response:
        status = await self.status()
        await asyncio.to_thread(refresh_store_gauges, self.db, status)
        return web.Response(body=metrics.render(), headers={"Content-Type": metrics.CONTENT_TYPE,
                                                             "X-Content-Type-Options": "nosniff"})
