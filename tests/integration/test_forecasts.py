"""Demand and forecasts on the real pipeline: broker, worker, store and analytics as processes.

A small fleet (3 SKUs, 4 sites) streams four weeks of event time; every series
must get a forecast with ordered intervals, and killing the analytics process
while it fits must lose no demand and write no row twice.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import http_json, settings_env, wait_for

from pipeline.core.demand import DailyDemand
from pipeline.core.fleet_catalog import SITES, SKUS
from pipeline.core.simulator import Fleet
from pipeline.procs import spawn, stop
from pipeline.producer import produce_records

pytestmark = pytest.mark.integration

EVENTS = 9_000


def small_fleet() -> Fleet:
    return Fleet(21, datetime(2026, 2, 2, tzinfo=timezone.utc), sites=SITES[:4], skus=SKUS[5:8], lane_count=8,
                 tick=timedelta(seconds=300))


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (Linux /proc)."""
    out: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            out.update(kids)
            todo.extend(kids)
    return out


def sql(url: str, query: str) -> list[list[Any]]:
    status, body = http_json("POST", f"{url}/sql", {"query": query})
    assert status == 200, body
    return list(body["rows"])


def test_every_series_forecast_and_a_killed_fit_loses_nothing(pipeline_settings: Any, tmp_path: Path) -> None:
    settings = pipeline_settings
    env = settings_env(settings)
    env.update({"PROVENANCE_ANALYTICS__GROUP_ID": f"analytics-{os.getpid()}-{tmp_path.name}",
                "PROVENANCE_FORECAST__PROCESSES": "1", "PROVENANCE_FORECAST__HORIZON": "7",
                "PROVENANCE_FORECAST__INTERVAL": "30"})
    cli = [sys.executable, "-m", "pipeline.cli"]
    procs = {"worker": spawn([*cli, "worker"], env, tmp_path / "worker.log"),
             "store": spawn([*cli, "serve"], env, tmp_path / "store.log"),
             "analytics": spawn([*cli, "analytics", "--loglevel", "info"], env, tmp_path / "analytics.1.log")}
    url = f"http://127.0.0.1:{settings.store.port}"
    try:
        wait_for(lambda: http_json("GET", f"{url}/health")[0] == 200, 180, "the store's /health")
        events = []
        for ev in small_fleet().events():
            events.append(ev)
            if len(events) == EVENTS:
                break
        records = [(e["shipment_id"].encode(), json.dumps(e).encode()) for e in events]
        report = produce_records(settings, records, rate=None, count=None, progress=False)
        assert report.sent == EVENTS

        expected = DailyDemand()
        expected.add({"log_id": "x", "leaf_index": i, "event_type": e["event_type"], "payload": e}
                     for i, e in enumerate(events))
        expected.close_days()
        keys = sorted(expected.days)

        # kill -9 while a round with the ensemble (>= 14 days) is fitting, then start again
        started = re.compile(r"forecast round \d+: fitting \d+ series, up to (\d+) days")
        log1 = tmp_path / "analytics.1.log"

        def fitting() -> bool:
            text = log1.read_text(errors="replace")
            rounds = [int(n) for n in started.findall(text)]
            return bool(rounds) and rounds[-1] >= 14 and text.count(": fitting ") > text.count(": sent ")

        wait_for(fitting, 300, "a forecast round on the ensemble path to be fitting", interval=0.05)
        pool = descendants(procs["analytics"].pid)
        assert pool, "the fits run in processes of their own"
        os.kill(procs["analytics"].pid, signal.SIGKILL)
        procs["analytics"].wait(30)
        wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in pool), 30, "the fit pool to exit with its parent")
        restarted = datetime.now(timezone.utc)
        procs["analytics"] = spawn([*cli, "analytics", "--loglevel", "info"], env, tmp_path / "analytics.2.log")

        def demand_complete() -> bool:
            got = {(k, d): y for k, d, y in sql(url, "SELECT series_key, ds::VARCHAR, y FROM demand")}
            return all(got.get((k, d.isoformat())) == y for k in keys for d, y in expected.days[k].items()
                       if d <= max(expected.days["total"]) - timedelta(days=2))

        wait_for(demand_complete, 300, "every complete day's demand, counted once")

        latest_round = ("SELECT series_key, min(ds)::VARCHAR, count(*), any_value(model->>'name'),"
                        " any_value(input_ledger)::VARCHAR FROM forecasts"
                        " WHERE trained_at = (SELECT max(trained_at) FROM forecasts) GROUP BY 1")

        def all_forecast() -> list[list[Any]] | None:
            rows = sql(url, latest_round + f" HAVING max(trained_at) > '{restarted.isoformat()}'")
            return rows if {r[0] for r in rows} == set(keys) else None

        latest = wait_for(all_forecast, 300, "a round after the restart with a forecast for every series")
        assert len({r[1] for r in latest}) == 1  # one first day for all: the day after the last complete one
        first_ds = date.fromisoformat(latest[0][1])
        for key, _, n, model, ledger in latest:
            assert n == 7
            assert json.loads(ledger)  # per log, the tree size the fit read
            days = (first_ds - min(expected.days[key])).days
            assert model == ("prophet-ensemble" if days >= 14 else "seasonal_naive"), (key, days, model)
        assert any(r[3] == "prophet-ensemble" for r in latest)
        dup = sql(url, "SELECT count(*) - count(DISTINCT (series_key, trained_at, ds)) FROM forecasts")
        assert dup == [[0]]
        bad = sql(url, "SELECT count(*) FROM forecasts WHERE NOT (0 <= yhat_lower_95 AND yhat_lower_95 <= yhat_lower"
                       " AND yhat_lower <= yhat AND yhat <= yhat_upper AND yhat_upper <= yhat_upper_95)")
        assert bad == [[0]]
    finally:
        for p in procs.values():
            stop(p, signal.SIGTERM, timeout=20)
        for log in sorted(tmp_path.glob("*.log")):
            sys.stderr.write(f"--- {log.name} (tail) ---\n{log.read_text(errors='replace')[-2500:]}\n")
