"""The common record's short way through strict decoding and RFC 8785: two orjson calls.

`read(raw, limits)` returns the parsed value and its canonical (JCS) bytes for a
record it can prove free of every hazard `strict_json.decode` refuses, and None
for anything else, so the caller takes the strict path. Refusals, and their
reasons, therefore stay the strict path's alone; this path only ever accepts
what the strict path accepts, with the same value and the same bytes.

The proof, on the record's bytes, its value and orjson's writing of it:

- bytes starting with `{`, shorter than any string, array or object limit could
  bite (a member is at least four bytes, an element two): no empty, BOM,
  UTF-16, size, string, array or fields refusal is possible;
- no backslash: no escapes, hence no lone surrogates, and every `"` delimits
  a string;
- UTF-8 by Python's own decoder, without 4-byte sequences: no character
  outside the BMP, where JCS key order and sorted keys part ways;
- orjson parses it: it refuses NaN, Infinity, overflowing numbers and bad
  syntax (and parses floats to the same doubles as `json`);
- the value nests no deeper than `max_depth`;
- the value holds half as many strings, member names included, as the record
  holds `"`: a duplicate member would have lost at least its name;
- every number in the value is an integer below 10^15 or a float from 0.001 to
  10^15 that is not integral: orjson writes those as JCS does (the shortest
  digits that read back, no exponent). For any other record the output itself
  is checked: outside strings, no exponent, no run of 16 digits (integers near
  2^53 and the floats orjson makes of integers beyond 2^64), no number below
  0.001 and no -0.0. Every number left is written the way JCS writes it, except
  integral floats (`5.0`), which JCS writes without the `.0`.

Looking at the value costs a tenth of splitting the output at every `"` to tell
strings from the rest, which only records with other numbers still take.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import orjson

from pipeline.core.strict_json import Limits

_NUMBER_HAZARD = re.compile(rb"\d[eE]|\d{16}|0\.000|-0\.0(?!\d)")
_INTEGRAL_TAIL = re.compile(rb"\.0(?!\d)")
_FOUR_BYTE_LEAD = re.compile(rb"[\xf0-\xff]")
_SORTED = orjson.OPT_SORT_KEYS
_PLAIN_INT = 10**15


@lru_cache(maxsize=16)
def _max_bytes(limits: Limits) -> int:
    """The longest record whose size alone rules out the size, string, array and fields refusals."""
    return min(limits.max_bytes, limits.max_string, 2 * limits.max_array, 4 * limits.max_fields)


def read(raw: Any, limits: Limits) -> tuple[Any, bytes] | None:
    """The value and JCS bytes of a record provably free of hazards, else None.

    >>> read(b'{"b":[1,2.0],"a":"x"}', Limits())
    ({'b': [1, 2.0], 'a': 'x'}, b'{"a":"x","b":[1,2]}')
    >>> read(b'{"a":1,"a":2}', Limits()) is None  # the strict path names the duplicate
    True
    """
    if type(raw) is not bytes or raw[:1] != b"{" or len(raw) > _max_bytes(limits) or b"\\" in raw:
        return None
    if not raw.isascii():
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if _FOUR_BYTE_LEAD.search(raw):
            return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    census = _census(value, limits.max_depth)
    if census is None or 2 * census[0] != raw.count(b'"'):
        return None
    out = orjson.dumps(value, option=_SORTED)
    if census[1]:
        return value, out
    parts = out.split(b'"')
    shape = b"".join(parts[::2])  # everything outside strings: structure, numbers, literals
    if _NUMBER_HAZARD.search(shape):
        return None
    if _INTEGRAL_TAIL.search(shape):
        parts[::2] = [_INTEGRAL_TAIL.sub(b"", p) for p in parts[::2]]
        out = b'"'.join(parts)
    return value, out


def _census(value: Any, max_depth: int) -> tuple[int, bool] | None:
    """The strings in a parsed value (member names included) and whether every number in it is one orjson
    writes as JCS does; None when it nests deeper than `max_depth` (the value itself is level 1)."""
    strings, plain = 0, True
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return None
        if type(node) is dict:
            strings += len(node)
            node = node.values()
        for v in node:
            t = type(v)
            if t is str:
                strings += 1
            elif t is dict or t is list:
                stack.append((v, depth + 1))
            elif t is float:
                plain = plain and 0.001 <= abs(v) < 1e15 and not v.is_integer()
            elif t is int:
                plain = plain and -_PLAIN_INT < v < _PLAIN_INT
    return strings, plain
