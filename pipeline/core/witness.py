"""The witness's decision: cosign a checkpoint only when it is consistent with the last one cosigned.

A checkpoint signed by the log alone proves only that the log said something;
the log could show one history to one reader and another to the next (a fork),
or quietly roll a log back. A witness holds its own Ed25519 key and adds its
signature line to a checkpoint only when it is consistent with the last one it
cosigned:

- the log's signature verifies under the log's verifier key;
- the sequence increases (a second, different checkpoint under a sequence
  already cosigned is refused);
- no log disappears, no tree shrinks, no block height goes back, and the same
  height names the same block;
- for every log whose tree grew, the log's RFC 9162 consistency proof from
  the cosigned (size, root) to the new (size, root) verifies; equal sizes with
  different roots are a fork.

A cosignature is an ordinary signed-note signature line (Ed25519, type 0x01)
over the very same note text; :func:`pipeline.core.bundle.verify_bundle`
checks such lines given the witness's verifier key.

Everything here is free of I/O: :class:`Witness` is handed the note and a
function that fetches consistency proofs, and :class:`WitnessState` is what
the process around it persists. The process lives in :mod:`pipeline.witness`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.core.checkpoint import Checkpoint, CheckpointEntry, open_checkpoint
from pipeline.core.note import Signer, Verifier, decode_b64, encode_b64, parse_note
from pipeline.core.proofs import verify_consistency
from pipeline.errors import ConfigError, InvalidChallenge, InvalidProof, PipelineError

STATE_VERSION = 1

ProofSource = Callable[[str, int, int], Sequence[bytes]]
"""``proofs(log_id, from_size, to_size)``: the RFC 9162 consistency path between two tree sizes of a log.

