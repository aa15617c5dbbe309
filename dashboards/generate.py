"""Writes the Grafana dashboards in dashboards/json/ from one list of panels.

The same views exist twice: `provenance-live` asks the running store through its
HTTP SQL API (Infinity data source, `POST /sql?shape=objects`), and
`provenance-snapshot` reads the store's snapshot file (DuckDB data source). Each
panel's SQL is written once; a dialect renders its time filter, bucket width
and variables the way that data source expects. Run it after changing a panel:

    python dashboards/generate.py          # rewrite dashboards/json/*.json
    python dashboards/generate.py --check  # exit 1 if the files are stale (a test does this)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "json"

INFINITY = {"type": "yesoreyeram-infinity-datasource", "uid": "provenance-live"}
DUCKDB = {"type": "motherduck-duckdb-datasource", "uid": "provenance-snapshot"}
PROMETHEUS = {"type": "prometheus", "uid": "provenance-prometheus"}


class Dialect:
    """How one data source spells the dashboard's time range, bucket width and variables in SQL."""

    datasource: dict[str, str]

    def time_filter(self, column: str) -> str:
        raise NotImplementedError

    def interval_ms(self) -> str:
        raise NotImplementedError

    def var(self, name: str) -> str:
        """A template variable as a quoted SQL string literal (a list of them if multi-valued)."""
        return "${%s:sqlstring}" % name

    def bucket(self, column: str) -> str:
        """The start of the panel-interval bucket holding `column` (at least one second wide)."""
        return f"time_bucket(to_milliseconds(greatest({self.interval_ms()}, 1000)), {column})"

    def per_second(self, expr: str) -> str:
        return f"{expr} / (greatest({self.interval_ms()}, 1000) / 1000.0)"


class Snapshot(Dialect):
    """The DuckDB data source: sqlds macros, expanded by the plugin's backend after the front end's variables.

    The plugin's front end interpolates every variable it knows with the `sqlstring` format before the
    backend sees the SQL, so `$__interval_ms` (a variable of the panel's request) arrives as `'60000'`;
    a query the backend expands alone (alerting) gets `60000`. The cast reads both as a number.
    """

    datasource = DUCKDB

    def time_filter(self, column: str) -> str:
        return f"$__timeFilter({column})"

    def interval_ms(self) -> str:
        return "CAST($__interval_ms AS BIGINT)"


class Live(Dialect):
    """The Infinity data source: Grafana's global variables, interpolated into the request body."""

    datasource = INFINITY

    def time_filter(self, column: str) -> str:
        return f"{column} BETWEEN to_timestamp(${{__from}} / 1000) AND to_timestamp(${{__to}} / 1000)"

    def interval_ms(self) -> str:
        return "${__interval_ms}"


Sql = Callable[[Dialect], str]


@dataclass
class Panel:
    """One panel: its SQL (per dialect), the columns it returns, and how it is drawn."""

    title: str
    kind: str  # timeseries, table, barchart, stat
    sql: Sql
    columns: list[tuple[str, str]]  # (name, Infinity type: string, number, timestamp)
    w: int = 12
    h: int = 8
    description: str = ""
    unit: str | None = None
    overrides: list[dict[str, Any]] = field(default_factory=list)
    dialects: tuple[type[Dialect], ...] = (Live, Snapshot)


@dataclass
class PromPanel:
    """A panel on the Prometheus data source (the live dashboard's process metrics)."""

    title: str
    exprs: list[tuple[str, str]]  # (PromQL, legend)
    unit: str
    w: int = 8
    h: int = 8
    description: str = ""
    kind: str = "timeseries"


@dataclass
class Row:
    title: str
    panels: list[Panel | PromPanel]


def lane_sql(alias: str = "lane") -> str:
    """The lane name the delay model uses: `carrier mode origin→destination`."""
    return (f"concat_ws(' ', payload->>'carrier', payload->>'mode', "
            f"(payload->>'origin') || '→' || (payload->>'destination')) AS {alias}")


# forecasts.model is JSON naming the ensemble and its members; its `name` is what a person reads.
MODEL_NAME = "CASE WHEN json_valid(model) THEN model->>'name' ELSE model END"

