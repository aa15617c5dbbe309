"""The faust internals `pipeline.worker.transport` relies on, checked against the installed faust.

The batch path reaches below faust's public API in a few places. Each is
pinned here by behaviour where a test can drive it without a broker, and by
signature or source otherwise, so a faust upgrade that changes one fails this
file instead of silently skipping commits or handing the ledger stale records.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import faust
import pytest
from faust.transport import consumer as base_consumer
from faust.transport.drivers import aiokafka as driver
from faust.transport.drivers import by_url
from faust.tables.recovery import Recovery
from faust.types import TP

from pipeline.worker import transport


class Handler:
    topics = frozenset({"src"})

    def __init__(self, fail: bool = False) -> None:
        self.polls: list[tuple[dict[Any, Any], int]] = []
        self.fail = fail
        self.fatal: list[BaseException] = []

    async def handle_poll(self, polled: Any, generation: int) -> None:
        if self.fail:
            raise RuntimeError("boom")
        self.polls.append((dict(polled), generation))

    def on_fatal(self, exc: BaseException) -> None:
        self.fatal.append(exc)


def make_app(handler: Handler) -> faust.App:
    app = faust.App("contract", broker=transport.broker_url("127.0.0.1:1,127.0.0.2:2"), value_serializer="raw")
    transport.attach(app, handler)
    return app


def test_faust_minor_version_is_the_one_checked_here() -> None:
    assert faust.__version__.startswith("0.15."), faust.__version__


def test_entry_point_selects_the_transport_by_url_scheme() -> None:
    assert by_url(f"{transport.SCHEME}://127.0.0.1:9092") is transport.Transport
    assert transport.broker_url("a:1,b:2") == f"{transport.SCHEME}://a:1,{transport.SCHEME}://b:2"
    app = make_app(Handler())
    assert isinstance(app.consumer, transport.BatchConsumer)
    # the driver builds its consumer from the class attribute we override
    assert "self.Consumer(" in inspect.getsource(faust.transport.base.Transport.create_consumer)


def test_getmany_takes_its_records_from_wait_next_records() -> None:
    source = inspect.getsource(base_consumer.Consumer.getmany)
    assert "records, active_partitions = await self._wait_next_records(timeout)" in source
    assert "if records is None or self.should_stop:" in source
    params = list(inspect.signature(base_consumer.Consumer._wait_next_records).parameters)
    assert params == ["self", "timeout"]
    # the drain loop is what calls getmany: our records never reach its per-record path
    assert "getmany(timeout=1.0)" in inspect.getsource(base_consumer.Consumer._drain_messages)


def poll(app: faust.App, records: dict[TP, list[Any]], flow: bool = True) -> Any:
    consumer = app.consumer

    async def fake_getmany(active_partitions: Any, timeout: float) -> Any:
        if not flow:
            consumer.stop_flow()  # a rebalance started while the fetch was out
        return dict(records)

    consumer._getmany = fake_getmany  # type: ignore[method-assign]
    consumer._get_active_partitions = lambda: set(records)  # type: ignore[method-assign]

    async def run() -> Any:
        consumer.resume_flow()
        return await consumer._wait_next_records(1.0)

    return asyncio.run(run())


def test_declared_topics_go_to_the_handler_with_the_generation_and_the_rest_stay() -> None:
    handler = Handler()
    app = make_app(handler)
    app.consumer_generation_id = 7
    records, active = poll(app, {TP("src", 0): ["a", "b"], TP("src", 1): ["c"], TP("other", 0): ["d"]})
    assert records == {TP("other", 0): ["d"]}
    assert active == {TP("src", 0), TP("src", 1), TP("other", 0)}
    assert handler.polls == [({TP("src", 0): ["a", "b"], TP("src", 1): ["c"]}, 7)]


def test_nothing_is_handed_over_while_the_flow_is_stopped() -> None:
    handler = Handler()
    app = make_app(handler)
    records, _ = poll(app, {TP("src", 0): ["a"], TP("other", 0): ["b"]}, flow=False)
    assert handler.polls == [] and records == {TP("other", 0): ["b"]}


def test_a_handler_failure_is_fatal() -> None:
    handler = Handler(fail=True)
    app = make_app(handler)
    with pytest.raises(RuntimeError):
        poll(app, {TP("src", 0): ["a"]})
    assert len(handler.fatal) == 1


def test_flow_control_stops_fetches_during_a_rebalance() -> None:
    # faust stops the flow when a rebalance starts and resumes it after seeking to the committed offsets
    assert "if not self.consumer.flow_active:" in inspect.getsource(driver.AIOKafkaConsumerThread._fetch_records)
    assert "on_rebalance_start()" in inspect.getsource(driver.ConsumerRebalanceListener.on_partitions_revoked)
    resume = inspect.getsource(Recovery._resume_streams)
    assert resume.index("consumer.perform_seek()") < resume.index("consumer.resume_flow()")


def test_source_topics_are_never_acked_or_committed_by_faust() -> None:
    app = make_app(Handler())
    app.topics.add(app.topic("tracked", value_type=bytes))
    asyncio.run(app.topics._update_indices())
    assert app.topics.acks_enabled_for("tracked")
    assert not app.topics.acks_enabled_for("src")
    # faust commits only what was acked; nothing of ours ever is
    assert "self._acked" in inspect.getsource(base_consumer.Consumer._new_offset)
    # gaps are recorded only for topics with acks
    assert "acks_enabled_for(message.topic)" in inspect.getsource(base_consumer.Consumer._drain_messages)


def test_generation_is_set_before_faust_handles_an_assignment() -> None:
    source = inspect.getsource(driver.ConsumerRebalanceListener.on_partitions_assigned)
    assert source.index("consumer_generation_id = generation") < source.index("self._thread.on_partitions_assigned(")


def test_commit_goes_through_the_driver_to_aiokafka() -> None:
    assert list(inspect.signature(driver.Consumer._commit).parameters) == ["self", "offsets"]
    assert "self._thread.commit(offsets)" in inspect.getsource(base_consumer.ThreadDelegateConsumer._commit)
    thread_commit = inspect.getsource(driver.AIOKafkaConsumerThread._commit)
    assert "if tp in self.assignment()" in thread_commit  # never commits a partition we do not own
    assert "await consumer.commit(aiokafka_offsets)" in thread_commit
    assert '"already rebalanced" in str(exc)' in thread_commit and "return False" in thread_commit

    committed: list[Any] = []
    app = make_app(Handler())

    async def fake_commit(offsets: Any) -> bool:
        committed.append(offsets)
        return True

    app.consumer._commit = fake_commit  # type: ignore[method-assign]
    assert asyncio.run(transport.commit(app, {("src", 3): 42}))  # type: ignore[arg-type]
    assert committed == [{TP("src", 3): 42}]


def test_static_membership_and_session_settings_reach_aiokafka() -> None:
    source = inspect.getsource(driver.AIOKafkaConsumerThread._create_worker_consumer)
    for kwarg in ("group_instance_id=conf.consumer_group_instance_id", "session_timeout_ms=",
                  "max_poll_records=conf.broker_max_poll_records", "heartbeat_interval_ms="):
        assert kwarg in source


def test_the_fetch_wait_reaches_aiokafkas_fetcher() -> None:
    async def build() -> Any:
        app = faust.App("contract", broker=transport.broker_url("127.0.0.1:1"), value_serializer="raw")
        transport.attach(app, Handler(), fetch_wait=0.05)
        thread = app.consumer._thread
        assert isinstance(thread, transport.BatchConsumerThread)
        return thread._create_worker_consumer(app.transport)

    consumer = asyncio.run(build())
    assert consumer._fetch_max_wait_ms == 50
    from aiokafka import AIOKafkaConsumer
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(AIOKafkaConsumer.start)
    assert "def _new_consumer_thread(self)" in inspect.getsource(driver.Consumer)


def test_a_broken_connection_to_an_in_memory_broker_ends_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """`pipeline.broker.exit_when_lost` wraps aiokafka's connection-closed callback: pin its shape."""
    from aiokafka.client import AIOKafkaClient
    from aiokafka.conn import CloseReason

    from pipeline import broker, fatal

    assert list(inspect.signature(AIOKafkaClient._on_connection_closed).parameters) == ["self", "conn", "reason"]
    assert "_on_connection_closed" in inspect.getsource(AIOKafkaClient._get_conn)  # passed as on_close
    monkeypatch.setattr(AIOKafkaClient, "_on_connection_closed", AIOKafkaClient._on_connection_closed)
    crashed: list[str] = []

    def crash(what: str, exc: BaseException | None = None) -> None:
        crashed.append(f"{what}: {exc}")

    monkeypatch.setattr(fatal, "crash", crash)
    refreshed: list[CloseReason] = []

    class Client:
        force_metadata_update = staticmethod(lambda: refreshed.append(CloseReason.CONNECTION_BROKEN))

    broker.exit_when_lost("kafka-cluster-of-record", "the worker")  # a real cluster: nothing changes
    AIOKafkaClient._on_connection_closed(Client(), None, CloseReason.CONNECTION_BROKEN)  # type: ignore[arg-type]
    assert crashed == [] and len(refreshed) == 1
    broker.exit_when_lost(f"{broker.IN_MEMORY}abc", "the worker")
    AIOKafkaClient._on_connection_closed(Client(), None, CloseReason.IDLE_DROP)  # type: ignore[arg-type]
    assert crashed == []
    AIOKafkaClient._on_connection_closed(Client(), None, CloseReason.CONNECTION_BROKEN)  # type: ignore[arg-type]
    assert len(crashed) == 1 and "the worker" in crashed[0] and "in-memory broker" in crashed[0]


