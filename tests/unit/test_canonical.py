"""RFC 8785 canonical JSON: golden vectors written from the RFC, and the fast path against the reference.

Every golden vector is checked twice: through the reference (`simple=False`)
and through `parse_json` → `canonical_bytes(value, simple)`, the path events take.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import rfc8785
from factories import as_bytes, make_event, make_events
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.core.canonical import canonical_bytes, parse_json
from pipeline.core.ledger import accept
from pipeline.errors import InvalidEvent


def both_paths(text: str) -> tuple[bytes, bytes]:
    """The canonical bytes of a JSON text through the reference and through the classified fast path."""
    parsed = parse_json(text)
    return canonical_bytes(parsed.value), canonical_bytes(parsed.value, parsed.simple)


# Each case: (JSON text as a producer might send it, the bytes RFC 8785 prescribes).
GOLDEN = {
    # RFC 8785 §3.2.2: the specification's own example, whitespace, escapes and numbers at once.
    "rfc8785-example": (
        '{\n  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],\n'
        '  "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",\n'
        '  "literals": [null, true, false]\n}',
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'.encode(),
    ),
    # RFC 8785 §3.2.3: keys sort by UTF-16 code units, so U+1F600 (D83D DE00) precedes U+FB33.
    "rfc8785-key-order": (
        '{"\\u20ac": "Euro Sign", "\\r": "Carriage Return", "\\ufb33": "Hebrew Letter Dalet With Dagesh",'
        ' "1": "One", "\\ud83d\\ude00": "Emoji: Grinning Face", "\\u0080": "Control",'
        ' "\\u00f6": "Latin Small Letter O With Diaeresis"}',
        '{"\\r":"Carriage Return","1":"One","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis",'
        '"\u20ac":"Euro Sign","\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}'
        .encode(),
    ),
    # Code-point order and UTF-16 order disagree here; a plain `sort_keys` gets this wrong.
    "astral-key-before-high-bmp": (
        '{"\uffff": 1, "\U0001f600": 2, "a": 3}',
        '{"a":3,"😀":2,"\uffff":1}'.encode(),
    ),
    # ECMAScript Number::toString: exponent at >= 1e21 and < 1e-6, integral floats lose ".0", -0 is 0.
    "numbers": (
        "[1e21, 1e20, 1e-7, 0.000001, -0.0, 0.0, 5.0, -5.0, 1.5e300, 5e-324, 9007199254740991, -1, 0.1, 100]",
        b"[1e+21,100000000000000000000,1e-7,0.000001,0,0,5,-5,1.5e+300,5e-324,9007199254740991,-1,0.1,100]",
    ),
    # Only the two-character escapes, other C0 controls as lowercase \u00xx; "/" and DEL stay raw.
    "string-escapes": (
        '"\\b\\f\\n\\r\\t\\u0000\\u001F\\u0001 \\" \\\\ \\/ \\u007f \\u2028"',
        b'"\\b\\f\\n\\r\\t\\u0000\\u001f\\u0001 \\" \\\\ / \x7f \xe2\x80\xa8"',
    ),
    # Non-ASCII is written as raw UTF-8, never escaped, however it was sent.
    "non-ascii": (
        '{"carrier": "\\u5317\\u65b9\\u7269\\u6d41", "note": "Zoll geprüft", "emoji": "\\ud83d\\udce6"}',
        '{"carrier":"北方物流","emoji":"📦","note":"Zoll geprüft"}'.encode(),
    ),
    # Nesting: every object is sorted, arrays keep their order, no whitespace anywhere.
    "nested": (
        '{ "b" : [ 3, { "z" : null, "y" : [ ] , "x" : { } } ], "a" : "" , "" : true }',
        b'{"":true,"a":"","b":[3,{"x":{},"y":[],"z":null}]}',
    ),
    # Keys compare as code units, not case-folded or by length.
    "key-order-ascii": (
        '{"b": 1, "B": 2, "aa": 3, "a": 4, "_": 5, "10": 6, "9": 7}',
        b'{"10":6,"9":7,"B":2,"_":5,"a":4,"aa":3,"b":1}',
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_vector(name: str) -> None:
    text, expected = GOLDEN[name]
    reference, fast = both_paths(text)
    assert reference == expected
    assert fast == expected


def test_golden_event() -> None:
    """One whole event, the bytes that become its leaf."""
    raw = (
        b'{"schema_version": 1, "mode": "air", "event_time": "2026-11-25T10:00:00+01:00",'
        b' "event_type": "departed", "shipment_id": "s\\u00e9", "event_id": "e-1", "origin": "A",'
        b' "destination": "B", "carrier": "C", "location": {"lon": 9.0, "lat": 53.5},'
        b' "items": [{"sku": "x", "quantity": 3}]}'
    )
    _, leaf = accept(raw)
    assert leaf == (
        '{"carrier":"C","destination":"B","event_id":"e-1","event_time":"2026-11-25T10:00:00+01:00",'
        '"event_type":"departed","items":[{"quantity":3,"sku":"x"}],"location":{"lat":53.5,"lon":9},'
        '"mode":"air","origin":"A","schema_version":1,"shipment_id":"sé"}'
    ).encode()


def test_factory_events_canonicalise_like_the_reference() -> None:
    for event in make_events(300, seed=11):
        parsed = parse_json(as_bytes(event).decode())
        assert canonical_bytes(parsed.value, parsed.simple) == rfc8785.dumps(event)


# ---- the fast path against the reference --------------------------------------------

SPECIAL_CHARS = st.sampled_from(["\x00", "\x1f", "\x7f", "\n", "\t", '"', "\\", "/", "\u2028",
                                 "\ufb33", "\uffff", "\U0001f600", "\U0010ffff", "é"])
TEXT = st.lists(st.one_of(st.characters(exclude_categories=("Cs",)), SPECIAL_CHARS)).map("".join)
SAFE_INT = 2**53 - 1

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-SAFE_INT, SAFE_INT)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(TEXT, children, max_size=6),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(value=JSON_VALUES, ascii_only=st.booleans())
@example(value={"\uffff": 1, "\U0001f600": 2}, ascii_only=False)
@example(value={"\uffff": 1, "\U0001f600": 2}, ascii_only=True)
@example(value=[1e21, 1e-7, -0.0, 5.0, 1e16, 123456789012345680000.0], ascii_only=True)
@example(value=[SAFE_INT, -SAFE_INT, 0.1, 2.5], ascii_only=True)
def test_fast_path_equals_reference(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    parsed = parse_json(text)
    assert canonical_bytes(parsed.value, parsed.simple) == rfc8785.dumps(value)


def _prints_as_unsafe_integer(x: Any) -> bool:
    """A float JCS writes as an integer literal beyond 2^53 (see the xfail below)."""
    if isinstance(x, float):
        return x.is_integer() and 2**53 <= abs(x) < 1e21
    if isinstance(x, list):
        return any(_prints_as_unsafe_integer(v) for v in x)
    if isinstance(x, dict):
        return any(_prints_as_unsafe_integer(v) for v in x.values())
    return False


@settings(max_examples=200, deadline=None)
@given(value=JSON_VALUES.filter(lambda v: not _prints_as_unsafe_integer(v)))
def test_canonical_form_is_a_fixed_point(value: Any) -> None:
    once = rfc8785.dumps(value)
    parsed = parse_json(once.decode("utf-8"))
    assert canonical_bytes(parsed.value, parsed.simple) == once


@pytest.mark.parametrize("number", ["1e16", "9007199254740992.0", "-4.5e17"])
def test_accepted_leaf_is_accepted_again(number: str) -> None:
    raw = as_bytes(make_event()).replace(b'"mode":"road"', b'"mode":"road","attributes":{"n":' + number.encode() + b"}")
    _, leaf = accept(raw)
    assert accept(leaf)[1] == leaf


def test_simple_is_false_for_every_number_json_dumps_writes_differently() -> None:
    for text in ("[5.0]", "[-0.0]", "[1e21]", "[1e-7]", "[1e16]", "[9007199254740992]", '{"\\ud83d\\ude00": 1}'):
        assert parse_json(text).simple is False, text
    assert parse_json('{"a": [1, 2.5, "x", null, true]}').simple is True


# ---- refused input -------------------------------------------------------------------


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", '{"a": NaN}', '[1, Infinity]',
                                  '{"t": -Infinity}'])
def test_nan_and_infinity_literals_are_rejected(text: str) -> None:
    with pytest.raises(InvalidEvent):
        parse_json(text)


@pytest.mark.parametrize("text", ["1e400", '{"a": -1e999}'])
def test_numbers_overflowing_to_infinity_are_rejected(text: str) -> None:
    parsed = parse_json(text)
    with pytest.raises(InvalidEvent):
        canonical_bytes(parsed.value, parsed.simple)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, [1, math.nan]])
def test_non_finite_values_are_rejected(value: Any) -> None:
    with pytest.raises(InvalidEvent):
        canonical_bytes(value)
    with pytest.raises(InvalidEvent):
        canonical_bytes(value, simple=True)


@pytest.mark.parametrize("text", ["9007199254740993", "-9007199254740993", "123456789012345678901234567890",
                                  "1152921504606846976"])
def test_integers_no_double_holds_are_rejected(text: str) -> None:
    parsed = parse_json(text)
    with pytest.raises(InvalidEvent):
        canonical_bytes(parsed.value, parsed.simple)


@pytest.mark.parametrize("text", ["9007199254740992", "-9007199254740992", "1152921504606847000"])
def test_integers_a_double_holds_exactly_canonicalise_to_themselves(text: str) -> None:
    # JCS reads numbers as IEEE doubles: these are exact, so they survive a round trip.
    parsed = parse_json(text)
    assert canonical_bytes(parsed.value, parsed.simple) == text.encode()


@pytest.mark.parametrize("text", ['"\\ud800"', '"\\udc00"', '{"\\udfff": 1}'])
def test_lone_surrogates_are_rejected(text: str) -> None:
    parsed = parse_json(text)
    with pytest.raises(InvalidEvent):
        canonical_bytes(parsed.value, parsed.simple)


def test_event_with_non_finite_attribute_is_not_accepted() -> None:
    raw = as_bytes(make_event()).replace(b'"mode":"road"', b'"mode":"road","attributes":{"t":1e999}')
    with pytest.raises(InvalidEvent):
        accept(raw)
    with pytest.raises(InvalidEvent):
        accept(as_bytes(make_event()).replace(b'"mode":"road"', b'"mode":"road","attributes":{"t":NaN}'))
