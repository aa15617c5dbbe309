"""Settings: one frozen object, read once from `PROVENANCE_*` and `.env`, passed down.

Nothing else in the project reads `os.environ`. Nested groups use `__` in the
environment: `PROVENANCE_LEDGER__MAX_EVENTS=1000`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    forecasts: str = "analytics.forecasts"
    anomalies: str = "analytics.anomalies"

    def name(self, topic: str) -> str:
        return f"{self.prefix}{topic}"

    def all(self) -> list[str]:
        return [
            self.name(t)
            for t in (
                self.events, self.epcis, self.dead_letter, self.entries, self.blocks,
                self.checkpoints, self.cosignatures, self.forecasts, self.anomalies,
            )
        ]


class LedgerSettings(_Group):
    """When blocks are cut and checkpoints signed."""

    max_events: int = Field(default=500, ge=1, le=100_000)
    max_age: float = Field(default=1.0, gt=0, description="seconds")
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
    tile_cache: int = Field(default=65_536, ge=16, description="Merkle tiles kept in memory (8 KiB each)")


class WorkerSettings(_Group):
    group_id: str = "provenance-worker"
    batch_size: int = Field(default=2_000, ge=1, description="records per poll at most")
    batch_within: float = Field(default=0.2, gt=0)
    web_port: int = Field(default=0, ge=0, le=65535, description="0 disables faust's web server")
    session_timeout: float = Field(default=3.0, ge=1.0, le=300.0,
                                   description="seconds until a dead worker's partitions move")
    instance_id: str | None = Field(default=None, description="static group membership: a restart under the "
                                    "same id takes its partitions back at once")
    commit_interval: float = Field(default=0.25, gt=0, description="seconds between offset commits")


class ProducerSettings(_Group):
    linger_ms: int = Field(default=20, ge=0)
    batch_size: int = Field(default=262_144, ge=1)
    malformed_share: float = Field(default=0.0, ge=0, le=1)


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

    @property
    def db_path(self) -> Path:
        return self.store.db_file or self.data_dir / "provenance.duckdb"

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
