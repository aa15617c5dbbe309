"""The dashboard in Chromium after a short real run: broker, worker, store, witness and producer as processes.

One run serves every test here (module-scoped). Every panel shows data, the
verify box says "verified" for a real event and names the failed step for
bundles altered on their way to the page, the page makes no failed request
and logs no error, and screenshots in both themes land in test-output/.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import http_json, settings_env, wait_for

from pipeline.procs import spawn, stop

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent
OUTPUT = ROOT / "test-output"
EVENTS = 2500
PANELS = ["#p-ingest", "#p-ledger", "#p-types", "#p-lanes", "#p-dead", "#p-demand", "#p-anomalies"]
ANALYTICS_PANELS = {"#p-demand": "demand", "#p-anomalies": "anomalies"}


@dataclass
class Demo:
    url: str
    env: dict[str, str]
    log_key: str
    logs: Path
    procs: dict[str, Any] = field(default_factory=dict)

    def sql(self, query: str) -> list[list[Any]]:
        status, body = http_json("POST", f"{self.url}/sql", {"query": query})
        assert status == 200, body
        return list(body["rows"])

    def has_rows(self, table: str) -> bool:
        if not self.sql(f"SELECT count(*) FROM duckdb_tables() WHERE table_name = '{table}'")[0][0]:
            return False
        return bool(self.sql(f"SELECT count(*) > 0 FROM {table}")[0][0])


def _has_analytics() -> bool:
    from pipeline import cli

    return "analytics" in getattr(cli.main, "commands", {})


@pytest.fixture(scope="module")
def demo(broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    from pipeline.broker import create_topics, free_port
    from pipeline.settings import Settings

    tmp = tmp_path_factory.mktemp("dashboard-demo")
    settings = Settings(kafka=broker.bootstrap, data_dir=tmp / "data", topics={"prefix": f"dash{os.getpid()}."},
                        worker={"group_id": f"provenance-dash-{os.getpid()}"}, store={"port": free_port()},
                        ledger={"checkpoint_interval": 1.0})
    create_topics(settings)
    env = settings_env(settings)
    cli = [sys.executable, "-m", "pipeline.cli"]
    demo = Demo(f"http://127.0.0.1:{settings.store.port}", env, "", tmp)
    try:
        # Everything that needs only the broker starts at once; the witness needs the store's URL.
        demo.procs["worker"] = spawn([*cli, "worker"], env, tmp / "worker.log")
        demo.procs["store"] = spawn([*cli, "serve"], env, tmp / "store.log")
        if _has_analytics():
            demo.procs["analytics"] = spawn([*cli, "analytics"], env, tmp / "analytics.log")
        # A few seconds of traffic, so the ingest chart has a shape; some lines malformed for the dead letters.
        demo.procs["producer"] = spawn([*cli, "produce", "--simulate", "--rate", "800", "--count", str(EVENTS),
                                        "--malformed", "0.03", "--seed", "5", "--quiet"], env, tmp / "producer.log")
        wait_for(lambda: http_json("GET", f"{demo.url}/health")[0] == 200, 60, "the store's /health")
        demo.procs["witness"] = spawn([*cli, "witness", "--store", demo.url, "--key-file", str(tmp / "witness.key")],
                                      env, tmp / "witness.log")
        assert demo.procs["producer"].wait(timeout=120) == 0, (tmp / "producer.log").read_text()[-2000:]

        def settled() -> bool:
            t = http_json("GET", f"{demo.url}/health")[1]["tables"]
            if t["events"] + t["duplicate_leaves"] + t["dead_letters"] < EVENTS or not t["dead_letters"]:
                return False
            # Every event sealed, and the latest checkpoint names every log's last block and is cosigned.
            return bool(demo.sql(
                "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM duplicate_leaves)"
                " = (SELECT sum(m) FROM (SELECT max(tree_size) AS m FROM blocks GROUP BY log_id))"
                " AND (SELECT sum(tree_size) FROM checkpoint_logs WHERE sequence = (SELECT max(sequence)"
                " FROM checkpoints)) = (SELECT sum(m) FROM (SELECT max(tree_size) AS m FROM blocks GROUP BY log_id))"
                " AND (SELECT count(*) FROM cosignatures WHERE sequence = (SELECT max(sequence) FROM checkpoints)) > 0"
            )[0][0])

        wait_for(settled, 120, f"{EVENTS} records in DuckDB, sealed, checkpointed and cosigned")
        if "analytics" in demo.procs:
            # The model tables this store has (more panels fill in as their tables are added).
            tables = [t for t in ANALYTICS_PANELS.values() if demo.sql(
                f"SELECT count(*) FROM duckdb_tables() WHERE table_name = '{t}'")[0][0]]
            wait_for(lambda: all(demo.has_rows(t) for t in tables), 90,
                     f"the analytics process to write rows to {', '.join(tables)}")
        yield demo
    finally:
        for name in ["producer", "witness", "analytics", "worker", "store"]:
            stop(demo.procs.get(name), signal.SIGTERM, timeout=20)
        for log in sorted(tmp.glob("*.log")):
            sys.stderr.write(f"--- {log.name} (tail) ---\n{log.read_text(errors='replace')[-2000:]}\n")


@dataclass
class Watched:
    page: Any
    problems: list[str]
    urls: list[str]


def open_page(browser: Any, url: str, scheme: str = "light") -> Watched:
    """The dashboard, with every console error, page error, failed request and HTTP error recorded."""
    page = browser.new_page(viewport={"width": 1440, "height": 900}, color_scheme=scheme)
    problems: list[str] = []
    urls: list[str] = []
    page.on("console", lambda m: m.type in ("error", "warning") and problems.append(f"console {m.type}: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"HTTP {r.status}: {r.url}"))
    page.on("request", lambda r: urls.append(r.url))
    page.goto(url + "/")
    return Watched(page, problems, urls)


def wait_for_panels(w: Watched, demo: Demo) -> None:
    for panel in PANELS:
        table = ANALYTICS_PANELS.get(panel)
        want = "data" if table is None or demo.has_rows(table) else "empty"
        w.page.wait_for_selector(f"{panel}[data-state='{want}']", timeout=30_000)


def verdict(page: Any, event_id: str) -> tuple[str, str, str]:
    page.fill("#event-id", event_id)
    page.evaluate("document.querySelector('#verdict').removeAttribute('data-result')")
    page.click("#verify")
    page.wait_for_selector("#verdict[data-result]", timeout=20_000)
    v = page.locator("#verdict")
    return v.get_attribute("data-result"), v.get_attribute("data-step"), page.inner_text("#p-verify")


def checkpointed_event(demo: Demo) -> str:
    return str(demo.sql(
        "SELECT e.event_id FROM events e JOIN checkpoint_logs c ON c.log_id = e.log_id AND e.leaf_index < c.tree_size"
        " WHERE c.sequence = (SELECT max(sequence) FROM checkpoints) ORDER BY e.leaf_index DESC LIMIT 1")[0][0])


def test_every_panel_shows_data_and_a_real_event_verifies(browser: Any, demo: Demo) -> None:
    w = open_page(browser, demo.url)
    page = w.page
    wait_for_panels(w, demo)
    # Numbers match the store.
    events = demo.sql("SELECT count(*) FROM events")[0][0]
    dead = demo.sql("SELECT count(*) FROM dead_letters")[0][0]
    page.wait_for_function(f"document.querySelector('#k-accepted').textContent.replace(/\\D/g, '') == '{events}'")
    assert re.sub(r"\D", "", page.inner_text("#k-dead")) == str(dead)
    assert page.locator("#c-ingest canvas").count() >= 1 and page.locator("#c-lag canvas").count() >= 1
    types = page.locator("#b-types .name").all_inner_texts()
    assert "created" in types and len(types) >= 5
    assert " → " in page.locator("#b-lanes .name").first.inner_text()
    assert page.locator("#t-reasons tbody tr").count() >= 1
    assert page.locator("#t-logs tbody tr").count() == 4
    assert "cosigned by provenance.local/witness" in page.inner_text("#checkpoint")
    if demo.has_rows("demand"):
        assert page.locator("#c-demand canvas").count() >= 1 and page.locator("#series option").count() >= 1
    if demo.has_rows("anomalies"):
        assert page.locator("#t-anomalies tbody tr").count() >= 1
        assert page.locator("#t-anomaly-lanes tbody tr").count() >= 1

    result, step, text = verdict(page, checkpointed_event(demo))
    assert (result, step) == ("verified", ""), text
    for name in ("leaf hash", "inclusion proof", "block hash", "checkpoint signature", "checkpoint coverage"):
        assert f"✓ {name}" in text
    assert "signed by provenance.local/ledger+" in text

    # The "recent event" button fills in an event that verifies too.
    page.click("#pick")
    assert page.input_value("#event-id")
    assert verdict(page, page.input_value("#event-id"))[0] == "verified"

    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "dashboard-light.png"), full_page=True)
    assert w.problems == []
    assert all(u.startswith(demo.url + "/") or u.startswith("data:") for u in w.urls), w.urls
    page.close()


def _flip(h: str) -> str:
    return ("1" if h[0] == "0" else "0") + h[1:]


TAMPER: dict[str, Callable[[dict[str, Any]], None]] = {
    "leaf hash": lambda b: b["event"].update(carrier=b["event"]["carrier"] + "x"),
    "inclusion proof": lambda b: b["inclusion_path"].__setitem__(0, _flip(b["inclusion_path"][0])),
    "block hash": lambda b: b["block"].update(created_at="2020-01-01T00:00:00Z"),
}


def altering(change: Callable[[dict[str, Any]], None]) -> Callable[[Any], None]:
    """A route handler that passes the real bundle on, changed by `change`."""
    def handle(route: Any) -> None:
        bundle = route.fetch().json()
        change(bundle)
        route.fulfill(status=200, content_type="application/json", body=json.dumps(bundle))
    return handle


def test_a_bundle_altered_on_the_way_fails_naming_the_step(browser: Any, demo: Demo) -> None:
    w = open_page(browser, demo.url)
    page = w.page
    event_id = checkpointed_event(demo)
    for step, change in TAMPER.items():
        page.route(f"**/proofs/{event_id}", altering(change))
        result, failed, text = verdict(page, event_id)
        page.unroute(f"**/proofs/{event_id}")
        assert (result, failed) == ("failed", step), text
        assert f"✗ failed: {step}" in text and f"✗ {step}" in text
    assert verdict(page, event_id)[0] == "verified"  # the same event, unaltered
    assert w.problems == []
    page.close()


def test_dark_theme_follows_the_system(browser: Any, demo: Demo) -> None:
    light = open_page(browser, demo.url, "light")
    dark = open_page(browser, demo.url, "dark")
    wait_for_panels(dark, demo)
    wait_for_panels(light, demo)
    background = "getComputedStyle(document.body).backgroundColor"
    assert light.page.evaluate(background) != dark.page.evaluate(background)
    assert verdict(dark.page, checkpointed_event(demo))[0] == "verified"
    dark.page.screenshot(path=str(OUTPUT / "dashboard-dark.png"), full_page=True)
    # Switching the system theme redraws the charts in the new colours, without errors.
    light.page.emulate_media(color_scheme="dark")
    assert light.page.evaluate(background) == dark.page.evaluate(background)
    light.page.wait_for_timeout(500)
    assert light.page.locator("#c-ingest canvas").count() >= 1
    assert light.problems == [] and dark.problems == []
    light.page.close()
    dark.page.close()
