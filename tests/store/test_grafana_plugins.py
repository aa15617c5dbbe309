"""Provisioning, queries and the Grafana image, field by field against what Grafana's plugins read.

The plugins' query models, settings and macro expansion are ported in tests/grafana_plugins.py (with the
source files they come from); tests/store/test_dashboards.py runs the expanded queries.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl

import grafana_plugins as plugins
import pytest
import yaml
from grafana_files import COMPOSE_ENV, DASHBOARDS, dashboards, panels, provisioned_with, targets
from grafana_plugins import Request

PROMETHEUS_JSON_DATA = {"timeInterval", "httpMethod", "queryTimeout", "manageAlerts", "prometheusType",
                        "prometheusVersion", "cacheLevel", "incrementalQuerying", "disableRecordingRules"}
PANEL_TYPES = {"row", "timeseries", "table", "barchart", "stat"}
REQUEST = Request(datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2026, 4, 1, tzinfo=timezone.utc), 60_000)


def test_data_source_settings_are_the_keys_each_plugin_reads() -> None:
    assert yaml.safe_load((DASHBOARDS / "provisioning/datasources/provenance.yaml").read_text())["apiVersion"] == 1
    sources = provisioned_with(COMPOSE_ENV)
    by_type = {ds["type"]: ds for ds in sources.values()}
    for ds in sources.values():
        assert ds["access"] == "proxy" and ds["name"] and re.fullmatch(r"[\w-]{1,40}", ds["uid"]), ds
    allowed = {"yesoreyeram-infinity-datasource": plugins.INFINITY_JSON_DATA,
               "motherduck-duckdb-datasource": plugins.DUCKDB_JSON_DATA, "prometheus": PROMETHEUS_JSON_DATA}
    for kind, ds in by_type.items():
        unread = set(ds.get("jsonData", {})) - allowed[kind]
        assert not unread, f"{kind} does not read jsonData {unread}"
    # Infinity: queries name a path, so the data source needs the store's URL; its allowed hosts validate
    # and let the queries (and the health check) through.
    live = by_type["yesoreyeram-infinity-datasource"]
    settings = plugins.infinity_settings(live)
    assert settings.url == COMPOSE_ENV["PROVENANCE_STORE_URL"]
    assert live["jsonData"].get("customHealthCheckEnabled") is True
    health = plugins.infinity_request({"url": live["jsonData"]["customHealthCheckUrl"]}, settings, REQUEST)
    assert health.url == "http://store:8470/health" and health.method == "GET"
    # DuckDB: the path is duckdb-go's DSN, the file then DuckDB settings; the snapshot's mount is read-only.
    path = by_type["motherduck-duckdb-datasource"]["jsonData"]["path"]
    file, _, query = path.partition("?")
    assert file == COMPOSE_ENV["PROVENANCE_SNAPSHOT"] and dict(parse_qsl(query)) == {"access_mode": "read_only"}


def check_infinity_target(title: str, t: dict[str, Any]) -> None:
    unread = set(t) - plugins.INFINITY_QUERY_KEYS
    assert not unread, f"{title}: Infinity reads no {unread}"
    opts = t["url_options"]
    assert set(opts) <= plugins.URL_OPTIONS_KEYS, f"{title}: {set(opts) - plugins.URL_OPTIONS_KEYS}"
    assert t["type"] == "json" and t["source"] == "url" and t["format"] in plugins.FORMATS, title
    # With columns and a root selector the backend keeps an empty parser, and the browser would parse.
    assert t["parser"] == "backend" and t["root_selector"], title
    assert opts["method"] == "POST" and opts["body_type"] == "raw", title
    assert opts["body_content_type"] == "application/json" and json.loads(opts["data"])["query"], title
    assert t["columns"], title
    for col in t["columns"]:
        assert set(col) == {"selector", "text", "type"} and col["type"] in plugins.COLUMN_TYPES, f"{title}: {col}"


def check_duckdb_target(title: str, t: dict[str, Any]) -> None:
    unread = set(t) - plugins.SQL_QUERY_KEYS
    assert not unread, f"{title}: the DuckDB plugin reads no {unread}"
    # sqlutil.Query.Format is a uint32: "table" or "time_series" would not unmarshal.
    fmt = t["format"]
    assert type(fmt) is int and fmt in plugins.FORMAT_QUERY_OPTIONS, f"{title}: format {fmt!r}"
    assert isinstance(t["rawSql"], str) and t.get("editorMode", "code") == "code", title
    used = set(re.findall(r"\$__(\w+)", t["rawSql"]))
    assert used <= {"timeFilter", "interval_ms", "timeFrom", "timeTo"}, f"{title}: macros {used}"


def test_every_query_is_one_its_plugin_reads() -> None:
    for title, t in targets("yesoreyeram-infinity-datasource"):
        check_infinity_target(title, t)
    for title, t in targets("motherduck-duckdb-datasource"):
        check_duckdb_target(title, t)
    for board in dashboards().values():
        assert isinstance(board["schemaVersion"], int) and board["uid"] and board["title"]
        for p in board["panels"]:
            assert p["type"] in PANEL_TYPES and set(p["gridPos"]) == {"x", "y", "w", "h"}, p["title"]
            assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        for v in board["templating"]["list"]:
            if v["datasource"]["type"] == "yesoreyeram-infinity-datasource":
                # InfinityVariableSupport: a VariableQueryInfinity object.
                assert v["query"]["queryType"] == "infinity" and v["query"]["infinityQuery"], v["name"]
            else:
                # The DuckDB plugin's metricFindQuery(query: string).
                assert isinstance(v["query"], str), v["name"]
        long_form = [p for p in panels(board) for t in p["targets"] if t.get("format") == 0]
        assert all(p["type"] == "timeseries" for p in long_form)


def test_grafana_image_pins_plugin_releases_and_allows_the_unsigned_one() -> None:
    text = (DASHBOARDS / "Dockerfile.grafana").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S*)$", text, re.M))
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["GRAFANA_VERSION"]) and int(args["GRAFANA_VERSION"].split(".")[0]) >= 11
    assert re.search(r"^FROM grafana/grafana:\$\{GRAFANA_VERSION\}-ubuntu$", text, re.M)  # glibc for duckdb-go
    # Pinned: the Infinity release (>= 3.11: its plugin.json asks Grafana >= 11.6) and the DuckDB one.
    assert re.fullmatch(r"3\.\d+\.\d+", args["INFINITY_VERSION"]) and re.fullmatch(r"0\.4\.\d+", args["DUCKDB_PLUGIN_VERSION"])
    assert "plugins install yesoreyeram-infinity-datasource ${INFINITY_VERSION}" in text
    # The release asset: tag v<version>, zip named after the plugin id and the bare version.
    assert ("releases/download/v${DUCKDB_PLUGIN_VERSION}/motherduck-duckdb-datasource-${DUCKDB_PLUGIN_VERSION}.zip"
            in text) and "plugins install motherduck-duckdb-datasource" in text
    unsigned = re.search(r"GF_PLUGINS_ALLOW_LOADING_UNSIGNED_PLUGINS=(\S+)", text)
    assert unsigned and "motherduck-duckdb-datasource" in unsigned.group(1).split(",")


def test_the_plugin_ports_catch_what_the_plugins_refuse() -> None:
    """The checks above fail on the mistakes they exist for."""
    good = dict(targets("motherduck-duckdb-datasource")[0][1])
    for bad in ({"format": "table"}, {"format": True}, {"rawSQL": "x"}, {"rawSql": "$__timeGroup(t, hour)"}):
        with pytest.raises(AssertionError):
            check_duckdb_target("bad", {**good, **bad})
    good = dict(targets("yesoreyeram-infinity-datasource")[0][1])
    for bad in ({"rootSelector": "rows"}, {"parser": ""}, {"columns": [{"selector": "a", "type": "int"}]},
                {"url_options": {**good["url_options"], "body": "{}"}}):
        with pytest.raises(AssertionError):
            check_infinity_target("bad", {**good, **bad})
    with pytest.raises(plugins.MacroError):
        plugins.duckdb_sql({"rawSql": "SELECT 1 WHERE $__timeFilter(a, b)"}, REQUEST)
    settings = plugins.InfinitySettings("", ["http://store:8470"])  # no base URL: the query names the host
    with pytest.raises(AssertionError):
        plugins.infinity_request({"url": "http://elsewhere:8470/sql"}, settings, REQUEST)
    assert not plugins.infinity_reads_as_time("2026-03-04 10:00:00+00")  # DuckDB's own text form
