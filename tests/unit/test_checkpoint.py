"""Checkpoints: one exact spelling, signed; stale, forged and re-keyed ones are caught."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.checkpoint import (
    Checkpoint,
    CheckpointEntry,
    covers,
    format_checkpoint,
    open_checkpoint,
    parse_checkpoint,
    sign_checkpoint,
)
from pipeline.core.note import Signer, add_signature, verify_note
from pipeline.errors import InvalidChallenge, InvalidProof, SignatureError

ORIGIN = "provenance.test/ledger"


def make_signer(name: str = ORIGIN, n: int = 1) -> Signer:
    return Signer(hashlib.sha256(f"seed {n}".encode()).digest(), name)


def make_entry(log_id: str = "shipment-events/0", height: int = 3, **overrides: object) -> CheckpointEntry:
    fields: dict[str, object] = {
        "log_id": log_id,
        "height": height,
        "tree_size": 10 * (height + 1),
        "root": hashlib.sha256(f"root {log_id} {height}".encode()).digest(),
        "block_hash": hashlib.sha256(f"block {log_id} {height}".encode()).digest(),
    }
    fields.update(overrides)
    return CheckpointEntry(**fields)  # type: ignore[arg-type]


def make_checkpoint(sequence: int = 1, heights: tuple[int, ...] = (3, 5), time: datetime | None = None) -> Checkpoint:
    entries = tuple(make_entry(f"shipment-events/{p}", h) for p, h in enumerate(heights))
    return Checkpoint(ORIGIN, sequence, entries, time)


# --- the format --------------------------------------------------------------------------


def test_golden_text() -> None:
    e = CheckpointEntry("shipment-events/3", 4, 5000, bytes(range(32)), bytes(range(32, 64)))
    cp = Checkpoint("provenance.local/ledger", 42, (e,), datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    assert format_checkpoint(cp) == (
        "provenance.local/ledger\n"
        "42\n"
        "time 2025-01-02T03:04:05Z\n"
        "shipment-events/3 4 5000 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8= "
        "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f\n"
    )


def test_roundtrip_without_and_with_time() -> None:
    for time in (None, datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)):
        cp = make_checkpoint(time=time)
        assert parse_checkpoint(format_checkpoint(cp)) == cp


def test_entries_are_sorted_by_log_id_in_code_point_order() -> None:
    entries = [make_entry(f"shipment-events/{p}") for p in (2, 10, 1)]
    a = Checkpoint(ORIGIN, 1, tuple(entries))
    b = Checkpoint(ORIGIN, 1, tuple(reversed(entries)))
    assert a == b and format_checkpoint(a) == format_checkpoint(b)
    assert [e.log_id for e in a.entries] == ["shipment-events/1", "shipment-events/10", "shipment-events/2"]


def test_time_is_kept_in_utc() -> None:
    local = datetime(2025, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    text = format_checkpoint(make_checkpoint(time=local))
    assert "\ntime 2025-01-02T03:04:05Z\n" in text
    assert parse_checkpoint(text).time == local


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Checkpoint(ORIGIN, 1, ()), "no log"),
        (lambda: Checkpoint(ORIGIN, 1, (make_entry(), make_entry())), "twice"),
        (lambda: Checkpoint(ORIGIN, -1, (make_entry(),)), "sequence"),
        (lambda: Checkpoint(ORIGIN, 2**64, (make_entry(),)), "sequence"),
        (lambda: Checkpoint("has space", 1, (make_entry(),)), "space"),
        (lambda: Checkpoint(ORIGIN, 1, (make_entry(),), datetime(2025, 1, 1)), "time zone"),
        (lambda: make_entry(log_id="shipment events/0"), "log id"),
        (lambda: make_entry(log_id="time"), "log id"),
        (lambda: make_entry(log_id=""), "log id"),
        (lambda: make_entry(height=-1), "height"),
        (lambda: make_entry(root=bytes(31)), "root"),
        (lambda: make_entry(block_hash=bytes(33)), "block hash"),
    ],
    ids=[
        "empty", "duplicate", "negative-seq", "huge-seq", "bad-origin", "naive-time",
        "space-log-id", "time-log-id", "empty-log-id", "negative-height", "short-root", "long-hash",
    ],
)
def test_bad_values_are_refused(build: object, match: str) -> None:
    assert callable(build)
    with pytest.raises(InvalidChallenge, match=match):
        build()


GOOD = format_checkpoint(make_checkpoint(time=datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)))
LOG0 = GOOD.splitlines()[3]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (GOOD[:-1], "newline"),
        (GOOD.replace("\n1\n", "\n01\n"), "leading zeroes"),
        (GOOD.replace("\n1\n", "\n+1\n"), "decimal"),
        (GOOD.replace("\n1\n", "\n١\n"), "decimal"),  # an Arabic-Indic digit
        (GOOD.replace("\n1\n", "\n1\n\n"), "empty"),
        (GOOD.replace(" 3 40 ", " 03 40 "), "leading zeroes"),
        (GOOD.replace(LOG0, LOG0.upper().replace("SHIPMENT-EVENTS", "shipment-events")), "hex|base64"),
        (GOOD.replace(LOG0, LOG0 + " extra"), "want"),
        (GOOD.replace(LOG0, LOG0.replace(" ", "  ", 1)), "want"),
        (GOOD.replace("shipment-events/0", "shipment-events/1"), "order"),
        (GOOD.replace("shipment-events/1", "shipment-events/0"), "order"),
        ("\n".join(GOOD.splitlines()[:3]) + "\n", "no log"),
        (f"{ORIGIN}\n1\n", "lines"),
        (GOOD.replace("2025-01-02T03:04:05Z", "2025-01-02T03:04:05+00:00"), "RFC 3339"),
        (GOOD.replace("2025-01-02T03:04:05Z", "2025-01-02 03:04:05Z"), "RFC 3339"),
        (GOOD.replace("2025-01-02T03:04:05Z", "2025-01-02T03:04:05.000000Z"), "zero fraction"),
        (GOOD.replace("2025-01-02T03:04:05Z", "2025-02-30T03:04:05Z"), "day"),
        (GOOD.replace(ORIGIN, "a+b"), "origin"),
    ],
    ids=[
        "no-final-newline", "seq-leading-zero", "seq-plus", "seq-unicode-digit", "blank-line",
        "height-leading-zero", "uppercase", "extra-field", "double-space", "unsorted", "duplicate",
        "time-only", "two-lines", "time-offset", "time-space", "time-zero-fraction", "time-invalid-date", "bad-origin",
    ],
)
def test_malformed_text_is_refused(text: str, match: str) -> None:
    assert text != GOOD
    with pytest.raises(InvalidChallenge, match=match):
        parse_checkpoint(text)


def test_noncanonical_root_base64_is_refused() -> None:
    cp = Checkpoint(ORIGIN, 1, (make_entry(root=bytes(32)),))
    text = format_checkpoint(cp)
    assert "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" in text
    with pytest.raises(InvalidChallenge, match="non-canonical"):
        parse_checkpoint(text.replace("AAA=", "AAB="))


def test_parse_error_names_the_line() -> None:
    with pytest.raises(InvalidChallenge, match="checkpoint line 5"):
        parse_checkpoint(GOOD.replace(" 5 60 ", " 5 060 "))


# --- signing -------------------------------------------------------------------------------


def test_sign_and_open() -> None:
    signer = make_signer()
    cp = make_checkpoint()
    note = sign_checkpoint(cp, signer)
    assert note.startswith(format_checkpoint(cp) + "\n— " + ORIGIN + " ")
    assert open_checkpoint(note, signer.verifier) == cp
    assert open_checkpoint(note.encode("utf-8"), signer.verifier) == cp


def test_signing_is_deterministic() -> None:
    assert sign_checkpoint(make_checkpoint(), make_signer()) == sign_checkpoint(make_checkpoint(), make_signer())


def test_sign_refuses_another_origin() -> None:
    with pytest.raises(InvalidChallenge, match="origin"):
        sign_checkpoint(make_checkpoint(), make_signer("someone.else/ledger"))


def test_forged_height_fails_the_signature() -> None:
    signer = make_signer()
    note = sign_checkpoint(make_checkpoint(heights=(3, 5)), signer)
    forged = note.replace("shipment-events/1 5 ", "shipment-events/1 6 ", 1)
    assert forged != note
    with pytest.raises(SignatureError, match=f"{ORIGIN}\\+{signer.key_id.hex()}"):
        open_checkpoint(forged, signer.verifier)


def test_swapped_key_with_the_same_name_is_caught() -> None:
    real, attacker = make_signer(n=1), make_signer(n=2)
    note = sign_checkpoint(make_checkpoint(heights=(99, 99)), attacker)
    with pytest.raises(SignatureError, match="no signature by a known key"):
        open_checkpoint(note, real.verifier)


def test_valid_signature_over_another_origin_is_refused() -> None:
    signer = make_signer()
    text = format_checkpoint(Checkpoint("other.example/ledger", 1, (make_entry(),)))
    with pytest.raises(InvalidProof, match="origin"):
        open_checkpoint(signer.sign(text), signer.verifier)


def test_witness_cosignature_keeps_the_checkpoint_open() -> None:
    signer, witness = make_signer(), make_signer("witness.example/w", 9)
    note = sign_checkpoint(make_checkpoint(), signer)
    verify_note(note, [signer.verifier])  # a witness checks before it cosigns
    cosigned = add_signature(note, witness)
    assert open_checkpoint(cosigned, signer.verifier) == make_checkpoint()
    verify_note(cosigned, [witness.verifier])


# --- covers ---------------------------------------------------------------------------------


def test_covers_the_same_and_older_blocks() -> None:
    cp = make_checkpoint(heights=(3, 5))
    head = make_entry("shipment-events/0", 3)
    assert covers(cp, "shipment-events/0", 3, head.block_hash) == head
    assert covers(cp, "shipment-events/0", 1, bytes(32)).height == 3


def test_replayed_old_checkpoint_does_not_cover_a_newer_block() -> None:
    signer = make_signer()
    old = sign_checkpoint(make_checkpoint(sequence=1, heights=(3, 5)), signer)
    new_block = make_entry("shipment-events/0", 4)
    cp = open_checkpoint(old, signer.verifier)  # the signature is genuine...
    with pytest.raises(InvalidProof, match="stale or replayed") as exc:
        covers(cp, new_block.log_id, new_block.height, new_block.block_hash)  # ...but it is too old
    assert "height 3" in str(exc.value) and "block 4" in str(exc.value)


def test_a_different_block_at_the_same_height_is_caught() -> None:
    cp = make_checkpoint(heights=(3, 5))
    other = hashlib.sha256(b"fork").digest()
    with pytest.raises(InvalidProof, match=other.hex()):
        covers(cp, "shipment-events/0", 3, other)


def test_an_uncovered_log_is_caught() -> None:
    with pytest.raises(InvalidProof, match="does not cover log shipment-events/7"):
        covers(make_checkpoint(), "shipment-events/7", 0, bytes(32))


# --- properties -----------------------------------------------------------------------------

_log_ids = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=24).filter(
    lambda s: s != "time"
)
_uint64 = st.integers(0, 2**64 - 1)
_entries = st.builds(CheckpointEntry, _log_ids, _uint64, _uint64, st.binary(min_size=32, max_size=32),
                     st.binary(min_size=32, max_size=32))
_times = st.none() | st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(9998, 12, 31),
    timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-7, minutes=-30))]),
)
_checkpoints = st.builds(
    Checkpoint,
    st.just(ORIGIN),
    _uint64,
    st.lists(_entries, min_size=1, max_size=8, unique_by=lambda e: e.log_id).map(tuple),
    _times,
)


@given(cp=_checkpoints)
def test_any_checkpoint_roundtrips(cp: Checkpoint) -> None:
    signer = make_signer()
    text = format_checkpoint(cp)
    assert parse_checkpoint(text) == cp
    assert open_checkpoint(sign_checkpoint(cp, signer), signer.verifier) == cp


@settings(max_examples=300)
@given(cp=_checkpoints, data=st.data())
def test_any_one_character_change_is_caught(cp: Checkpoint, data: st.DataObject) -> None:
    signer = make_signer()
    note = sign_checkpoint(cp, signer)
    i = data.draw(st.integers(0, len(note) - 1), label="index")
    c = data.draw(st.characters(exclude_categories=("Cs",)).filter(lambda c: c != note[i]), label="char")
    with pytest.raises((InvalidChallenge, InvalidProof)):
        open_checkpoint(note[:i] + c + note[i + 1 :], signer.verifier)