BANDS = [
    {"matcher": {"id": "byName", "options": "upper_80"}, "properties": [
        {"id": "custom.fillBelowTo", "value": "lower_80"}, {"id": "custom.lineWidth", "value": 0},
        {"id": "custom.fillOpacity", "value": 25}, {"id": "color", "value": {"mode": "fixed", "fixedColor": "blue"}}]},
    {"matcher": {"id": "byName", "options": "upper_95"}, "properties": [
        {"id": "custom.fillBelowTo", "value": "lower_95"}, {"id": "custom.lineWidth", "value": 0},
        {"id": "custom.fillOpacity", "value": 10}, {"id": "color", "value": {"mode": "fixed", "fixedColor": "blue"}}]},
    {"matcher": {"id": "byRegexp", "options": "lower_(80|95)"}, "properties": [
        {"id": "custom.lineWidth", "value": 0}, {"id": "custom.hideFrom",
                                                 "value": {"legend": True, "tooltip": False, "viz": False}},
        {"id": "color", "value": {"mode": "fixed", "fixedColor": "blue"}}]},
    {"matcher": {"id": "byName", "options": "actual"}, "properties": [
        {"id": "custom.drawStyle", "value": "points"}, {"id": "custom.pointSize", "value": 5},
        {"id": "color", "value": {"mode": "fixed", "fixedColor": "orange"}}]},
    {"matcher": {"id": "byName", "options": "forecast"}, "properties": [
        {"id": "custom.lineWidth", "value": 2}, {"id": "color", "value": {"mode": "fixed", "fixedColor": "blue"}}]},
]

