"""The one exception tree of the project.

Every error the pipeline raises on purpose derives from :class:`PipelineError`,
so callers can catch the family and the CLI can map it to an exit code.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Root of every error raised on purpose by provenance."""


class ConfigError(PipelineError):
    """A setting or flag has a value the pipeline cannot use."""


class InvalidEvent(PipelineError):
    """Input bytes are not a valid ShipmentEvent; carries field-level reasons."""

    def __init__(self, reason: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.errors = errors or []


class BrokerError(PipelineError):
    """The embedded broker could not be started, reached or stopped."""


class StoreError(PipelineError):
    """The DuckDB store refused an operation."""


class QueryRejected(StoreError):
    """User SQL was refused: not read-only, sandbox violation, timeout or syntax."""


class NotFound(StoreError):
    """The thing asked for (event, block, log) is not in the store."""


class InvalidChallenge(PipelineError):
    """A proof request or proof bundle is malformed: the question cannot be asked."""


class InvalidProof(PipelineError):
    """A proof was well-formed but does not verify; carries the evidence."""


class LedgerError(PipelineError):
    """The ledger's own state is inconsistent (a gap, a fork, a bad restore)."""


class SignatureError(InvalidProof):
    """A signed note or checkpoint signature does not verify."""
