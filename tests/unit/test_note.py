"""Signed notes: the published vectors verify, and every kind of damage is caught."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.note import (
    MAX_SIGNATURES,
    Signature,
    Signer,
    Verifier,
    add_signature,
    key_id,
    parse_note,
    verify_note,
)
from pipeline.errors import InvalidChallenge, InvalidProof, SignatureError

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
SUMDB_NOTE = (VECTORS / "checkpoint_example.txt").read_text(encoding="utf-8")
SUMDB_VKEY = (VECTORS / "checkpoint_example.vkey").read_text(encoding="utf-8").strip()
SUMDB_SIZE = "6476701"
SUMDB_ROOT = "mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk="


def make_signer(name: str = "example.com/test", n: int = 1) -> Signer:
    return Signer(hashlib.sha256(f"seed {n}".encode()).digest(), name)


def signed_note_md_example() -> tuple[str, str]:
    """The verifier key and note of the example in signed-note.md."""
    md = (VECTORS / "signed-note.md").read_text(encoding="utf-8")
    section = md[md.index("### Example") :]
    vkey = re.search(r"^    (example\.com/foo\+\S+)$", section, re.M)
    note = re.search(r"```\n(.*?\n)```", section, re.S)
    assert vkey is not None and note is not None
    return vkey.group(1), note.group(1)


def resign_line(note: str, transform: object) -> str:
    """Rewrite the raw bytes of the note's last signature line with `transform`."""
    head, _, last = note[:-1].rpartition("\n")
    prefix, _, b64 = last.rpartition(" ")
    raw = base64.b64decode(b64)
    assert callable(transform)
    return f"{head}\n{prefix} {base64.b64encode(transform(raw)).decode()}\n"


# --- published vectors ---------------------------------------------------------------


def test_sumdb_checkpoint_verifies() -> None:
    text = verify_note(SUMDB_NOTE, [Verifier.from_vkey(SUMDB_VKEY)])
    assert text == f"go.sum database tree\n{SUMDB_SIZE}\n{SUMDB_ROOT}\n"


def test_sumdb_checkpoint_verifies_as_bytes() -> None:
    text = verify_note(SUMDB_NOTE.encode("utf-8"), [Verifier.from_vkey(SUMDB_VKEY)])
    assert text.startswith("go.sum database tree\n")


def test_sumdb_key_id_is_the_recommended_hash() -> None:
    v = Verifier.from_vkey(SUMDB_VKEY)
    assert v.key_id.hex() == "033de0ae"
    manual = hashlib.sha256(b"sum.golang.org\n\x01" + v.public_key).digest()[:4]
    assert key_id("sum.golang.org", v.public_key) == manual == v.key_id
    assert v.vkey == SUMDB_VKEY


def test_signed_note_md_example_verifies() -> None:
    vkey, note = signed_note_md_example()
    assert vkey.startswith("example.com/foo+530d903a+")
    assert verify_note(note, [Verifier.from_vkey(vkey)]) == "This is an example message.\n"


def test_signed_note_md_poem_keeps_its_blank_line() -> None:
    md = (VECTORS / "signed-note.md").read_text(encoding="utf-8")
    note = re.search(r"```\n(Ognuno.*?\n)```", md, re.S)
    assert note is not None
    text, sigs = parse_note(note.group(1))
    assert text.endswith("trafitto da un raggio di sole:\n\ned è subito sera.\n")
    assert [s.name for s in sigs] == ["quasimodo.example/salvatore"]


def test_tlog_checkpoint_example_shares_an_id_but_not_a_name() -> None:
    md = (VECTORS / "tlog-checkpoint.md").read_text(encoding="utf-8")
    note = re.search(r"```\n(example\.com/behind-the-sofa.*?\n)```", md, re.S)
    assert note is not None
    text, sigs = parse_note(note.group(1))
    assert text.splitlines() == [
        "example.com/behind-the-sofa",
        "20852163",
        "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=",
    ]
    assert sigs[0].key_id.hex() == "033de0ae"
    # Same key id as sum.golang.org, other name: an unknown key, so ignored.
    with pytest.raises(SignatureError, match="no signature by a known key"):
        verify_note(note.group(1), [Verifier.from_vkey(SUMDB_VKEY)])


