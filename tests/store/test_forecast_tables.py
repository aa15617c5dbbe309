"""The demand and forecasts tables on a real DuckDB file: idempotent writes and the live coverage views."""

from __future__ import annotations

from pathlib import Path

from pipeline.store.db import Database, IngestBatch


def forecast_row(key: str, ds: str, yhat: float, trained_at: str) -> dict:
    return {"series_key": key, "ds": ds, "yhat": yhat, "yhat_lower": yhat - 2, "yhat_upper": yhat + 2,
            "yhat_lower_95": yhat - 4, "yhat_upper_95": yhat + 4, "trained_at": trained_at,
            "model": {"name": "prophet-ensemble", "members": [{"name": "prophet", "weight": 1.0}]},
            "input_ledger": {"shipment-events/0": 120}}


def test_demand_keeps_whole_day_totals_and_replays_change_nothing(tmp_path: Path) -> None:
    db = Database(tmp_path / "p.duckdb")
    rows = [{"series_key": "total", "ds": "2026-03-02", "y": 5.0}, {"series_key": "total", "ds": "2026-03-02", "y": 9.0},
            {"series_key": "total", "ds": "2026-03-03", "y": 0.0}]
    db.ingest(IngestBatch(demand=rows))
    db.ingest(IngestBatch(demand=rows[:1]))  # a stale total arriving again
    assert db.fetch("SELECT ds::VARCHAR, y FROM demand ORDER BY ds") == [("2026-03-02", 9.0), ("2026-03-03", 0.0)]
    db.ingest(IngestBatch(demand=[{"series_key": "total", "ds": "2026-03-03", "y": 4.0}]))  # a late event
    assert db.fetch("SELECT y FROM demand WHERE ds = '2026-03-03'") == [(4.0,)]
    db.ingest(IngestBatch(demand=[{"series_key": "total", "ds": "2026-03-03", "y": 3.0, "part": 1}]))
    assert db.fetch("SELECT y FROM demand WHERE ds = '2026-03-03'") == [(7.0,)]  # the sum of the partitions' parts
    db.close()


def test_forecasts_keep_history_by_trained_at_and_are_scored_live(tmp_path: Path) -> None:
    db = Database(tmp_path / "p.duckdb")
    first = [forecast_row("total", d, 10.0, "2026-03-01T00:00:00+00:00") for d in ("2026-03-02", "2026-03-03")]
    second = [forecast_row("total", "2026-03-03", 12.0, "2026-03-02T00:00:00+00:00")]
    db.ingest(IngestBatch(forecasts=first + second))
    db.ingest(IngestBatch(forecasts=first))  # replayed
    assert db.fetch("SELECT count(*) FROM forecasts") == [(3,)]
    model, ledger = db.fetch("SELECT model->>'name', input_ledger->>'$.\"shipment-events/0\"' FROM forecasts LIMIT 1")[0]
    assert model == "prophet-ensemble" and ledger == "120"
    db.ingest(IngestBatch(demand=[{"series_key": "total", "ds": "2026-03-02", "y": 11.0},
                                  {"series_key": "total", "ds": "2026-03-03", "y": 20.0}]))
    scored = db.fetch("SELECT ds::VARCHAR, lead_days, in_80, in_95 FROM forecast_scores ORDER BY ds, trained_at")
    assert scored == [("2026-03-02", 1, True, True), ("2026-03-03", 2, False, False), ("2026-03-03", 1, False, False)]
    level, n, cov80, cov95, _ = db.fetch("SELECT * FROM forecast_coverage")[0]
    assert (level, n) == ("total", 3) and abs(cov80 - 1 / 3) < 1e-9 and abs(cov95 - 1 / 3) < 1e-9
    db.close()


def test_backtest_reads_stored_demand_aligned_and_zero_filled(tmp_path: Path) -> None:
    from pipeline.forecast_cli import stored_series

    db = Database(tmp_path / "p.duckdb")
    db.ingest(IngestBatch(demand=[{"series_key": "total", "ds": "2026-03-02", "y": 5.0},
                                  {"series_key": "total", "ds": "2026-03-05", "y": 2.0},
                                  {"series_key": "sku=A|site=8712345678906", "ds": "2026-03-04", "y": 1.0}]))
    db.close()
    series = {s.key: s for s in stored_series(tmp_path / "p.duckdb")}
    assert series["total"].y.tolist() == [5.0, 0.0, 0.0, 2.0]
    assert series["sku=A|site=8712345678906"].y.tolist() == [1.0, 0.0]
