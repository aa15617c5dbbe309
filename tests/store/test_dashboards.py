"""Grafana's provisioning and dashboards, checked without Grafana.

Every panel names a provisioned data source; every panel's query, with
Grafana's variables and each plugin's macros expanded the way they are
(tests/grafana_plugins.py ports them from their sources), runs against a
fixture store and returns rows its plugin can frame: Infinity requests,
built from the provisioned data source, through the store's real HTTP API;
DuckDB queries with a real DuckDB 1.5 (the version the plugin embeds) on a
snapshot the store published. tests/store/test_grafana_plugins.py checks
the files field by field against the plugins' settings and query models.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import grafana_plugins as plugins
import pytest
import yaml
from aiohttp import web
from duckdb15 import read_with_duckdb15
from grafana_files import COMPOSE_ENV, DASHBOARDS, dashboards, panels, provisioned_with
from grafana_plugins import Request
from ledger_fixture import build_ledger
from prometheus_client.parser import text_string_to_metric_families

from pipeline import metrics
from pipeline.settings import Settings
from pipeline.store.db import Database, IngestBatch
from pipeline.store.http import Api
from pipeline.store.snapshot import publish_snapshot, scratch_paths

NOW = datetime.now(timezone.utc)
# The range a user would pick to see the fixture: its event times (March 2026) up to now.
START, END = datetime(2026, 1, 1, tzinfo=timezone.utc), NOW + timedelta(days=1)
INTERVAL_MS = 60_000


# ---- provisioning ----------------------------------------------------------------------------


def test_dashboard_json_is_generated_from_the_panel_list() -> None:
    done = subprocess.run([sys.executable, str(DASHBOARDS / "generate.py"), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_panel_and_variable_uses_a_provisioned_data_source() -> None:
    sources = provisioned_with(COMPOSE_ENV)
    assert {ds["type"] for ds in sources.values()} == {
        "yesoreyeram-infinity-datasource", "motherduck-duckdb-datasource", "prometheus"}
    boards = dashboards()
    assert set(boards) == {"provenance-live", "provenance-snapshot"}
    for name, board in boards.items():
        uses = [(p["title"], p["datasource"]) for p in panels(board)]
        uses += [(p["title"], t["datasource"]) for p in panels(board) for t in p["targets"]]
        uses += [(v["name"], v["datasource"]) for v in board["templating"]["list"]]
        for title, ds in uses:
            assert ds["uid"] in sources, f"{name}: {title} uses unprovisioned data source {ds['uid']}"
            assert ds["type"] == sources[ds["uid"]]["type"], f"{name}: {title}"
        assert all(p["targets"] for p in panels(board)), name
    provider = yaml.safe_load((DASHBOARDS / "provisioning/dashboards/provenance.yaml").read_text())["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"] == "/etc/grafana/dashboards/provenance"


def test_every_view_of_the_page_is_on_both_dashboards() -> None:
    """Ingest, events by type and lane, dead letters, ledger, demand with bands, anomalies."""
    for board in dashboards().values():
        titles = {p["title"] for p in board["panels"] if p["type"] == "row"}
        assert {"Ingest", "Events", "Dead letters", "Ledger", "Demand and forecasts", "Anomalies"} <= titles
        demand = next(p for p in panels(board) if p["title"].startswith("Demand and forecast"))
        bands = {o["matcher"]["options"]: o for o in demand["fieldConfig"]["overrides"]}
        assert {"upper_80", "upper_95"} <= set(bands)


def test_prometheus_panels_ask_for_metrics_the_processes_expose() -> None:
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    exposed = {family.name + suffix for family in text_string_to_metric_families(metrics.render().decode())
               for suffix in suffixes.get(family.type, ("",))}
    asked = {name for board in dashboards().values() for p in panels(board) for t in p["targets"]
             if "expr" in t for name in re.findall(r"\bprovenance_\w+", t["expr"])}
    assert asked and asked <= exposed, asked - exposed


# ---- the fixture store -----------------------------------------------------------------------


DEMAND_SCHEMA = """
CREATE TABLE IF NOT EXISTS demand (series_key VARCHAR, ds DATE, y DOUBLE);
CREATE TABLE IF NOT EXISTS forecasts (series_key VARCHAR, ds DATE, yhat DOUBLE, yhat_lower DOUBLE,
    yhat_upper DOUBLE, yhat_lower_95 DOUBLE, yhat_upper_95 DOUBLE, trained_at TIMESTAMPTZ, model VARCHAR,
    input_ledger JSON);
