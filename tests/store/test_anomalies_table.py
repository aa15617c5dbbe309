"""The anomalies table and GET /anomalies: one row per (shipment, kind), the highest revision kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_http import Server, run

from pipeline.core.anomaly import Anomaly
from pipeline.store.db import Database, IngestBatch


def row(shipment: str = "SHP-1", kind: str = "late", revision: int = 1, status: str = "open",
        lane: str = "DPD parcel A→B", **kw: Any) -> dict[str, Any]:
    a = Anomaly(shipment, kind, lane, status, 0.97, 1.0, kw.pop("actual", 5.0), 1772352000.0 + revision,
                kw.pop("explanation", f"revision {revision}"), "lane-delay/1", f"evt-{revision}",
                "shipment-events/0", revision, revision, {"n": 40})
    return a.to_record()


def test_the_highest_revision_wins_whatever_the_order(tmp_path: Path) -> None:
    db = Database(tmp_path / "a.duckdb")
    db.ingest(IngestBatch(anomalies=[row(revision=3, status="resolved"), row(revision=1)]))
    db.ingest(IngestBatch(anomalies=[row(revision=2)]))
    rows = db.anomalies()
    assert [(r["revision"], r["status"], r["explanation"]) for r in rows] == [(3, "resolved", "revision 3")]
    assert rows[0]["evidence"] == {"n": 40} and rows[0]["leaf_index"] == 3 and rows[0]["severity"] == "high"


def test_replaying_the_rows_changes_nothing(tmp_path: Path) -> None:
    db = Database(tmp_path / "a.duckdb")
    batch = [row("SHP-1", "late", 1), row("SHP-1", "silent", 2), row("SHP-2", "dwell", 3)]
    first = db.ingest(IngestBatch(anomalies=batch))
    before = db.fetch("SELECT * FROM anomalies ORDER BY anomaly_id")
    again = db.ingest(IngestBatch(anomalies=batch))
    assert (first.anomalies, again.anomalies) == (3, 0)
    assert db.fetch("SELECT * FROM anomalies ORDER BY anomaly_id") == before
    assert db.counts()["anomalies"] == 3


def test_get_anomalies_filters_and_refuses_unknown_values(tmp_path: Path) -> None:
    async def scenario(s: Server) -> None:
        s.db.ingest(IngestBatch(anomalies=[row("SHP-1", "late", 1), row("SHP-2", "silent", 2, status="resolved"),
                                           row("SHP-3", "silent", 3, lane="GLS parcel C→D")]))
        status, body = await s.get("/anomalies?kind=silent")
        assert status == 200 and {r["shipment_id"] for r in body["anomalies"]} == {"SHP-2", "SHP-3"}
        status, body = await s.get("/anomalies?kind=silent&status=open")
        assert [r["shipment_id"] for r in body["anomalies"]] == ["SHP-3"]
        status, body = await s.get("/anomalies?" + "lane=GLS%20parcel%20C%E2%86%92D")
        assert [r["shipment_id"] for r in body["anomalies"]] == ["SHP-3"]
        status, body = await s.get("/anomalies?limit=1")
        assert [r["shipment_id"] for r in body["anomalies"]] == ["SHP-3"]  # newest observation first
        for bad in ("kind=slow", "status=closed", "limit=0", "limit=x"):
            status, body = await s.get(f"/anomalies?{bad}")
            assert status == 400 and body["error"], bad
    run(tmp_path, scenario)
