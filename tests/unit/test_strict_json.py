"""The strict record decoder: each refusal with its own reason, the limits, and what it lets through."""

from __future__ import annotations

import json

import pytest
import rfc8785
from factories import as_bytes, make_event, make_events
from hostile import HOSTILE

from pipeline.core.canonical import canonical_bytes
from pipeline.core.ledger import accept
from pipeline.core.strict_json import LIMITS, JSONRefused, Limits, decode, nesting_depth
from pipeline.errors import InvalidEvent
from pipeline.settings import Settings


@pytest.mark.parametrize("name", list(HOSTILE))
def test_every_hostile_record_is_refused_with_its_own_reason(name: str) -> None:
    raw, fragment = HOSTILE[name]
    with pytest.raises(InvalidEvent) as info:
        accept(raw)
    assert fragment in info.value.reason, info.value.reason
    assert len(info.value.reason) < 400


@pytest.mark.parametrize(("text", "code"), [
    (b"[" * 65 + b"]" * 65, "depth"),
    (b'{"a": 1, "b": {"c": 2, "c": 3}}', "duplicate_key"),
    (b"\xef\xbb\xbf{}", "bom"),
    (b"\xff\xfe{\x00}\x00", "utf16"),
    (b'{"a": "\xed\xa0\x80"}', "utf8"),  # a surrogate written as UTF-8 bytes is not UTF-8
    (b'{"a": "\\udc00x"}', "surrogate"),
    (b'{"\\ud800": 1}', "surrogate"),
    (b'[NaN]', "constant"),
    (b'[1e999]', "number"),
    (b'[-1e400]', "number"),
    (b'[1152921504606846976]', "number"),
    (b"", "empty"),
    (b"\n\n", "empty"),
    (None, "empty"),
    (b"{", "syntax"),
    (b'{"a": 1} {"b": 2}', "syntax"),
])
def test_refusal_codes(text: bytes | None, code: str) -> None:
    with pytest.raises(JSONRefused) as info:
        decode(text)
    assert info.value.code == code
    assert info.value.errors[0]["type"] == f"json.{code}"


def test_depth_is_counted_outside_strings_only() -> None:
    assert nesting_depth('{"a": "[[[[{{{{", "b": [[]]}') == 3
    assert nesting_depth('["\\"[[[", []]') == 2
    inside = '{"a": "' + "[" * 100 + '"}'
    assert decode(inside).value == {"a": "[" * 100}


def test_limits_are_exact_at_their_bounds() -> None:
    limits = Limits(max_depth=8, max_string=300, max_fields=20, max_array=20, max_bytes=10_000)
    assert decode(b"[" * 8 + b"]" * 8, limits).value
    with pytest.raises(JSONRefused, match="deeper than 8"):
        decode(b"[" * 9 + b"]" * 9, limits)
    assert decode(json.dumps({"s": "x" * 300}), limits)
    with pytest.raises(JSONRefused, match="longer than the limit of 300"):
        decode(json.dumps({"s": "x" * 301}), limits)
    with pytest.raises(JSONRefused, match="longer than the limit"):
        decode(json.dumps({"k" * 301: 1}), limits)  # member names count as strings
    assert decode(json.dumps({str(i): i for i in range(20)}), limits)
    with pytest.raises(JSONRefused, match="21 members"):
        decode(json.dumps({str(i): i for i in range(21)}), limits)
    assert decode(json.dumps(list(range(19)) + ["x" * 200]), limits)
    with pytest.raises(JSONRefused, match="21 elements"):
        decode(json.dumps(list(range(20)) + ["x" * 200]), limits)
    with pytest.raises(JSONRefused, match="10001 bytes"):
        decode(b" " * 9_999 + b"[]", limits)


def test_settings_carry_the_limits_to_the_decoder() -> None:
    settings = Settings(limits={"max_depth": 10, "max_items": 2})
    assert settings.limits.record() == Limits(max_depth=10, max_items=2)
    assert Settings().limits.record() == LIMITS
    raw = as_bytes(make_event(items=[{"sku": "a", "quantity": 1}] * 3))
    with pytest.raises(InvalidEvent, match="3 entries, more than the limit of 2"):
        accept(raw, settings.limits.record())
    assert accept(raw)[0].items is not None


def test_what_stays_accepted() -> None:
    # Valid pairs of surrogate escapes, exact big doubles, escapes, whitespace around the object.
    for extra in ('"attributes": {"emoji": "\\ud83d\\ude00", "n": 1e16, "q": "\\"[{"}',
                  '"attributes": {"\\u00e9": [[[[]]]], "neg": -0.0}'):
        raw = b"  \r\n{" + extra.encode() + b"," + as_bytes(make_event())[1:] + b"\n"
        event, leaf = accept(raw)
        assert event.event_id == "evt-0001"
        assert accept(leaf)[1] == leaf


def test_decode_classifies_like_the_reference_on_factory_events() -> None:
    for e in make_events(200, seed=5):
        parsed = decode(as_bytes(e))
        assert canonical_bytes(parsed.value, parsed.simple) == rfc8785.dumps(e)
    for text, simple in (("[5.0]", False), ('{"\\ud83d\\ude00": 1}', False), ('{"😀": 1}', False),
                         ('{"é": [1, 2.5]}', True), ("[9007199254740992]", False)):
        assert decode(text).simple is simple, text


def test_str_input_is_bounded_too() -> None:
    with pytest.raises(JSONRefused, match="more than the limit"):
        decode("[" + " " * 2_000 + "]", Limits(max_bytes=1_000))
    with pytest.raises(JSONRefused, match="byte order mark"):
        decode("\ufeff{}")