ROWS = [
    Row("Ingest", [
        Panel("Events per second", "timeseries", lambda d: f"""
WITH accepted AS (
  SELECT {d.bucket('recorded_at')} AS time, count(*) AS n FROM events
  WHERE {d.time_filter('recorded_at')} GROUP BY 1),
dead AS (
  SELECT {d.bucket('received_at')} AS time, count(*) AS n FROM dead_letters
  WHERE {d.time_filter('received_at')} GROUP BY 1)
SELECT time, {d.per_second('coalesce(accepted.n, 0)')} AS accepted_per_s,
       {d.per_second('coalesce(dead.n, 0)')} AS dead_lettered_per_s
FROM accepted FULL JOIN dead USING (time) ORDER BY time""",
              [("time", "timestamp"), ("accepted_per_s", "number"), ("dead_lettered_per_s", "number")],
              w=16, unit="reqps", description="Events recorded in DuckDB and records dead-lettered, per second."),
        Panel("Accepted vs dead-lettered", "stat", lambda d: f"""
SELECT (SELECT count(*) FROM events WHERE {d.time_filter('recorded_at')}) AS accepted,
       (SELECT count(*) FROM dead_letters WHERE {d.time_filter('received_at')}) AS dead_lettered""",
              [("accepted", "number"), ("dead_lettered", "number")], w=8),
        PromPanel("Consumer lag (records)", [
            ("sum by (consumer, topic) (provenance_consumer_lag_records)", "{{consumer}} {{topic}}")], "short",
            description="Records on the broker that the worker or store has not handled yet."),
        PromPanel("Consumer lag (seconds)", [
            ("max by (consumer, topic) (provenance_consumer_lag_seconds)", "{{consumer}} {{topic}}")], "s"),
        PromPanel("Produced → queryable", [
            ("histogram_quantile(0.5, sum by (le) (rate(provenance_produced_to_queryable_seconds_bucket"
             "[$__rate_interval])))", "p50"),
            ("histogram_quantile(0.95, sum by (le) (rate(provenance_produced_to_queryable_seconds_bucket"
             "[$__rate_interval])))", "p95")], "s",
            description="From a block's first record reaching Kafka to its events being queryable in DuckDB."),
        PromPanel("Worker throughput", [
            ("sum by (topic) (rate(provenance_events_accepted_total[$__rate_interval]))", "accepted {{topic}}"),
            ("sum by (topic) (rate(provenance_events_rejected_total[$__rate_interval]))", "rejected {{topic}}")],
            "reqps"),
        PromPanel("Proof serving", [
            ("histogram_quantile(0.95, sum by (le, kind) (rate(provenance_proof_serving_seconds_bucket"
             "[$__rate_interval])))", "p95 {{kind}}")], "s"),
        PromPanel("Checkpoint age", [("provenance_checkpoint_age_seconds", "age")], "s", kind="stat"),
    ]),
    Row("Events", [
        Panel("Events by type", "barchart", lambda d: f"""
SELECT event_type, count(*) AS events FROM events
WHERE {d.time_filter('recorded_at')} GROUP BY 1 ORDER BY 2 DESC""",
              [("event_type", "string"), ("events", "number")], w=8, description="Events recorded in the range."),
        Panel("Events by lane", "table", lambda d: f"""
SELECT {lane_sql()}, count(*) AS events,
       count(*) FILTER (WHERE event_type = 'exception') AS exceptions,
       count(DISTINCT shipment_id) AS shipments
FROM events WHERE {d.time_filter('recorded_at')} GROUP BY 1 ORDER BY 2 DESC LIMIT 25""",
              [("lane", "string"), ("events", "number"), ("exceptions", "number"), ("shipments", "number")], w=16),
        Panel("Events by type over time", "timeseries", lambda d: f"""
SELECT {d.bucket('event_time')} AS time, event_type AS metric, count(*) AS value FROM events
WHERE {d.time_filter('event_time')} GROUP BY 1, 2 ORDER BY 1""",
              [("time", "timestamp"), ("metric", "string"), ("value", "number")], w=24,
              dialects=(Snapshot,), description="By event time (when it happened, not when it was recorded)."),
    ]),
    Row("Dead letters", [
        Panel("Dead letters by reason", "barchart", lambda d: f"""
SELECT error AS reason, count(*) AS records FROM dead_letters
WHERE {d.time_filter('received_at')} GROUP BY 1 ORDER BY 2 DESC LIMIT 15""",
              [("reason", "string"), ("records", "number")], w=10),
        Panel("Latest dead letters", "table", lambda d: f"""
SELECT received_at, source_topic, source_partition, source_offset, error, left(value_text, 200) AS value
FROM dead_letters WHERE {d.time_filter('received_at')} ORDER BY received_at DESC LIMIT 100""",
              [("received_at", "timestamp"), ("source_topic", "string"), ("source_partition", "number"),
               ("source_offset", "number"), ("error", "string"), ("value", "string")], w=14),
    ]),
    Row("Ledger", [
        Panel("Blocks per log", "table", lambda d: """
SELECT log_id, count(*) AS blocks, max(height) AS head_height, max(tree_size) AS leaves,
       max(created_at::TIMESTAMPTZ) AS last_sealed
FROM blocks GROUP BY 1 ORDER BY 1""",
              [("log_id", "string"), ("blocks", "number"), ("head_height", "number"), ("leaves", "number"),
               ("last_sealed", "timestamp")], w=12),
        Panel("Blocks sealed", "timeseries", lambda d: f"""
SELECT {d.bucket('created_at::TIMESTAMPTZ')} AS time, count(*) AS blocks FROM blocks
WHERE {d.time_filter('created_at::TIMESTAMPTZ')} GROUP BY 1 ORDER BY 1""",
              [("time", "timestamp"), ("blocks", "number")], w=12),
        Panel("Latest signed checkpoint", "stat", lambda d: """
SELECT sequence, round(epoch(now()) - epoch(created_at), 1) AS age_seconds,
       (SELECT count(*) FROM checkpoint_logs l WHERE l.sequence = c.sequence) AS logs,
       (SELECT count(*) FROM cosignatures w WHERE w.sequence = c.sequence) AS cosignatures
FROM checkpoints c ORDER BY sequence DESC LIMIT 1""",
              [("sequence", "number"), ("age_seconds", "number"), ("logs", "number"), ("cosignatures", "number")],
              w=12, description="The newest checkpoint over every log, how old it is, and its witness cosignatures."),
        Panel("Witness cosignatures", "table", lambda d: """
SELECT witness, key_id, count(*) AS cosigned, max(sequence) AS latest_sequence, max(received_at) AS last_seen
FROM cosignatures GROUP BY 1, 2 ORDER BY 1""",
              [("witness", "string"), ("key_id", "string"), ("cosigned", "number"), ("latest_sequence", "number"),
               ("last_seen", "timestamp")], w=12),
    ]),
    Row("Demand and forecasts", [
        Panel("Demand and forecast: ${series}", "timeseries", lambda d: f"""
WITH actual AS (
  SELECT ds::TIMESTAMPTZ AS time, y FROM demand WHERE series_key IN ({d.var('series')})),
latest AS (
  SELECT * FROM forecasts WHERE series_key IN ({d.var('series')})
  QUALIFY trained_at = max(trained_at) OVER ()),
predicted AS (
  SELECT ds::TIMESTAMPTZ AS time, yhat, yhat_lower, yhat_upper, yhat_lower_95, yhat_upper_95 FROM latest)
SELECT time, actual.y AS actual, yhat AS forecast, yhat_lower AS lower_80, yhat_upper AS upper_80,
       yhat_lower_95 AS lower_95, yhat_upper_95 AS upper_95
FROM actual FULL JOIN predicted USING (time)
WHERE time >= (SELECT max(time) FROM actual) - INTERVAL 120 DAY ORDER BY time""",
              [("time", "timestamp"), ("actual", "number"), ("forecast", "number"), ("lower_80", "number"),
               ("upper_80", "number"), ("lower_95", "number"), ("upper_95", "number")], w=24, h=10,
              overrides=BANDS, description="Actuals (points), the latest forecast round, and its 80% and 95% "
                                           "intervals; the last 120 days and the whole horizon."),
        Panel("Forecast runs", "table", lambda d: f"""
SELECT series_key, {MODEL_NAME} AS model, trained_at, count(*) AS points, min(ds) AS first_day,
       max(ds) AS last_day
FROM (SELECT * FROM forecasts QUALIFY trained_at = max(trained_at) OVER (PARTITION BY series_key))
GROUP BY 1, 2, 3 ORDER BY 1""",
              [("series_key", "string"), ("model", "string"), ("trained_at", "timestamp"), ("points", "number"),
               ("first_day", "timestamp"), ("last_day", "timestamp")], w=24),
    ]),
    Row("Anomalies", [
        Panel("Open and recent anomalies", "table", lambda d: f"""
SELECT detected_at, kind, severity, status, lane, shipment_id, round(score, 3) AS score, expected, actual,
       explanation
FROM anomalies WHERE ({d.time_filter('detected_at')}) OR status = 'open'
ORDER BY status = 'open' DESC, detected_at DESC LIMIT 200""",
              [("detected_at", "timestamp"), ("kind", "string"), ("severity", "string"), ("status", "string"),
               ("lane", "string"), ("shipment_id", "string"), ("score", "number"), ("expected", "number"),
               ("actual", "number"), ("explanation", "string")], w=24, h=10),
        Panel("Anomalies by lane", "table", lambda d: f"""
SELECT lane, count(*) FILTER (WHERE status = 'open') AS open, count(*) AS raised,
       count(*) FILTER (WHERE severity = 'high') AS high, max(detected_at) AS last_detected
FROM anomalies WHERE {d.time_filter('detected_at')} GROUP BY 1 ORDER BY 2 DESC, 3 DESC LIMIT 25""",
              [("lane", "string"), ("open", "number"), ("raised", "number"), ("high", "number"),
               ("last_detected", "timestamp")], w=14),
        Panel("Anomalies by kind", "barchart", lambda d: f"""
SELECT kind, count(*) AS anomalies FROM anomalies WHERE {d.time_filter('detected_at')} GROUP BY 1 ORDER BY 2 DESC""",
              [("kind", "string"), ("anomalies", "number")], w=10),
    ]),
]


