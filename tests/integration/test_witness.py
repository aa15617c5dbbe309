"""A witness as a real process beside the worker and store: its cosignatures land in bundles and verify.

The worker, the store and the witness run as child processes on the real
embedded broker; simulated events flow through, the store signs checkpoints,
the witness checks and cosigns them, and a proof bundle fetched from the store
verifies with the witness's key and fails with any other.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import http_json, settings_env, wait_for

from pipeline.core.bundle import StepFailed, verify_bundle
from pipeline.core.note import Signature, Signer, Verifier, parse_note
from pipeline.core.simulator import Fleet
from pipeline.keys import load_or_create_signer
from pipeline.procs import spawn, stop
from pipeline.producer import produce_records
from pipeline.witness import state_path

pytestmark = pytest.mark.integration

EVENTS = 300
WITNESS = "witness.test/w1"
RUN_WITNESS = (
    "import sys; from pathlib import Path; from pipeline.settings import Settings; "
    "from pipeline.witness import run_witness; "
    "run_witness(Settings(), Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)"
)


def simulated(n: int, seed: int) -> tuple[list[tuple[bytes | None, bytes]], list[str]]:
    """`n` valid simulated events as Kafka records, and their event ids."""
    fleet = Fleet(seed, datetime(2026, 3, 2, tzinfo=timezone.utc))
    records: list[tuple[bytes | None, bytes]] = []
    ids: list[str] = []
    for rec in fleet.records():
        if rec.is_valid:
            records.append((rec.key, rec.value))
            ids.append(json.loads(rec.value)["event_id"])
        if len(ids) == n:
            break
    return records, ids


def sql_scalar(url: str, query: str) -> Any:
    status, body = http_json("POST", f"{url}/sql", {"query": query})
    assert status == 200, body
    return body["rows"][0][0]


def spawn_witness(env: dict[str, str], key_file: Path, url: str, log: Path, log_key: str | None = None) -> Any:
    args = [sys.executable, "-c", RUN_WITNESS, str(key_file), WITNESS, url]
    return spawn(args + ([log_key] if log_key else []), env, log)


@pytest.fixture
def running(pipeline_settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Worker and store as real processes (run in tmp_path); yields (settings, url, processes)."""
    monkeypatch.chdir(tmp_path)  # children inherit it: the worker's local state stays out of the repository
    env = settings_env(pipeline_settings)
    cli = [sys.executable, "-m", "pipeline.cli"]
    procs: dict[str, Any] = {
        "worker": spawn([*cli, "worker"], env, tmp_path / "worker.log"),
        "store": spawn([*cli, "serve"], env, tmp_path / "store.log"),
    }
    url = f"http://127.0.0.1:{pipeline_settings.store.port}"
    try:
        wait_for(lambda: http_json("GET", f"{url}/health")[0] == 200, 60, "the store's /health")
        yield pipeline_settings, url, procs
    finally:
        for p in reversed(list(procs.values())):
            stop(p, signal.SIGTERM, timeout=20)
        for log in sorted(tmp_path.glob("*.log")):
            sys.stderr.write(f"--- {log.name} (tail) ---\n{log.read_text()[-3000:]}\n")


def cosigned_bundle(url: str, event_id: str, log_key: Verifier, witness: Verifier) -> tuple[dict[str, Any], Any]:
    """Fetch the event's bundle until its checkpoint carries the witness's cosignature; return it verified."""

    def attempt() -> tuple[dict[str, Any], Any] | None:
        status, bundle = http_json("GET", f"{url}/proofs/{event_id}")
        if status != 200 or not bundle.get("checkpoint"):
            return None
        try:
            return bundle, verify_bundle(bundle, log_key, [witness])
        except StepFailed as exc:
            if exc.step == "witness cosignature" and "no cosignature" in exc.detail:
                return None  # not cosigned yet: ask again
            raise

    result = wait_for(attempt, 60, f"a cosigned checkpoint in the bundle of {event_id}")
    assert isinstance(result, tuple)
    return result


