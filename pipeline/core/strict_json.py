"""The strict, bounded JSON decoder every untrusted record goes through.

`decode(raw, limits)` turns record bytes into a `Parsed` value (ready for
`canonical_bytes`) or raises `JSONRefused`, an `InvalidEvent` with a reason a
person can act on and a short `code` a program can branch on. It never raises
anything else: no `RecursionError`, no `UnicodeDecodeError`, no `ValueError`.

What it refuses, beyond RFC 8259 syntax (code in brackets):

- [empty] no bytes, a null record, or only whitespace;
- [too_large] more than `max_bytes` bytes;
- [bom] a UTF-8 byte order mark; [utf16] UTF-16/32 (a BOM or NUL bytes up front);
  [utf8] bytes that are not UTF-8, with the byte offset;
- [depth] arrays/objects nested deeper than `max_depth` (checked on the bytes
  before parsing, so a 60,000-level record costs one linear scan, not a stack);
- [duplicate_key] the same member name twice in one object: I-JSON (RFC 7493
  §2.3) forbids it, and parsers disagree on which value wins;
- [fields] more than `max_fields` members in one object; [array] more than
  `max_array` elements in one array; [string] a string (or name) longer than
  `max_string` characters;
- [surrogate] a lone UTF-16 surrogate escape such as `"\\ud800"` (RFC 7493 §2.1);
- [constant] `NaN`, `Infinity`, `-Infinity`; [number] a number that overflows a
  double (`1e400`) or an integer beyond 2^53 that no double holds exactly, which
  RFC 8785 would rewrite as another number.

Speed: the common record (a few hundred bytes, a handful of objects) costs one
`json.loads` with a C-level pairs hook plus counts on the text; the scans for
depth, long strings, long arrays and surrogates only run when a cheap bound on
the text says they could matter.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from typing import Any

import rfc8785

from pipeline.core.canonical import Parsed
from pipeline.errors import InvalidEvent

_MAX_SAFE_INT = 2**53 - 1
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}.__getitem__
_WHITESPACE = " \t\r\n"
_MARKS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on one record; `pipeline.settings.LimitSettings` sets them from the environment."""

    max_bytes: int = 1_048_576  # the whole record, UTF-8 bytes
    max_depth: int = 64  # nesting of arrays and objects; the event object is level 1
    max_string: int = 65_536  # characters in one string or member name
    max_fields: int = 1_000  # members of one object
    max_array: int = 10_000  # elements of one array
    max_items: int = 1_000  # entries of an event's `items` (checked by the ledger's accept)


LIMITS = Limits()


class JSONRefused(InvalidEvent):
    """Record bytes the strict decoder refuses; `code` names the rule, `reason` says what to fix."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason, [{"field": "(record)", "message": reason, "type": f"json.{code}"}])
        self.code = code


class _Stop(Exception):
    """Raised from inside the parser's hooks; carries a JSONRefused out of the C scanner."""

    def __init__(self, refusal: JSONRefused) -> None:
        self.refusal = refusal


def _constant(name: str) -> Any:
    raise _Stop(JSONRefused("constant", f"{name} is not a JSON number (RFC 8259): send a finite number or null"))


