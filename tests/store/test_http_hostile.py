"""Hostile bodies against the store's HTTP API: a clear 4xx for each, never a 500 or a stack trace, and the
store still answers afterwards. Real HTTP on loopback, a real DuckDB file, a recording producer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from local_http import served_at
from factories import as_bytes, make_event
from hostile import HOSTILE

from pipeline.settings import Settings
from pipeline.store.db import Database
from pipeline.store.http import Api


class Store:
    def __init__(self, url: str, http: aiohttp.ClientSession, produced: list[Any], gate: asyncio.Event) -> None:
        self.url, self.http, self.produced, self.gate = url, http, produced, gate

    async def post(self, path: str, data: bytes, **kw: Any) -> tuple[int, Any, dict[str, str]]:
        async with self.http.post(self.url + path, data=data, **kw) as resp:
            body = await resp.read()
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = body.decode("utf-8", "replace")
            return resp.status, parsed, dict(resp.headers)

    async def healthy(self) -> bool:
        async with self.http.get(self.url + "/health") as resp:
            return resp.status == 200 and (await resp.json())["status"] == "ok"


@asynccontextmanager
async def serving(tmp_path: Path, **limits: Any) -> AsyncIterator[Store]:
    settings = Settings(data_dir=tmp_path, limits={"max_body": 4 * 1_048_576, **limits})
    db = Database(tmp_path / "provenance.duckdb")
    produced: list[Any] = []
    gate = asyncio.Event()
    gate.set()

    async def produce(records: list[tuple[bytes | None, bytes]]) -> None:
        await gate.wait()
        produced.append(records)

    async def status() -> dict[str, Any]:
        return {"status": "ok"}

    api = Api(settings, db, produce, status)
    try:
        async with served_at(api.app) as url, \
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            yield Store(url, http, produced, gate)
    finally:
        db.close()


def assert_clear_refusal(status: int, body: Any, expected: int = 400) -> str:
    assert status == expected, (status, body)
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"].strip(), body
    text = " | ".join([body["error"], *(str(p.get("error")) for p in body.get("invalid", []))])
    assert "Traceback" not in json.dumps(body) and 'File "' not in json.dumps(body)
    return text


def test_each_hostile_record_is_a_400_with_its_reason_and_the_store_stays_up(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as store:
            for name, (raw, fragment) in HOSTILE.items():
                status, body, _ = await store.post("/events", raw)
                if name == "array-of-events":  # a JSON array of events is a batch over HTTP
                    assert status == 202, body
                    continue
                text = assert_clear_refusal(status, body)
                if name not in ("empty", "whitespace"):
                    assert fragment in text, (name, body)
                assert await store.healthy(), name
            # as NDJSON lines between valid ones: the whole request is refused, line by line
            good = as_bytes(make_event())
            lines = [good] + [raw.replace(b"\n", b" ") for raw, _ in HOSTILE.values() if raw.strip()][:10] + [good]
            status, body, _ = await store.post("/events", b"\n".join(lines))
            assert_clear_refusal(status, body)
            assert len(store.produced) == 1  # the array above, nothing else
            status, body, _ = await store.post("/events", good)
            assert status == 202 and len(store.produced) == 2

    asyncio.run(scenario())


def test_body_limits(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, max_request_events=5) as store:
            status, body, _ = await store.post("/events", b"x" * (4 * 1_048_576 + 1))
            assert_clear_refusal(status, body, 413)
            event = as_bytes(make_event())
            status, body, _ = await store.post("/events", b"\n".join([event] * 6))
            assert "more than the limit of 5" in assert_clear_refusal(status, body)
            status, body, _ = await store.post("/events", b"[" + b",".join([event] * 6) + b"]")
            assert "more than the limit of 5" in assert_clear_refusal(status, body)
            status, body, _ = await store.post("/events", b"[" + b",".join([event] * 5) + b"]")
            assert status == 202, body
            # one NDJSON line over the record size: that line is named
            big = as_bytes(make_event(attributes={"pad": ["y" * 60_000] * 18}))
            status, body, _ = await store.post("/events", event + b"\n" + big)
            assert_clear_refusal(status, body)
            assert [p["line"] for p in body["invalid"]] == [2]
            assert "bytes, more than the limit" in body["invalid"][0]["error"]
            # an array body nested too deep, and an array whose items are
            for raw in (b"[" * 100_000 + b"]" * 100_000, b"[" + b"[" * 70 + b"]" * 70 + b"]"):
                status, body, _ = await store.post("/events", raw)
                assert "nested deeper than" in assert_clear_refusal(status, body)
            assert await store.healthy()

    asyncio.run(scenario())


def test_hostile_sql_bodies_are_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as store:
            for raw in (b"[" * 100_000, b'{"query": "select 1", "query": "select 2"}', b"\xef\xbb\xbf{}", b"",
                        b'{"query": 1}', b"[]", b'{"query": "' + b"x" * 70_000 + b'"}'):
                status, body, _ = await store.post("/sql", raw)
                assert_clear_refusal(status, body)
            assert await store.healthy()

    asyncio.run(scenario())


def test_concurrent_writes_beyond_the_limit_get_429_with_retry_after(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, max_concurrent_writes=2) as store:
            store.gate.clear()  # the producer blocks: writes pile up
            event = as_bytes(make_event())
            held = [asyncio.ensure_future(store.post("/events", event)) for _ in range(2)]
            await asyncio.sleep(0.3)
            status, body, headers = await store.post("/events", event)
            assert_clear_refusal(status, body, 429)
            assert headers["Retry-After"] == "1"
            assert await store.healthy()  # reads are not limited
            store.gate.set()
            assert [s for s, _, _ in await asyncio.gather(*held)] == [202, 202]
            status, _, _ = await store.post("/events", event)
            assert status == 202

    asyncio.run(scenario())


def test_slow_requests_are_stopped_and_unexpected_errors_hide_their_trace(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, request_timeout=0.5) as store:
            async def trickle() -> AsyncIterator[bytes]:
                yield b'{"event_id":'
                await asyncio.sleep(2)
                yield b'"x"}'

            status, body, _ = await store.post("/events", trickle())
            assert "longer than 0.5s" in assert_clear_refusal(status, body, 503)

            def broken(*args: Any, **kwargs: Any) -> Any:
                raise RuntimeError("secret internal detail")

            monkeypatch.setattr("pipeline.store.http.accept", broken)
            status, body, _ = await store.post("/events", as_bytes(make_event()))
            text = assert_clear_refusal(status, body, 500)
            assert "secret internal detail" not in text
            assert await store.healthy()

    asyncio.run(scenario())
