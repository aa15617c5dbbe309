"""The store's HTTP API over real HTTP on loopback, with a real DuckDB file and a recording producer."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from local_http import served_at
from factories import as_bytes, make_event, make_events

from pipeline.core import wire
from pipeline.core.ledger import PartitionLog, accept
from pipeline.settings import Settings
from pipeline.store.db import Database, IngestBatch
from pipeline.store.http import Api

LOG = "shipment-events/1"
STATUS = {
    "status": "ok",
    "lag": {"ledger.entries": 3, "ledger.blocks": 0},
    "tables": {"events": 12, "blocks": 2},
    "ingest": {"polls": 5, "events": 12, "replayed": 0, "lag": {"x": 1}},
}


@dataclass
class Server:
    url: str
    http: aiohttp.ClientSession
    db: Database
    produced: list[list[tuple[bytes | None, bytes]]] = field(default_factory=list)

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.http.get(self.url + path, **kw) as resp:
            return resp.status, await resp.json()

    async def post(self, path: str, data: bytes, **kw: Any) -> tuple[int, Any]:
        async with self.http.post(self.url + path, data=data, **kw) as resp:
            return resp.status, json.loads(await resp.read(), parse_constant=_no_constants)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@asynccontextmanager
async def serve(tmp_path: Path) -> AsyncIterator[Server]:
    settings = Settings(data_dir=tmp_path, store={"row_cap": 4, "query_timeout": 5.0})
    db = Database(tmp_path / "provenance.duckdb")
    produced: list[list[tuple[bytes | None, bytes]]] = []

    async def produce(records: list[tuple[bytes | None, bytes]]) -> None:
        produced.append(records)

    async def status() -> dict[str, Any]:
        return STATUS

    api = Api(settings, db, produce, status)
    try:
        async with served_at(api.app) as url, aiohttp.ClientSession() as http:
            yield Server(url, http, db, produced)
    finally:
        db.close()


def run(tmp_path: Path, scenario: Callable[[Server], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        async with serve(tmp_path) as server:
            await scenario(server)
    asyncio.run(main())


def ingest(db: Database, events: list[dict[str, Any]], seal: bool) -> None:
    plog = PartitionLog(LOG)
    for i, e in enumerate(events):
        plog.admit(i)
        event, payload = accept(as_bytes(e))
        plog.append(i, event, payload)
    entries = list(plog.pending)
    sealed = plog.seal("2026-03-01T09:00:00.000Z") if seal else None
    db.ingest(IngestBatch(entries=[wire.entry_record(LOG, e) for e in entries],
                          blocks=[sealed.header] if sealed else []))


# ---- POST /events --------------------------------------------------------------------


def test_one_event_is_accepted(tmp_path: Path) -> None:
    async def scenario(s: Server) -> None:
        event = make_event(shipment_id="shp-77")
        status, body = await s.post("/events", as_bytes(event))
        assert status == 202
        assert body["accepted"] == 1 and body["topic"] == "shipment-events"
        assert s.produced == [[(b"shp-77", as_bytes(event))]]  # keyed by shipment, the bytes as sent
    run(tmp_path, scenario)


def test_ndjson_events_are_accepted_in_order(tmp_path: Path) -> None:
    async def scenario(s: Server) -> None:
        events = make_events(3, seed=2)
        status, body = await s.post("/events", b"\n".join(as_bytes(e) for e in events) + b"\n",
                                    headers={"content-type": "application/x-ndjson"})
        assert status == 202 and body["accepted"] == 3
        (records,) = s.produced
        assert [json.loads(v) for _, v in records] == events
        assert [k for k, _ in records] == [e["shipment_id"].encode() for e in events]
    run(tmp_path, scenario)


def test_json_array_of_events_is_accepted(tmp_path: Path) -> None:
    async def scenario(s: Server) -> None:
        events = make_events(2, seed=3)
        status, body = await s.post("/events", json.dumps(events).encode())
        assert status == 202 and body["accepted"] == 2
        assert [json.loads(v) for _, v in s.produced[0]] == events
    run(tmp_path, scenario)


def test_one_bad_line_refuses_the_whole_body(tmp_path: Path) -> None:
    async def scenario(s: Server) -> None:
        good = make_events(3, seed=4)
        lines = [as_bytes(good[0]), as_bytes(make_event(event_id="bad", mode="truck")), as_bytes(good[1]),
                 b"{not json", as_bytes(good[2])]
        status, body = await s.post("/events", b"\n".join(lines))
        assert status == 400
        assert [p["line"] for p in body["invalid"]] == [2, 4]
        assert [f["field"] for f in body["invalid"][0]["fields"]] == ["mode"]
        assert "not JSON" in body["invalid"][1]["error"]
        assert "nothing was sent" in body["error"]
        assert s.produced == []
    run(tmp_path, scenario)


def test_bad_line_number_counts_blank_lines(tmp_path: Path) -> None:
    async def scenario(s: Server) -> None:
        body = as_bytes(make_event(event_id="a")) + b"\n\n" + as_bytes(make_event(event_id="b", mode="truck"))
        status, answer = await s.post("/events", body)
        assert status == 400
        assert [p["line"] for p in answer["invalid"]] == [3]
    run(tmp_path, scenario)


@pytest.mark.parametrize("body", [b"", b"  \n\n ", b"\xff\xfe{}", as_bytes(make_event()).replace(b"Nordfracht",
                                                                                            b"Nordfr\xe4cht")])
def test_empty_or_undecodable_body_is_refused(tmp_path: Path, body: bytes) -> None:
    async def scenario(s: Server) -> None:
        status, answer = await s.post("/events", body)
        assert status == 400
        assert answer["error"]
        assert s.produced == []
    run(tmp_path, scenario)


# ---- reading ---------------------------------------------------------------------------


def test_event_lookup_before_and_after_ingest(tmp_path: Path) -> None:
    async def scenario(s: Server) -> None:
        events = make_events(4, seed=5)
        target = events[2]
        status, body = await s.get(f"/events/{target['event_id']}")
        assert status == 404 and target["event_id"] in body["error"]

        ingest(s.db, events, seal=False)
        status, body = await s.get(f"/events/{target['event_id']}")
        assert status == 200
        assert body["event"] == target
        ledger = body["ledger"]
        assert (ledger["log_id"], ledger["leaf_index"], ledger["kafka_offset"]) == (LOG, 2, 2)
        assert ledger["sealed"] is False and ledger["block"] is None

        ingest(s.db, events, seal=True)  # the entries again (a replay) and now their block
        status, body = await s.get(f"/events/{target['event_id']}")
        assert status == 200
        assert body["ledger"]["sealed"] is True
        assert body["ledger"]["block"]["height"] == 0 and body["ledger"]["block"]["tree_size"] == 4
    run(tmp_path, scenario)


def test_blocks(tmp_path: Path) -> None:
    async def scenario(s: Server) -> None:
        status, body = await s.get("/blocks")
        assert (status, body) == (200, {"blocks": []})
        ingest(s.db, make_events(3, seed=6), seal=True)
        status, body = await s.get("/blocks")
        assert status == 200
        (block,) = body["blocks"]
        assert (block["log_id"], block["height"], block["tree_size"]) == (LOG, 0, 3)
        assert len(block["block_hash"]) == 64
        assert (await s.get(f"/blocks?log_id={LOG}&limit=1"))[1]["blocks"] == [block]
        assert (await s.get("/blocks?log_id=other/0"))[1]["blocks"] == []
        status, body = await s.get("/blocks?limit=many")
        assert status == 400 and "integer" in body["error"]
    run(tmp_path, scenario)


# ---- POST /sql -----------------------------------------------------------------------


def test_sql_query(tmp_path: Path) -> None:
    async def scenario(s: Server) -> None:
        ingest(s.db, make_events(6, seed=7), seal=True)
        status, body = await s.post("/sql", json.dumps({"query": "SELECT leaf_index, event_id FROM events"
                                                                 " ORDER BY leaf_index"}).encode())
        assert status == 200
        assert body["columns"] == ["leaf_index", "event_id"]
        assert [r[0] for r in body["rows"]] == [0, 1, 2, 3]  # row_cap 4
        assert body["truncated"] is True
        status, body = await s.post("/sql", json.dumps({"query": "SELECT count(*) AS n FROM blocks"}).encode())
        assert (status, body) == (200, {"columns": ["n"], "rows": [[1]], "truncated": False})
    run(tmp_path, scenario)


def test_sql_rows_as_objects(tmp_path: Path) -> None:
    async def scenario(s: Server) -> None:
        ingest(s.db, make_events(2, seed=7), seal=True)
        query = json.dumps({"query": "SELECT leaf_index, log_id FROM events ORDER BY leaf_index"}).encode()
        status, body = await s.post("/sql?shape=objects", query)
        assert status == 200
        assert body["rows"] == [{"leaf_index": 0, "log_id": LOG}, {"leaf_index": 1, "log_id": LOG}]
        assert body["columns"] == ["leaf_index", "log_id"]
        status, body = await s.post("/sql?shape=maps", query)
        assert status == 400 and "shape" in body["error"]
    run(tmp_path, scenario)


@pytest.mark.parametrize("query", ["DELETE FROM events", "DROP TABLE blocks", "SELECT 1; DELETE FROM events",
                                   "COPY events TO 'x.csv'", "SELECT * FROM read_text('/etc/hostname')"])
def test_sql_write_or_file_access_is_refused(tmp_path: Path, query: str) -> None:
    async def scenario(s: Server) -> None:
        ingest(s.db, make_events(2, seed=8), seal=True)
        status, body = await s.post("/sql", json.dumps({"query": query}).encode())
        assert status == 400 and body["error"]
        assert s.db.counts()["events"] == 2 and s.db.counts()["blocks"] == 1
    run(tmp_path, scenario)


@pytest.mark.parametrize("body", [b"SELECT 1", b"", b'{"query": 5}', b'["SELECT 1"]', b'{"sql": "SELECT 1"}',
                                  b"\xff\xfe"])
def test_sql_body_must_be_a_json_query(tmp_path: Path, body: bytes) -> None:
    async def scenario(s: Server) -> None:
        status, answer = await s.post("/sql", body)
        assert status == 400 and "query" in answer["error"]
    run(tmp_path, scenario)


def test_sql_answer_is_strict_json(tmp_path: Path) -> None:
    async def scenario(s: Server) -> None:
        status, _ = await s.post("/sql", json.dumps({"query": "SELECT 'nan'::DOUBLE AS a, 'inf'::DOUBLE AS b"})
                                 .encode())
        assert status == 200
    run(tmp_path, scenario)


# ---- health and metrics --------------------------------------------------------------


def test_health(tmp_path: Path) -> None:
    async def scenario(s: Server) -> None:
        assert await s.get("/health") == (200, STATUS)
    run(tmp_path, scenario)


SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*"'
                    r'(,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*")*\})? -?[0-9.eE+-]+$')


def test_metrics_are_prometheus_text(tmp_path: Path) -> None:
    async def scenario(s: Server) -> None:
        async with s.http.get(s.url + "/metrics") as resp:
            assert resp.status == 200
            assert resp.content_type == "text/plain"
            text = await resp.text()
        assert text.endswith("\n")
        samples = {}
        for line in text.splitlines():
            if line.startswith("#"):
                assert re.match(r"^# (TYPE \S+ (gauge|counter|histogram|untyped)|HELP \S+ .*)$", line), line
                continue
            assert SAMPLE.match(line), line
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
        assert samples['provenance_table_rows{table="events"}'] == 12
        assert samples['provenance_table_rows{table="blocks"}'] == 2
        # Counters end in _total, durations are in seconds.
        for name in samples:
            base = name.split("{")[0]
            assert base.startswith(("provenance_", "process_", "python_")), base
        assert "# TYPE provenance_events_consumed_total counter" in text or \
            "# TYPE provenance_events_consumed counter" in text
        assert "# TYPE provenance_proof_serving_seconds histogram" in text
    run(tmp_path, scenario)


def test_unknown_route_is_a_json_404(tmp_path: Path) -> None:
    async def scenario(s: Server) -> None:
        status, body = await s.get("/no/such/route")
        assert status == 404 and body["error"]
    run(tmp_path, scenario)
