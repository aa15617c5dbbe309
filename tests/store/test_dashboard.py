"""The dashboard's routes over real HTTP on a real DuckDB ledger: panels, empty states, static files."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from ledger_fixture import Ledger, build_ledger

from pipeline.store.analytics_panels import lane_name
from pipeline.store.dashboard import WEB_ROOT, Dashboard
from pipeline.store.db import Database
from pipeline.store.http import errors_as_json
from pipeline.store.panels import lane_label


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    return build_ledger(tmp_path_factory.mktemp("dashboard-ledger"), partitions=3, events=400)


@asynccontextmanager
async def serve(db: Database, lag: dict[str, int] | None = None) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    async def current_lag() -> dict[str, int]:
        return dict(lag or {})

    dashboard = Dashboard(db, current_lag)
    app = web.Application(middlewares=[errors_as_json(10.0)])
    dashboard.register(app)
    await dashboard.start()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as http:
            yield f"http://{host}:{port}", http
    finally:
        await dashboard.stop()
        await runner.cleanup()


def get(db: Database, *paths: str, lag: dict[str, int] | None = None) -> list[tuple[int, Any]]:
    async def main() -> list[tuple[int, Any]]:
        async with serve(db, lag) as (url, http):
            if lag:
                await asyncio.sleep(1.2)  # let the lag sampler take a sample
            out = []
            for path in paths:
                async with http.get(url + path) as resp:
                    body = await resp.json() if resp.content_type == "application/json" else await resp.text()
                    out.append((resp.status, body))
            return out
    return asyncio.run(main())


def test_panels_describe_the_ledger(ledger: Ledger, tmp_path: Path) -> None:
    db = Database(ledger.copy_to(tmp_path))
    try:
        [(status, p)] = get(db, "/dashboard/panels", lag={"ledger.entries": 7, "ledger.blocks": 2})
    finally:
        db.close()
    assert status == 200
    events = sum(len(ids) for ids in ledger.event_ids.values()) - 1  # the duplicate leaf is not an event
    assert sum(r["n"] for r in p["events"]["by_type"]) == events
    assert sum(r["n"] for r in p["events"]["by_lane"]) <= events and p["events"]["lanes"] >= 1
    assert all(" → " in r["lane"] for r in p["events"]["by_lane"])
    logs = {r["log_id"]: r for r in p["ledger"]["logs"]}
    assert set(logs) == set(ledger.log_ids)
    for log_id, blocks in ledger.blocks.items():
        assert logs[log_id]["blocks"] == len(blocks) and logs[log_id]["tree_size"] == blocks[-1].tree_size
    cp = p["ledger"]["checkpoint"]
    assert cp["sequence"] == ledger.checkpoints[-1]["sequence"] and cp["logs"] == 3 and cp["age_s"] >= 0
    assert p["ledger"]["cosignatures"] == [] and p["ledger"]["cosigned_checkpoints"] == 0
    ingest = p["ingest"]
    assert len(ingest["t"]) == len(ingest["accepted"]) == len(ingest["dead_lettered"])
    assert sum(ingest["accepted"]) == events + 1  # written moments ago, duplicate leaf included
    assert ingest["lag_total"] == 9 and ingest["lag_records"][-1] == 9
    assert p["dead_letters"]["total"] == 0
    # The verify box's suggestion sits under the latest checkpoint.
    assert any(p["recent_event"] in ids for ids in ledger.event_ids.values())
    for name in ("demand", "anomalies"):
        assert p[name]["available"] is False and "analytics" in p[name]["message"]


def test_dead_letter_reasons_group_positions(tmp_path: Path) -> None:
    db = Database(tmp_path / "p.duckdb")
    try:
        for offset, error in enumerate(["not JSON: Expecting value at line 1 column 12",
                                        "not JSON: Expecting value at line 1 column 40",
                                        "invalid ShipmentEvent: mode: Field required",
                                        "not UTF-8: can't decode byte 0xed in position 238",
                                        "not UTF-8: can't decode byte 0xc3 in position 9"]):
            db.con.execute("INSERT INTO dead_letters VALUES ('shipment-events', 0, ?, NULL, '<b>x</b>', '<b>x</b>',"
                           " ?, NULL, now())", [offset, error])
        [(_, p)] = get(db, "/dashboard/panels")
    finally:
        db.close()
    reasons = {r["reason"]: r["n"] for r in p["dead_letters"]["reasons"]}
    assert reasons == {"not JSON: Expecting value at line … column …": 2,
                       "invalid ShipmentEvent: mode: Field required": 1,
                       "not UTF-8: can't decode byte … in position …": 2}
    assert p["dead_letters"]["total"] == 5 and len(p["dead_letters"]["recent"]) == 5
    assert sum(p["ingest"]["dead_lettered"]) == 5


CONTRACT_TABLES = {
    "demand": "series_key VARCHAR, ds DATE, y DOUBLE",
    "forecasts": "series_key VARCHAR, ds DATE, yhat DOUBLE, yhat_lower DOUBLE, yhat_upper DOUBLE,"
                 " yhat_lower_95 DOUBLE, yhat_upper_95 DOUBLE, trained_at TIMESTAMPTZ, model VARCHAR, input_ledger JSON",
    "anomalies": "anomaly_id VARCHAR, event_id VARCHAR, shipment_id VARCHAR, lane VARCHAR, kind VARCHAR,"
                 " severity VARCHAR, status VARCHAR, score DOUBLE, expected DOUBLE, actual DOUBLE,"
                 " observed_at TIMESTAMPTZ, detected_at TIMESTAMPTZ, explanation VARCHAR, evidence JSON,"
                 " model VARCHAR, log_id VARCHAR, leaf_index BIGINT",
}
# Columns the store's own schema adds beyond the contract's lists, with a value for test rows.
EXTRA_COLUMNS = {"revision": "1", "updated_at": "now()"}


def _insert(db: Database, table: str, select: str, params: list[Any] | None = None) -> None:
    """Rows by column name, into the store's table where its schema has one, else one with the contract's columns."""
    db.con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({CONTRACT_TABLES[table]})")
    have = {r[0] for r in db.fetch("SELECT column_name FROM duckdb_columns() WHERE table_name = ?", [table])}
    extra = "".join(f", {v} AS {k}" for k, v in EXTRA_COLUMNS.items() if k in have)
    db.con.execute(f"INSERT INTO {table} BY NAME SELECT *{extra} FROM ({select})", params or [])


def _analytics_tables(db: Database) -> None:
    """A few rows in the analytics tables, by the contract's column names."""
    _insert(db, "demand", "SELECT s AS series_key, DATE '2026-03-01' + INTERVAL (d) DAY AS ds, 10 + d AS y"
                          " FROM (VALUES ('total'), ('sku=A')) v(s), range(5) r(d)")
    for trained, model, shift in (("2026-03-05 00:00Z", "ensemble", 0), ("2026-03-04 00:00Z", "ensemble", 100),
                                  ("2026-03-05 00:00Z", "seasonal_naive", 200)):
        _insert(db, "forecasts",
                "SELECT 'total' AS series_key, DATE '2026-03-06' + INTERVAL (d) DAY AS ds, 15 + d + $1 AS yhat,"
                " 12 + d AS yhat_lower, 18 + d AS yhat_upper, 10 + d AS yhat_lower_95, 20 + d AS yhat_upper_95,"
                " $2::TIMESTAMPTZ AS trained_at, $3 AS model, '{}'::JSON AS input_ledger FROM range(3) r(d)",
                [shift, trained, model])
    _insert(db, "forecasts",  # the model as JSON naming an ensemble and its members
            "SELECT 'sku=A' AS series_key, DATE '2026-03-06' AS ds, 1.0 AS yhat, 0.5 AS yhat_lower, 1.5 AS yhat_upper,"
            " 0.2 AS yhat_lower_95, 1.8 AS yhat_upper_95, '2026-03-05 00:00Z'::TIMESTAMPTZ AS trained_at,"
            " '{\"name\": \"ensemble(ets,snaive)\", \"members\": [\"ets\", \"snaive\"]}' AS model,"
            " '{}'::JSON AS input_ledger")
    lane = "Nordfracht road 4006381333931→4012345000009"
    _insert(db, "anomalies",
            "SELECT * FROM (VALUES ('a1', 'e1', 's1', $1, 'late', 'high', 'open', 4.2, 30.0, 55.0,"
            " '2026-03-02 10:00Z'::TIMESTAMPTZ, '2026-03-02 10:00:01Z'::TIMESTAMPTZ, 'arrived 25 h after plan',"
            " '{}'::JSON, 'lane-delay', 'shipment-events/0', 3),"
            " ('a2', 'e2', 's2', $1, 'stalled', 'medium', 'resolved', 2.0, 10.0, 40.0,"
            " '2026-03-02 11:00Z'::TIMESTAMPTZ, '2026-03-02 11:00:01Z'::TIMESTAMPTZ, 'no scan for 30 h', '{}'::JSON,"
            " 'lane-delay', 'shipment-events/1', 9)) v(anomaly_id, event_id, shipment_id, lane, kind, severity, status,"
            " score, expected, actual, observed_at, detected_at, explanation, evidence, model, log_id, leaf_index)",
            [lane])