# --- damage to a real note -------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (SUMDB_SIZE, "6476702"),
        (SUMDB_ROOT, "nb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk="),
        ("go.sum database tree", "go.sum database tree2"),
    ],
    ids=["size", "root", "origin"],
)
def test_modified_text_fails(old: str, new: str) -> None:
    forged = SUMDB_NOTE.replace(old, new, 1)
    with pytest.raises(SignatureError, match=r"sum\.golang\.org\+033de0ae"):
        verify_note(forged, [Verifier.from_vkey(SUMDB_VKEY)])


def test_wrong_key_fails_even_with_the_same_name() -> None:
    impostor = make_signer("sum.golang.org").verifier
    with pytest.raises(SignatureError, match="no signature by a known key") as exc:
        verify_note(SUMDB_NOTE, [impostor])
    assert "sum.golang.org+033de0ae" in str(exc.value)
    assert impostor.key_id.hex() in str(exc.value)


def test_no_verifiers_fails() -> None:
    with pytest.raises(SignatureError):
        verify_note(SUMDB_NOTE, [])


def test_signature_error_is_an_invalid_proof() -> None:
    with pytest.raises(InvalidProof):
        verify_note(SUMDB_NOTE.replace(SUMDB_SIZE, "1"), [Verifier.from_vkey(SUMDB_VKEY)])


def test_truncated_signature_bytes_fail_verification() -> None:
    forged = resign_line(SUMDB_NOTE, lambda raw: raw[:-1])
    with pytest.raises(SignatureError, match="033de0ae"):
        verify_note(forged, [Verifier.from_vkey(SUMDB_VKEY)])


def test_flipped_signature_bit_fails_verification() -> None:
    forged = resign_line(SUMDB_NOTE, lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]))
    with pytest.raises(SignatureError):
        verify_note(forged, [Verifier.from_vkey(SUMDB_VKEY)])


@pytest.mark.parametrize(
    "forged",
    [
        SUMDB_NOTE[:-6] + "\n",  # base64 cut mid-quantum
        SUMDB_NOTE.replace("Az3grs", "Az3g*s"),  # outside the alphabet
        SUMDB_NOTE.replace("OoAw=", "OoAx="),  # non-canonical: stray padding bits
        SUMDB_NOTE.replace("sum.golang.org Az3", "sum.golang.org  Az3"),
        SUMDB_NOTE[:-1],  # missing final newline
        SUMDB_NOTE.replace("\n\n", "\n"),  # no blank line before the signatures
        SUMDB_NOTE + "\n",  # blank line after the signatures: none follow it
        SUMDB_NOTE.replace("— ", "- "),  # hyphen for em dash
        SUMDB_NOTE.replace("— sum", "—sum"),
        SUMDB_NOTE.replace("sum.golang.org Az3", "sum+golang.org Az3"),
        SUMDB_NOTE.replace("sum.golang.org Az3", " Az3"),
        SUMDB_NOTE.replace("tree\n", "tree\t\n"),  # control character
        SUMDB_NOTE.replace("6476701", "6476701\r"),
        SUMDB_NOTE.split("\n\n")[0] + "\n\n— sum.golang.org AAAAAA==\n",  # under 5 bytes
    ],
    ids=[
        "cut-b64", "bad-b64-char", "noncanonical-b64", "double-space", "no-final-newline",
        "no-blank-line", "trailing-blank-line", "hyphen", "no-space-after-dash", "plus-in-name",
        "empty-name", "tab", "carriage-return", "short-signature",
    ],
)
def test_malformed_note_is_an_invalid_challenge(forged: str) -> None:
    assert forged != SUMDB_NOTE
    with pytest.raises(InvalidChallenge):
        verify_note(forged, [Verifier.from_vkey(SUMDB_VKEY)])


def test_invalid_utf8_is_an_invalid_challenge() -> None:
    with pytest.raises(InvalidChallenge, match="UTF-8"):
        parse_note(SUMDB_NOTE.encode("utf-8").replace(b"tree", b"tr\xffe"))
    with pytest.raises(InvalidChallenge, match="UTF-8"):
        parse_note(SUMDB_NOTE.replace("tree", "tr\ud800e"))