def test_the_table_manager_skips_only_fausts_start_up_pause() -> None:
    """transport.TableManager re-does TableManager.on_start minus the sleep: pin what it re-does."""
    from faust.tables import TableManager

    source = inspect.getsource(TableManager.on_start)
    assert "await self.sleep(1.0)" in source
    body = [line.strip() for line in source.splitlines()[2:] if line.strip()]
    assert body == ["await self.sleep(1.0)", "if not self.should_stop:", "await self._update_channels()",
                    "await self.recovery.start()"], body
    app = faust.App("contract-tables", broker="memory://", TableManager=transport.TableManager)
    assert isinstance(app.tables, transport.TableManager)


def test_start_with_runs_coroutines_as_app_tasks_without_the_scan() -> None:
    """transport.start_with appends to the list `@app.task` fills: pin how faust starts that list."""
    source = inspect.getsource(faust.App.on_started_init_extra_tasks)
    assert "for task in self._app_tasks:" in source and "self.add_future(task())" in source
    assert "self._app_tasks.append(_wrapped)" in inspect.getsource(faust.App._task)
    ran: list[str] = []
    app = make_app(Handler())

    async def task() -> None:
        ran.append("ran")

    transport.start_with(app, task)

    async def start() -> None:
        await app.on_started_init_extra_tasks()
        await asyncio.sleep(0)

    asyncio.run(start())
    assert ran == ["ran"]
