"""What one `provenance produce` run did: confirmed, refused and unconfirmed records."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProduceReport:
    """What a produce run did: `sent` counts records the broker acknowledged.

    `unconfirmed` counts records handed to the client whose fate is unknown (the
    broker neither acknowledged nor refused them within the delivery timeout);
    `new_cluster` names the cluster the broker became during the run, if it did (an
    in-memory broker that restarted lost what it had acknowledged before).
    """

    sent: int
    failed: int
    elapsed: float
    rate: float
    interrupted: bool = False
    first_error: str | None = None
    unconfirmed: int = 0
    new_cluster: str | None = None

    @property
    def complete(self) -> bool:
        """Every record handed over is on the broker, confirmed, and the broker kept what it confirmed."""
        return not (self.failed or self.unconfirmed or self.new_cluster)

    def plus(self, later: ProduceReport) -> ProduceReport:
        """This run followed by `later` (one report for both)."""
        sent, elapsed = self.sent + later.sent, self.elapsed + later.elapsed
        return ProduceReport(sent, self.failed + later.failed, elapsed, sent / elapsed if elapsed > 0 else 0.0,
                             later.interrupted, self.first_error or later.first_error,
                             self.unconfirmed + later.unconfirmed, self.new_cluster or later.new_cluster)

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
