"""The delay-anomaly handler: one event-time detector per `ledger.entries` partition."""

from __future__ import annotations

from pipeline import metrics
from pipeline.analytics.feed import Output
from pipeline.core.delay_detector import DelayDetector
from pipeline.core.lane_model import LaneDelayModel
from pipeline.core.sealed import SealedEvent
from pipeline.settings import AnalyticsSettings, Settings


def detector_from(a: AnalyticsSettings) -> DelayDetector:
    """A detector with a fresh lane model, configured from the analytics settings."""
    model = LaneDelayModel(window=a.window, min_deliveries=a.min_deliveries)
    return DelayDetector(model, allowed_lateness=a.allowed_lateness * 3600, late_tolerance=a.late_tolerance * 3600,
                         retention=a.retention * 3600)


class DelayAnomalies:
    """Feeds each partition's sealed events to its detector; drains the rows that changed."""

    name = "anomalies"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topics.name(settings.topics.anomalies)
        self.detectors: dict[int, DelayDetector] = {}

    def assign(self, partition: int) -> None:
        self.detectors[partition] = detector_from(self.settings.analytics)

    def revoke(self, partition: int) -> None:
        self.detectors.pop(partition, None)

    def handle(self, partition: int, events: list[SealedEvent], replay: bool) -> None:
        detector = self.detectors.get(partition)
        if detector is None:
            detector = self.detectors[partition] = detector_from(self.settings.analytics)
        for e in events:
            detector.observe(e)

    def drain(self, partition: int) -> list[Output]:
        detector = self.detectors.get(partition)
        if detector is None:
            return []
        rows = detector.changed()
        metrics.anomalies_raised(detector.take_raised())
        return [Output(self.topic, row.shipment_id.encode(), row.to_json()) for row in rows]