def test_witness_cosigns_and_bundles_verify_with_its_key(running: Any, tmp_path: Path) -> None:
    settings, url, procs = running
    env = settings_env(settings)
    key_file = tmp_path / "witness" / "witness.key"
    witness_key = load_or_create_signer(key_file, WITNESS).verifier  # the witness process loads this same key
    procs["witness"] = spawn_witness(env, key_file, url, tmp_path / "witness.log")  # fetches the log key

    records, ids = simulated(EVENTS, seed=23)
    report = produce_records(settings, records, rate=None, count=None, progress=False)
    assert report.sent == EVENTS and report.failed == 0
    wait_for(lambda: http_json("GET", f"{url}/health")[1]["tables"]["events"] == EVENTS, 120,
             f"{EVENTS} events in DuckDB")

    wait_for(lambda: sql_scalar(url, "SELECT count(*) FROM cosignatures") > 0, 60, "a cosignature in the store")
    row = http_json("POST", f"{url}/sql", {"query": "SELECT witness, key_id, line FROM cosignatures LIMIT 1"})[1]
    assert row["rows"][0][:2] == [WITNESS, witness_key.key_id.hex()]
    assert row["rows"][0][2].startswith(f"— {WITNESS} ")

    log_key = Verifier.from_vkey(urllib.request.urlopen(f"{url}/checkpoints/key", timeout=10).read().decode().strip())
    for event_id in (ids[0], ids[len(ids) // 2], ids[-1]):
        bundle, verified = cosigned_bundle(url, event_id, log_key, witness_key)
        assert verified.witnesses == (WITNESS,)
        assert verified.event_id == event_id
        # The log's signature alone still verifies: the cosignature is one more line on the same note.
        assert verify_bundle(bundle, log_key).checkpoint_sequence == verified.checkpoint_sequence
        # Another witness key (same name, other key) did not cosign it.
        impostor = Signer(b"\x07" * 32, WITNESS).verifier
        with pytest.raises(StepFailed) as caught:
            verify_bundle(bundle, log_key, [impostor])
        assert caught.value.step == "witness cosignature"
        # A line under the witness's own name and key id but signed by another key fails too.
        text, sigs = parse_note(bundle["checkpoint"]["note"])
        own = next(s for s in sigs if s.name == WITNESS)
        forged = Signature(WITNESS, own.key_id, Signer(b"\x08" * 32, WITNESS).signature(text).sig)
        note = bundle["checkpoint"]["note"].replace(own.line, forged.line)
        tampered = {**bundle, "checkpoint": {**bundle["checkpoint"], "note": note}}
        with pytest.raises(StepFailed) as caught:
            verify_bundle(tampered, log_key, [witness_key])
        assert caught.value.step == "witness cosignature" and "does not verify" in caught.value.detail

    # The witness announced its key, persisted its state next to it, and refused nothing.
    wlog = (tmp_path / "witness.log").read_text()
    assert f"witness key: {witness_key.vkey}" in wlog
    assert f"witness follows log key: {log_key.vkey}" in wlog
    assert "REFUSED" not in wlog

    # Restart with the log key pinned: it resumes from its state and keeps cosigning new checkpoints.
    assert stop(procs.pop("witness"), signal.SIGTERM, timeout=20) == 0
    state = json.loads(state_path(key_file).read_text())
    assert state["log"] == log_key.vkey and state["witness"] == witness_key.vkey
    assert state["sequence"] >= verified.checkpoint_sequence
    before = state["sequence"]
    procs["witness"] = spawn_witness(env, key_file, url, tmp_path / "witness.log", log_key.vkey)
    more, more_ids = simulated(EVENTS + 50, seed=23)
    report = produce_records(settings, more[EVENTS:], rate=None, count=None, progress=False)
    assert report.sent == 50
    wait_for(lambda: sql_scalar(url, f"SELECT count(*) FROM cosignatures WHERE sequence > {before}") > 0, 60,
             "a cosignature of a checkpoint signed after the restart")
    _, verified = cosigned_bundle(url, more_ids[-1], log_key, witness_key)
    assert verified.checkpoint_sequence > before
    wlog = (tmp_path / "witness.log").read_text()
    assert f"witness resumes after checkpoint {before}" in wlog
    # Logs grew from non-empty trees after the restart: the store's consistency proofs were fetched and checked.
    assert re.search(r"cosigned checkpoint \d+ \(\d+ logs, [1-9]\d* consistency proofs verified\)", wlog), wlog
    assert "REFUSED" not in wlog
