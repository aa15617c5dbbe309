"""Settings: one frozen object, read once from `PROVENANCE_*` and `.env`, passed down.

Nothing else in the project reads `os.environ`. Nested groups use `__` in the
environment: `PROVENANCE_LEDGER__MAX_EVENTS=1000`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.core.strict_json import Limits


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TopicSettings(_Group):
    """Kafka topic names; all share `prefix` so several pipelines can share a cluster."""

    prefix: str = ""
    partitions: int = Field(default=4, ge=1, le=256)
    replication: int = Field(default=1, ge=1)
    events: str = "shipment-events"
    epcis: str = "epcis-events"
    dead_letter: str = "events.dead-letter"
    entries: str = "ledger.entries"
    blocks: str = "ledger.blocks"
    checkpoints: str = "ledger.checkpoints"
    cosignatures: str = "ledger.cosignatures"
    demand: str = "analytics.demand"
    forecasts: str = "analytics.forecasts"
    anomalies: str = "analytics.anomalies"

    def name(self, topic: str) -> str:
        return f"{self.prefix}{topic}"

    def sequenced(self) -> list[str]:
        """The topics the worker sequences into logs, in the order their logs take ledger partitions."""
        return [self.events, self.epcis]

    @property
    def ledger_partitions(self) -> int:
        """Partitions of ledger.entries and ledger.blocks: one per log of every sequenced topic."""
        return self.partitions * len(self.sequenced())

    def ledger_partition(self, topic: str, partition: int) -> int:
        """The ledger.entries/ledger.blocks partition carrying log `<topic>/<partition>` (topic unprefixed).

        Shipment logs keep partitions 0..P-1; `epcis-events/p` uses P + p, so
        every log has a ledger.blocks partition of its own and with it exactly
        one commit point.
        """
        return self.sequenced().index(topic) * self.partitions + partition

    def all(self) -> list[str]:
        return [
            self.name(t)
            for t in (
                self.events, self.epcis, self.dead_letter, self.entries, self.blocks,
                self.checkpoints, self.cosignatures, self.demand, self.forecasts, self.anomalies,
            )
        ]


class LedgerSettings(_Group):
    """When blocks are cut and checkpoints signed."""

    max_events: int = Field(default=500, ge=1, le=100_000)
    max_age: float = Field(default=1.0, gt=0, description="seconds the oldest event waits for its block at most")
    caught_up_age: float = Field(default=0.2, gt=0, description="seconds the oldest event waits for its block once "
                                 "the worker has read all the broker has of its partition (sooner than max_age)")
    bundle_size: int = Field(default=256, ge=1, le=4096, description="entries per ledger.entries message")
    checkpoint_interval: float = Field(default=5.0, gt=0, description="seconds")
    key_name: str = "provenance.local/ledger"
    key_file: Path | None = Field(default=None, description="defaults to <data_dir>/ledger.key")


class StoreSettings(_Group):
    """The DuckDB store and its HTTP server."""

    host: str = "127.0.0.1"
    port: int = Field(default=8470, ge=0, le=65535)
    db_file: Path | None = Field(default=None, description="defaults to <data_dir>/provenance.duckdb")
    query_timeout: float = Field(default=10.0, gt=0, description="seconds per /sql statement")
    row_cap: int = Field(default=10_000, ge=1)
    batch_rows: int = Field(default=5_000, ge=1)
    flush_interval: float = Field(default=0.25, gt=0)
    fetch_wait: float = Field(default=0.1, gt=0, le=30, description="seconds a fetch waits at the broker for "
                              "records; the embedded broker answers an empty one only after about half of it")
    tile_cache: int = Field(default=65_536, ge=16, description="Merkle tiles kept in memory (8 KiB each)")
    stall_after: float = Field(default=30.0, gt=0, description="seconds a consumed topic may stand still with "
                               "records waiting before /health says degraded")


class WorkerSettings(_Group):
    group_id: str = "provenance-worker"
    batch_size: int = Field(default=2_000, ge=1, description="records per poll at most")
    batch_within: float = Field(default=0.2, gt=0)
    fetch_wait: float = Field(default=0.1, gt=0, le=30, description="seconds a fetch waits at the broker for "
                              "records (faust's own is 1.5); the embedded broker answers an empty one only after "
                              "about half of it")
    web_port: int = Field(default=0, ge=0, le=65535, description="0 disables faust's web server")
    session_timeout: float | None = Field(default=None, ge=1.0, le=300.0, description="seconds until a dead "
                                          "worker's partitions move; unset: 2 on the embedded broker, 6 (Kafka's "
                                          "least by default) on any other")
    instance_id: str | None = Field(default=None, description="static group membership: on Kafka a restart under "
                                    "the same id takes its partitions back at once (Tansu makes it wait 6 s)")
    commit_interval: float = Field(default=0.25, gt=0, description="seconds between offset commits")


class AnalyticsSettings(_Group):
    """The analytics process: its consumer group on ledger.entries and the delay detector."""

    group_id: str = "provenance-analytics"
    batch_size: int = Field(default=200, ge=1, description="ledger.entries messages per take")
    batch_within: float = Field(default=0.5, gt=0)
    web_port: int = Field(default=0, ge=0, le=65535, description="0 disables faust's web server")
    allowed_lateness: float = Field(default=2.0, ge=0, description="event-time hours an event may arrive late")
    late_tolerance: float = Field(default=1.0, ge=0, description="hours past the promise before `late`")
    retention: float = Field(default=72.0, gt=0, description="event-time hours a finished shipment is kept")
    min_deliveries: int = Field(default=30, ge=1, description="deliveries before a lane's own quantiles are used")
    window: int = Field(default=256, ge=8, le=100_000, description="recent samples each quantile keeps")


class ForecastSettings(_Group):
    """Demand forecasts in the analytics process: when rounds run, how far ahead, on how many processes."""

    horizon: int = Field(default=28, ge=1, le=366, description="days ahead, from the day after the last complete day")
    interval: float = Field(default=60.0, gt=0, description="seconds between rounds for late-changed history")
    processes: int = Field(default=2, ge=1, le=64, description="fit processes (off the event loop)")
    reconciliation: str = Field(default="middle_out", pattern="^(none|bottom_up|top_down|middle_out|mint_wls)$",
                                description="what the backtest found best; see `provenance forecast backtest`")
    holidays: bool = Field(default=True, description="holiday factors from the sites' regional calendar")


class MetricsSettings(_Group):
    """Prometheus `/metrics` of the worker and analytics processes (the store serves it on its own port)."""

    host: str = "127.0.0.1"
    worker_port: int = Field(default=0, ge=0, le=65535, description="0: no exporter")
    analytics_port: int = Field(default=0, ge=0, le=65535, description="0: no exporter")


class SnapshotSettings(_Group):
    """The copy of the store's file that outside readers (Grafana, audit) open while the store runs."""

    interval: float = Field(default=60.0, ge=0, description="seconds between one snapshot and the next; 0: none")
    path: Path | None = Field(default=None, description="defaults to <data_dir>/snapshot.duckdb")