"""


def fill_fixture(db: Database) -> None:
    """Dead letters, cosignatures, anomalies, demand and forecasts beside the ledger build_ledger wrote."""
    db.ingest(IngestBatch(
        dead_letters=[{"source_topic": "shipment-events", "source_partition": i % 3, "source_offset": 1000 + i,
                       "key": b"k", "value": b'{"event_id": 1}', "error": reason, "error_fields": "[]"}
                      for i, reason in enumerate(["event_id: Input should be a valid string", "not JSON"] * 3)],
        cosignatures=[{"sequence": seq, "witness": "provenance.local/witness", "key_id": "0a1b2c3d",
                       "line": f"— provenance.local/witness sig{seq}"} for seq in (0, 1)],
        anomalies=[{"anomaly_id": f"a{i}", "event_id": f"e{i}", "shipment_id": f"s{i}", "lane": lane,
                    "kind": kind, "severity": sev, "status": status, "score": 0.9, "expected": 10.0,
                    "actual": 30.0, "observed_at": "2026-03-04T10:00:00Z", "detected_at": NOW.isoformat(),
                    "explanation": f"{lane}: 20 h late", "evidence": {}, "model": "lane-delay/1",
                    "log_id": "shipment-events/0", "leaf_index": i, "revision": 1}
                   for i, (lane, kind, sev, status) in enumerate([
                       ("Nordfracht road DE-HAM→NL-RTM", "late", "high", "open"),
                       ("Rail Cargo rail PL-GDN→DE-HAM", "at_risk", "medium", "resolved")])],
    ))
    cur = db.cursor()
    cur.execute(DEMAND_SCHEMA)
    day0 = datetime(2026, 3, 1).date()
    for series in ("sku=SKU-1|site=DE-HAM", "total"):
        cur.executemany("INSERT INTO demand (series_key, ds, y) VALUES (?, ?, ?)",
                        [(series, day0 + timedelta(days=d), 10.0 + d % 7) for d in range(60)])
        for model, trained in (("prophet-ensemble", NOW - timedelta(hours=2)), ("seasonal_naive", NOW)):
            cur.executemany(
                "INSERT INTO forecasts (series_key, ds, yhat, yhat_lower, yhat_upper, yhat_lower_95, yhat_upper_95,"
                " trained_at, model, input_ledger) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(series, day0 + timedelta(days=60 + d), 12.0, 9.0, 15.0, 7.0, 17.0, trained,
                  json.dumps({"name": model, "members": [{"name": model, "weight": 1.0}]}),
                  json.dumps({"shipment-events/0": 100})) for d in range(14)])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store file with every table the dashboards read, rows in each."""
    ledger = build_ledger(tmp_path_factory.mktemp("dashboards"), events=300)
    db = Database(ledger.db_path)
    try:
        fill_fixture(db)
    finally:
        db.close()
    return ledger.db_path


def first_value(rows: list[dict[str, Any]] | list[list[Any]], what: str) -> str:
    assert rows, f"variable {what} has no values on the fixture"
    row = rows[0]
    return str(next(iter(row.values())) if isinstance(row, dict) else row[0])