def test_analytics_panels_read_the_contract_tables(tmp_path: Path) -> None:
    db = Database(tmp_path / "p.duckdb")
    try:
        _analytics_tables(db)
        (_, p), (status, total), (_, sku), (_, none), (bad, _) = get(
            db, "/dashboard/panels", "/dashboard/demand?series=total", "/dashboard/demand?series=sku%3DA",
            "/dashboard/demand?series=nope", "/dashboard/demand")
    finally:
        db.close()
    assert p["demand"] == {"available": True, "series": ["total", "sku=A"]}
    assert status == 200 and total["available"]
    assert total["actual"]["y"] == [10, 11, 12, 13, 14] and len(total["actual"]["t"]) == 5
    f = total["forecast"]
    assert f["model"] == "ensemble" and f["yhat"] == [15, 16, 17]  # the latest run, the ensemble preferred
    assert f["yhat_lower_95"] == [10, 11, 12] and f["yhat_upper"] == [18, 19, 20]
    assert f["t"][0] - total["actual"]["t"][-1] == 86400
    assert sku["available"] and sku["forecast"]["model"] == "ensemble(ets,snaive)" and sku["forecast"]["yhat"] == [1]
    assert none["available"] is False and "nope" in none["message"]
    assert bad == 400
    a = p["anomalies"]
    assert a["available"] and a["total"] == 2 and [r["anomaly_id"] for r in a["rows"]] == ["a2", "a1"]
    assert a["rows"][1]["explanation"] == "arrived 25 h after plan"
    [lane] = a["lanes"]
    assert lane["n"] == 2 and lane["open"] == 1 and lane["kinds"] == {"late": 1, "stalled": 1}
    assert lane["lane_name"] == lane_name("Nordfracht road 4006381333931→4012345000009")


