"""Shared fixtures: the real embedded broker and isolated pipeline settings for integration tests."""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

_counter = itertools.count()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll until `predicate()` is truthy; fail the test naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # noqa: BLE001 - keep polling through start-up errors
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def http_json(method: str, url: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="session")
def broker() -> Iterator[Any]:
    """One real Tansu broker for the whole session; each test isolates itself by topic prefix."""
    from pipeline.broker import EmbeddedBroker
    from pipeline.settings import Settings

    b = EmbeddedBroker(Settings(), log_file=None).start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def pipeline_settings(broker: Any, tmp_path: Path) -> Any:
    """Settings for one test: its own topic prefix, consumer group, data dir and HTTP port."""
    from pipeline.broker import create_topics, free_port
    from pipeline.settings import Settings

    n = next(_counter)
    prefix = f"t{os.getpid()}x{n}."
    settings = Settings(
        kafka=broker.bootstrap,
        data_dir=tmp_path / "data",
        topics={"prefix": prefix},
        worker={"group_id": f"provenance-test-{os.getpid()}-{n}"},
        store={"port": free_port()},
        ledger={"checkpoint_interval": 1.0},
    )
    create_topics(settings)
    return settings


def settings_env(settings: Any) -> dict[str, str]:
    """The environment that gives a child process the same settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVENANCE_")}
    env.update({
        "PROVENANCE_KAFKA": settings.kafka,
        "PROVENANCE_DATA_DIR": str(settings.data_dir),
        "PROVENANCE_TOPICS__PREFIX": settings.topics.prefix,
        "PROVENANCE_WORKER__GROUP_ID": settings.worker.group_id,
        "PROVENANCE_STORE__PORT": str(settings.store.port),
        "PROVENANCE_LEDGER__MAX_EVENTS": str(settings.ledger.max_events),
        "PROVENANCE_LEDGER__MAX_AGE": str(settings.ledger.max_age),
        "PROVENANCE_LEDGER__CHECKPOINT_INTERVAL": str(settings.ledger.checkpoint_interval),
        "PYTHONUNBUFFERED": "1",
    })
    return env
