"""The vendored GS1 artefacts: the EPCIS 2.0 JSON Schema and JSON-LD context, and the context's addresses.

They are read once from the package (`pipeline/vendor/gs1_epcis/`, with their
notice); a document naming the GS1 context by any of its published URLs gets
this local copy, so validation and the event hash never touch the network.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

# Where GS1 publishes the EPCIS 2.0 context; documents name one of these in `@context`.
CONTEXT_URLS = frozenset({
    "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld",
    "https://ref.gs1.org/standards/epcis/epcis-context.jsonld",
    "https://gs1.github.io/EPCIS/epcis-context.jsonld",
    "https://ref.gs1.org/standards/epcis/2.0.1/epcis-context.jsonld",
})
CONTEXT_URL = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"

EVENT_TYPES = ("ObjectEvent", "AggregationEvent", "AssociationEvent", "TransformationEvent", "TransactionEvent")


def _read(name: str) -> Any:
    return json.loads(resources.files("pipeline").joinpath("vendor", "gs1_epcis", name).read_text("utf-8"))


@cache
def json_schema() -> dict[str, Any]:
    """The official EPCIS 2.0 JSON Schema (draft-07, self-contained)."""
    schema: dict[str, Any] = _read("EPCIS-JSON-Schema.json")
    return schema


@cache
def context_document() -> dict[str, Any]:
    """The official EPCIS 2.0 JSON-LD context, as a parsed document."""
    doc: dict[str, Any] = _read("epcis-context.jsonld")
    return doc


def load_context(url: str) -> dict[str, Any]:
    """A JSON-LD document loader result for `url`: the local GS1 context, or an empty context.

    Nothing is fetched: a context URL other than GS1's is read as empty, so its
    terms stay unexpanded (documented in docs/epcis.md).
    """
    document = context_document() if url in CONTEXT_URLS else {"@context": {}}
    return {"contentType": "application/ld+json", "contextUrl": None, "documentUrl": url, "document": document}
