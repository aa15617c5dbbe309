"""The labelled evaluation on a short stream: the lane model against the fixed-threshold baselines."""

from __future__ import annotations

from pipeline.core.delay_evaluation import format_reports, run_stream, score
from pipeline.core.lane_model import FixedThresholds, LaneDelayModel


def test_a_short_labelled_stream_scores_the_model_above_the_baselines() -> None:
    rows, truth, fleet, end, n = run_stream(11, 4.5, {"model": LaneDelayModel, "baseline": FixedThresholds})
    assert n > 10_000
    m = score("model", rows["model"], truth, fleet, end, warmup_days=1.0)
    b = score("baseline", rows["baseline"], truth, fleet, end, warmup_days=1.0)
    assert m.shipments > 200 and m.scores["late"].truth > 20
    assert m.scores["late"].f1 >= 0.98 and m.scores["late"].f1 >= b.scores["late"].f1
    assert m.scores["sequence"].recall == 1.0 and m.reorder_false_alarms == 0
    for kind in ("silent", "dwell"):
        assert m.scores[kind].truth > 3, kind
        assert m.scores[kind].f1 > b.scores[kind].f1, kind
    assert m.scores["at_risk"].alerts > 0 and b.scores["at_risk"].alerts == 0
    text = format_reports(11, 4.5, {"model": m, "baseline": b})
    assert "late" in text and "baseline" in text and "lead time" in text


def test_the_evaluate_command_prints_both_at_risk_models_across_seeds() -> None:
    from click.testing import CliRunner

    from pipeline.analytics.commands import anomalies

    result = CliRunner().invoke(anomalies, ["evaluate", "--seed", "11", "--seed", "12", "--days", "2"])
    assert result.exit_code == 0, result.output
    assert result.output.count("at_risk from a Weibull survival fit instead") == 2
    assert "across 2 seeds" in result.output and "at_risk, Weibull survival instead" in result.output
