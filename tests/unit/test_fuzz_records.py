"""Fuzzing the worker's record path: whatever the bytes, a verdict; and accepted leaves are fixed points.

Every case goes through `accept(raw, limits)`, the very call `LedgerSequencer`
makes on each record (the last test drives a sequencer with the same cases to
show it). Over 10,000 cases in all: ShipmentEvent fields drawn from hostile
strategies (unicode edge cases in ids, impossible times, wrong types, huge and
non-finite numbers), hostile serialisations of them (duplicate keys, BOMs,
UTF-16, deep nesting, 1 MB strings, truncation, wrappers), and raw bytes.

Each case must end in one of two verdicts:
- accepted: the leaf bytes are UTF-8 JSON and `accept(leaf)` gives the same leaf
  (parse → canonicalise → parse → canonicalise is a fixed point);
- refused: an `InvalidEvent` with a non-empty, bounded reason, from which the
  dead-letter headers can be built.
Anything else escaping (a RecursionError, a UnicodeError, an OverflowError) fails.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from factories import as_bytes, make_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core import wire
from pipeline.core.ledger import accept
from pipeline.core.strict_json import LIMITS
from pipeline.errors import InvalidEvent
from pipeline.worker.sequencer import LedgerSequencer

FUZZ = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.data_too_large])
# Cases per test; their sum is the figure the suite promises (at least 10,000).
CASES = {"fields": 500, "serialisations": 1_200, "bytes": 1_000, "deep": 60, "sequencer": 60}
RECORDS_PER_CASE = {"fields": 18, "serialisations": 1, "bytes": 1, "deep": 2, "sequencer": 4}


def verdict(raw: bytes) -> tuple[str, bytes | str]:
    """('accepted', leaf) or ('refused', reason); anything else raised fails the test."""
    try:
        _, leaf = accept(raw, LIMITS)
    except InvalidEvent as exc:
        assert isinstance(exc.reason, str) and exc.reason.strip(), f"empty reason for {raw[:80]!r}"
        assert len(exc.reason) <= 1_000, exc.reason[:200]
        wire.dead_letter_headers(exc, "shipment-events", 0, 0)
        return "refused", exc.reason
    json.loads(leaf.decode("utf-8"))
    _, again = accept(leaf, LIMITS)
    assert again == leaf, (leaf, again)
    return "accepted", leaf


# ---- field strategies ------------------------------------------------------------------------

EDGE_CHARS = st.sampled_from([
    "\x00", "\x1f", "\x7f", "\u0085", "\u00a0", "\u200b", "\u200d", "\u202e", "\u2028", "\ufeff",
    "\ufffd", "\uffff", "\U0001f600", "\U0010ffff", "e\u0301", "\u0130", "ß", "İ", "\\", '"', "/", " ",
])
TEXT = st.lists(st.one_of(st.characters(exclude_categories=("Cs",)), EDGE_CHARS), max_size=12).map("".join)
IDS = st.one_of(TEXT, st.sampled_from(["", " ", "x" * 128, "x" * 129, "é" * 128, "\U0001f600" * 65,
                                       "\U0001f600" * 128, "a\x00b", "\ufeffid"]))
DIGITS2 = st.integers(0, 99).map(lambda n: f"{n:02d}")
OFFSETS = st.one_of(st.sampled_from(["Z", "z", "+00:00", "-00:00", "+24:00", "-24:00", "+23:59", "+14:00",
                                     "+05:30", "+99:99", "+0100", "", "UTC", "+01"]),
                    st.tuples(st.sampled_from("+-"), DIGITS2, DIGITS2).map(lambda t: f"{t[0]}{t[1]}:{t[2]}"))
DATES = st.one_of(st.sampled_from(["2026-02-30", "2026-02-29", "2024-02-29", "2026-13-01", "2026-00-10",
                                   "0000-01-01", "0001-01-01", "9999-12-31", "2026-04-31", "1969-12-31"]),
                  st.dates().map(str))
TIMES = st.one_of(st.sampled_from(["24:00:00", "23:59:60", "23:59:59.999999999", "00:00:00.0000000001",
                                   "12:60:00", "08:00:00", "25:00:00"]), st.times().map(lambda t: t.isoformat()))
TIMESTAMPS = st.one_of(
    st.tuples(DATES, st.sampled_from("Tt "), TIMES, OFFSETS).map("".join),
    st.sampled_from([1764547200, 1.5e9, None, "", "now", True, [], {}]),
)
NUMBERS = st.one_of(
    st.integers(), st.floats(), st.sampled_from([2**53, 2**53 + 1, -(2**53) - 1, 10**16, 2**64, 10**308, -0.0,
                                                 5e-324, 1.7976931348623157e308, 1e16, 0.1]),
)
JSON_LEAVES = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON_VALUES = st.recursive(JSON_LEAVES,
                           lambda kids: st.lists(kids, max_size=4) | st.dictionaries(TEXT, kids, max_size=4),
                           max_leaves=12)
WRONG = st.one_of(JSON_VALUES, st.sampled_from([0, -1, 1.0, True, None, [], {}, "1", ["road"], {"a": 1}]))

EVENT_TYPES = st.one_of(st.sampled_from(["created", "departed", "delivered", "cancelled"]), WRONG, TEXT)
MODES = st.one_of(st.sampled_from(["road", "rail", "sea", "air", "parcel"]), WRONG)
LOCATIONS = st.one_of(
    st.none(),
    st.fixed_dictionaries({}, optional={"site_id": IDS, "lat": NUMBERS | WRONG, "lon": NUMBERS | WRONG}),
    WRONG,
)
ITEMS = st.one_of(
    st.none(),
    st.lists(st.fixed_dictionaries({"sku": IDS, "quantity": st.one_of(st.integers(-2, 10**6), WRONG)}), max_size=4),
    st.sampled_from([1_000, 1_001]).map(lambda n: [{"sku": "s", "quantity": 1}] * n),
    WRONG,
)


@st.composite
def event_objects(draw: st.DrawFn) -> dict[str, Any]:
    """A ShipmentEvent-shaped object, each field valid or hostile; some fields dropped, some added."""
    event: dict[str, Any] = {
        "event_id": draw(st.one_of(IDS, WRONG)) if draw(st.booleans()) else draw(IDS),
        "shipment_id": draw(IDS),
        "event_type": draw(EVENT_TYPES),
        "event_time": draw(TIMESTAMPS),
        "origin": draw(IDS),
        "destination": draw(IDS),
        "carrier": draw(IDS),
        "mode": draw(MODES),
    }
    optional = {"location": LOCATIONS, "planned_delivery": TIMESTAMPS, "items": ITEMS,
                "attributes": st.one_of(st.dictionaries(TEXT, JSON_VALUES, max_size=5), WRONG),
                "schema_version": st.one_of(st.just(1), WRONG)}
    for name in draw(st.lists(st.sampled_from(sorted(optional)), unique=True)):
        event[name] = draw(optional[name])
    for name in draw(st.lists(st.sampled_from(sorted(event)), max_size=2, unique=True)):
        del event[name]
    if draw(st.integers(0, 9)) == 0:
        event[draw(TEXT)] = draw(JSON_VALUES)
    return event


def dumps(event: dict[str, Any], ascii_only: bool) -> bytes:
    """JSON as a careless producer writes it: Python's json, which writes NaN and Infinity."""
    return json.dumps(event, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


# Mutations that apply to any object's bytes, so each drawn event yields many records.
ANY_EVENT = {
    "duplicate-first": lambda b, key: b"{" + key + b':"dup",' + b[1:],
    "duplicate-last": lambda b, key: b[:-1] + b"," + key + b':"dup"}',
    "utf8-bom": lambda b, key: b"\xef\xbb\xbf" + b,
    "utf16": lambda b, key: b.decode("utf-8", "surrogatepass").encode("utf-16", "surrogatepass"),
    "invalid-byte": lambda b, key: b[: len(b) // 2] + b"\xff" + b[len(b) // 2:],
    "truncated": lambda b, key: b[: len(b) * 2 // 3],
    "in-array": lambda b, key: b"[" + b + b"]",
    "padded": lambda b, key: b" \r\n\t" + b + b"\n",
    "deep-attributes": lambda b, key: b'{"attributes":' + b"[" * 70 + b"]" * 70 + b"," + b[1:],
    "nan-attributes": lambda b, key: b'{"attributes":{"t":NaN},' + b[1:],
    "utf16-le": lambda b, key: b.decode("utf-8", "surrogatepass").encode("utf-16-le", "surrogatepass"),
    "crlf-between-members": lambda b, key: b.replace(b'", "', b'",\r\n "'),
    "nul-in-middle": lambda b, key: b[: len(b) // 3] + b"\x00" + b[len(b) // 3:],
    "bom-in-middle": lambda b, key: b[:1] + b"\xef\xbb\xbf" + b[1:],
    "single-quoted": lambda b, key: b.replace(b'"', b"'"),
    "scalar-instead": lambda b, key: key,
}


@settings(FUZZ, max_examples=CASES["fields"])
@given(event_objects())
def test_event_fields(event: dict[str, Any]) -> None:
    for ascii_only in (False, True):
        raw = dumps(event, ascii_only)
        outcome, _ = verdict(raw)
        if outcome == "accepted":
            assert isinstance(event.get("event_id"), str)
    key = json.dumps(next(iter(event))).encode("utf-8", "surrogatepass")
    for name, mutate in ANY_EVENT.items():
        outcome, reason = verdict(mutate(raw, key))
        if name not in ("truncated", "padded", "invalid-byte", "crlf-between-members", "nul-in-middle"):
            assert outcome == "refused", (name, raw[:200])


# ---- hostile serialisations ------------------------------------------------------------------

def _valid() -> dict[str, Any]:
    return make_event(items=[{"sku": "s", "quantity": 1}], attributes={"k": [1, 2.5, "x"]})


MUTATIONS = {
    "as-is": lambda b, n: b,
    "duplicate-key": lambda b, n: b'{"event_id":"dup",' + b[1:],
    "duplicate-nested": lambda b, n: b.replace(b'"k":', b'"k":0,"k":', 1),
    "utf8-bom": lambda b, n: b"\xef\xbb\xbf" + b,
    "utf16": lambda b, n: b.decode().encode("utf-16"),
    "utf16-be": lambda b, n: b.decode().encode("utf-16-be"),
    "utf32": lambda b, n: b.decode().encode("utf-32"),
    "latin1": lambda b, n: b.replace(b'"s"', '"é"'.encode("latin-1"), 1),
    "invalid-utf8": lambda b, n: b[: n % len(b)] + bytes([0x80 + n % 0x40]) + b[n % len(b):],
    "overlong-utf8": lambda b, n: b.replace(b'"s"', b'"\xc0\xaf"', 1),
    "truncated": lambda b, n: b[: n % len(b)],
    "trailing-garbage": lambda b, n: b + b" x",
    "two-objects": lambda b, n: b + b,
    "whitespace": lambda b, n: b" \t\r\n" * (n % 4) + b + b"\n" * (n % 3),
    "nbsp-padding": lambda b, n: "\u00a0".encode() + b,
    "in-array": lambda b, n: b"[" + b + b"]",
    "deep": lambda b, n: b.replace(b'"k":', b'"k":' + b"[" * (n % 130) + b"0" + b"]" * (n % 130) + b",\"j\":", 1),
    "deep-unclosed": lambda b, n: b.replace(b'"k":', b'"k":' + b"{\"a\":" * (n % 130), 1),
    "brackets-in-string": lambda b, n: b.replace(b'"x"', b'"' + b"[{" * (n % 500) + b'"', 1),
    "nan": lambda b, n: b.replace(b"2.5", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e309"][n % 5], 1),
    "big-int": lambda b, n: b.replace(b"2.5", str(2**53 + n).encode(), 1),
    "many-digits": lambda b, n: b.replace(b"2.5", b"7" * (4290 + n % 20), 1),
    "lone-surrogate": lambda b, n: b.replace(b'"x"', [b'"\\ud800"', b'"\\udfff"', b'"\\ud83d\\u0041"',
                                                      b'"\\ud83d\\ude00"'][n % 4], 1),
    "string-1mb": lambda b, n: b.replace(b'"x"', b'"' + b"z" * (1_000_000 + n % 100_000) + b'"', 1),
    "string-at-limit": lambda b, n: b.replace(b'"x"', b'"' + b"z" * (65_535 + n % 3) + b'"', 1),
    "record-at-limit": lambda b, n: b.replace(b'"x"', b'"' + b"z" * 60_000 + b'"', 1)[:-1]
    + b',"pad":[' + b",".join([b'"' + b"p" * 60_000 + b'"'] * (16 + n % 2)) + b"]}",
    "control-chars": lambda b, n: b.replace(b'"s"', b'"\x00\x01\x1f"', 1),
    "escaped-controls": lambda b, n: b.replace(b'"s"', b'"\\u0000\\u001f\\u007f"', 1),
    "single-quotes": lambda b, n: b.replace(b'"', b"'"),
    "comments": lambda b, n: b"/* hi */" + b,
    "scalar": lambda b, n: [b"null", b"true", b"0", b'"x"', b"[]", b"{}", b"-", b"1e5"][n % 8],
}


@given(st.sampled_from(sorted(MUTATIONS)), st.integers(0, 10_000))
@settings(FUZZ, max_examples=CASES["serialisations"])
def test_hostile_serialisations(name: str, n: int) -> None:
    outcome, what = verdict(MUTATIONS[name](as_bytes(_valid()), n))
    if name in ("duplicate-key", "duplicate-nested", "utf8-bom", "utf16", "utf16-be", "utf32", "nan",
                "string-1mb", "lone-surrogate", "in-array", "scalar") and not (
                    name == "lone-surrogate" and n % 4 == 3):
        assert outcome == "refused", (name, n)
    if name == "as-is" or (name == "lone-surrogate" and n % 4 == 3):
        assert outcome == "accepted", what


@given(st.binary(max_size=256) | st.binary(max_size=64).map(lambda b: b"{" + b + b"}"))
@settings(FUZZ, max_examples=CASES["bytes"])
def test_raw_bytes(raw: bytes) -> None:
    verdict(raw)


@given(st.sampled_from([b"{", b"[", b'{"a":', b'[{"a":[']), st.integers(1, 200_000))
@settings(FUZZ, max_examples=CASES["deep"])
def test_deep_prefixes(opener: bytes, n: int) -> None:
    raw = opener * n
    assert verdict(raw)[0] == "refused"
    assert verdict(raw + b"1" + b"]" * n)[0] == "refused"


@given(st.lists(st.one_of(event_objects().map(lambda e: dumps(e, False)), st.binary(max_size=64),
                          st.sampled_from(sorted(MUTATIONS)).map(lambda m: MUTATIONS[m](as_bytes(_valid()), 7))),
                min_size=4, max_size=8))
@settings(FUZZ, max_examples=CASES["sequencer"])
def test_the_sequencer_gives_every_record_one_verdict(values: list[bytes]) -> None:
    """The same cases through LedgerSequencer: each offset is sealed or dead-lettered, once."""
    sent: list[tuple[str, bytes, list[tuple[str, bytes]] | None]] = []

    class Publisher:
        async def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None,
                       headers: list[tuple[str, bytes]] | None = None) -> Any:
            sent.append((topic, value, headers))
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

    class Committer:
        def mark(self, topic: str, partition: int, next_offset: int) -> None:
            pass

        async def flush(self) -> None:
            pass

    class Record:
        def __init__(self, offset: int, value: bytes) -> None:
            self.partition, self.offset, self.key, self.value, self.headers = 0, offset, None, value, None

        def ack(self) -> None:
            pass

    async def load(partition: int) -> None:
        return None

    async def scenario() -> None:
        seq = LedgerSequencer(source_topic="in", entries_topic="entries", blocks_topic="blocks",
                              dead_letter_topic="dead", publisher=Publisher(), committer=Committer(), load_block=load,
                              max_events=1_000, max_age=1.0, bundle_size=256, on_fatal=lambda: None)
        await seq.handle([Record(i, v) for i, v in enumerate(values)])
        await seq.drain()

    asyncio.run(scenario())
    dead = [int(wire.read_headers(h)["source.offset"]) for topic, _, h in sent if topic == "dead"]
    assert all(wire.read_headers(h)["error"].strip() for topic, _, h in sent if topic == "dead")
    sealed = [e["kafka_offset"] for topic, v, _ in sent if topic == "entries" for e in wire.decode_entries(v)]
    assert sorted(dead + sealed) == list(range(len(values)))


def test_there_are_at_least_ten_thousand_cases() -> None:
    assert sum(n * RECORDS_PER_CASE[k] for k, n in CASES.items()) >= 10_000
