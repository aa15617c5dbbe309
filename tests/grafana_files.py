"""The repository's Grafana files as Grafana reads them: provisioned data sources and dashboard JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

DASHBOARDS = Path(__file__).resolve().parents[1] / "dashboards"
# The compose deployment's values for the variables the provisioning file names.
COMPOSE_ENV = {"PROVENANCE_STORE_URL": "http://store:8470", "PROVENANCE_SNAPSHOT": "/snapshot/snapshot.duckdb",
               "PROVENANCE_PROMETHEUS_URL": "http://prometheus:9090"}


def provisioned_with(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The data sources as Grafana provisions them: `$VAR` and `${VAR}` in values expanded from its environment."""
    def expand(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: expand(v) for k, v in value.items()}
        if isinstance(value, list):
            return [expand(v) for v in value]
        if isinstance(value, str):
            return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env[m.group(1) or m.group(2)], value)
        return value

    text = (DASHBOARDS / "provisioning/datasources/provenance.yaml").read_text()
    return {ds["uid"]: expand(ds) for ds in yaml.safe_load(text)["datasources"]}


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((DASHBOARDS / "json").glob("*.json"))}


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p["type"] != "row"]


def targets(kind: str) -> list[tuple[str, dict[str, Any]]]:
    """(panel title, target) of every panel target and query variable on a data source type."""
    out = []
    for board in dashboards().values():
        for p in panels(board):
            out += [(p["title"], t) for t in p["targets"] if t["datasource"]["type"] == kind]
        for v in board["templating"]["list"]:
            if v["datasource"]["type"] == kind:
                query = v["query"]
                out.append((f"variable {v['name']}", query["infinityQuery"] if isinstance(query, dict) else
                            {"refId": v["name"], "datasource": v["datasource"], "rawSql": query, "format": 1}))
    assert out, kind
    return out