@lru_cache(maxsize=16)
def _decoder(max_fields: int) -> json.JSONDecoder:
    def pairs(members: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(members)
        if len(obj) != len(members):
            seen: set[str] = set()
            for name, _ in members:
                if name in seen:
                    raise _Stop(JSONRefused("duplicate_key", f"duplicate key {_quote(name)}: each member name may "
                                            "appear once per object (I-JSON, RFC 7493)"))
                seen.add(name)
        if len(members) > max_fields:
            raise _Stop(JSONRefused("fields", f"an object has {len(members)} members, more than the limit of "
                                    f"{max_fields}"))
        return obj

    return json.JSONDecoder(object_pairs_hook=pairs, parse_constant=_constant)


def _quote(text: str, width: int = 60) -> str:
    shown = json.dumps(text[:width])
    return shown if len(text) <= width else shown[:-1] + '…"'


def decode(raw: bytes | bytearray | memoryview | str | None, limits: Limits = LIMITS) -> Parsed:
    """Decode one record strictly, or raise `JSONRefused` saying why.

    >>> decode(b'{"a": [1, 2.5]}').value
    {'a': [1, 2.5]}
    >>> try:
    ...     decode(b'{"a": 1, "a": 2}')
    ... except JSONRefused as exc:
    ...     print(exc.code, "|", exc.reason)
    duplicate_key | duplicate key "a": each member name may appear once per object (I-JSON, RFC 7493)
    """
    text = _text(raw, limits)
    if not text.strip(_WHITESPACE):
        raise JSONRefused("empty", "the record holds only whitespace: expected one JSON object")
    if text.count("[") + text.count("{") > limits.max_depth:
        depth = nesting_depth(text)
        if depth > limits.max_depth:
            raise JSONRefused("depth", f"JSON nested deeper than {limits.max_depth} levels ({depth} found)")
    try:
        value = _decoder(limits.max_fields).decode(text)
    except _Stop as stop:
        raise stop.refusal from None
    except json.JSONDecodeError as exc:
        raise JSONRefused("syntax", f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
                          f"(char {exc.pos})") from None
    except ValueError as exc:  # an integer beyond Python's digit limit
        if "digits" in str(exc):
            raise JSONRefused("number", "a number has more than 4300 digits: no IEEE 754 double holds it") from None
        raise JSONRefused("syntax", f"not JSON: {exc}") from None
    except RecursionError:  # cannot happen below the depth limit; a verdict all the same
        raise JSONRefused("depth", "JSON nested too deeply to parse") from None
    escapes = "\\u" in text
    surrogates = escapes and _SURROGATE_ESCAPE.search(text) is not None
    if surrogates or len(text) > limits.max_string or len(text) > 2 * limits.max_array:
        _check_strings_and_arrays(value, limits, surrogates)
    # JCS sorts member names by UTF-16 code units; `json.dumps` matches it only within the BMP.
    astral = surrogates or (not text.isascii() and max(text) > "\uffff")
    return Parsed(value, _check_numbers(value) and not astral)


def kind(value: Any) -> str:
    """The JSON name of a parsed value's type, for reasons: "an object", "an array", "null", ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    names = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def _text(raw: bytes | bytearray | memoryview | str | None, limits: Limits) -> str:
    """The record as text, after the size and encoding checks."""
    if raw is None:
        raise JSONRefused("empty", "the record has no value (a null or tombstone record): expected one JSON object")
    if isinstance(raw, str):
        if len(raw) > limits.max_bytes or (len(raw) * 4 > limits.max_bytes and
                                           len(raw.encode("utf-8", "surrogatepass")) > limits.max_bytes):
            raise JSONRefused("too_large", f"the record is more than the limit of {limits.max_bytes} bytes")
        if raw[:1] == "\ufeff":
            raise JSONRefused("bom", "the record starts with a byte order mark (U+FEFF): send JSON without one")
        return raw
    data = raw if type(raw) is bytes else bytes(raw)
    if not data:
        raise JSONRefused("empty", "the record is empty (0 bytes): expected one JSON object")
    if len(data) > limits.max_bytes:
        raise JSONRefused("too_large", f"the record is {len(data)} bytes, more than the limit of {limits.max_bytes}")
    if data.startswith(_MARKS):
        if data.startswith(b"\xef\xbb\xbf"):
            raise JSONRefused("bom", "the record starts with a UTF-8 byte order mark (EF BB BF): send JSON without "
                              "one (RFC 8259 §8.1)")
        raise JSONRefused("utf16", "the record starts with a UTF-16 byte order mark: records must be UTF-8")
    if data.find(b"\x00", 0, 4) >= 0:
        raise JSONRefused("utf16", "the record has NUL bytes among its first four: it looks like UTF-16 or "
                          "UTF-32; records must be UTF-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONRefused("utf8", f"not UTF-8 at byte {exc.start}: {exc.reason} "
                          f"(byte {data[exc.start:exc.start + 1].hex().upper()})") from None


def nesting_depth(text: str) -> int:
    """How deep arrays and objects nest in a JSON text, without parsing it (an upper bound on bad JSON).

    Brackets inside strings do not count; an unterminated string counts its brackets, which can
    only overstate the depth of text that is not JSON anyway.

    >>> nesting_depth('{"a": [[1], "[[["], "b": {}}')
    3
    """
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_DEPTH_STEP, brackets), initial=0))


def _check_numbers(value: Any) -> bool:
    """Refuse numbers RFC 8785 cannot write back unchanged; True when `json.dumps` writes the JCS form."""
    simple = True
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
            if not math.isfinite(v):
                raise JSONRefused("number", "a number overflows an IEEE 754 double (beyond ±1.8e308): JSON "
                                  "numbers must be finite doubles (RFC 7493 §2.2)")
            if simple:
                r = repr(v)
                simple = "e" not in r and not r.endswith(".0")
        elif t is int and (v > _MAX_SAFE_INT or v < -_MAX_SAFE_INT):
            _check_big_int(v)
            simple = False
    return simple


def _check_big_int(v: int) -> None:
    """An integer beyond 2^53 passes only when its double is exact and JCS writes it as the same digits."""
    digits = str(v)
    try:
        exact = rfc8785.dumps(float(v)) == digits.encode()
    except (OverflowError, rfc8785.CanonicalizationError):
        exact = False
    if not exact:
        shown = digits if len(digits) <= 40 else digits[:20] + "…" + digits[-8:]
        raise JSONRefused("number", f"the integer {shown} is beyond 2^53 and no IEEE 754 double holds it exactly: "
                          "RFC 8785 would change it; send it as a string")


def _check_strings_and_arrays(value: Any, limits: Limits, surrogates: bool) -> None:
    """String lengths, array lengths and lone surrogates, everywhere in the value (member names too)."""
    max_string, max_array = limits.max_string, limits.max_array
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is str:
            if len(v) > max_string:
                raise JSONRefused("string", f"a string of {len(v)} characters is longer than the limit of "
                                  f"{max_string}: {_quote(v, 24)}")
            if surrogates and not _encodable(v):
                raise JSONRefused("surrogate", f"a lone UTF-16 surrogate escape in {_quote(v, 24)}: "
                                  "strings must be valid Unicode (RFC 7493 §2.1)")
        elif t is dict:
            stack.extend(v.keys())
            stack.extend(v.values())
        elif t is list:
            if len(v) > max_array:
                raise JSONRefused("array", f"an array has {len(v)} elements, more than the limit of {max_array}")
            stack.extend(v)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
