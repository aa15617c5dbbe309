"""C2SP signed notes (signed-note v1.0.0) with Ed25519 keys, signature type 0x01.

A note is a text ending in a newline, a blank line, then one signature line per
key: ``— <key name> <base64(4-byte key id ‖ signature)>``. Checkpoints are
notes, so any signed-note implementation (Go's `golang.org/x/mod/sumdb/note`,
transparency-dev tooling) can check them with the verifier key alone.

Choices where the spec leaves room, all on the strict side:

- base64 must be canonical (what a standard encoder writes), so no two spellings
  of one signature exist and any one-character edit of a note is detected;
- every signature by a known key is verified, repeated ones included;
- at most :data:`MAX_SIGNATURES` signature lines (the spec asks for at least 16).

The private key is kept as Go's ``note.GenerateKey`` writes it,
``PRIVATE+KEY+<name>+<key id hex>+<base64(0x01 ‖ 32-byte seed)>``, so a key made
here can be used by Go tools and back.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pipeline.errors import InvalidChallenge, SignatureError

ALG_ED25519 = 0x01
MAX_SIGNATURES = 100
SIG_PREFIX = "— "
_SKEY_PREFIX = "PRIVATE+KEY+"


def key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte key id: SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4].

    It names a key in signature lines; it is an identifier, not a fingerprint.

    >>> key_id("sum.golang.org", base64.b64decode("Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8")[1:]).hex()
    '033de0ae'
    """
    data = name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + public_key
    return hashlib.sha256(data).digest()[:4]


def check_key_name(name: str) -> None:
    """Raise InvalidChallenge unless `name` is a legal key name.

    The spec forbids empty names, Unicode spaces and ``+`` (it separates vkey parts).
    """
    if not name:
        raise InvalidChallenge("key name is empty")
    if "+" in name or any(c.isspace() for c in name):
        raise InvalidChallenge(f"key name {name!r} contains a space or '+'")
    if any(ord(c) < 0x20 for c in name):
        raise InvalidChallenge(f"key name {name!r} contains a control character")


def decode_b64(text: str, what: str) -> bytes:
    """Decode standard base64, refusing any spelling a standard encoder would not write.

    Lenient decoders accept several spellings of one value (stray padding bits);
    refusing them means an edited character can never leave a value unchanged.

    >>> decode_b64("AQ==", "example")
    b'\\x01'
    """
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise InvalidChallenge(f"{what}: bad base64 {text!r}: {exc}") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise InvalidChallenge(f"{what}: non-canonical base64 {text!r}")
    return raw


def encode_b64(raw: bytes) -> str:
    """Standard base64 with padding, as text."""
    return base64.b64encode(raw).decode("ascii")


def _as_text(note: str | bytes) -> str:
    if isinstance(note, bytes):
        try:
            return note.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidChallenge(f"note is not valid UTF-8: {exc}") from None
    try:
        note.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidChallenge(f"note is not valid UTF-8: {exc}") from None
    return note


def _check_text(text: str) -> None:
    for i, c in enumerate(text):
        if ord(c) < 0x20 and c != "\n":
            line = text.count("\n", 0, i) + 1
            raise InvalidChallenge(f"note line {line} holds control character U+{ord(c):04X}")


@dataclass(frozen=True)
class Signature:
    """One parsed signature line: who signed (name, key id) and the raw signature."""

    name: str
    key_id: bytes
    sig: bytes

    @property
    def line(self) -> str:
        """The signature line as it appears in a note, newline included."""
        return f"{SIG_PREFIX}{self.name} {encode_b64(self.key_id + self.sig)}\n"


