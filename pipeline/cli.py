"""`provenance`: the command line. Exit codes: 0 ok, 1 a check failed, 2 bad usage or input."""

from __future__ import annotations

import csv
import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from pipeline.cli_support import BadInput, fail_on, http_json, load_settings, running_store_url
from pipeline.errors import PipelineError


class _Commands(click.Group):
    """The command group; `forecast` (numpy and the backtest's models) is imported only when asked for.

    Every process the pipeline starts (`provenance worker`, `serve`, `analytics`) begins here.
    """

    LAZY = {"forecast": "pipeline.forecast_cli"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.LAZY and cmd_name not in self.commands:
            self.add_command(getattr(importlib.import_module(self.LAZY[cmd_name]), cmd_name))
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(package_name="provenance")
def main(verbose: int) -> None:
    """Supply-chain provenance: shipment events in, a verifiable ledger and SQL out."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:
        # kafka-python logs every connection retry; the commands report what failed themselves.
        # (aiokafka's messages stay: workers log their partition assignments through it.)
        logging.getLogger("kafka").setLevel(logging.CRITICAL)


@main.command()
@click.option("--duration", type=click.FloatRange(min=1), help="Stop after S seconds (default: until Ctrl-C).")
@click.option("--rate", type=click.FloatRange(min=1), default=500, show_default=True, help="Simulated events per second.")
@click.option("--port", type=click.IntRange(0, 65535), help="HTTP port of the store (default from settings).")
@click.option("--seed", type=int, default=7, show_default=True, help="Simulator seed.")
@click.option("--workers", type=click.IntRange(1, 16), default=1, show_default=True,
              help="Worker processes in one consumer group (2 for rates above ~5,000/s on two cores).")
def demo(duration: float | None, rate: float, port: int | None, seed: int, workers: int) -> None:
    """The whole system on this machine: broker, workers, store and a simulated fleet."""
    from pipeline.demo import run_demo

    settings = load_settings(store__port=port)
    try:
        sys.exit(run_demo(settings, duration=duration, rate=rate, seed=seed, workers=workers))
    except PipelineError as exc:
        raise fail_on(exc) from None


@main.command()
@click.option("--port", type=click.IntRange(1, 65535), default=9092, show_default=True)
def broker(port: int) -> None:
    """Only the embedded Kafka-compatible broker (in memory), for development."""
    import signal
    import threading

    from pipeline.broker import EmbeddedBroker

    settings = load_settings()
    b = EmbeddedBroker(settings, port)
    try:
        b.start()
    except PipelineError as exc:
        raise fail_on(exc) from None
    click.echo(f"broker ready: PROVENANCE_KAFKA={b.bootstrap}  (topics created; Ctrl-C stops)")
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        while not stopped.wait(0.5):
            if b.process is None or b.process.poll() is not None:
                raise click.ClickException("the broker exited")
    except KeyboardInterrupt:
        pass
    finally:
        b.stop()


@main.command()
@click.option("--timeout", type=click.FloatRange(min=1), default=60, show_default=True)
def topics(timeout: float) -> None:
    """Create the pipeline's topics on PROVENANCE_KAFKA (for a real Kafka cluster)."""
    from pipeline.broker import create_topics, wait_for_broker

    settings = load_settings()
    try:
        wait_for_broker(settings.kafka, timeout)
        created = create_topics(settings)
    except PipelineError as exc:
        raise fail_on(exc) from None
    click.echo(f"created {len(created)} topic(s): {', '.join(created) or 'none needed'}")


@main.command()
@click.option("--loglevel", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def worker(loglevel: str) -> None:
    """The stream processors (faust), against PROVENANCE_KAFKA."""
    from pipeline.worker.app import run_worker

    try:
        run_worker(load_settings(), loglevel)
    except PipelineError as exc:
        raise fail_on(exc) from None


@main.command()
@click.option("--port", type=click.IntRange(0, 65535), help="HTTP port (default from settings).")
@click.option("--host", help="Bind address (default 127.0.0.1).")
def serve(port: int | None, host: str | None) -> None:
    """The store: result topics into DuckDB, the HTTP API and dashboards."""
    from pipeline.store.service import run_store

    try:
        run_store(load_settings(store__port=port, store__host=host))
    except PipelineError as exc:
        raise fail_on(exc) from None


@main.command()
@click.option("--file", "file_", type=click.Path(dir_okay=False, path_type=Path), help="JSONL file, one event a line.")
@click.option("--simulate", is_flag=True, help="Use the built-in fleet simulator.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="Events per second (default: as fast as possible).")
@click.option("--count", type=click.IntRange(min=1), help="Stop after N events.")
@click.option("--seed", type=int, default=7, show_default=True, help="Simulator seed.")
@click.option("--malformed", type=click.FloatRange(0, 1), help="Share of malformed simulated lines (default from settings).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--anomalies", is_flag=True, help="Simulate with injected delay anomalies (late, silent, dwell, sequence).")
@click.option("--backfill", type=click.FloatRange(min=0), default=0, show_default=True,
              help="Simulator: start DAYS in the past and send those days unpaced before pacing at --rate (history "
                   "for the demand forecasts, through the ledger like every event).")
@click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Sender processes, each owning the shipments of whole partitions (best a divisor of the partition "
                   "count): the same records, partitions and per-shipment order as one process.")
def produce(file_: Path | None, simulate: bool, rate: float | None, count: int | None, seed: int,
            malformed: float | None, quiet: bool, anomalies: bool, backfill: float, processes: int) -> None:
    """Send events to Kafka, from a JSONL file (ShipmentEvents, or EPCIS: a document or NDJSON events) or the
    simulator."""
    from datetime import datetime, timedelta, timezone

    from pipeline import produce_sources
    from pipeline.epcis_file import epcis_records
    from pipeline.produce_parallel import produce_parallel

    if bool(file_) == simulate:
        raise BadInput("give exactly one of --file F.jsonl or --simulate")
    settings = load_settings(producer__malformed_share=malformed)
    epcis = None
    try:
        if backfill and not simulate:
            raise BadInput("--backfill goes with --simulate")
        if simulate:
            now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
            records = produce_sources.records_from_simulator(seed, settings.producer.malformed_share,
                                                             anomalies=anomalies, start=now - timedelta(days=backfill))
        else:
            assert file_ is not None
            epcis = epcis_records(file_)  # an EPCIS document or NDJSON of EPCIS events goes to epcis-events
            records = produce_sources.records_from_file(file_) if epcis is None else iter(epcis)
        topic = None if simulate or epcis is None else settings.topics.name(settings.topics.epcis)
        report = None
        if backfill:
            past, records = produce_sources.split_at(records, now)
            report = produce_parallel(settings, past, processes, rate=None, count=count, progress=not quiet)
            if count is not None:
                count = max(0, count - report.sent - report.failed)
            click.echo(f"backfilled {report.sent} events of the last {backfill:g} days", err=True)
        if report is None or not report.interrupted:
            paced = produce_parallel(settings, records, processes, rate=rate, count=count, progress=not quiet,
                                     topic=topic)
            report = paced if report is None else report.plus(paced)
    except PipelineError as exc:
        raise fail_on(exc) from None
    click.echo(f"sent {report.sent} events in {report.elapsed:.1f}s ({report.rate:,.0f}/s), {report.failed} failed"
               + (f", {report.unconfirmed} not confirmed" if report.unconfirmed else ""), err=True)
    if not report.complete:
        click.echo(f"Error: not every event is on the broker: {report.problems()}", err=True)
        sys.exit(1)


@main.command()
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help="Query this DuckDB file directly.")
def sql(query: str, fmt: str, db: Path | None) -> None:
    """Run a read-only query: through the running store, or on the DuckDB file when none runs."""
    settings = load_settings()
    url = None if db else running_store_url(settings)
    if url:
        try:
            status, body = http_json("POST", f"{url}/sql", {"query": query})
        except OSError:
            url = None
        else:
            if status != 200:
                raise BadInput(body.get("error", f"HTTP {status}"))
            columns, rows, truncated = body["columns"], body["rows"], body.get("truncated", False)
    if not url:
        from pipeline.store.snapshot import open_for_reading

        try:
            database = open_for_reading(settings, db)
        except PipelineError as exc:
            raise fail_on(exc) from None
        try:
            result = database.query(query, settings.store.row_cap, settings.store.query_timeout)
        except PipelineError as exc:
            raise fail_on(exc) from None
        finally:
            database.close()
        columns, rows, truncated = result.columns, result.rows, result.truncated
    _print_rows(columns, rows, fmt)
    if truncated:
        click.echo(f"(truncated at {len(rows)} rows)", err=True)


def _print_rows(columns: list[str], rows: list[list[Any]], fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps([dict(zip(columns, r)) for r in rows], ensure_ascii=False, indent=None))
        return
    if fmt == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(columns)
        w.writerows(rows)
        return
    cells = [[("" if v is None else json.dumps(v) if isinstance(v, (dict, list)) else str(v)) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    click.echo(line)
    click.echo("  ".join("-" * w for w in widths))
    for r in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    click.echo(f"({len(rows)} row{'s' if len(rows) != 1 else ''})", err=True)


@main.command()
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path),
              help="The witness's own signing key (created on first use; default <data_dir>/witness.key).")
@click.option("--name", default="provenance.local/witness", show_default=True, help="The witness's key name.")
@click.option("--store", "store_url", help="URL of the store to fetch consistency proofs from (default: the running store).")
@click.option("--log-key", help="Pin the log's verifier key (string or file); default: fetched from the store once.")
def witness(key_file: Path | None, name: str, store_url: str | None, log_key: str | None) -> None:
    """An independent witness: cosigns each checkpoint consistent with the last one it cosigned."""
    from pipeline.witness import run_witness

    settings = load_settings()
    url = store_url or running_store_url(settings) or f"http://{settings.store.host}:{settings.store.port}"
    try:
        run_witness(settings, key_file or settings.data_dir / "witness.key", name, url, log_key)
    except PipelineError as exc:
        raise fail_on(exc) from None


@main.command()
@click.option("--write", is_flag=True, help="Write schemas/shipment-event.v1.json.")
@click.option("--path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("schemas/shipment-event.v1.json"), show_default=True)
def schema(write: bool, path: Path) -> None:
    """Print (or --write) the ShipmentEvent v1 JSON Schema generated from the pydantic model."""
    from pipeline.schema import json_schema_text

    text = json_schema_text()
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        click.echo(f"wrote {path}", err=True)
    else:
        click.echo(text, nl=False)


from pipeline.analytics.commands import analytics, anomalies  # noqa: E402
from pipeline.proof_cli import audit, prove, verify  # noqa: E402
from pipeline.store.export import export  # noqa: E402

for command in (prove, verify, audit, analytics, anomalies, export):
    main.add_command(command)

if __name__ == "__main__":
    main()
