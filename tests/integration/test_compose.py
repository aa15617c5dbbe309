"""docker-compose.yml validated by docker-compose itself (no Docker engine needed), then read as it resolves."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: `./run.sh test` installs it with apt-get")
    return path


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The configuration docker-compose resolves (anchors merged, paths absolute)."""
    done = subprocess.run([tool("docker-compose"), "-f", str(ROOT / "docker-compose.yml"), "config"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def volume(service: dict[str, Any], target: str) -> str:
    for v in service.get("volumes", []):
        source, dest = (v.split(":")[0], v.split(":")[1]) if isinstance(v, str) else (v["source"], v["target"])
        if dest == target:
            return source
    raise AssertionError(f"nothing mounted at {target}")


def test_the_stack_has_every_part(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"kafka", "topics", "worker", "analytics", "store", "prometheus", "grafana"}
    kafka = services["kafka"]["environment"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}  # KRaft, no ZooKeeper
    assert services["topics"]["command"] == ["topics"]
    for name in ("worker", "analytics", "store"):
        assert services[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_workers_scale(compose: dict[str, Any]) -> None:
    """`--scale worker=N` needs no fixed name and no host port; Prometheus finds every replica by DNS."""
    worker = compose["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert worker["environment"]["PROVENANCE_METRICS__HOST"] == "0.0.0.0"
    prometheus = compose["services"]["prometheus"]
    config_file = Path(volume(prometheus, "/etc/prometheus/prometheus.yml"))
    scrape = {job["job_name"]: job for job in yaml.safe_load(config_file.read_text())["scrape_configs"]}
    assert scrape["worker"]["dns_sd_configs"][0] == {
        "names": ["worker"], "type": "A", "port": int(worker["environment"]["PROVENANCE_METRICS__WORKER_PORT"])}
    assert scrape["analytics"]["dns_sd_configs"][0]["port"] == int(
        compose["services"]["analytics"]["environment"]["PROVENANCE_METRICS__ANALYTICS_PORT"])
    assert scrape["store"]["static_configs"][0]["targets"] == ["store:8470"]
    done = subprocess.run([tool("promtool"), "check", "config", str(config_file)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_gets_its_plugins_provisioning_and_the_snapshot(compose: dict[str, Any]) -> None:
    services = compose["services"]
    grafana, store = services["grafana"], services["store"]
    dockerfile = Path(grafana["build"]["context"]) / grafana["build"]["dockerfile"]
    text = dockerfile.read_text()
    assert "-ubuntu" in text.split("FROM", 1)[1].splitlines()[0]  # the DuckDB plugin needs glibc
    assert "yesoreyeram-infinity-datasource" in text and "motherduck-duckdb-datasource" in text
    assert Path(volume(grafana, "/etc/grafana/provisioning")) == ROOT / "dashboards" / "provisioning"
    provider = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards/provenance.yaml").read_text())
    assert Path(volume(grafana, provider["providers"][0]["options"]["path"])) == ROOT / "dashboards" / "json"
    # The snapshot the store publishes is the file the DuckDB data source opens, on a volume of its own
    # (the store's own volume, with the ledger key, is not shared).
    env = grafana["environment"]
    snapshot = Path(env["PROVENANCE_SNAPSHOT"])
    assert store["environment"]["PROVENANCE_SNAPSHOT__PATH"] == str(snapshot)
    assert volume(grafana, str(snapshot.parent)) == volume(store, str(snapshot.parent)) != volume(store, "/data")
    assert "store-data" not in {v.split(":")[0] for v in grafana["volumes"] if isinstance(v, str)}
    datasources = (ROOT / "dashboards/provisioning/datasources/provenance.yaml").read_text()
    for name in ("PROVENANCE_STORE_URL", "PROVENANCE_SNAPSHOT", "PROVENANCE_PROMETHEUS_URL"):
        assert "${" + name + "}" in datasources and env[name]
    assert env["PROVENANCE_STORE_URL"] == "http://store:8470"
