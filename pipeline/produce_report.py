"""What one `provenance produce` run did: confirmed, refused and unconfirmed records."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProduceReport:
    """What a produce run did: `sent` counts records the broker acknowledged.

    `unconfirmed` counts records handed to the client whose fate is unknown (the
    broker neither acknowledged nor refused them within the delivery timeout);
    `new_cluster` names the cluster the broker became during the run, if it did (an
    in-memory broker that restarted lost what it had acknowledged before);
    `broker_away` says input stopped because the broker confirmed nothing for the
    delivery timeout.
    """

    sent: int
    failed: int
    elapsed: float
    rate: float
    interrupted: bool = False
    first_error: str | None = None
    unconfirmed: int = 0
    new_cluster: str | None = None
    broker_away: bool = False

    @property
    def handed(self) -> int:
        """Records handed to the client: each one confirmed, refused or unconfirmed."""
        return self.sent + self.failed + self.unconfirmed

    @property
    def complete(self) -> bool:
        """Every record handed over is on the broker, confirmed, and the broker kept what it confirmed."""
        return not (self.failed or self.unconfirmed or self.new_cluster)

    def plus(self, later: ProduceReport) -> ProduceReport:
        """This run followed by `later` (one report for both)."""
        sent, elapsed = self.sent + later.sent, self.elapsed + later.elapsed
        return ProduceReport(sent, self.failed + later.failed, elapsed, sent / elapsed if elapsed > 0 else 0.0,
                             later.interrupted, self.first_error or later.first_error,
                             self.unconfirmed + later.unconfirmed, self.new_cluster or later.new_cluster,
                             self.broker_away or later.broker_away)

    @staticmethod
    def alongside(reports: list[ProduceReport], elapsed: float, interrupted: bool) -> ProduceReport:
        """One report for runs that went on at the same time, over `elapsed` seconds of wall-clock.

        >>> a, b = ProduceReport(60, 1, 2.0, 30.0), ProduceReport(40, 0, 1.5, 26.7, unconfirmed=2)
        >>> both = ProduceReport.alongside([a, b], 2.5, False)
        >>> both.sent, both.failed, both.unconfirmed, both.handed, both.rate
        (100, 1, 2, 103, 40.0)
        """
        sent = sum(r.sent for r in reports)
        return ProduceReport(
            sent, sum(r.failed for r in reports), elapsed, sent / elapsed if elapsed > 0 else 0.0,
            interrupted or any(r.interrupted for r in reports),
            next((r.first_error for r in reports if r.first_error), None),
            sum(r.unconfirmed for r in reports), next((r.new_cluster for r in reports if r.new_cluster), None),
            any(r.broker_away for r in reports))

    def problems(self) -> str:
        """What went wrong, in a sentence a person can act on ("" when the run is complete)."""
        parts = []
        if self.failed:
            parts.append(f"{self.failed} refused by the broker or expired unconfirmed")
        if self.unconfirmed:
            parts.append(f"{self.unconfirmed} not confirmed when the producer gave up waiting")
        text = f"{' and '.join(parts)} (first error: {self.first_error})" if parts else ""
        if self.new_cluster:
            text += ("; and " if text else "") + (
                f"the broker became a new cluster ({self.new_cluster}) during the run: an in-memory broker that "
                f"restarted lost what it had confirmed before, so some of the {self.sent} confirmed may be gone")
        return text