def check_infinity_rows(title: str, target: dict[str, Any], rows: Any) -> None:
    """The rows Infinity's backend frames: every column's selector, and values it reads as that type."""
    assert isinstance(rows, list) and rows, f"{title}: no rows"
    for col in target["columns"]:
        values = [r[col["selector"]] for r in rows if col["selector"] in r]
        assert len(values) == len(rows), f"{title}: {col['selector']} missing"
        present = [v for v in values if v is not None]
        if col["type"] == "timestamp":
            assert present, f"{title}: {col['selector']} is always null"
            unread = [v for v in present if not (isinstance(v, str) and plugins.infinity_reads_as_time(v))]
            assert not unread, f"{title}: Infinity reads no time from {unread[:3]}"
        elif col["type"] == "number":
            assert all(type(v) in (int, float) for v in present), f"{title}: {col['selector']} not numbers"


def test_every_live_panel_query_returns_rows_through_the_http_api(store: Path, tmp_path: Path) -> None:
    board = dashboards()["provenance-live"]

    async def scenario() -> None:
        db = Database(store)
        api = Api(Settings(data_dir=tmp_path, store={"row_cap": 1000}), db, _no_produce, _no_status)
        runner = web.AppRunner(api.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = "http://%s:%d" % runner.addresses[0][:2]
        # The provisioned data source, with Grafana's environment pointing at this store.
        live = provisioned_with({**COMPOSE_ENV, "PROVENANCE_STORE_URL": base})["provenance-live"]
        settings = plugins.infinity_settings(live)
        try:
            async with aiohttp.ClientSession() as http:
                async def send(call: plugins.HttpCall) -> Any:
                    async with http.request(call.method, call.url, data=call.body, headers=call.headers) as resp:
                        answer = await resp.json()
                        assert resp.status == 200, answer  # Infinity fails a panel on any other status
                    return answer

                await send(plugins.infinity_request({"url": live["jsonData"]["customHealthCheckUrl"]},
                                                    settings, Request(START, END, INTERVAL_MS)))
                values: dict[str, str] = {}
                for var in board["templating"]["list"]:
                    target = var["query"]["infinityQuery"]
                    call = plugins.infinity_request(target, settings, Request(START, END, INTERVAL_MS, values))
                    rows = plugins.gjson_rows(await send(call), target["root_selector"])
                    values[var["name"]] = first_value(rows, var["name"])
                req = Request(START, END, INTERVAL_MS, values)
                for panel in panels(board):
                    for target in panel["targets"]:
                        if target["datasource"]["type"] == "prometheus":
                            continue
                        call = plugins.infinity_request(target, settings, req)
                        assert not re.search(r"\$\{?\w", call.body.decode()), f"{panel['title']}: unexpanded"
                        answer = await send(call)
                        check_infinity_rows(panel["title"], target, plugins.gjson_rows(answer, target["root_selector"]))
        finally:
            await runner.cleanup()
            db.close()

    asyncio.run(scenario())


async def _no_produce(records: list[tuple[bytes | None, bytes]]) -> None:
    raise AssertionError("dashboards do not produce")


async def _no_status() -> dict[str, Any]:
    return {}


# How the DuckDB plugin frames a column (its converters over sqlutil's): numbers, times, text. HUGEINT
# (what sum() of integers gives) would arrive as text, and unsigned integers cannot be null.
DUCKDB_FRAMED = re.compile(r"(TINYINT|SMALLINT|INTEGER|BIGINT|FLOAT|DOUBLE|DECIMAL\(\d+,\d+\)|BOOLEAN|VARCHAR"
                           r"|DATE|TIMESTAMP|TIMESTAMP WITH TIME ZONE)")
DUCKDB_TIMES = {"DATE", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE"}


def test_every_snapshot_panel_query_returns_rows_in_duckdb_1_5(store: Path, tmp_path: Path) -> None:
    board = dashboards()["provenance-snapshot"]
    copy = tmp_path / "store.duckdb"
    copy.write_bytes(store.read_bytes())
    snapshot = tmp_path / "snapshot.duckdb"
    db = Database(copy, writable=scratch_paths(snapshot))
    try:
        publish_snapshot(db, snapshot)
    finally:
        db.close()
    values: dict[str, str] = {}
    for var in board["templating"]["list"]:
        sql = plugins.duckdb_variable_sql(var["query"], Request(START, END, INTERVAL_MS, values))
        values[var["name"]] = first_value(read_with_duckdb15(snapshot, [sql])["results"][0]["rows"], var["name"])
    req = Request(START, END, INTERVAL_MS, values)
    found = [(p, t) for p in panels(board) for t in p["targets"]]
    # As a dashboard sends them (front end, then backend), and as the backend alone expands them
    # (alerting), for panels without dashboard variables.
    queries = [(p["title"], plugins.duckdb_sql(t, req)) for p, t in found]
    queries += [(p["title"] + " (backend only)", plugins.duckdb_sql(t, req, front_end=False)) for p, t in found
                if "${" not in t["rawSql"]]
    for title, sql in queries:
        assert "$" not in sql, f"{title}: unexpanded macro or variable in {sql}"
    result = read_with_duckdb15(snapshot, [sql for _, sql in queries] + [f"DESCRIBE {sql}" for _, sql in queries]
                                + ["SELECT name FROM duckdb_settings()"])
    assert result["version"].startswith("1.5.")
    answers, described = result["results"][:len(queries)], result["results"][len(queries):-1]
    for (title, _), answer, columns in zip(queries, answers, described):
        assert answer["rows"], f"{title}: no rows"
        types = {row[0]: row[1] for row in columns["rows"]}
        unframed = {c: t for c, t in types.items() if not DUCKDB_FRAMED.fullmatch(t)}
        assert not unframed, f"{title}: the plugin does not frame {unframed}"
    for (panel, target), columns in zip(found, described):
        if panel["type"] == "timeseries":
            assert {row[1] for row in columns["rows"]} & DUCKDB_TIMES, f"{panel['title']}: no time column"
    # The data source's DSN parameters are DuckDB settings (duckdb-go sets each as a config option).
    path = provisioned_with(COMPOSE_ENV)["provenance-snapshot"]["jsonData"]["path"]
    assert set(dict(parse_qsl(path.partition("?")[2]))) <= {r[0] for r in result["results"][-1]["rows"]}
    by_title = dict(zip([t for t, _ in queries], answers))
    demand = next(v for t, v in by_title.items() if t.startswith("Demand and forecast"))
    cols = demand["columns"]
    assert cols == ["time", "actual", "forecast", "lower_80", "upper_80", "lower_95", "upper_95"]
    # Actuals and the forecast horizon both appear, and only the newest forecast round.
    assert any(r[1] is not None for r in demand["rows"]) and any(r[2] is not None for r in demand["rows"])
    assert sum(r[2] is not None for r in demand["rows"]) == 14
    runs = next(v for t, v in by_title.items() if t == "Forecast runs")
    assert {r[1] for r in runs["rows"]} == {"seasonal_naive"}  # the model's name, of the latest round


def exposed_samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(metrics.render().decode()) for s in f.samples}


def test_store_gauges_read_checkpoint_age_and_anomalies_from_the_file(store: Path, tmp_path: Path) -> None:
    from pipeline.store.gauges import refresh_store_gauges

    copy = tmp_path / "store.duckdb"
    copy.write_bytes(store.read_bytes())
    db = Database(copy)
    try:
        refresh_store_gauges(db, {"tables": {"events": 300}})
        samples = exposed_samples()
        assert samples[("provenance_table_rows", (("table", "events"),))] == 300
        assert samples[("provenance_checkpoint_age_seconds", ())] > 86_400  # the fixture signed in March
        assert samples[("provenance_anomalies_stored", (("kind", "late"), ("status", "open")))] == 1
        db.cursor().execute("UPDATE anomalies SET status = 'resolved'")
        refresh_store_gauges(db, {})
        samples = exposed_samples()
        assert ("provenance_anomalies_stored", (("kind", "late"), ("status", "open"))) not in samples
        assert samples[("provenance_anomalies_stored", (("kind", "late"), ("status", "resolved")))] == 1
    finally:
        db.close()
