"""An anomaly row: one per (shipment, kind), revised in place as the stream moves on.

The row is what a dispatcher reads (`explanation`, `expected`, `actual`) and
what an auditor traces (`event_id`, `log_id`, `leaf_index` of the triggering
sealed event, the quantiles and sample size in `evidence`). `revision` grows
with every change of the row, so a store keeping the highest revision per
`anomaly_id` ends with the same table however often the rows are replayed.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

KINDS = ("late", "at_risk", "silent", "sequence", "dwell")
STATUSES = ("open", "resolved", "withdrawn")
_NAMESPACE = uuid.UUID("6f1c9a52-3c1e-4d7e-9a0e-0c5f2d7b8e41")


def anomaly_id(shipment_id: str, kind: str) -> str:
    """The stable id of the (shipment, kind) row.

    >>> anomaly_id("SHP-1", "late") == anomaly_id("SHP-1", "late") != anomaly_id("SHP-1", "dwell")
    True
    """
    return str(uuid.uuid5(_NAMESPACE, f"{shipment_id}|{kind}"))


def severity_of(score: float) -> str:
    """`low`, `medium` or `high` from a score in [0, 1].

    >>> [severity_of(s) for s in (0.2, 0.6, 0.95)]
    ['low', 'medium', 'high']
    """
    return "high" if score >= 0.9 else "medium" if score >= 0.5 else "low"


def iso(t: float) -> str:
    """Epoch seconds as RFC 3339 UTC text.

    >>> iso(1772352000.0)
    '2026-03-01T08:00:00+00:00'
    """
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


@dataclass(slots=True)
class Anomaly:
    """One row of the `anomalies` table; times in epoch seconds, `expected`/`actual` in hours."""

    shipment_id: str
    kind: str
    lane: str
    status: str
    score: float
    expected: float | None
    actual: float | None
    observed_at: float
    explanation: str
    model: str
    event_id: str
    log_id: str
    leaf_index: int
    revision: int = 0
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def anomaly_id(self) -> str:
        return anomaly_id(self.shipment_id, self.kind)

    @property
    def severity(self) -> str:
        return severity_of(self.score)

    def to_record(self) -> dict[str, Any]:
        """The JSON object sent on `analytics.anomalies` (the store adds `detected_at` if absent)."""
        return {
            "anomaly_id": self.anomaly_id, "event_id": self.event_id, "shipment_id": self.shipment_id,
            "lane": self.lane, "kind": self.kind, "severity": self.severity, "status": self.status,
            "score": round(self.score, 4),
            "expected": None if self.expected is None else round(self.expected, 2),
            "actual": None if self.actual is None else round(self.actual, 2),
            "observed_at": iso(self.observed_at), "explanation": self.explanation,
            "evidence": self.evidence, "model": self.model, "log_id": self.log_id,
            "leaf_index": self.leaf_index, "revision": self.revision,
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_record(), separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()
