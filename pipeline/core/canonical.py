"""RFC 8785 (JCS) canonical JSON: the one encoding that turns an event into the bytes hashed.

Any JCS implementation in any language gives the same bytes for the same JSON
value, which is what lets an auditor recompute a leaf hash without our code.

`rfc8785` is the reference; it is pure Python and costs ~25 µs an event. For
the common case `orjson.dumps` with sorted keys (the same bytes as the standard
library's `json.dumps` with sorted keys, no spaces and raw UTF-8) writes the very
same bytes, and `parse_json` notes while parsing whether the value is in that
case: no float whose shortest repr differs from
ECMAScript's (exponents, integral floats like `5.0`, `-0.0`), no integer beyond
2^53, no character outside the BMP (JCS sorts keys by UTF-16 code units).
Golden tests check the fast path against the reference on random values.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import orjson
import rfc8785

from pipeline.errors import InvalidEvent

_MAX_SAFE_INT = 2**53 - 1
_ASTRAL = re.compile(r"[\U00010000-\U0010FFFF]|\\u[dD][89abAB]")


@dataclass(frozen=True, slots=True)
class Parsed:
    """A parsed JSON value and whether `json.dumps` writes its JCS form."""

    value: Any
    simple: bool


def _reject_constant(s: str) -> Any:
    raise ValueError(f"{s} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _is_simple(value: Any) -> bool:
    """True when no number in the value is written differently by JCS and `json.dumps`."""
    stack = [value]
    pop, push = stack.pop, stack.extend
    while stack:
        v = pop()
        t = type(v)
        if t is dict:
            push(v.values())
        elif t is list:
            push(v)
        elif t is float:
            r = repr(v)
            if "e" in r or r.endswith(".0") or r[-1] in "fn":  # exponents, integral, inf and nan
                return False
        elif t is int and (v > _MAX_SAFE_INT or v < -_MAX_SAFE_INT):
            return False
    return True


def parse_json(text: str) -> Parsed:
    """Parse JSON (no NaN/Infinity) and classify it for canonical encoding.

    Trusted text only: records from outside go through `pipeline.core.strict_json.decode`,
    which bounds them and refuses duplicate keys, lone surrogates and unrepresentable numbers.

    >>> parse_json('{"a": 1.5}').simple, parse_json('{"a": 5.0}').simple
    (True, False)
    """
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise InvalidEvent(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None
    return Parsed(value, _ASTRAL.search(text) is None and _is_simple(value))


def _as_doubles(value: Any) -> Any:
    """Integers beyond 2^53 as the doubles JSON numbers are, when JCS writes them back unchanged.

    JCS reads every number as an IEEE double. `1e16` canonicalises to
    `10000000000000000`, which Python parses back as an int that the reference
    refuses; as the double it is, it canonicalises to itself again. An integer
    whose double JCS would write differently (2^53 + 1, or 2^60, written
    `1152921504606847000`) stays an int and is refused, so an accepted leaf
    always canonicalises to itself.
    """
    t = type(value)
    if t is int and (value > _MAX_SAFE_INT or value < -_MAX_SAFE_INT):
        as_float = float(value)
        return as_float if rfc8785.dumps(as_float) == str(value).encode() else value
    if t is dict:
        return {k: _as_doubles(v) for k, v in value.items()}
    if t is list:
        return [_as_doubles(v) for v in value]
    return value


def canonical_bytes(value: Any, simple: bool = False) -> bytes:
    """The RFC 8785 canonical form of a JSON value (`simple` from `parse_json` allows the fast path).

    >>> canonical_bytes({"b": [1, 2.5, "x"], "a": None})
    b'{"a":null,"b":[1,2.5,"x"]}'
    """
    if simple:
        try:
            out = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
            if b"null" not in out:  # orjson writes NaN and infinities as null: check those the slow way
                return out
            return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False).encode("utf-8")
        except (orjson.JSONEncodeError, TypeError, UnicodeEncodeError, ValueError):
            pass  # lone surrogates and the like: let the reference decide
    try:
        return rfc8785.dumps(_as_doubles(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise InvalidEvent(f"not representable as RFC 8785 canonical JSON: {exc}") from None
