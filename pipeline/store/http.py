"""The store's HTTP API (aiohttp): events in, SQL, ledger state and proofs out.

Handlers are thin: parse the request, call the database or core, shape JSON.
Blocking DuckDB calls run in threads with their own cursors.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web

from pipeline import metrics
from pipeline.core.anomaly import KINDS, STATUSES
from pipeline.core.ledger import accept
from pipeline.errors import InvalidChallenge, InvalidEvent, NotFound, PipelineError, QueryRejected
from pipeline.settings import Settings
from pipeline.store.db import Database
from pipeline.store.gauges import refresh_store_gauges
from pipeline.store.sandbox import json_value

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(json_value(data), status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False))


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refused request gets a JSON body that says why."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        return _json({"error": exc.reason}, exc.status)
    except NotFound as exc:
        return _json({"error": str(exc)}, 404)
    except (QueryRejected, InvalidChallenge, InvalidEvent) as exc:
        return _json({"error": str(exc)}, 400)
    except PipelineError as exc:
        log.exception("request failed")
        return _json({"error": str(exc)}, 500)


def split_events(body: bytes) -> list[tuple[int, bytes]]:
    """One JSON object, a JSON array of objects, or NDJSON lines: (line or item number, raw bytes)."""
    text = body.strip()
    if not text:
        raise InvalidChallenge("empty body: send one ShipmentEvent JSON object or NDJSON lines")
    if text[:1] in (b"{", b"["):
        try:
            whole = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            whole = None
        if isinstance(whole, dict):
            return [(1, text)]
        if isinstance(whole, list):
            return [(n, json.dumps(item, ensure_ascii=False).encode()) for n, item in enumerate(whole, 1)]
    return [(n, line) for n, line in enumerate(body.split(b"\n"), 1) if line.strip()]


class Api:
    """Routes of `provenance serve`; the proof and checkpoint routes are added by the ledger service."""

    def __init__(self, settings: Settings, db: Database, produce: Callable[[list[tuple[bytes | None, bytes]]], Awaitable[None]],
                 status: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self.settings = settings
        self.db = db
        self.produce = produce
        self.status = status
        self.app = web.Application(client_max_size=MAX_BODY, middlewares=[errors_as_json])
        r = self.app.router
        r.add_get("/", self.index)
        r.add_get("/health", self.health)
        r.add_post("/events", self.post_events)
        r.add_get("/events/{event_id}", self.get_event)
        r.add_get("/blocks", self.get_blocks)
        r.add_get("/anomalies", self.get_anomalies)
        r.add_post("/sql", self.post_sql)
        r.add_get("/metrics", self.metrics)
        r.add_get("/proofs/consistency", self.get_consistency)
        r.add_get("/proofs/{event_id}", self.get_proof)
        r.add_get("/checkpoints/latest", self.get_checkpoint)
        r.add_get("/checkpoints/key", self.get_key)
        self.ledger: Any = None  # set by the store: pipeline.store.ledger.LedgerService

    async def index(self, request: web.Request) -> web.Response:
        page = resources.files("pipeline.web").joinpath("index.html").read_text()
        return web.Response(text=page, content_type="text/html")

    async def health(self, request: web.Request) -> web.Response:
        return _json(await self.status())

    async def post_events(self, request: web.Request) -> web.Response:
        body = await request.read()
        lines = split_events(body)
        records: list[tuple[bytes | None, bytes]] = []
        problems = []
        for n, raw in lines:
            try:
                event, _ = accept(raw)
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
        row = await asyncio.to_thread(self.db.event, event_id)
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
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise InvalidChallenge('body must be JSON: {"query": "SELECT ..."}') from None
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