def test_lane_names_use_the_site_catalogue() -> None:
    from pipeline.core.fleet_catalog import SITES

    a, b = SITES[0], SITES[1]
    assert lane_label(a.gln, b.gln) == f"{a.city} → {b.city}"
    assert lane_label("DE-HAM", None) == "DE-HAM → ?"
    assert lane_name(f"{a.gln}->{b.gln}") == f"{a.city}->{b.city}"
    assert lane_name(None) == "?"


def test_page_and_static_files_are_served(tmp_path: Path) -> None:
    db = Database(tmp_path / "p.duckdb")
    try:
        (s1, page), (s2, js), (s3, uplot), (s4, _), (s5, _) = get(
            db, "/", "/web/verify.js", "/web/vendor/uplot/uPlot.iife.min.js", "/web/../store/db.py", "/web/nope.js")
    finally:
        db.close()
    assert (s1, s2, s3) == (200, 200, 200)
    assert "/web/app.js" in page and "verifyBundle" in js and "uPlot" in uplot
    assert s4 in (403, 404) and s5 == 404


def test_the_page_loads_nothing_from_elsewhere() -> None:
    """Offline: no file of the page names another host (the vendored licence text aside)."""
    for path in WEB_ROOT.rglob("*"):
        if path.suffix in (".html", ".js", ".css") and path.parent.name != "uplot":
            text = path.read_text()
            assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text), path
            assert not re.search(r"(fetch|import)\(\s*[\"'`]https?://", text), path
    assert (WEB_ROOT / "vendor" / "uplot" / "LICENSE").read_text().startswith("The MIT License")
