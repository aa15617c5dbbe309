"""The dashboard's model panels: demand with its forecasts, and delay anomalies with a lane view.

These read the tables the analytics process fills (`demand`, `forecasts`,
`anomalies`). Until it has run against this store the tables may be missing
or empty; each panel then says so in `message` instead of failing.
Only columns named in the product contract are read, and only those present.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pipeline.store.db import Database
from pipeline.store.panels import SITE_NAMES, _rows, columns, tables
from pipeline.store.sandbox import json_value

SERIES_LIMIT = 60
ACTUALS_LIMIT = 180
ANOMALY_ROWS = 40
ANOMALY_COLUMNS = ("anomaly_id", "event_id", "shipment_id", "lane", "kind", "severity", "status", "score",
                   "expected", "actual", "observed_at", "detected_at", "explanation", "model", "log_id", "leaf_index")
FORECAST_COLUMNS = ("yhat", "yhat_lower", "yhat_upper", "yhat_lower_95", "yhat_upper_95")
_GLN = re.compile(r"\b\d{13}\b")


def _missing(table: str, present: set[str]) -> dict[str, Any] | None:
    if table not in present:
        return {"available": False, "message": f"no {table} table yet: `provenance analytics` fills it"}
    return None


def demand_series(db: Database) -> dict[str, Any]:
    """The series that have actuals or forecasts: `total` first, then by volume."""
    present = tables(db)
    gone = _missing("demand", present)
    if gone:
        return {**gone, "series": []}
    parts = ["SELECT series_key, sum(y) AS volume FROM demand GROUP BY 1"]
    if "forecasts" in present:
        parts.append("SELECT DISTINCT series_key, 0 AS volume FROM forecasts")
    rows = db.fetch(
        f"SELECT series_key, sum(volume) FROM ({' UNION ALL '.join(parts)}) GROUP BY 1"
        " ORDER BY series_key <> 'total', 2 DESC, 1 LIMIT ?", [SERIES_LIMIT])
    if not rows:
        return {"available": False, "message": "no demand yet: the analytics process has not written any",
                "series": []}
    return {"available": True, "series": [r[0] for r in rows]}


def demand(db: Database, series_key: str) -> dict[str, Any]:
    """One series: its actuals, and the latest forecast run with its 80 % and 95 % bands."""
    present = tables(db)
    gone = _missing("demand", present)
    if gone:
        return gone
    actual = db.fetch(
        "SELECT * FROM (SELECT epoch(ds)::DOUBLE AS t, y FROM demand WHERE series_key = ?"
        " ORDER BY ds DESC LIMIT ?) ORDER BY t", [series_key, ACTUALS_LIMIT])
    out: dict[str, Any] = {"available": bool(actual), "series_key": series_key,
                           "actual": {"t": [r[0] for r in actual], "y": [r[1] for r in actual]},
                           "forecast": None}
    if "forecasts" in present:
        have = columns(db, "forecasts")
        wanted = [c for c in FORECAST_COLUMNS if c in have]
        # The latest round; should one round hold several models, the ensemble.
        latest = db.fetch(
            "SELECT trained_at, model::VARCHAR AS m FROM forecasts WHERE series_key = ?"
            " ORDER BY trained_at DESC, m ILIKE '%ensemble%' DESC, m LIMIT 1", [series_key])
        if latest and wanted:
            trained_at, model = latest[0]
            rows = db.fetch(
                f"SELECT epoch(ds)::DOUBLE, {', '.join(wanted)} FROM forecasts WHERE series_key = ?"
                " AND trained_at = ? AND model::VARCHAR IS NOT DISTINCT FROM ? ORDER BY ds",
                [series_key, trained_at, model])
            forecast: dict[str, Any] = {"t": [r[0] for r in rows], "model": model_name(model),
                                        "trained_at": json_value(trained_at)}
            for i, c in enumerate(wanted, 1):
                forecast[c] = [r[i] for r in rows]
            out["forecast"] = forecast
            out["available"] = out["available"] or bool(rows)
    if not out["available"]:
        out["message"] = f"no demand or forecasts for {series_key} yet"
    return out


def model_name(model: str | None) -> str | None:
    """What a person reads of `forecasts.model`: its `name` when it is a JSON object, else the text."""
    if model is None:
        return None
    try:
        parsed = json.loads(model)
    except ValueError:
        return model
    return str(parsed.get("name", model)) if isinstance(parsed, dict) else model


def lane_name(lane: Any) -> str:
    """A lane as the analytics process names it, with known site codes replaced by their city."""
    text = "?" if lane is None else str(lane)
    return _GLN.sub(lambda m: SITE_NAMES.get(m.group(0), m.group(0)), text)


def anomalies(db: Database) -> dict[str, Any]:
    """The latest anomalies with their explanations, counts by kind, and anomalies per lane and kind."""
    present = tables(db)
    gone = _missing("anomalies", present)
    if gone:
        return {**gone, "rows": [], "by_kind": [], "lanes": []}
    have = columns(db, "anomalies")
    cols = [c for c in ANOMALY_COLUMNS if c in have]
    order = next((c for c in ("detected_at", "observed_at") if c in have), None)
    rows = _rows(db, f"SELECT {', '.join(cols)} FROM anomalies"
                     f"{f' ORDER BY {order} DESC' if order else ''} LIMIT ?", [ANOMALY_ROWS])
    for r in rows:
        if "lane" in r:
            r["lane_name"] = lane_name(r["lane"])
        if isinstance(r.get("explanation"), str):
            r["explanation"] = lane_name(r["explanation"])
    total = int(db.fetch("SELECT count(*) FROM anomalies")[0][0])
    by_kind = _rows(db, "SELECT kind, count(*) AS n FROM anomalies GROUP BY 1 ORDER BY 2 DESC, 1") \
        if "kind" in have else []
    lanes: list[dict[str, Any]] = []
    if {"lane", "kind"} <= have:
        open_filter = "count(*) FILTER (WHERE status = 'open')" if "status" in have else "NULL"
        lanes = _rows(db,
            f"SELECT lane, count(*) AS n, {open_filter} AS open, histogram(kind) AS kinds FROM anomalies"
            " GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 15")
        for lane in lanes:
            lane["lane_name"] = lane_name(lane["lane"])
    out = {"available": total > 0, "total": total, "rows": rows, "by_kind": by_kind, "lanes": lanes}
    if not total:
        out["message"] = "no anomalies yet: none detected, or the analytics process has not run"
    return out
