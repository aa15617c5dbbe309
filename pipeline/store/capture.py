"""EPCIS 2.0 capture over HTTP: `POST /capture` as a job, `GET /capture/{id}`, problem+json refusals.

A capture is checked before anything is sent: media type (415), size (413),
JSON and the official schema (400, each error with its JSON Pointer), then
identity against what is recorded or in flight (409 for a different event
under a known id). With `captureErrorBehaviour=rollback` (the default) one bad
event refuses the document and nothing is sent; with `proceed` the good events
go on and the bad ones are listed in the job. Each event then goes to
`epcis-events` as a one-event document (keyed so related events share a
partition); the job succeeds once every event is recorded in DuckDB.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from pipeline.core.epcis.document import Capture, CapturedEvent, InvalidCapture, decode_body, read_capture
from pipeline.core.epcis.record import event_record, partition_key
from pipeline.core.merkle import leaf_hash
from pipeline.settings import Settings
from pipeline.store.db import IngestBatch

log = logging.getLogger(__name__)

MEDIA_TYPES = ("application/json", "application/ld+json")
BEHAVIOURS = ("rollback", "proceed")
Produce = Callable[..., Awaitable[None]]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def problem(status: int, kind: str, title: str, detail: str, **extra: Any) -> web.Response:
    """An RFC 9457 problem details response; `kind` is the EPCIS exception name."""
    body = {"type": f"epcisException:{kind}", "title": title, "status": status, "detail": detail, **extra}
    return web.Response(text=json.dumps(body, ensure_ascii=False), status=status,
                        content_type="application/problem+json")


@dataclass
class CaptureJob:
    """One capture: what each event became, and whether the whole is done."""

    capture_id: str
    behaviour: str
    created_at: str
    events: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    waiting: dict[str, int] = field(default_factory=dict)  # leaf hash -> index in events
    status: str = "running"
    finished_at: str | None = None

    def finish(self, status: str) -> None:
        if self.status == "running":
            self.status, self.finished_at = status, _now()

    def to_dict(self) -> dict[str, Any]:
        return {"captureID": self.capture_id, "running": self.status == "running",
                "success": self.status == "succeeded" and not self.errors, "status": self.status,
                "captureErrorBehaviour": self.behaviour, "createdAt": self.created_at,
                "finishedAt": self.finished_at, "events": self.events, "errors": self.errors}


class CaptureService:
    """The capture routes and their jobs; `on_batch` is an ingest listener that completes them."""

    def __init__(self, settings: Settings, db: Any, produce: Produce) -> None:
        self.settings = settings
        self.db = db
        self.produce = produce
        self.topic = settings.topics.name(settings.topics.epcis)
        self.jobs: OrderedDict[str, CaptureJob] = OrderedDict()
        self.in_flight: dict[tuple[str, bool], list[tuple[str, str]]] = {}  # sent, not recorded yet
        self.lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[None]] = set()

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_post("/capture", self.post_capture)
        router.add_get("/capture/{capture_id}", self.get_capture)

    async def _body(self, request: web.Request) -> bytes | web.Response:
        limit = self.settings.epcis.max_body
        too_big = problem(413, "CaptureLimitExceededException", "Payload Too Large",
                          f"the body is larger than {limit} bytes (PROVENANCE_EPCIS__MAX_BODY)")
        if request.content_length is not None and request.content_length > limit:
            return too_big
        data = bytearray()
        async for chunk in request.content.iter_chunked(1 << 16):
            data += chunk
            if len(data) > limit:
                return too_big
        return bytes(data)

    async def post_capture(self, request: web.Request) -> web.Response:
        if request.content_type not in MEDIA_TYPES:
            return problem(415, "UnsupportedMediaTypeException", "Unsupported Media Type",
                           f"send {' or '.join(MEDIA_TYPES)}, not {request.content_type or 'no Content-Type'}")
        behaviour = (request.query.get("captureErrorBehaviour") or request.headers.get("GS1-Capture-Error-Behaviour")
                     or request.headers.get("captureErrorBehaviour") or "rollback").lower()
        if behaviour not in BEHAVIOURS:
            return problem(400, "ValidationException", "Bad Request",
                           f"captureErrorBehaviour must be rollback or proceed, not {behaviour!r}")
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        try:
            capture = await asyncio.to_thread(lambda: read_capture(decode_body(body)))
        except InvalidCapture as exc:
            return problem(exc.status, "ValidationException", "Bad Request", exc.reason, errors=exc.errors)
        invalid = [{"eventIndex": i, **e.to_dict()} for i in sorted(capture.problems) for e in capture.problems[i]]
        if invalid and behaviour == "rollback":
            return problem(400, "ValidationException", "Bad Request",
                           f"{len(capture.problems)} of {capture.total} events do not conform to the EPCIS 2.0 "
                           "schema; nothing was captured (captureErrorBehaviour=rollback)", errors=invalid)
        async with self.lock:
            verdicts = await asyncio.to_thread(self._identify, capture.events)
            conflicts = [{"eventIndex": c.index, "eventID": c.event_id, "pointer": self._pointer(capture, c.index),
                          "message": "a different event is already recorded under this eventID"}
                         for c, v in zip(capture.events, verdicts) if v == "conflict"]
            if conflicts and behaviour == "rollback":
                return problem(409, "ValidationException", "Conflict",
                               f"{len(conflicts)} event(s) reuse an eventID recorded for a different event; "
                               "nothing was captured (captureErrorBehaviour=rollback)", errors=conflicts)
            job = self._job(behaviour, capture, verdicts, invalid, conflicts)
        task = asyncio.create_task(self._send(job, capture, verdicts))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        location = f"/capture/{job.capture_id}"
        return web.json_response({"captureID": job.capture_id, "location": location, "events": capture.total},
                                 status=202, headers={"Location": location})

    @staticmethod
    def _pointer(capture: Capture, index: int) -> str:
        return f"/epcisBody/eventList/{index}" if capture.kind == "EPCISDocument" else ""

    def _identify(self, events: list[CapturedEvent]) -> list[str]:
        """new, duplicate or conflict for each event, against DuckDB, events in flight and earlier ones here."""
        ids = sorted({e.event_id for e in events})
        known: dict[tuple[str, bool], list[tuple[str, str]]] = {}
        if ids:
            for event_id, declaration, event_hash, leaf in self.db.fetch(
                "SELECT event_id, declaration, event_hash, leaf_hash FROM epcis_events WHERE event_id IN "
                "(SELECT unnest(?::VARCHAR[]))", [ids]
            ):
                known.setdefault((event_id, bool(declaration)), []).append((event_hash, leaf))
        for key, seen in self.in_flight.items():
            if key[0] in ids:
                known.setdefault(key, []).extend(seen)
        out = []
        for e in events:
            key = (e.event_id, e.is_declaration)
            leaf = leaf_hash(e.leaf).hex()
            seen = known.get(key, [])
            if e.is_declaration:
                verdict = "duplicate" if any(lh == leaf for _, lh in seen) else "new"
            elif not seen:
                verdict = "new"
            else:
                verdict = "duplicate" if seen[0][0] == e.event_hash else "conflict"
            if verdict == "new":
                known.setdefault(key, []).append((e.event_hash, leaf))
            out.append(verdict)
        return out

    def _job(self, behaviour: str, capture: Capture, verdicts: list[str], invalid: list[dict[str, Any]],
             conflicts: list[dict[str, Any]]) -> CaptureJob:
        job = CaptureJob(uuid.uuid4().hex, behaviour, _now(), errors=invalid + conflicts)
        for c, verdict in zip(capture.events, verdicts):
            status = {"new": "sent", "duplicate": "duplicate", "conflict": "conflict"}[verdict]
            job.events.append({"eventIndex": c.index, "eventID": c.event_id, "idSource": c.id_source,
                               "eventHash": c.event_hash, "type": c.event_type, "status": status})
            if verdict == "new":
                leaf = leaf_hash(c.leaf).hex()
                job.waiting[leaf] = len(job.events) - 1
                self.in_flight.setdefault((c.event_id, c.is_declaration), []).append((c.event_hash, leaf))
        for i in sorted(capture.problems):
            job.events.append({"eventIndex": i, "status": "invalid"})
        job.events.sort(key=lambda e: e["eventIndex"])
        self.jobs[job.capture_id] = job
        while len(self.jobs) > self.settings.epcis.jobs_kept:
            self.jobs.popitem(last=False)
        return job

    async def _send(self, job: CaptureJob, capture: Capture, verdicts: list[str]) -> None:
        records = [(partition_key(c.event), event_record(capture.document, c.event))
                   for c, v in zip(capture.events, verdicts) if v == "new"]
        try:
            if records:
                await self.produce(records, topic=self.topic)
        except Exception as exc:  # noqa: BLE001 - any failure to send fails the job, with its reason
            log.warning("capture %s could not be sent: %s", job.capture_id, exc)
            job.errors.append({"message": f"could not send the events to {self.topic}: {exc}"})
            self._forget(job)
            job.finish("failed")
            return
        if not job.waiting:
            job.finish("succeeded")
            return
        deadline = time.monotonic() + self.settings.epcis.record_timeout
        while job.waiting and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if job.waiting:
            job.errors.append({"message": f"{len(job.waiting)} event(s) sent to {self.topic} were not recorded "
                                          f"within {self.settings.epcis.record_timeout:.0f} s (is the worker running?)"})
            job.finish("failed")

    def _forget(self, job: CaptureJob) -> None:
        for leaf in job.waiting:
            for key, seen in list(self.in_flight.items()):
                self.in_flight[key] = [s for s in seen if s[1] != leaf]
                if not self.in_flight[key]:
                    del self.in_flight[key]

    def on_batch(self, batch: IngestBatch) -> None:
        """Ingest listener: mark events recorded once their entries are committed in DuckDB."""
        recorded = {e["leaf_hash"]: e for e in batch.entries if "epcis" in e}
        if not recorded:
            return
        for key, seen in list(self.in_flight.items()):
            self.in_flight[key] = [s for s in seen if s[1] not in recorded]
            if not self.in_flight[key]:
                del self.in_flight[key]
        for job in self.jobs.values():
            if job.status != "running":
                continue
            for leaf in [lh for lh in job.waiting if lh in recorded]:
                entry = recorded[leaf]
                job.events[job.waiting.pop(leaf)].update(status="recorded", logID=entry["log_id"],
                                                          leafIndex=entry["leaf_index"])
            if not job.waiting:
                job.finish("succeeded")

    async def get_capture(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["capture_id"])
        if job is None:
            return problem(404, "NoSuchResourceException", "Not Found",
                           f"no capture job {request.match_info['capture_id']!r} (jobs are kept in memory)")
        return web.json_response(job.to_dict())

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()

