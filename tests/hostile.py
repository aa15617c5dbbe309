"""Hostile records: what a buggy or malicious producer might send, each with the refusal it must get.

`HOSTILE` maps a case name to (record bytes, a fragment the refusal reason must
contain). The unit tests check each reason, the HTTP tests send each as a body,
and the integration test sends them all through the real broker and worker.
`hostile_records(n)` cycles them with distinct event ids, for volume.
"""

from __future__ import annotations

import json
from typing import Any

from factories import as_bytes, make_event


def _event(**overrides: Any) -> dict[str, Any]:
    return make_event(**{"event_id": "hostile", **overrides})


def _raw(**overrides: Any) -> bytes:
    return as_bytes(_event(**overrides))


def _splice(extra: str, **overrides: Any) -> bytes:
    """A valid event with `extra` (raw JSON text) spliced in as the first members."""
    return b"{" + extra.encode() + b"," + _raw(**overrides)[1:]


HOSTILE: dict[str, tuple[bytes, str]] = {
    "deep-array-60000": (b"[" * 60_000 + b"]" * 60_000, "nested deeper than"),
    "deep-unclosed": (b"[" * 60_000, "nested deeper than"),
    "deep-in-attributes": (
        _splice('"attributes": ' + "[" * 200 + "]" * 200), "nested deeper than"),
    "duplicate-event-id": (_splice('"event_id": "other"'), 'duplicate key "event_id"'),
    "duplicate-nested": (_splice('"location": {"lat": 1, "lat": 2}'), 'duplicate key "lat"'),
    "utf8-bom": (b"\xef\xbb\xbf" + _raw(), "byte order mark"),
    "utf16-bom": (json.dumps(_event()).encode("utf-16"), "UTF-16"),
    "utf16-no-bom": (json.dumps(_event()).encode("utf-16-le"), "UTF-16"),
    "invalid-utf8": (_raw(carrier="C").replace(b'"C"', b'"\xc3\x28"'), "not UTF-8 at byte"),
    "lone-surrogate": (_raw(carrier="C").replace(b'"C"', b'"\\ud800"'), "lone UTF-16 surrogate"),
    "nan": (_splice('"attributes": {"t": NaN}'), "NaN is not a JSON number"),
    "infinity": (_splice('"attributes": {"t": -Infinity}'), "-Infinity is not a JSON number"),
    "overflow": (_splice('"attributes": {"t": 1e400}'), "overflows"),
    "big-int": (_splice('"attributes": {"n": 9007199254740993}'), "beyond 2^53"),
    "huge-int-digits": (_splice('"attributes": {"n": ' + "9" * 5000 + "}"), "digits"),
    "string-1mb": (_raw(attributes={"note": "x" * 1_000_000}), "longer than the limit"),
    "record-2mb": (_raw(attributes={f"k{i}": "y" * 60_000 for i in range(35)}), "more than the limit of"),
    "many-fields": (_raw(attributes={f"k{i}": i for i in range(1_001)}), "members, more than the limit"),
    "long-array": (_raw(attributes={"a": list(range(10_001))}), "elements, more than the limit"),
    "many-items": (_raw(items=[{"sku": "s", "quantity": 1}] * 1_001), "more than the limit of 1000"),
    "empty": (b"", "empty"),
    "whitespace": (b" \t\r\n ", "only whitespace"),
    "null-literal": (b"null", "got null"),
    "scalar": (b"42", "got a number"),
    "string-scalar": (b'"an event"', "got a string"),
    "array-of-events": (b"[" + _raw() + b"]", "got an array"),
    "truncated": (_raw()[:-5], "not JSON"),
    "offset-24h": (_raw(event_time="2026-03-01T08:00:00+24:00"), "offset +24:00 is out of range"),
    "feb-30": (_raw(event_time="2026-02-30T08:00:00Z"), "event_time"),
    "year-0": (_raw(event_time="0000-01-01T00:00:00Z"), "event_time"),
    "before-year-1-in-utc": (_raw(event_time="0001-01-01T00:00:00+01:00"), "event_time"),
    "epoch-number": (_raw(event_time=1764547200), "event_time"),
    "wrong-types": (_raw(event_id=7, mode=["road"], items={"sku": "s"}), "invalid ShipmentEvent"),
    "bool-as-version": (_raw(schema_version=True), "schema_version"),
    "id-too-long": (_raw(event_id="e" * 129), "event_id"),
    "empty-id": (_raw(event_id=""), "event_id"),
    "extra-field": (_raw(admin=True), "admin"),
    "missing-fields": (b'{"event_id": "x"}', "invalid ShipmentEvent"),
}


def hostile_records(n: int) -> list[tuple[str, bytes, str]]:
    """`n` hostile records (name, bytes, expected reason fragment), cycling through HOSTILE."""
    names = list(HOSTILE)
    return [(names[i % len(names)], *HOSTILE[names[i % len(names)]]) for i in range(n)]
