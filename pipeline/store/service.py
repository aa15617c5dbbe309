"""`provenance serve`: the store process — ingest, HTTP, and the run file that lets the CLI find it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from dataclasses import asdict
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from pipeline import fatal
from pipeline.broker import exit_when_lost
from pipeline.errors import BrokerError
from pipeline.settings import Settings
from pipeline.store.dashboard import Dashboard
from pipeline.store.db import Database
from pipeline.store.http import Api
from pipeline.store.ingest import Ingestor
from pipeline.store.ledger import LedgerService
from pipeline.store.snapshot import SnapshotPublisher, scratch_paths
from pipeline.store.stall import Progress, StallWatch, worker_progress

log = logging.getLogger(__name__)


class Store:
    """The running store: one Database, one Ingestor, one HTTP server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        snapshots = settings.snapshot.interval > 0
        self.db = Database(settings.db_path, writable=scratch_paths(settings.snapshot_path) if snapshots else ())
        self.ingestor = Ingestor(settings, self.db)
        self.producer: AIOKafkaProducer | None = None
        self.api = Api(settings, self.db, self.produce, self.status)
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.ledger = LedgerService(settings, self.db)
        self.ingestor.preprocessors.append(self.ledger.tiles)
        self.ingestor.listeners.append(lambda batch: self.ledger.proofs.tiles.remember(batch.tiles))
        self.api.ledger = self.ledger
        self.ingestor.listeners.append(self.api.capture.on_batch)
        self.dashboard = Dashboard(self.db, self.ingestor.lag)
        self.dashboard.register(self.api.app)
        self.extensions: list[Any] = [self.ledger, SnapshotPublisher(settings, self.db),
                                      self.dashboard]  # started with the store
        self.stall_watch = StallWatch(settings.store.stall_after)
        self.stalled: list[str] = []
        self.offsets: AIOKafkaConsumer | None = None  # reads the worker's source topics' end offsets

    async def produce(self, records: list[tuple[bytes | None, bytes]], topic: str | None = None) -> None:
        if self.producer is None:
            self.producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka, acks="all",
                                             linger_ms=5, client_id="provenance-store-producer")
            try:
                await self.producer.start()
            except KafkaError as exc:
                self.producer = None
                raise BrokerError(f"cannot reach Kafka at {self.settings.kafka}: {exc}") from None
        topic = topic or self.settings.topics.name(self.settings.topics.events)
        futures = [await self.producer.send(topic, value=v, key=k) for k, v in records]
        for f in futures:
            await f

    async def status(self) -> dict[str, Any]:
        lag = await self.ingestor.lag()
        tables = await asyncio.to_thread(self.db.counts)
        lost = self.ingestor.degraded()
        reasons = list(self.stalled) + ([lost] if lost else [])
        return {"status": "degraded" if reasons else "ok", "reasons": reasons, "lag": lag,
                "tables": tables, "ingest": asdict(self.ingestor.stats),
                "broker": {"cluster_id": self.ingestor.cluster, "last_reset": self.ingestor.reset}}

    async def progress(self) -> list[Progress]:
        """Where every consumed topic's consumer is: the store's own topics and the worker's sources."""
        consumer = self.ingestor.consumer
        if consumer is None:
            return []
        lag = await self.ingestor.lag()
        positions: dict[str, int] = {}
        for (topic, _), offset in self.ingestor.committed.items():
            positions[topic] = positions.get(topic, 0) + offset
        out = [Progress(topic, positions.get(topic, 0), n, "the store") for topic, n in sorted(lag.items())]
        t = self.settings.topics
        if self.offsets is None:
            # Its own client with no assignment: its metadata keeps every topic, the sources included.
            offsets = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka, group_id=None, enable_auto_commit=False,
                                       client_id="provenance-store-progress")
            await offsets.start()
            self.offsets = offsets
        sources = [TopicPartition(name, p) for name in (t.name(t.events), t.name(t.epcis))
                   for p in sorted(self.offsets.partitions_for_topic(name) or ())]
        if sources:
            ends = await self.offsets.end_offsets(sources)
            blocks = await asyncio.to_thread(self.db.fetch, "SELECT log_id, max(last_offset) FROM blocks GROUP BY 1")
            dead = await asyncio.to_thread(self.db.fetch, "SELECT source_topic, source_partition, "
                                           "max(source_offset) FROM dead_letters GROUP BY 1, 2")
            out += worker_progress(blocks, dead, {(tp.topic, tp.partition): end for tp, end in ends.items()})
        return out

    async def watch_stalls(self, stopping: asyncio.Event) -> None:
        """Every few seconds, note which consumed topics stand still with records waiting (for /health).

        It ends when `stopping` is set, never by cancellation: a query of it may be running in a
        thread, and the database must not close under it.
        """
        interval = min(5.0, self.settings.store.stall_after / 3)
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), interval)
            if stopping.is_set():
                return
            try:
                stalled = self.stall_watch.observe(await self.progress())
            except Exception as exc:  # a diagnostic: a failed look is retried, never fatal to the store
                log.warning("cannot read consumer progress: %s", exc)
                continue
            if stalled and {r.split(":")[0] for r in stalled} != {r.split(":")[0] for r in self.stalled}:
                log.error("degraded: %s", "; ".join(stalled))
            self.stalled = stalled

    async def watch_broker(self, stopping: asyncio.Event, interval: float = 2.0) -> None:
        """Every `interval`, ask the broker which cluster it is (a new one lost our data: see ingest)."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), interval)
            if not stopping.is_set():
                await self.ingestor.check_cluster()

    async def start(self) -> None:
        await self.ingestor.start()
        for ext in self.extensions:
            await ext.start()
        self.runner = web.AppRunner(self.api.app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.settings.store.host, self.settings.store.port)
        await site.start()
        server = site._server
        port = server.sockets[0].getsockname()[1] if server and server.sockets else self.settings.store.port
        self.url = f"http://{self.settings.store.host}:{port}"
        self.settings.run_file.parent.mkdir(parents=True, exist_ok=True)
        self.settings.run_file.write_text(json.dumps({"url": self.url, "pid": os.getpid(),
                                                      "db": str(self.settings.db_path)}))

    async def stop(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.settings.run_file.unlink()
        for ext in self.extensions:
            await ext.stop()
        await self.ingestor.stop()
        if self.producer is not None:
            await self.producer.stop()
        if self.offsets is not None:
            await self.offsets.stop()
        if self.runner is not None:
            await self.runner.cleanup()
        self.db.close()

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Serve until SIGINT or SIGTERM."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        if self.ingestor.cluster is not None:
            exit_when_lost(self.ingestor.cluster, "the store")
        if ready is not None:
            ready.set()
        log.info("store serving %s", self.url)
        print(f"store: {self.url}  (DuckDB: {self.settings.db_path})", flush=True)
        for ext in self.extensions:
            banner = getattr(ext, "banner", None)
            if banner:
                print(banner(), flush=True)
        ingest = asyncio.create_task(self.ingestor.run())
        stopping = asyncio.Event()
        stalls = fatal.watch(asyncio.create_task(self.watch_stalls(stopping)), "the store's stall watch")
        cluster = fatal.watch(asyncio.create_task(self.watch_broker(stopping)), "the store's broker watch")
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({ingest, waiter}, return_when=asyncio.FIRST_COMPLETED)
        try:
            if ingest in done:
                ingest.result()  # re-raise an ingest failure: the process exits non-zero
        finally:
            stopping.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(asyncio.gather(stalls, cluster)), 15)
            ingest.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ingest
            await self.stop()


def run_store(settings: Settings) -> None:
    asyncio.run(Store(settings).run())