def test_parse_error_names_the_line() -> None:
    signer = make_signer()
    note = add_signature(signer.sign("a\nb\n"), make_signer("example.com/w", 2))
    with pytest.raises(InvalidChallenge, match="note line 5"):
        parse_note(note.replace("— example.com/w", "— example.com/w+x"))


# --- signing -----------------------------------------------------------------------------


def test_sign_then_verify_and_parse() -> None:
    signer = make_signer()
    note = signer.sign("hello\nworld\n")
    assert note.startswith("hello\nworld\n\n— example.com/test ")
    assert verify_note(note, [signer.verifier]) == "hello\nworld\n"
    text, sigs = parse_note(note)
    assert sigs == [Signature(signer.name, signer.key_id, sigs[0].sig)]
    assert len(sigs[0].sig) == 64


def test_signing_is_deterministic() -> None:
    assert make_signer().sign("x\n") == make_signer().sign("x\n")


@pytest.mark.parametrize("text", ["", "no newline", "tab\there\n", "bell\x07\n"])
def test_sign_refuses_bad_text(text: str) -> None:
    with pytest.raises(InvalidChallenge):
        make_signer().sign(text)


def test_text_with_blank_lines_roundtrips() -> None:
    signer = make_signer()
    for text in ["\n", "a\n\nb\n", "a\n\n\n"]:
        assert verify_note(signer.sign(text), [signer.verifier]) == text


@pytest.mark.parametrize("name", ["", "a b", "a+b", "a\u2003b", "a\nb"])
def test_bad_key_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidChallenge):
        Signer(bytes(32), name)


def test_seed_must_be_32_bytes() -> None:
    with pytest.raises(InvalidChallenge, match="31 bytes"):
        Signer(bytes(31), "example.com/x")


def test_verifier_key_roundtrips() -> None:
    signer = make_signer()
    vkey = signer.verifier_key
    name, id_hex, b64 = vkey.split("+", 2)
    assert (name, id_hex) == (signer.name, signer.key_id.hex())
    assert base64.b64decode(b64) == b"\x01" + signer.public_key
    v = Verifier.from_vkey(vkey)
    assert (v.name, v.key_id, v.public_key) == (signer.name, signer.key_id, signer.public_key)


def test_private_key_string_roundtrips_and_hides_in_repr() -> None:
    signer = make_signer()
    skey = signer.skey()
    assert skey.startswith(f"PRIVATE+KEY+{signer.name}+{signer.key_id.hex()}+")
    again = Signer.from_skey(skey)
    assert again.public_key == signer.public_key
    secret = skey.rsplit("+", 1)[1]
    assert secret not in repr(signer) and secret not in repr(again)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda k: k.replace("+", "-", 1),
        lambda k: k.rsplit("+", 1)[0],
        lambda k: k[:-4],
        lambda k: k.replace("PRIVATE+KEY+example.com/test+", "PRIVATE+KEY+example.com/other+"),
    ],
    ids=["prefix", "no-key", "cut", "renamed"],
)
def test_mangled_private_key_strings_are_refused(mangle: object) -> None:
    assert callable(mangle)
    skey = make_signer().skey()
    with pytest.raises(InvalidChallenge) as exc:
        Signer.from_skey(mangle(skey))
    assert skey.rsplit("+", 1)[1] not in str(exc.value)


def _vkey_parts() -> tuple[str, str, str]:
    name, id_hex, b64 = SUMDB_VKEY.split("+", 2)
    return name, id_hex, b64


@pytest.mark.parametrize(
    ("vkey", "match"),
    [
        ("sum.golang.org+033de0af+" + _vkey_parts()[2], "does not match"),
        ("sum.golang.org+033DE0AE+" + _vkey_parts()[2], "lowercase hex"),
        ("other.name+033de0ae+" + _vkey_parts()[2], "does not match"),
        ("sum.golang.org+033de0ae+" + base64.b64encode(b"\x02" + bytes(32)).decode(), "0x02"),
        ("sum.golang.org+033de0ae+" + base64.b64encode(b"\x01" + bytes(31)).decode(), "31 bytes"),
        ("sum.golang.org+033de0ae", "parts"),
        ("sum.golang.org+033de0ae+!!!!", "base64"),
    ],
    ids=["wrong-id", "upper-hex", "wrong-name", "alg", "short-key", "two-parts", "bad-b64"],
)
def test_bad_verifier_keys_are_refused(vkey: str, match: str) -> None:
    with pytest.raises(InvalidChallenge, match=match):
        Verifier.from_vkey(vkey)


