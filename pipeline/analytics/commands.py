"""`provenance analytics` and `provenance anomalies ...`: the analytics process and the delay model's tools."""

from __future__ import annotations

import click


@click.command()
@click.option("--loglevel", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def analytics(loglevel: str) -> None:
    """The models on the sealed stream (ledger.entries): delay anomalies, against PROVENANCE_KAFKA."""
    from pipeline.analytics.app import run_analytics
    from pipeline.cli import load_settings

    run_analytics(load_settings(), loglevel)


@click.group()
def anomalies() -> None:
    """The delay-anomaly model: evaluation on labelled simulated streams."""