class Verifier:
    """An Ed25519 public key under a name, as published in a C2SP verifier key.

    >>> v = Verifier.from_vkey("sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8")
    >>> v.name, v.key_id.hex()
    ('sum.golang.org', '033de0ae')
    """

    __slots__ = ("name", "key_id", "public_key", "_key")

    def __init__(self, name: str, public_key: bytes) -> None:
        check_key_name(name)
        if len(public_key) != 32:
            raise InvalidChallenge(f"Ed25519 public key for {name!r} has {len(public_key)} bytes, want 32")
        try:
            self._key = Ed25519PublicKey.from_public_bytes(public_key)
        except ValueError as exc:
            raise InvalidChallenge(f"Ed25519 public key for {name!r} is invalid: {exc}") from None
        self.name = name
        self.public_key = public_key
        self.key_id = key_id(name, public_key)

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        """Parse ``<name>+<key id hex>+<base64(0x01 ‖ public key)>``; the key id must match."""
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise InvalidChallenge(f"verifier key {vkey!r} has {len(parts)} '+'-separated parts, want 3")
        name, id_hex, key_b64 = parts
        check_key_name(name)
        if len(id_hex) != 8 or any(c not in "0123456789abcdef" for c in id_hex):
            raise InvalidChallenge(f"verifier key {name!r}: key id {id_hex!r} is not 8 lowercase hex digits")
        raw = decode_b64(key_b64, f"verifier key {name}+{id_hex}")
        if not raw or raw[0] != ALG_ED25519:
            alg = f"0x{raw[0]:02x}" if raw else "none"
            raise InvalidChallenge(f"verifier key {name}+{id_hex}: signature type {alg} unsupported, want 0x01")
        verifier = cls(name, raw[1:])
        if not hmac.compare_digest(verifier.key_id, bytes.fromhex(id_hex)):
            raise InvalidChallenge(
                f"verifier key {name}+{id_hex}: key id does not match the key, which hashes to {verifier.key_id.hex()}"
            )
        return verifier

    @property
    def vkey(self) -> str:
        """The C2SP verifier key string."""
        return f"{self.name}+{self.key_id.hex()}+{encode_b64(bytes([ALG_ED25519]) + self.public_key)}"

    def verify(self, text: str, sig: bytes) -> None:
        """Raise SignatureError unless `sig` is this key's signature over `text`."""
        try:
            self._key.verify(sig, text.encode("utf-8"))
        except InvalidSignature:
            raise SignatureError(
                f"signature by {self.name}+{self.key_id.hex()} does not verify over the note text "
                f"({len(text.encode('utf-8'))} bytes, first line {text.partition(chr(10))[0]!r})"
            ) from None

    def __repr__(self) -> str:
        return f"Verifier({self.vkey!r})"


