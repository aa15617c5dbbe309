"""Validation against the official EPCIS 2.0 JSON Schema, offline, with format checks on.

jsonschema skips `format` unless a FormatChecker is given and the checkers'
libraries are installed (the `format` extra: rfc3339-validator for date-time,
rfc3987 for uri); `FORMAT_CHECKS` names those the project relies on, and a test
fails if one is missing. Each error carries the JSON Pointer (RFC 6901) of the
value it is about, so a producer can find it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from pipeline.core.epcis.standard import json_schema

FORMAT_CHECKS = ("date-time", "uri")
MAX_ERRORS = 50


@dataclass(frozen=True, slots=True)
class SchemaError:
    """One violation: where (a JSON Pointer into the body) and what."""

    pointer: str
    message: str
    keyword: str

    def to_dict(self) -> dict[str, str]:
        return {"pointer": self.pointer, "message": self.message, "keyword": self.keyword}


def pointer(path: Any) -> str:
    """A JSON Pointer from a path of keys and indices.

    >>> pointer(["epcisBody", "eventList", 0, "a/b~"])
    '/epcisBody/eventList/0/a~1b~0'
    """
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


@cache
def _validator() -> Any:
    # Imported here, at the first validation: a worker that never sees an EPCIS record never loads it.
    from jsonschema import Draft7Validator, FormatChecker  # type: ignore[import-untyped]

    checker = FormatChecker()
    missing = [f for f in FORMAT_CHECKS if f not in checker.checkers]
    if missing:
        raise RuntimeError(f"jsonschema cannot check formats {missing}: install jsonschema[format]")
    return Draft7Validator(json_schema(), format_checker=checker)


def _message(error: Any) -> str:
    text = str(error.message)
    return text if len(text) <= 300 else text[:297] + "..."


def _document_order(error: Any) -> list[tuple[int, int, str]]:
    return [(0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in error.absolute_path]


def schema_errors(value: Any, base: tuple[Any, ...] = ()) -> list[SchemaError]:
    """Every schema violation of a document or event (up to MAX_ERRORS), in document order."""
    out: list[SchemaError] = []
    for error in sorted(_validator().iter_errors(value), key=_document_order):
        out.append(SchemaError(pointer(base + tuple(error.absolute_path)), _message(error), str(error.validator)))
        if len(out) >= MAX_ERRORS:
            break
    return out