Raises :class:`ProofUnavailable` when the answer cannot be had right now
(retry later), InvalidProof or InvalidChallenge when the log cannot or will
not give one (the witness then refuses).
"""


class ProofUnavailable(PipelineError):
    """A consistency proof could not be fetched now (store down, timeout, server error).

    Distinct from a refusal: the checkpoint is neither cosigned nor refused, and
    the witness asks again later.
    """


class Refused(InvalidProof):
    """The witness will not cosign a checkpoint; `evidence` holds what shows why.

    Raised rather than returned so that nothing downstream can mistake a
    refusal for a cosignature; the evidence is meant to be logged or kept.
    """

    def __init__(self, sequence: int | None, reason: str, evidence: Mapping[str, Any]) -> None:
        where = f"checkpoint {sequence}" if sequence is not None else "checkpoint"
        super().__init__(f"refused {where}: {reason}")
        self.sequence = sequence
        self.reason = reason
        self.evidence = dict(evidence)


@dataclass(frozen=True)
class LogHead:
    """One log's head as a cosigned checkpoint stated it.

    Height and block hash are kept next to size and root so a rewritten block
    chain is refused even where the tree itself would look consistent.
    """

    height: int
    tree_size: int
    root: bytes
    block_hash: bytes

    @classmethod
    def of(cls, entry: CheckpointEntry) -> LogHead:
        """The head a checkpoint entry names."""
        return cls(entry.height, entry.tree_size, entry.root, entry.block_hash)

    def to_json(self) -> dict[str, Any]:
        """JSON form: root in base64 (as in the note), block hash in hex (as in the ledger)."""
        return {"height": self.height, "tree_size": self.tree_size, "root": encode_b64(self.root),
                "block_hash": self.block_hash.hex()}

    @classmethod
    def from_json(cls, data: Any, where: str) -> LogHead:
        """Parse :meth:`to_json` output; raise InvalidChallenge naming `where` on anything else."""
        if not isinstance(data, dict):
            raise InvalidChallenge(f"{where}: want an object, got {type(data).__name__}")
        height, size = data.get("height"), data.get("tree_size")
        for name, value in (("height", height), ("tree_size", size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidChallenge(f"{where}: {name} must be a non-negative integer, got {value!r}")
        root = decode_b64(str(data.get("root")), f"{where}: root")
        try:
            block_hash = bytes.fromhex(str(data.get("block_hash")))
        except ValueError:
            raise InvalidChallenge(f"{where}: block_hash is not hex") from None
        if len(root) != 32 or len(block_hash) != 32:
            raise InvalidChallenge(f"{where}: root and block_hash must be 32 bytes")
        assert isinstance(height, int) and isinstance(size, int)
        return cls(height, size, root, block_hash)


@dataclass(frozen=True)
class WitnessState:
    """The last checkpoint the witness cosigned: its sequence, the hash of its text, each log's head.

    This is everything a witness must remember to refuse a rollback or a fork
    after a restart; the note itself is not needed.
    """

    sequence: int
    text_sha256: bytes
    heads: Mapping[str, LogHead]

    def to_json(self, witness: Verifier, log_key: Verifier) -> dict[str, Any]:
        """JSON form, tagged with both keys so a state file is never used for another witness or log."""
        return {
            "version": STATE_VERSION,
            "witness": witness.vkey,
            "log": log_key.vkey,
            "sequence": self.sequence,
            "text_sha256": self.text_sha256.hex(),
            "logs": {log_id: head.to_json() for log_id, head in sorted(self.heads.items())},
        }

    @classmethod
    def from_json(cls, data: Any, witness: Verifier, log_key: Verifier) -> WitnessState:
        """Parse :meth:`to_json` output for this witness and log; raise ConfigError otherwise.

        A state file that cannot be read is an error, not a fresh start:
        starting over would let the witness cosign a rolled-back log.
        """
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ConfigError(f"witness state is not a version {STATE_VERSION} state object")
        if data.get("witness") != witness.vkey:
            raise ConfigError(f"witness state belongs to witness {data.get('witness')!r}, not {witness.vkey!r}")
        if data.get("log") != log_key.vkey:
            raise ConfigError(
                f"witness state follows log key {data.get('log')!r}, not {log_key.vkey!r}: "
                "a witness follows one log key; use another key file for another log"
            )
        sequence = data.get("sequence")
        if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 0:
            raise ConfigError(f"witness state: sequence must be a non-negative integer, got {sequence!r}")
        logs = data.get("logs")
        if not isinstance(logs, dict) or not logs:
            raise ConfigError("witness state: logs must be a non-empty object")
        try:
            digest = bytes.fromhex(str(data.get("text_sha256")))
            if len(digest) != 32:
                raise ValueError("want 32 bytes")
            heads = {str(k): LogHead.from_json(v, f"witness state: log {k}") for k, v in logs.items()}
        except (ValueError, InvalidChallenge) as exc:
            raise ConfigError(f"witness state is malformed: {exc}") from None
        return cls(sequence, digest, heads)


@dataclass(frozen=True)
class Cosignature:
    """One witness signature line over a checkpoint, as published on ``ledger.cosignatures``."""

    sequence: int
    witness: str
    key_id: str
    line: str

    def row(self) -> dict[str, Any]:
        """The topic row the store ingests into table ``cosignatures``."""
        return {"sequence": self.sequence, "witness": self.witness, "key_id": self.key_id, "line": self.line}


@dataclass(frozen=True)
class Verdict:
    """What the witness made of a checkpoint it did not refuse.

    ``cosigned``: consistent and newer, state advanced. ``repeated``: the very
    checkpoint last cosigned, seen again (a replay); its cosignature is given
    again so it can be re-sent. ``stale``: older than the last cosigned one,
    skipped without a cosignature.
    """

    outcome: Literal["cosigned", "repeated", "stale"]
    checkpoint: Checkpoint
    cosignature: Cosignature | None
    proofs_checked: int = 0


class Witness:
    """Decides, without any I/O, whether to cosign a checkpoint note; remembers the last one cosigned.

    Keeping the decision free of Kafka, HTTP and files means every refusal
    can be tested with hand-made notes and a fake proof source, and the
    process around it only moves bytes.
    """

    def __init__(self, signer: Signer, log_key: Verifier, state: WitnessState | None = None) -> None:
        if signer.public_key == log_key.public_key:
            raise ConfigError("the witness key is the log's own key: a witness must hold a key of its own")
        self.signer = signer
        self.log_key = log_key
        self._state = state

    @property
    def state(self) -> WitnessState | None:
        """The last cosigned checkpoint, or None before the first."""
        return self._state

    @property
    def verifier(self) -> Verifier:
        """The witness's public key, for bundle verifiers."""
        return self.signer.verifier

    def review(self, note: str, proofs: ProofSource) -> Verdict:
        """Check a checkpoint note against the last cosigned one and cosign it if it holds up.

        Returns a :class:`Verdict`; raises :class:`Refused` with evidence when
        the checkpoint must not be cosigned, and lets :class:`ProofUnavailable`
        through (nothing decided, state unchanged). The state advances only on
        ``cosigned``, and only after every check passed.
        """
        try:
            cp = open_checkpoint(note, self.log_key)
        except (InvalidProof, InvalidChallenge) as exc:
            raise Refused(None, f"not a checkpoint validly signed by {self.log_key.vkey}: {exc}",
                          {"note": note}) from None
        text, _ = parse_note(note)
        digest = hashlib.sha256(text.encode("utf-8")).digest()
        last = self._state
        if last is not None:
            if cp.sequence < last.sequence:
                return Verdict("stale", cp, None)
            if cp.sequence == last.sequence:
                if hmac.compare_digest(digest, last.text_sha256):
                    return Verdict("repeated", cp, self._cosign(cp, text))
                raise Refused(cp.sequence, f"sequence does not increase: the log signed a different checkpoint "
                                           f"under sequence {cp.sequence}, which the witness already cosigned",
                              {"cosigned_text_sha256": last.text_sha256.hex(), "offered_text_sha256": digest.hex(),
                               "cosigned_logs": {k: h.to_json() for k, h in last.heads.items()}, "note": note})
        checked = 0 if last is None else self._check_heads(cp, last, proofs, note)
        cosignature = self._cosign(cp, text)
        self._state = WitnessState(cp.sequence, digest, {e.log_id: LogHead.of(e) for e in cp.entries})
        return Verdict("cosigned", cp, cosignature, checked)

    def _cosign(self, cp: Checkpoint, text: str) -> Cosignature:
        line = self.signer.signature(text).line.rstrip("\n")
        return Cosignature(cp.sequence, self.signer.name, self.signer.key_id.hex(), line)

    def _check_heads(self, cp: Checkpoint, last: WitnessState, proofs: ProofSource, note: str) -> int:
        """Refuse unless every log of the last cosigned checkpoint moved only forward, provably.

        Returns how many fetched consistency proofs were verified, so the
        process can report that it checked more than signatures.
        """
        checked = 0
        for log_id, old in sorted(last.heads.items()):
            entry = cp.entry(log_id)
            if entry is None:
                raise _refusal(cp, last, log_id, old, None, note,
                               f"the log disappeared (cosigned at height {old.height}, size {old.tree_size})")
            new = LogHead.of(entry)
            if new.tree_size < old.tree_size:
                raise _refusal(cp, last, log_id, old, new, note,
                               f"rollback: tree size {new.tree_size} is smaller than the cosigned {old.tree_size}")
            if new.height < old.height:
                raise _refusal(cp, last, log_id, old, new, note,
                               f"rollback: block height {new.height} is below the cosigned {old.height}")
            if new.height == old.height and not hmac.compare_digest(new.block_hash, old.block_hash):
                raise _refusal(cp, last, log_id, old, new, note, f"fork: block {new.height} is "
                               f"{new.block_hash.hex()}, the cosigned one is {old.block_hash.hex()}")
            if new.tree_size == old.tree_size:
                if not hmac.compare_digest(new.root, old.root):
                    raise _refusal(cp, last, log_id, old, new, note, f"fork: tree size {new.tree_size} has root "
                                   f"{encode_b64(new.root)}, the cosigned root is {encode_b64(old.root)}")
                continue
            path: list[bytes] = []
            if old.tree_size > 0:
                try:
                    path = list(proofs(log_id, old.tree_size, new.tree_size))
                except (InvalidProof, InvalidChallenge) as exc:
                    raise _refusal(cp, last, log_id, old, new, note, f"no consistency proof from size "
                                   f"{old.tree_size} to {new.tree_size}: {exc}") from None
            try:
                verify_consistency(old.tree_size, new.tree_size, old.root, new.root, path)
            except (InvalidProof, InvalidChallenge) as exc:
                raise _refusal(cp, last, log_id, old, new, note, f"inconsistent: {exc}",
                               consistency_path=[h.hex() for h in path]) from None
            checked += old.tree_size > 0
        return checked


def _refusal(cp: Checkpoint, last: WitnessState, log_id: str, old: LogHead, new: LogHead | None, note: str,
             reason: str, **extra: Any) -> Refused:
    """A refusal of one log's move, carrying both heads, the note and anything else that shows why."""
    evidence = {"log_id": log_id, "cosigned_sequence": last.sequence, "cosigned": old.to_json(),
                "offered_sequence": cp.sequence, "offered": None if new is None else new.to_json(), **extra,
                "note": note}
    return Refused(cp.sequence, f"log {log_id}: {reason}", evidence)