# ---- rendering -------------------------------------------------------------------------------


def infinity_target(sql: str, columns: list[tuple[str, str]], ref: str = "A") -> dict[str, Any]:
    """An Infinity query: POST the SQL to the store, one row object per result row."""
    return {
        "refId": ref, "datasource": INFINITY, "type": "json", "source": "url", "parser": "backend",
        "format": "table", "url": "/sql?shape=objects", "root_selector": "rows",
        "url_options": {"method": "POST", "body_type": "raw", "body_content_type": "application/json",
                        "data": json.dumps({"query": sql})},
        "columns": [{"selector": name, "text": name, "type": kind} for name, kind in columns],
    }


# The DuckDB plugin's query `format` is sqlds' FormatQueryOption, a number (grafana-plugin-sdk-go
# data/sqlutil/query.go; @grafana/plugin-ui's QueryFormat enum): a string does not unmarshal.
FORMAT_TIME_SERIES, FORMAT_TABLE = 0, 1


def duckdb_target(sql: str, kind: str, columns: list[tuple[str, str]], ref: str = "A") -> dict[str, Any]:
    """A DuckDB plugin query: raw SQL in the code editor; long (time, metric, value) rows become series."""
    long_form = [c[0] for c in columns] == ["time", "metric", "value"]
    return {"refId": ref, "datasource": DUCKDB, "rawSql": sql, "rawQuery": True, "editorMode": "code",
            "format": FORMAT_TIME_SERIES if kind == "timeseries" and long_form else FORMAT_TABLE}