# --- several signatures ---------------------------------------------------------------------


def test_cosigning_keeps_the_original_signature() -> None:
    witness = make_signer("witness.example/w1", 7)
    cosigned = add_signature(SUMDB_NOTE, witness)
    assert cosigned.startswith(SUMDB_NOTE)
    assert verify_note(cosigned, [Verifier.from_vkey(SUMDB_VKEY)]).startswith("go.sum")
    assert verify_note(cosigned, [witness.verifier]).startswith("go.sum")
    assert verify_note(cosigned, [witness.verifier, Verifier.from_vkey(SUMDB_VKEY)]).startswith("go.sum")


def test_cosigning_twice_replaces_the_earlier_signature() -> None:
    witness = make_signer("witness.example/w1", 7)
    twice = add_signature(add_signature(SUMDB_NOTE, witness), witness)
    assert [s.name for s in parse_note(twice)[1]] == ["sum.golang.org", "witness.example/w1"]


def test_bad_signature_by_a_known_key_rejects_the_note_even_if_another_verifies() -> None:
    witness = make_signer("witness.example/w1", 7)
    cosigned = add_signature(SUMDB_NOTE, witness)
    broken = resign_line(cosigned, lambda raw: raw[:8] + bytes([raw[8] ^ 0x80]) + raw[9:])
    verify_note(broken, [Verifier.from_vkey(SUMDB_VKEY)])  # witness unknown: ignored
    with pytest.raises(SignatureError, match="witness.example/w1"):
        verify_note(broken, [Verifier.from_vkey(SUMDB_VKEY), witness.verifier])


def test_unknown_signatures_are_ignored_up_to_the_limit() -> None:
    signer = make_signer()
    note = signer.sign("t\n")
    for n in range(20):
        note = add_signature(note, make_signer(f"stranger.example/{n}", 100 + n))
    assert verify_note(note, [signer.verifier]) == "t\n"


def test_too_many_signatures_is_malformed() -> None:
    signer = make_signer()
    line = signer.sign("t\n").split("\n\n", 1)[1]
    with pytest.raises(InvalidChallenge, match=str(MAX_SIGNATURES)):
        parse_note("t\n\n" + line * (MAX_SIGNATURES + 1))


def test_colliding_verifiers_are_refused() -> None:
    a = make_signer("example.com/x", 1).verifier
    b = make_signer("example.com/x", 2).verifier
    b.key_id = a.key_id  # forge a key id collision
    with pytest.raises(InvalidChallenge, match="share name and key id"):
        verify_note(make_signer("example.com/x", 1).sign("t\n"), [a, b])


# --- properties ----------------------------------------------------------------------------

_texts = st.lists(
    st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=30), min_size=1, max_size=5
).map(lambda lines: "\n".join(lines) + "\n")


@given(text=_texts)
def test_any_text_roundtrips(text: str) -> None:
    signer = make_signer()
    assert verify_note(signer.sign(text), [signer.verifier]) == text


@given(data=st.data())
def test_any_one_character_substitution_is_caught(data: st.DataObject) -> None:
    signer = make_signer()
    note = signer.sign("example.com/test\n12\nAAAA=\n")
    i = data.draw(st.integers(0, len(note) - 1))
    c = data.draw(st.characters(exclude_categories=("Cs",)).filter(lambda c: c != note[i]))
    with pytest.raises((InvalidChallenge, SignatureError)):
        verify_note(note[:i] + c + note[i + 1 :], [signer.verifier])


@given(data=st.data())
def test_any_one_character_deletion_is_caught(data: st.DataObject) -> None:
    signer = make_signer()
    note = signer.sign("example.com/test\n12\nAAAA=\n")
    i = data.draw(st.integers(0, len(note) - 1))
    with pytest.raises((InvalidChallenge, SignatureError)):
        verify_note(note[:i] + note[i + 1 :], [signer.verifier])
