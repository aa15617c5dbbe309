"""POST /capture, GET /capture/{id}, GET /events/{id}, GET /epcis/events over real HTTP, with a real DuckDB file.

The producer stands in for Kafka and the worker: each record it is handed is
turned into leaves by the worker's own accept function, appended to a log
and ingested, as the store would ingest `ledger.entries`.
"""

from __future__ import annotations

import asyncio
import copy
import json
import urllib.parse
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from local_http import served_at

from pipeline.core import wire
from pipeline.core.epcis.query import query_document
from pipeline.core.epcis.record import accept_epcis_record
from pipeline.core.epcis.validator import schema_errors
from pipeline.core.ledger import PartitionLog
from pipeline.settings import Settings
from pipeline.store.db import Database, IngestBatch
from pipeline.store.http import Api

EXAMPLES = Path(__file__).resolve().parents[1] / "vectors" / "epcis" / "examples"
LD = {"Content-Type": "application/ld+json"}


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


@dataclass
class Server:
    url: str
    http: aiohttp.ClientSession
    db: Database
    api: Api
    sent: list[tuple[str, bytes | None, bytes]] = field(default_factory=list)

    async def capture(self, body: bytes | dict[str, Any], query: str = "", headers: dict[str, str] | None = None
                      ) -> tuple[int, Any, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self.http.post(self.url + "/capture" + query, data=data, headers=headers or LD) as resp:
            return resp.status, await resp.json(content_type=None), resp.headers

    async def get(self, path: str) -> tuple[int, Any, Any]:
        async with self.http.get(self.url + path) as resp:
            return resp.status, await resp.json(content_type=None), resp.headers

    async def job(self, location: str) -> dict[str, Any]:
        for _ in range(200):
            status, job, _ = await self.get(location)
            assert status == 200
            if not job["running"]:
                return job  # type: ignore[no-any-return]
            await asyncio.sleep(0.02)
        raise AssertionError(f"capture {location} still running")

    def rows(self) -> int:
        return int(self.db.fetch("SELECT count(*) FROM epcis_events")[0][0])


@asynccontextmanager
async def serve(tmp_path: Path, **epcis: Any) -> AsyncIterator[Server]:
    settings = Settings(data_dir=tmp_path, epcis=epcis)
    db = Database(tmp_path / "provenance.duckdb")
    plog = PartitionLog("epcis-events/0")
    holder: dict[str, Server] = {}

    async def produce(records: list[tuple[bytes | None, bytes]], topic: str | None = None) -> None:
        server = holder["s"]
        entries = []
        for key, value in records:
            server.sent.append((topic or "", key, value))
            offset = len(server.sent) - 1
            plog.admit(offset)
            for facts, leaf in accept_epcis_record(value):
                entries.append(plog.append(offset, facts, leaf))
        batch = IngestBatch(entries=[wire.entry_record(plog.log_id, e) for e in entries])
        db.ingest(batch)
        server.api.capture.on_batch(batch)

    async def status() -> dict[str, Any]:
        return {}

    api = Api(settings, db, produce, status)
    try:
        async with served_at(api.app) as url, aiohttp.ClientSession() as http:
            holder["s"] = Server(url, http, db, api)
            yield holder["s"]
    finally:
        await api.capture.close()
        db.close()


def run(tmp_path: Path, scenario: Callable[[Server], Coroutine[Any, Any, None]], **epcis: Any) -> None:
    async def main() -> None:
        async with serve(tmp_path, **epcis) as server:
            await scenario(server)
    asyncio.run(main())


def test_a_document_is_captured_as_a_job(tmp_path: Path) -> None:
    async def scenario(s: Server) -> None:
        status, body, headers = await s.capture(example("Example_9.6.1-ObjectEvent.jsonld"))
        assert status == 202 and headers["Location"] == f"/capture/{body['captureID']}"
        job = await s.job(headers["Location"])
        assert job["status"] == "succeeded" and job["success"] and job["captureErrorBehaviour"] == "rollback"
        assert [e["status"] for e in job["events"]] == ["recorded", "recorded"]
        assert [e["leafIndex"] for e in job["events"]] == [0, 1]
        # sent as one-event documents keeping the document's context, keyed by the first EPC
        topic, key, value = s.sent[0]
        assert topic == "epcis-events" and key == b"https://id.gs1.org/01/10614141073464/21/2017"
        assert json.loads(value)["@context"] == example("Example_9.6.1-ObjectEvent.jsonld")["@context"]
        original = example("Example_9.6.1-ObjectEvent.jsonld")["epcisBody"]["eventList"][0]
        status, found, _ = await s.get("/events/" + urllib.parse.quote(original["eventID"], safe=""))
        assert status == 200 and found["event"] == original
        assert found["view"]["event_type"] == "departed" and found["view"]["attributes"]["epcis"]["mapped"]
        assert found["ledger"]["log_id"] == "epcis-events/0" and found["epcis"]["epcis_type"] == "ObjectEvent"
    run(tmp_path, scenario)


def test_an_event_without_event_id_gets_the_cbv_hash(tmp_path: Path) -> None:
    async def scenario(s: Server) -> None:
        doc = example("Example_9.6.2-ObjectEvent.jsonld")
        event = {**doc["epcisBody"]["eventList"][0], "@context": doc["@context"]}
        del event["eventID"]
        status, body, headers = await s.capture(event, headers={"Content-Type": "application/json"})
        assert status == 202
        job = await s.job(headers["Location"])
        (only,) = job["events"]
        assert only["idSource"] == "hash" and only["eventID"].startswith("ni:///sha-256;")
        assert only["eventID"].endswith("?ver=CBV2.0") and only["status"] == "recorded"
        status, found, _ = await s.get("/events/" + urllib.parse.quote(only["eventID"], safe=""))
        assert status == 200 and found["event"] == event
    run(tmp_path, scenario)


def test_duplicates_add_no_row_and_a_different_event_under_a_known_id_is_409(tmp_path: Path) -> None:
    async def scenario(s: Server) -> None:
        doc = example("Example_9.6.1-ObjectEvent.jsonld")
        _, _, headers = await s.capture(doc)
        await s.job(headers["Location"])
        assert s.rows() == 2
        status, _, headers = await s.capture(doc)
        job = await s.job(headers["Location"])
        assert status == 202 and [e["status"] for e in job["events"]] == ["duplicate", "duplicate"]
        assert s.rows() == 2 and len(s.sent) == 2  # nothing sent again
        changed = copy.deepcopy(doc)
        changed["epcisBody"]["eventList"][1]["action"] = "ADD"
        status, problem, _ = await s.capture(changed)
        assert status == 409 and problem["errors"][0]["eventIndex"] == 1
        assert problem["errors"][0]["pointer"] == "/epcisBody/eventList/1"
        status, _, headers = await s.capture(changed, query="?captureErrorBehaviour=proceed")
        job = await s.job(headers["Location"])
        assert [e["status"] for e in job["events"]] == ["duplicate", "conflict"] and not job["success"]
        assert s.rows() == 2
    run(tmp_path, scenario)


def test_rollback_records_nothing_and_proceed_records_the_good_events(tmp_path: Path) -> None:
    async def scenario(s: Server) -> None:
        doc = example("Example_9.6.1-ObjectEvent.jsonld")
        doc["epcisBody"]["eventList"][1]["eventTimeZoneOffset"] = "+25:00"
        status, problem, headers = await s.capture(doc)
        assert status == 400 and headers["Content-Type"].startswith("application/problem+json")
        assert problem["status"] == 400 and problem["errors"][0]["pointer"] == \
            "/epcisBody/eventList/1/eventTimeZoneOffset"
        assert s.rows() == 0 and s.sent == []
        status, _, headers = await s.capture(doc, headers={**LD, "GS1-Capture-Error-Behaviour": "proceed"})
        job = await s.job(headers["Location"])
        assert status == 202 and [e["status"] for e in job["events"]] == ["recorded", "invalid"]
        assert job["errors"][0]["eventIndex"] == 1 and s.rows() == 1
    run(tmp_path, scenario)


def test_malformed_bodies_get_the_right_problem(tmp_path: Path) -> None:
    async def scenario(s: Server) -> None:
        doc = example("Example_9.6.1-ObjectEvent.jsonld")
        wrong_type = copy.deepcopy(doc)
        wrong_type["epcisBody"]["eventList"][0]["type"] = "ShippingEvent"
        no_time = copy.deepcopy(doc)
        del no_time["epcisBody"]["eventList"][0]["eventTime"]
        no_offset = copy.deepcopy(doc)
        del no_offset["epcisBody"]["eventList"][0]["eventTimeZoneOffset"]
        cases: list[tuple[bytes | dict[str, Any], dict[str, str], int, str]] = [
            (wrong_type, LD, 400, "/epcisBody/eventList/0/type"),
            (no_time, LD, 400, "/epcisBody/eventList/0"),
            (no_offset, LD, 400, "/epcisBody/eventList/0"),
            (b"{not json", LD, 400, ""),
            (json.dumps(doc).encode("utf-16"), LD, 400, ""),
            (b"[" * 10_000 + b"]" * 10_000, LD, 400, ""),
            (json.dumps(doc).encode(), {"Content-Type": "text/plain"}, 415, ""),
            (b" " * 40_000, LD, 413, ""),
            ({"type": "EPCISDocument"}, LD, 400, ""),
        ]
        for body, headers, want, pointer in cases:
            status, problem, h = await s.capture(body, headers=headers)
            assert status == want, (want, problem)
            assert h["Content-Type"].startswith("application/problem+json") and problem["status"] == want
            if pointer:
                assert any(e["pointer"] == pointer for e in problem["errors"]), problem
        assert s.rows() == 0 and s.sent == []
    run(tmp_path, scenario, max_body=30_000)


def test_an_error_declaration_is_linked_to_its_original(tmp_path: Path) -> None:
    async def scenario(s: Server) -> None:
        original_doc = example("Example_9.6.1-ObjectEvent.jsonld")
        original = original_doc["epcisBody"]["eventList"][0]
        corrective = {**copy.deepcopy(original), "eventID": "urn:uuid:7d3b5e1c-0000-4000-8000-000000000001",
                      "bizStep": "receiving"}
        declaration = {**copy.deepcopy(original), "errorDeclaration": {
            "declarationTime": "2005-04-05T10:00:00Z", "reason": "incorrect_data",
            "correctiveEventIDs": [corrective["eventID"]]}}
        for events in ([original], [declaration, corrective]):
            doc = {**original_doc, "epcisBody": {"eventList": events}}
            _, _, headers = await s.capture(doc)
            job = await s.job(headers["Location"])
            assert job["status"] == "succeeded", job
        assert s.rows() == 3
        status, found, _ = await s.get("/events/" + urllib.parse.quote(original["eventID"], safe=""))
        assert status == 200 and found["event"] == original  # the original, never rewritten
        assert [d["event"] for d in found["corrections"]["declarations"]] == [declaration]
        (linked,) = found["corrections"]["corrective_events"]
        assert linked["event_id"] == corrective["eventID"] and linked["event"] == corrective
        _, fixed, _ = await s.get("/events/" + urllib.parse.quote(corrective["eventID"], safe=""))
        assert fixed["corrections"]["corrects"] == [original["eventID"]]
        _, _, headers = await s.capture({**original_doc, "epcisBody": {"eventList": [declaration]}})
        job = await s.job(headers["Location"])
        assert [e["status"] for e in job["events"]] == ["duplicate"] and s.rows() == 3
    run(tmp_path, scenario)


def test_query_filters_and_expiring_pages(tmp_path: Path) -> None:
    async def scenario(s: Server) -> None:
        for name in ("Example_9.6.1-ObjectEvent.jsonld", "Example_9.6.3-AggregationEvent.jsonld",
                     "Example_9.6.2-ObjectEvent.jsonld"):
            _, _, headers = await s.capture(example(name))
            await s.job(headers["Location"])
        status, doc, headers = await s.get("/epcis/events?eventType=ObjectEvent&perPage=2")
        assert status == 200 and doc["type"] == "EPCISQueryDocument" and schema_errors(doc) == []
        first = doc["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
        assert len(first) == 2 and 'rel="next"' in headers["Link"]
        next_url = headers["Link"].split(">")[0][1:]
        async with s.http.get(next_url) as resp:
            second = (await resp.json(content_type=None))["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
            assert "Link" not in resp.headers
        assert len(second) == 1 and all(e["type"] == "ObjectEvent" for e in first + second)
        times = [e["eventTime"] for e in first + second]
        assert len(set(map(str, times))) == 3
        _, shipped, _ = await s.get("/epcis/events?bizStep=shipping")
        assert [e["bizStep"] for e in shipped["epcisBody"]["queryResults"]["resultsBody"]["eventList"]] == ["shipping"]
        _, by_epc, _ = await s.get("/epcis/events?EPC=urn:epc:id:sgtin:0614141.107346.2018")
        assert len(by_epc["epcisBody"]["queryResults"]["resultsBody"]["eventList"]) == 3  # two epcLists, one child
        _, by_parent, _ = await s.get("/epcis/events?EPC=urn:epc:id:sscc:0614141.1234567890")
        (pallet,) = by_parent["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
        assert pallet["type"] == "AggregationEvent"
        _, window, _ = await s.get("/epcis/events?GE_eventTime=2005-04-04T00:00:00Z&LT_eventTime=2005-04-05T00:00:00Z")
        assert all("2005-04-04" in e["eventTime"] or "2005-04-03T2" in e["eventTime"]
                   for e in window["epcisBody"]["queryResults"]["resultsBody"]["eventList"])
        status, problem, _ = await s.get("/epcis/events?perPage=0")
        assert status == 400 and problem["type"] == "epcisException:QueryParameterException"
    run(tmp_path, scenario)


def test_next_page_tokens_expire(tmp_path: Path) -> None:
    async def scenario(s: Server) -> None:
        _, _, headers = await s.capture(example("Example_9.6.1-ObjectEvent.jsonld"))
        await s.job(headers["Location"])
        _, _, headers = await s.get("/epcis/events?perPage=1")
        next_url = headers["Link"].split(">")[0][1:]
        await asyncio.sleep(1.2)
        async with s.http.get(next_url) as resp:
            assert resp.status == 400 and "expired" in (await resp.json(content_type=None))["detail"]
        tampered = next_url.replace("perPage=1", "perPage=1&eventType=ObjectEvent")
        async with s.http.get(tampered) as resp:
            assert resp.status == 400
    run(tmp_path, scenario, page_token_ttl=1.0)


def test_query_document_is_valid_epcis() -> None:
    doc = query_document([], [None, ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"]],
                         "2026-01-01T00:00:00Z")
    assert schema_errors(doc) == []


def test_events_straight_from_kafka_keep_every_leaf_but_one_row_per_event(tmp_path: Path) -> None:
    db = Database(tmp_path / "provenance.duckdb")
    try:
        doc = example("Example_9.6.2-ObjectEvent.jsonld")
        changed = copy.deepcopy(doc)
        changed["epcisBody"]["eventList"][0]["action"] = "ADD"
        plog = PartitionLog("epcis-events/3")
        entries = []
        for offset, value in enumerate([doc, doc, changed]):
            plog.admit(offset)
            for facts, leaf in accept_epcis_record(json.dumps(value).encode()):
                entries.append(plog.append(offset, facts, leaf))
        result = db.ingest(IngestBatch(entries=[wire.entry_record(plog.log_id, e) for e in entries]))
        assert (result.epcis_events, result.duplicates) == (1, 2)
        assert db.fetch("SELECT leaf_index FROM duplicate_leaves ORDER BY 1") == [(1,), (2,)]
        assert db.next_leaf_indices() == {"epcis-events/3": 3}
        (row,) = db.fetch_dicts("SELECT * FROM epcis_events")
        assert row["kafka_partition"] == 3 and row["epcis_type"] == "ObjectEvent" and row["biz_step"] == "receiving"
        assert json.loads(row["original"]) == doc["epcisBody"]["eventList"][0]
    finally:
        db.close()