def field_config(panel: Panel | PromPanel) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    if panel.unit:
        defaults["unit"] = panel.unit
    return {"defaults": defaults, "overrides": getattr(panel, "overrides", [])}


def options(kind: str) -> dict[str, Any]:
    if kind == "stat":
        return {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "textMode": "value_and_name", "colorMode": "none"}
    if kind == "barchart":
        return {"orientation": "horizontal", "showValue": "auto", "legend": {"showLegend": False}}
    if kind == "table":
        return {"showHeader": True, "cellHeight": "sm"}
    return {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}


def render_panel(panel: Panel | PromPanel, dialect: Dialect, pid: int, x: int, y: int) -> dict[str, Any]:
    base: dict[str, Any] = {"id": pid, "title": panel.title, "description": panel.description,
                            "gridPos": {"x": x, "y": y, "w": panel.w, "h": panel.h},
                            "fieldConfig": field_config(panel)}
    if isinstance(panel, PromPanel):
        targets = [{"refId": chr(65 + i), "datasource": PROMETHEUS, "expr": expr, "legendFormat": legend,
                    "range": True} for i, (expr, legend) in enumerate(panel.exprs)]
        return {**base, "type": panel.kind, "datasource": PROMETHEUS, "targets": targets,
                "options": options(panel.kind)}
    sql = panel.sql(dialect).strip()
    target = (infinity_target(sql, panel.columns) if isinstance(dialect, Live)
              else duckdb_target(sql, panel.kind, panel.columns))
    return {**base, "type": panel.kind, "datasource": dialect.datasource, "targets": [target],
            "options": options(panel.kind)}


def variables(dialect: Dialect) -> list[dict[str, Any]]:
    out = []
    for name, column, sql in (("series", "series_key", "SELECT DISTINCT series_key FROM demand ORDER BY 1"),):
        if isinstance(dialect, Live):
            query: Any = {"queryType": "infinity", "query": "", "refId": "variable",
                          "infinityQuery": infinity_target(sql, [(column, "string")], "variable")}
        else:
            query = sql
        out.append({"name": name, "label": name, "type": "query", "datasource": dialect.datasource,
                    "query": query, "definition": sql, "refresh": 1, "sort": 1, "multi": False,
                    "includeAll": False, "current": {}, "options": []})
    return out


def dashboard(dialect: Dialect) -> dict[str, Any]:
    live = isinstance(dialect, Live)
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for row in ROWS:
        members = [p for p in row.panels
                   if (isinstance(p, PromPanel) and live) or (isinstance(p, Panel) and type(dialect) in p.dialects)]
        if not members:
            continue
        panels.append({"id": pid, "type": "row", "title": row.title, "collapsed": False,
                       "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []})
        pid, y, x, row_h = pid + 1, y + 1, 0, 0
        for p in members:
            if x + p.w > 24:
                x, y, row_h = 0, y + row_h, 0
            panels.append(render_panel(p, dialect, pid, x, y))
            pid, x, row_h = pid + 1, x + p.w, max(row_h, p.h)
        y += row_h
    title, uid = (("Provenance — live", "provenance-live") if live
                  else ("Provenance — snapshot", "provenance-snapshot"))
    return {
        "uid": uid, "title": title, "tags": ["provenance"], "editable": True, "schemaVersion": 39,
        "version": 1, "timezone": "browser", "graphTooltip": 1, "refresh": "10s" if live else "1m",
        "time": {"from": "now-6h" if live else "now-30d", "to": "now"},
        "description": ("The running store, through its HTTP SQL API, and the processes' Prometheus metrics."
                        if live else "The store's snapshot file (refreshed every snapshot interval)."),
        "templating": {"list": variables(dialect)}, "annotations": {"list": []},
        "links": [{"title": "live" if not live else "snapshot", "type": "dashboards", "tags": ["provenance"]}],
        "panels": panels,
    }


def render_all() -> dict[Path, str]:
    return {OUT / f"{d['uid']}.json": json.dumps(d, indent=2, ensure_ascii=False) + "\n"
            for d in (dashboard(Live()), dashboard(Snapshot()))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if dashboards/json is not up to date")
    args = parser.parse_args()
    stale = [path for path, text in render_all().items() if not path.exists() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"stale: {path} (run python dashboards/generate.py)", file=sys.stderr)
        return 1 if stale else 0
    OUT.mkdir(exist_ok=True)
    for path, text in render_all().items():
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
