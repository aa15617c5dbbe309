"""EPCIS 2.0 end to end on the real broker: capture → epcis-events → worker → ledger → DuckDB → proofs.

One broker, worker and store serve every test of this module (module-scoped), in file order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import settings_env, wait_for

from pipeline.cli import main as cli_main
from pipeline.core.epcis.document import read_capture
from pipeline.procs import spawn, stop

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[1] / "vectors" / "epcis" / "examples"
NAMES = sorted(p.name for p in EXAMPLES.glob("*.jsonld"))


def request(method: str, url: str, body: bytes | None = None, content_type: str = "application/ld+json"
            ) -> tuple[int, Any, Any]:
    req = urllib.request.Request(url, data=body, method=method, headers={"content-type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read()), resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers


@pytest.fixture(scope="module")
def system(broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Worker and store processes on topics of their own; yields (settings, url, processes, folder)."""
    from pipeline.broker import create_topics, free_port
    from pipeline.settings import Settings

    folder = tmp_path_factory.mktemp("epcis")
    settings = Settings(kafka=broker.bootstrap, data_dir=folder / "data", topics={"prefix": f"e{os.getpid()}."},
                        worker={"group_id": f"provenance-epcis-{os.getpid()}"}, store={"port": free_port()},
                        ledger={"checkpoint_interval": 0.5, "max_age": 0.3})
    create_topics(settings)
    env = settings_env(settings)
    cli = [sys.executable, "-m", "pipeline.cli"]
    procs = {"worker": spawn([*cli, "worker"], env, folder / "worker.log"),
             "store": spawn([*cli, "serve"], env, folder / "store.log")}
    url = f"http://127.0.0.1:{settings.store.port}"
    try:
        wait_for(lambda: request("GET", f"{url}/health")[0] == 200, 60, "the store's /health")
        yield settings, url, procs, folder
    finally:
        for p in procs.values():
            stop(p, signal.SIGTERM, timeout=20)
        for name in procs:
            log = folder / f"{name}.log"
            if log.exists():
                sys.stderr.write(f"--- {name}.log (tail) ---\n{log.read_text()[-3000:]}\n")


def quoted(event_id: str) -> str:
    return urllib.parse.quote(event_id, safe="")


def test_every_official_example_is_captured_recorded_and_proven(system: Any) -> None:
    settings, url, _, folder = system
    locations = {}
    for name in NAMES:
        status, body, headers = request("POST", f"{url}/capture", (EXAMPLES / name).read_bytes())
        assert status == 202, (name, body)
        locations[name] = headers["Location"]
    for name, location in locations.items():
        job = wait_for(lambda: (j := request("GET", url + location)[1]) and not j["running"] and j, 90,
                       f"capture of {name}")
        assert job["status"] == "succeeded", (name, job)
        assert all(e["status"] in ("recorded", "duplicate") for e in job["events"]), (name, job)
    expected = {(c.event_id, c.is_declaration) for n in NAMES
                for c in read_capture(json.loads((EXAMPLES / n).read_text())).events}
    status, rows, _ = request("POST", f"{url}/sql", json.dumps({"query":
        "SELECT event_id, declaration, log_id, leaf_index FROM epcis_events ORDER BY 1"}).encode(), "application/json")
    assert {(r[0], r[1]) for r in rows["rows"]} == expected
    assert len(rows["rows"]) == 19  # 20 events in 15 examples, one of them twice (recorded once)
    assert {r[2].split("/")[0] for r in rows["rows"]} == {settings.topics.name("epcis-events")}

    key = urllib.request.urlopen(f"{url}/checkpoints/key", timeout=10).read().decode().strip()
    ids = sorted({r[0] for r in rows["rows"]})
    wait_for(lambda: all(request("GET", f"{url}/proofs/{quoted(i)}")[1].get("checkpoint") for i in ids), 60,
             "checkpoints covering every EPCIS event")
    # `provenance verify` itself: in this process (click's runner) for every bundle, and once as a process.
    runner = CliRunner()
    for i, event_id in enumerate(ids):
        _, bundle, _ = request("GET", f"{url}/proofs/{quoted(event_id)}")
        path = folder / f"bundle-{i}.json"
        path.write_text(json.dumps(bundle))
        result = runner.invoke(cli_main, ["verify", str(path), "--key", key])
        assert result.exit_code == 0 and result.output.startswith("OK: event"), (event_id, result.output)
        for j, correction in enumerate(bundle.get("corrections", [])):
            (folder / f"bundle-{i}-{j}.json").write_text(json.dumps(correction["bundle"]))
            result = runner.invoke(cli_main, ["verify", str(folder / f"bundle-{i}-{j}.json"), "--key", key])
            assert result.exit_code == 0, (event_id, j, result.output)
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "verify", str(folder / "bundle-0.json"), "--key", key],
                         env=settings_env(settings), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("OK: event"), out.stdout + out.stderr
    # A corrected event's bundle carries its corrections, each with a bundle that verifies the same way.
    _, bundle, _ = request("GET", f"{url}/proofs/{quoted('urn:uuid:374d95fc-9457-4a51-bd6a-0bba133845a8')}")
    assert len(bundle["corrections"]) == 1 + len(bundle["event"]["errorDeclaration"]["correctiveEventIDs"])
    # The derived views reach SQL in the shape of `events`.
    _, views, _ = request("POST", f"{url}/sql", json.dumps({"query":
        "SELECT event_type, count(*) FROM epcis_shipment_events GROUP BY 1 ORDER BY 1"}).encode(), "application/json")
    assert dict(views["rows"]) == {"arrived": 4, "created": 3, "departed": 3}


