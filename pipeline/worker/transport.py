"""A faust transport with a batch path: each poll's source-topic records go straight to one handler.

faust delivers a record through `Consumer._drain_messages`, the conductor, a
stream queue and an agent (~70 µs a record here); the ledger needs none of
that, only each partition's records in offset order with the consumer
generation they were fetched in. This transport (URL scheme `provenance-kafka://`,
registered under the `faust.transports` entry point) is faust's aiokafka driver
with one change: after every fetch, records of the topics a `BatchHandler`
declared are taken out of the poll and handed to it; records of every other
topic take faust's normal path, so agents, tables, timers and rebalances work
as before. Declared topics are subscribed with `acks=False`, so faust never
tracks or commits them: the handler commits, through `commit()`, once its own
work is durable.

Every faust internal this relies on is touched in this module and nowhere else;
`tests/unit/test_faust_contract.py` checks each against the installed faust, so
an upgrade that changes one fails loudly instead of silently skipping commits.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import faust
from faust.tables import TableManager as FaustTableManager
from faust.transport.drivers import aiokafka as driver
from faust.types import TP

log = logging.getLogger(__name__)

SCHEME = "provenance-kafka"


class BatchHandler(Protocol):
    """Receives the raw aiokafka records of its topics, per partition, once per poll."""

    topics: frozenset[str]

    async def handle_poll(self, polled: Mapping[Any, Sequence[Any]], generation: int) -> None: ...

    def on_fatal(self, exc: BaseException) -> None: ...


class BatchConsumerThread(driver.AIOKafkaConsumerThread):
    """faust's consumer thread, with the fetch wait `attach` was given instead of faust's fixed 1.5 s.

    The embedded broker answers a fetch that found no records only after about half its wait,
    even when records arrive in the meantime: with 1.5 s that was most of the produce → sealed time.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait = getattr(self.app, "fetch_wait", None)
        if wait is not None:
            consumer._fetch_max_wait_ms = int(wait * 1000)  # read when the consumer starts its fetcher
        return consumer


class BatchConsumer(driver.Consumer):
    """faust's aiokafka consumer, diverting declared topics' records to the app's batch handler."""

    def _new_consumer_thread(self) -> BatchConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _wait_next_records(self, timeout: float) -> Any:
        records, active = await super()._wait_next_records(timeout)
        handler: BatchHandler | None = getattr(self.app, "batch_handler", None)
        if not records or handler is None:
            return records, active
        topics = handler.topics
        mine = {tp: rs for tp, rs in records.items() if tp.topic in topics}
        if not mine:
            return records, active
        rest = {tp: rs for tp, rs in records.items() if tp.topic not in topics}
        # As faust's getmany does: nothing from a poll that returns while the flow is stopped
        # (a rebalance is under way); faust seeks to the committed offsets before it resumes.
        if self.flow_active and not self.should_stop:
            try:
                await handler.handle_poll(mine, self.app.consumer_generation_id)
            except Exception as exc:
                log.critical("the batch handler failed: %r; stopping the worker", exc, exc_info=True)
                handler.on_fatal(exc)
                raise
        return rest, active


class Transport(driver.Transport):
    """faust's aiokafka transport with `BatchConsumer`."""

    Consumer = BatchConsumer


class TableManager(FaustTableManager):
    """faust's table manager without its fixed one-second pause at start when the app has no tables.

    faust sleeps a second so tables defined late can register; the worker defines none, and
    that second is on the path of every restart before the consumer even subscribes.
    """

    async def on_start(self) -> None:
        if len(self):
            await super().on_start()
            return
        await self._update_channels()
        await self.recovery.start()


def broker_url(bootstrap: str) -> str:
    """The faust broker URL that selects this transport."""
    return ",".join(f"{SCHEME}://{host}" for host in bootstrap.split(","))


def attach(app: faust.App, handler: BatchHandler, fetch_wait: float | None = None) -> list[faust.TopicT]:
    """Give the app's consumer a batch handler and subscribe its topics with faust's acks off.

    `fetch_wait`: seconds a fetch may wait at the broker for records (faust's own: 1.5).
    """
    app.batch_handler = handler  # type: ignore[attr-defined]
    app.fetch_wait = fetch_wait  # type: ignore[attr-defined]
    topics = []
    for name in sorted(handler.topics):
        topic = app.topic(name, key_type=bytes, value_type=bytes, acks=False)
        app.topics.add(topic)
        topics.append(topic)
    return topics


def start_with(app: faust.App, *tasks: Callable[[], Awaitable[None]]) -> None:
    """Run each coroutine function as a task of the app once it has started, as `@app.task` does.

    `@app.task` (and `@app.timer`, built on it) also registers the function for
    faust's venusian scan, which reads the caller's source and maps every loaded
    module to its file: about 40 ms of start-up CPU each. The worker scans nothing.
    """
    app._app_tasks.extend(tasks)  # type: ignore[attr-defined]


def commit(app: faust.App, offsets: Mapping[tuple[str, int], int]) -> Awaitable[bool]:
    """Commit next-offsets for (topic, partition) through the driver; False if a rebalance refused it."""
    tps = {TP(topic, partition): offset for (topic, partition), offset in offsets.items()}
    return app.consumer._commit(tps)  # type: ignore[attr-defined]


def generation(app: faust.App) -> int:
    """The consumer group generation the app's consumer is in now."""
    return int(app.consumer_generation_id)