class ProducerSettings(_Group):
    linger_ms: int = Field(default=20, ge=0)
    batch_size: int = Field(default=262_144, ge=1)
    delivery_timeout: float = Field(default=30.0, ge=1.0, le=3600.0, description="seconds a record may wait for "
                                    "the broker's acknowledgement, retries included, before it counts as not sent")
    malformed_share: float = Field(default=0.0, ge=0, le=1)


class EpcisSettings(_Group):
    """EPCIS 2.0 capture (POST /capture) and query (GET /epcis/events)."""

    max_body: int = Field(default=16 * 1024 * 1024, ge=1024, description="bytes; larger bodies get 413")
    page_token_ttl: float = Field(default=300.0, gt=0, description="seconds a next-page token stays valid")
    per_page: int = Field(default=30, ge=1, le=10_000)
    max_per_page: int = Field(default=1_000, ge=1, le=10_000)
    record_timeout: float = Field(default=120.0, gt=0, description="seconds a capture job waits for its events "
                                                                   "to be recorded in DuckDB")
    jobs_kept: int = Field(default=10_000, ge=1, description="finished capture jobs kept for GET /capture/{id}")


class LimitSettings(_Group):
    """Bounds on untrusted input: every record the worker reads and every `POST /events` body.

    A record over a record limit is dead-lettered (by the worker) or refused
    with 400 (by the store), with the limit named in the reason.
    """

    max_bytes: int = Field(default=1_048_576, ge=256, le=64 * 1_048_576, description="bytes in one record")
    max_depth: int = Field(default=64, ge=4, le=512, description="nesting of arrays and objects in one record")
    max_string: int = Field(default=65_536, ge=256, description="characters in one string or member name")
    max_fields: int = Field(default=1_000, ge=16, description="members of one JSON object")
    max_array: int = Field(default=10_000, ge=16, description="elements of one JSON array")
    max_items: int = Field(default=1_000, ge=1, description="entries of one event's `items`")
    max_body: int = Field(default=16 * 1_048_576, ge=1024, description="bytes in one HTTP request body (413 beyond)")
    max_request_events: int = Field(default=10_000, ge=1, description="events in one POST /events")
    request_timeout: float = Field(default=30.0, gt=0, description="seconds to read a request body and answer it")
    max_concurrent_writes: int = Field(default=8, ge=1, description="POST /events handled at once (429 beyond)")

    def record(self) -> Limits:
        """The record limits as the pure decoder takes them."""
        return Limits(max_bytes=self.max_bytes, max_depth=self.max_depth, max_string=self.max_string,
                      max_fields=self.max_fields, max_array=self.max_array, max_items=self.max_items)


class Settings(BaseSettings):
    """Everything configurable, built once at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="PROVENANCE_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        frozen=True,
    )

    kafka: str = Field(default="127.0.0.1:9092", description="bootstrap servers")
    data_dir: Path = Path("provenance-data")
    topics: TopicSettings = TopicSettings()
    ledger: LedgerSettings = LedgerSettings()
    store: StoreSettings = StoreSettings()
    worker: WorkerSettings = WorkerSettings()
    producer: ProducerSettings = ProducerSettings()
    epcis: EpcisSettings = EpcisSettings()
    analytics: AnalyticsSettings = AnalyticsSettings()
    forecast: ForecastSettings = ForecastSettings()
    metrics: MetricsSettings = MetricsSettings()
    snapshot: SnapshotSettings = SnapshotSettings()
    limits: LimitSettings = LimitSettings()

    @property
    def db_path(self) -> Path:
        return self.store.db_file or self.data_dir / "provenance.duckdb"

    @property
    def snapshot_path(self) -> Path:
        return self.snapshot.path or self.data_dir / "snapshot.duckdb"

    @property
    def key_path(self) -> Path:
        return self.ledger.key_file or self.data_dir / "ledger.key"

    @property
    def run_file(self) -> Path:
        """Where a running store announces its URL, so `provenance sql` can find it."""
        return self.data_dir / "store.json"

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with flag values applied (flags override the environment)."""
        data = self.model_dump()
        for key, value in changes.items():
            if value is None:
                continue
            group, _, field = key.partition("__")
            if field:
                data[group][field] = value
            else:
                data[group] = value
        return Settings.model_validate(data)