def test_kafka_producers_reach_the_same_ledger_and_bad_records_are_dead_lettered(system: Any) -> None:
    from kafka import KafkaProducer

    settings, url, _, folder = system
    doc = json.loads((EXAMPLES / "Example_9.6.4-TransformationEvent.jsonld").read_text())
    event = dict(doc["epcisBody"]["eventList"][0], eventID="urn:uuid:2f1c0b7e-1111-4c1a-9a7e-000000000042")
    good = dict(doc, epcisBody={"eventList": [event]})
    (folder / "good.jsonld").write_text(json.dumps(good, indent=2))
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "produce", "--file", str(folder / "good.jsonld"),
                          "--quiet"], env=settings_env(settings), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "sent 1 events" in out.stderr, out.stderr
    bad = json.loads(json.dumps(good))
    bad["epcisBody"]["eventList"][0]["eventTimeZoneOffset"] = "+25:00"
    producer = KafkaProducer(bootstrap_servers=settings.kafka, acks="all")
    topic = settings.topics.name("epcis-events")
    for value in (json.dumps(bad).encode(), b"\xff not json"):
        producer.send(topic, value=value, key=b"k").get(timeout=30)
    producer.close()
    wait_for(lambda: request("GET", f"{url}/events/{quoted(event['eventID'])}")[0] == 200, 60,
             "the Kafka-produced EPCIS event in DuckDB")

    def dead() -> list[Any]:
        _, body, _ = request("POST", f"{url}/sql", json.dumps({"query":
            f"SELECT error, error_fields FROM dead_letters WHERE source_topic = '{topic}' ORDER BY source_offset"}
        ).encode(), "application/json")
        return body["rows"] if len(body["rows"]) == 2 else []

    (offset_error, fields), (utf8_error, _) = wait_for(dead, 60, "two dead-lettered EPCIS records")
    assert "eventTimeZoneOffset" in json.loads(fields)[0]["field"] and "not UTF-8" in utf8_error


def test_the_ledger_audits_clean(system: Any) -> None:
    settings, url, procs, _ = system
    key = urllib.request.urlopen(f"{url}/checkpoints/key", timeout=10).read().decode().strip()
    stop(procs["store"], signal.SIGTERM, timeout=20)
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "audit", "--quiet", "--key", key],
                         env=settings_env(settings), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "clean" in out.stdout, out.stdout + out.stderr


def test_the_worker_refuses_ledger_topics_with_too_few_partitions(broker: Any) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    from pipeline.broker import check_ledger_partitions
    from pipeline.errors import ConfigError
    from pipeline.settings import Settings

    settings = Settings(kafka=broker.bootstrap, topics={"prefix": f"old{os.getpid()}.", "partitions": 2})
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        admin.create_topics([NewTopic(settings.topics.name(t), 2, 1) for t in ("ledger.entries", "ledger.blocks")])
    finally:
        admin.close()
    with pytest.raises(ConfigError, match="needs 4"):
        check_ledger_partitions(settings)