class Signer:
    """An Ed25519 private key under a name; signs note texts.

    The caller supplies the 32-byte seed, so this class never touches a random
    source or a file.

    >>> s = Signer(bytes(32), "example.com/log")
    >>> s.verifier_key
    'example.com/log+1dde4531+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop'
    >>> note = s.sign("hello\\n")
    >>> note.splitlines()[2][:30]
    '— example.com/log Hd5FMb0jqZfe'
    >>> verify_note(note, [s.verifier])
    'hello\\n'
    """

    __slots__ = ("name", "key_id", "public_key", "_key")

    def __init__(self, seed: bytes, name: str) -> None:
        check_key_name(name)
        if len(seed) != 32:
            raise InvalidChallenge(f"Ed25519 seed for {name!r} has {len(seed)} bytes, want 32")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.name = name
        self.public_key = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = key_id(name, self.public_key)

    @classmethod
    def from_skey(cls, skey: str) -> Signer:
        """Parse ``PRIVATE+KEY+<name>+<key id hex>+<base64(0x01 ‖ seed)>``; the key id must match."""
        if not skey.startswith(_SKEY_PREFIX):
            raise InvalidChallenge("signer key does not start with 'PRIVATE+KEY+'")
        parts = skey[len(_SKEY_PREFIX):].split("+", 2)
        if len(parts) != 3:
            raise InvalidChallenge(f"signer key has {len(parts)} '+'-separated parts after the prefix, want 3")
        name, id_hex, key_b64 = parts
        check_key_name(name)
        if len(id_hex) != 8 or any(c not in "0123456789abcdef" for c in id_hex):
            raise InvalidChallenge(f"signer key {name!r}: key id {id_hex!r} is not 8 lowercase hex digits")
        try:
            raw = base64.b64decode(key_b64.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            # The message must not echo the secret.
            raise InvalidChallenge(f"signer key {name}+{id_hex}: key material is not base64") from None
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise InvalidChallenge(f"signer key {name}+{id_hex}: want 0x01 followed by a 32-byte Ed25519 seed")
        signer = cls(raw[1:], name)
        if not hmac.compare_digest(signer.key_id, bytes.fromhex(id_hex)):
            raise InvalidChallenge(
                f"signer key {name}+{id_hex}: key id does not match the key, which hashes to {signer.key_id.hex()}"
            )
        return signer

    def skey(self) -> str:
        """The private key string in Go's ``note.GenerateKey`` format; keep it secret."""
        seed = self._key.private_bytes_raw()
        return f"{_SKEY_PREFIX}{self.name}+{self.key_id.hex()}+{encode_b64(bytes([ALG_ED25519]) + seed)}"

    @property
    def verifier(self) -> Verifier:
        """The matching public verifier."""
        return Verifier(self.name, self.public_key)

    @property
    def verifier_key(self) -> str:
        """The C2SP verifier key string to publish."""
        return self.verifier.vkey

    def signature(self, text: str) -> Signature:
        """Sign a note text (which must end in a newline) and return the signature."""
        if not text.endswith("\n"):
            raise InvalidChallenge(f"note text must end with a newline, ends with {text[-1:]!r}")
        _check_text(_as_text(text))
        sig = self._key.sign(text.encode("utf-8"))
        return Signature(self.name, self.key_id, sig)

    def sign(self, text: str) -> str:
        """Return the signed note: text, blank line, one signature line."""
        return text + "\n" + self.signature(text).line

    def __repr__(self) -> str:
        return f"Signer(name={self.name!r}, key_id={self.key_id.hex()!r})"


def parse_note(note: str | bytes) -> tuple[str, list[Signature]]:
    """Split a note into its text and signature lines, checking well-formedness only.

    Nothing is verified: callers that trust the text must use :func:`verify_note`.

    >>> parse_note("hi\\n\\n— a/b AAAAAAE=\\n")
    ('hi\\n', [Signature(name='a/b', key_id=b'\\x00\\x00\\x00\\x00', sig=b'\\x01')])
    """
    note = _as_text(note)
    _check_text(note)
    split = note.rfind("\n\n")
    if split < 0:
        raise InvalidChallenge("note has no blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    first_sig_line = text.count("\n") + 2
    if not block:
        raise InvalidChallenge(f"note has no signature lines after the blank line at line {first_sig_line - 1}")
    if not block.endswith("\n"):
        raise InvalidChallenge("note does not end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise InvalidChallenge(f"note has {len(lines)} signatures, limit {MAX_SIGNATURES}")
    sigs: list[Signature] = []
    for n, line in enumerate(lines, start=first_sig_line):
        if not line.startswith(SIG_PREFIX):
            raise InvalidChallenge(f"note line {n}: signature line does not start with '— ': {line[:40]!r}")
        name, _, b64 = line[len(SIG_PREFIX):].partition(" ")
        try:
            check_key_name(name)
        except InvalidChallenge as exc:
            raise InvalidChallenge(f"note line {n}: {exc}") from None
        raw = decode_b64(b64, f"note line {n} (key {name})")
        if len(raw) < 5:
            raise InvalidChallenge(f"note line {n} (key {name}): signature has {len(raw)} bytes, want key id + at least 1")
        sigs.append(Signature(name, raw[:4], raw[4:]))
    return text, sigs


def verify_note(note: str | bytes, verifiers: Iterable[Verifier]) -> str:
    """Return the note's text once at least one known key's signature verifies.

    Signatures by unknown keys (name and key id not both known) are ignored, as
    the spec requires, so witnesses can cosign and keys can rotate. A bad
    signature by a known key rejects the whole note.
    """
    known: dict[tuple[str, bytes], Verifier] = {}
    for v in verifiers:
        other = known.setdefault((v.name, v.key_id), v)
        if other is not v and other.public_key != v.public_key:
            raise InvalidChallenge(f"two verifier keys share name and key id {v.name}+{v.key_id.hex()}")
    text, sigs = parse_note(note)
    verified = 0
    for sig in sigs:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue
        verifier.verify(text, sig.sig)
        verified += 1
    if not verified:
        seen = ", ".join(f"{s.name}+{s.key_id.hex()}" for s in sigs)
        want = ", ".join(f"{name}+{kid.hex()}" for name, kid in known) or "none"
        raise SignatureError(f"note has no signature by a known key: signed by {seen}; known keys {want}")
    return text


def add_signature(note: str | bytes, signer: Signer) -> str:
    """Append `signer`'s signature to a note, keeping the others (cosigning).

    An existing signature by the same name and key id is replaced, as Go's
    ``note.Sign`` does. Existing signatures are not verified here: a witness
    verifies the note with :func:`verify_note` before it cosigns.
    """
    text, sigs = parse_note(note)
    kept = [s for s in sigs if not (s.name == signer.name and hmac.compare_digest(s.key_id, signer.key_id))]
    return text + "\n" + "".join(s.line for s in kept) + signer.signature(text).line
