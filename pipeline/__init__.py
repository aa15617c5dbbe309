"""provenance: a supply-chain event-stream pipeline with a verifiable Merkle ledger."""

__version__ = "0.1.0"
