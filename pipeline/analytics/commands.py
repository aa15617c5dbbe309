"""`provenance analytics` and `provenance anomalies ...`: the analytics process and the delay model's tools."""

from __future__ import annotations

import click


@click.command()
@click.option("--loglevel", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def analytics(loglevel: str) -> None:
    """The models on the sealed stream (ledger.entries): delay anomalies, against PROVENANCE_KAFKA."""
    from pipeline.analytics.app import run_analytics
    from pipeline.cli_support import fail_on, load_settings
    from pipeline.errors import PipelineError

    try:
        run_analytics(load_settings(), loglevel)
    except PipelineError as exc:
        raise fail_on(exc) from None


@click.group()
def anomalies() -> None:
    """The delay-anomaly model: evaluation on labelled simulated streams."""


@anomalies.command()
@click.option("--seed", "seeds", type=int, multiple=True, help="Simulator seed (repeat for several; default 1..5).")
@click.option("--days", type=click.FloatRange(min=2), default=30, show_default=True,
              help="Days of simulated event time per seed.")
@click.option("--partitions", type=click.IntRange(1, 64), default=4, show_default=True)
def evaluate(seeds: tuple[int, ...], days: float, partitions: int) -> None:
    """A labelled simulated stream through the real delay model and the baselines: P/R/F1 per kind."""
    from pipeline.core.delay_evaluation import evaluate as run, format_reports, summary

    reports = []
    for seed in seeds or (1, 2, 3, 4, 5):
        r = run(seed, days, partitions)
        reports.append(r)
        click.echo(format_reports(seed, days, r) + "\n")
    if len(reports) > 1:
        both = summary(reports)
        s = both["model"]
        click.echo(f"across {len(reports)} seeds (worst / mean), model:")
        for name, values in s.items():
            flat = [v if not isinstance(v, tuple) else v for v in values]
            if flat and isinstance(flat[0], tuple):
                p = [v[0] for v in flat]
                r_ = [v[1] for v in flat]
                click.echo(f"  {name:<24} precision {min(p):.3f} / {sum(p) / len(p):.3f}"
                           f"   recall {min(r_):.3f} / {sum(r_) / len(r_):.3f}")
            elif name == "sequence_reorder_alarms":
                click.echo(f"  {name:<24} {sum(flat)} in total")
            else:
                click.echo(f"  {name:<24} {min(flat):.3f} / {sum(flat) / len(flat):.3f}")
        w = both["survival"]
        click.echo(f"  at_risk, Weibull survival instead: early {min(w['at_risk_early']):.3f} / "
                   f"{sum(w['at_risk_early']) / len(reports):.3f}   precision {min(w['at_risk_precision']):.3f} / "
                   f"{sum(w['at_risk_precision']) / len(reports):.3f}")
