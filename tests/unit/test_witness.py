"""The witness's decisions: it cosigns a log that only grows, and refuses forks, rollbacks and forgeries.

Checkpoints are built over real in-memory Merkle trees and signed with test
keys; consistency proofs come from a fake proof source that reads those trees,
so every check the witness makes runs exactly as against the store.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from pipeline.core.checkpoint import Checkpoint, CheckpointEntry, sign_checkpoint
from pipeline.core.merkle import MemoryTree, leaf_hash, root_from_nodes
from pipeline.core.note import Signature, Signer, add_signature, parse_note, verify_note
from pipeline.core.proofs import consistency_path
from pipeline.core.witness import Cosignature, ProofUnavailable, Refused, Witness
from pipeline.errors import ConfigError, InvalidProof
from pipeline.witness import load_state, save_state, state_path

ORIGIN = "provenance.test/ledger"
WITNESS = "witness.test/w1"
LOGS = ("shipment-events/0", "shipment-events/1")


def make_signer(name: str, n: int) -> Signer:
    return Signer(hashlib.sha256(f"seed {n}".encode()).digest(), name)


LOG_SIGNER = make_signer(ORIGIN, 1)
WITNESS_SIGNER = make_signer(WITNESS, 2)


class FakeLog:
    """Per-log Merkle trees plus the block heights a ledger would cut, and a proof source over them."""

    def __init__(self, logs: Sequence[str] = LOGS, tag: str = "") -> None:
        self.trees = {log_id: MemoryTree() for log_id in logs}
        self.tag = tag
        self.asked: list[tuple[str, int, int]] = []

    def grow(self, log_id: str, n: int) -> None:
        tree = self.trees[log_id]
        for _ in range(n):
            tree.append(leaf_hash(f"{self.tag}{log_id} leaf {tree.size}".encode()))

    def entry(self, log_id: str, size: int, height: int | None = None) -> CheckpointEntry:
        root = root_from_nodes(size, self.trees[log_id])
        h = size if height is None else height
        return CheckpointEntry(log_id, h, size, root, hashlib.sha256(f"{self.tag}block {log_id} {h}".encode()).digest())

    def checkpoint(self, sequence: int, sizes: dict[str, int] | None = None, signer: Signer = LOG_SIGNER) -> str:
        sizes = sizes or {log_id: tree.size for log_id, tree in self.trees.items()}
        entries = tuple(self.entry(log_id, size) for log_id, size in sizes.items())
        return sign_checkpoint(Checkpoint(signer.name, sequence, entries), signer)

    def proofs(self, log_id: str, size1: int, size2: int) -> list[bytes]:
        self.asked.append((log_id, size1, size2))
        return consistency_path(size1, size2, self.trees[log_id])


def no_proofs(log_id: str, size1: int, size2: int) -> list[bytes]:
    raise AssertionError(f"no proof should be needed, asked for {log_id} {size1}..{size2}")


def new_witness() -> Witness:
    return Witness(WITNESS_SIGNER, LOG_SIGNER.verifier)


def cosigned_note(note: str, cosignature: Cosignature) -> str:
    return note + cosignature.line + "\n"


def test_cosigns_a_consistent_sequence() -> None:
    log, witness = FakeLog(), new_witness()
    proofs_per_step = [0, 1, 1, 2]
    for seq, (a, b) in enumerate([(3, 1), (7, 1), (7, 9), (16, 33)]):
        log.grow(LOGS[0], a - log.trees[LOGS[0]].size)
        log.grow(LOGS[1], b - log.trees[LOGS[1]].size)
        note = log.checkpoint(seq * 2)  # gaps in the sequence are fine: it only has to increase
        verdict = witness.review(note, log.proofs)
        assert verdict.outcome == "cosigned" and verdict.checkpoint.sequence == seq * 2
        assert verdict.proofs_checked == proofs_per_step[seq]
        cos = verdict.cosignature
        assert cos is not None
        assert cos.row() == {"sequence": seq * 2, "witness": WITNESS, "key_id": WITNESS_SIGNER.key_id.hex(),
                             "line": cos.line}
        assert cos.line.startswith(f"— {WITNESS} ") and "\n" not in cos.line
        # The line is a valid signature over the same note text; the log's signature still verifies too.
        both = cosigned_note(note, cos)
        text, sigs = parse_note(both)
        assert len(sigs) == 2
        assert verify_note(both, [WITNESS_SIGNER.verifier]) == text
        assert verify_note(both, [LOG_SIGNER.verifier]) == text
    # A proof was fetched for every grown tree, none where it stayed.
    assert log.asked == [(LOGS[0], 3, 7), (LOGS[1], 1, 9), (LOGS[0], 7, 16), (LOGS[1], 9, 33)]
    state = witness.state
    assert state is not None and state.sequence == 6
    assert {k: v.tree_size for k, v in state.heads.items()} == {LOGS[0]: 16, LOGS[1]: 33}


def test_cosignature_is_what_add_signature_appends() -> None:
    """The published line, appended by the store, gives the same note as cosigning it directly."""
    log, witness = FakeLog(), new_witness()
    log.grow(LOGS[0], 4)
    log.grow(LOGS[1], 2)
    note = log.checkpoint(0)
    cos = witness.review(note, log.proofs).cosignature
    assert cos is not None
    assert cosigned_note(note, cos) == add_signature(note, WITNESS_SIGNER)


def test_first_checkpoint_may_add_a_log_later() -> None:
    log, witness = FakeLog(), new_witness()
    log.grow(LOGS[0], 5)
    witness.review(log.checkpoint(0, {LOGS[0]: 5}), no_proofs)
    log.grow(LOGS[1], 2)
    verdict = witness.review(log.checkpoint(1, {LOGS[0]: 5, LOGS[1]: 2}), no_proofs)
    assert verdict.outcome == "cosigned"


def grown(witness: Witness, log: FakeLog) -> str:
    """Cosign sequence 5 over trees of 6 and 10 leaves; return its note."""
    log.grow(LOGS[0], 6)
    log.grow(LOGS[1], 10)
    note = log.checkpoint(5)
    assert witness.review(note, log.proofs).outcome == "cosigned"
    return note


def test_refuses_a_fork_same_size_other_root() -> None:
    log, witness = FakeLog(), new_witness()
    grown(witness, log)
    before = witness.state
    other = FakeLog(tag="other history ")
    other.grow(LOGS[0], 6)
    other.grow(LOGS[1], 10)
    same = log.entry(LOGS[1], 10)
    # Same size and height as cosigned, another root (and so another block): a second history.
    at_height = Checkpoint(ORIGIN, 6, (other.entry(LOGS[0], 6), same))
    with pytest.raises(Refused, match="fork") as caught:
        witness.review(sign_checkpoint(at_height, LOG_SIGNER), no_proofs)
    # Same size under a later block: caught by the root alone.
    later = Checkpoint(ORIGIN, 6, (other.entry(LOGS[0], 6, height=7), same))
    with pytest.raises(Refused, match="fork: tree size 6 has root") as caught:
        witness.review(sign_checkpoint(later, LOG_SIGNER), no_proofs)
    assert caught.value.sequence == 6
    ev = caught.value.evidence
    assert ev["log_id"] == LOGS[0]
    assert ev["cosigned"]["tree_size"] == ev["offered"]["tree_size"] == 6
    assert ev["cosigned"]["root"] != ev["offered"]["root"]
    assert ev["cosigned_sequence"] == 5 and ev["offered_sequence"] == 6 and "note" in ev
    assert witness.state == before  # a refusal changes nothing


def test_refuses_a_fork_that_grew() -> None:
    """A larger tree whose prefix is not the cosigned tree: the consistency proof fails."""
    log, witness = FakeLog(), new_witness()
    grown(witness, log)
    other = FakeLog(tag="other history ")
    other.grow(LOGS[0], 9)
    # The fork keeps log 1 identical to the cosigned one so only log 0 is in question.
    cp = Checkpoint(ORIGIN, 6, (other.entry(LOGS[0], 9), log.entry(LOGS[1], 10)))
    note = sign_checkpoint(cp, LOG_SIGNER)
    with pytest.raises(Refused) as caught:
        witness.review(note, other.proofs)
    assert "inconsistent" in caught.value.reason and caught.value.evidence["log_id"] == LOGS[0]
    assert other.asked == [(LOGS[0], 6, 9)]
    assert caught.value.evidence["consistency_path"]


def test_refuses_a_rollback() -> None:
    log, witness = FakeLog(), new_witness()
    grown(witness, log)
    with pytest.raises(Refused) as caught:
        witness.review(log.checkpoint(6, {LOGS[0]: 4, LOGS[1]: 10}), no_proofs)
    assert "rollback" in caught.value.reason and "smaller" in caught.value.reason
    assert caught.value.evidence["offered"]["tree_size"] == 4


def test_refuses_a_lower_block_height_and_a_rewritten_block() -> None:
    log, witness = FakeLog(), new_witness()
    grown(witness, log)
    same = log.entry(LOGS[1], 10)
    lower = Checkpoint(ORIGIN, 6, (log.entry(LOGS[0], 6, height=2), same))
    with pytest.raises(Refused, match="height 2 is below"):
        witness.review(sign_checkpoint(lower, LOG_SIGNER), no_proofs)
    e = log.entry(LOGS[0], 6)
    rewritten = CheckpointEntry(e.log_id, e.height, e.tree_size, e.root, bytes(32))
    with pytest.raises(Refused, match="fork: block 6"):
        witness.review(sign_checkpoint(Checkpoint(ORIGIN, 6, (rewritten, same)), LOG_SIGNER), no_proofs)


def test_refuses_a_log_that_disappears() -> None:
    log, witness = FakeLog(), new_witness()
    grown(witness, log)
    with pytest.raises(Refused, match="disappeared"):
        witness.review(log.checkpoint(6, {LOGS[0]: 6}), no_proofs)


def test_refuses_a_non_increasing_sequence() -> None:
    log, witness = FakeLog(), new_witness()
    grown(witness, log)
    log.grow(LOGS[0], 2)
    # A different checkpoint under the sequence already cosigned: equivocation.
    with pytest.raises(Refused) as caught:
        witness.review(log.checkpoint(5), log.proofs)
    assert "sequence does not increase" in caught.value.reason
    assert caught.value.evidence["cosigned_text_sha256"] != caught.value.evidence["offered_text_sha256"]
    # An older sequence is never cosigned, however consistent it looks.
    verdict = witness.review(log.checkpoint(4), log.proofs)
    assert verdict.outcome == "stale" and verdict.cosignature is None
    assert witness.state is not None and witness.state.sequence == 5


def test_the_same_checkpoint_again_is_repeated_not_cosigned_anew() -> None:
    log, witness = FakeLog(), new_witness()
    note = grown(witness, log)
    first = witness.state
    verdict = witness.review(note, no_proofs)
    assert verdict.outcome == "repeated"
    assert verdict.cosignature is not None
    assert verify_note(cosigned_note(note, verdict.cosignature), [WITNESS_SIGNER.verifier])
    assert witness.state == first


def test_refuses_a_bad_signature() -> None:
    log, witness = FakeLog(), new_witness()
    log.grow(LOGS[0], 3)
    log.grow(LOGS[1], 3)
    note = log.checkpoint(0)
    text, sigs = parse_note(note)
    flipped = bytes([sigs[0].sig[0] ^ 1]) + sigs[0].sig[1:]
    forged = text + "\n" + Signature(sigs[0].name, sigs[0].key_id, flipped).line
    with pytest.raises(Refused, match="does not verify"):
        witness.review(forged, no_proofs)
    # Edited text under the original signature fails the same way.
    edited = note.replace(f"{LOGS[0]} 3 3 ", f"{LOGS[0]} 3 4 ", 1)
    assert edited != note
    with pytest.raises(Refused):
        witness.review(edited, no_proofs)
    assert witness.state is None


def test_refuses_a_note_signed_by_another_key() -> None:
    log, witness = FakeLog(), new_witness()
    log.grow(LOGS[0], 3)
    log.grow(LOGS[1], 3)
    impostor = make_signer(ORIGIN, 99)  # same name as the log, other key
    with pytest.raises(Refused, match="no signature by a known key"):
        witness.review(log.checkpoint(0, signer=impostor), no_proofs)
    stranger = make_signer("elsewhere.test/ledger", 3)
    with pytest.raises(Refused):
        witness.review(log.checkpoint(0, signer=stranger), no_proofs)
    assert witness.state is None


def test_refuses_when_the_log_cannot_prove_consistency() -> None:
    log, witness = FakeLog(), new_witness()
    grown(witness, log)
    log.grow(LOGS[0], 1)

    def refusing(log_id: str, size1: int, size2: int) -> list[bytes]:
        raise InvalidProof(f"store answered 404: {log_id} has no sealed tree of size {size2}")

    with pytest.raises(Refused, match="no consistency proof"):
        witness.review(log.checkpoint(6), refusing)


def test_an_unavailable_proof_decides_nothing() -> None:
    log, witness = FakeLog(), new_witness()
    grown(witness, log)
    before = witness.state
    log.grow(LOGS[0], 1)

    def down(log_id: str, size1: int, size2: int) -> list[bytes]:
        raise ProofUnavailable("connection refused")

    with pytest.raises(ProofUnavailable):
        witness.review(log.checkpoint(6), down)
    assert witness.state == before
    assert witness.review(log.checkpoint(6), log.proofs).outcome == "cosigned"


def test_the_witness_must_not_hold_the_logs_key() -> None:
    with pytest.raises(ConfigError):
        Witness(LOG_SIGNER, LOG_SIGNER.verifier)


# --- restart --------------------------------------------------------------------------------


def test_restart_from_the_state_file_continues(tmp_path: Path) -> None:
    key_file = tmp_path / "witness.key"
    path = state_path(key_file)
    assert path == tmp_path / "witness.state.json"
    log, witness = FakeLog(), new_witness()
    notes = []
    for seq, n in enumerate((2, 5, 9)):
        log.grow(LOGS[0], n - log.trees[LOGS[0]].size)
        log.grow(LOGS[1], 1)
        notes.append(log.checkpoint(seq))
        assert witness.review(notes[-1], log.proofs).outcome == "cosigned"
        assert witness.state is not None
        save_state(path, witness.state, WITNESS_SIGNER.verifier, LOG_SIGNER.verifier)
    assert [p.name for p in tmp_path.iterdir()] == ["witness.state.json"]  # no temporary left behind
    saved = json.loads(path.read_text())
    assert saved["sequence"] == 2 and saved["logs"][LOGS[0]]["tree_size"] == 9

    state = load_state(path, WITNESS_SIGNER.verifier, LOG_SIGNER.verifier)
    assert state == witness.state
    again = Witness(WITNESS_SIGNER, LOG_SIGNER.verifier, state)
    # Replaying the topic: older checkpoints are skipped, the last one is repeated with the same line.
    assert [again.review(n, no_proofs).outcome for n in notes] == ["stale", "stale", "repeated"]
    first_line = witness.review(notes[-1], no_proofs).cosignature
    assert again.review(notes[-1], no_proofs).cosignature == first_line
    # It still remembers the cosigned heads: a fork is refused after the restart ...
    other = FakeLog(tag="other ")
    other.grow(LOGS[0], 9)
    other.grow(LOGS[1], 3)
    with pytest.raises(Refused, match="fork"):
        again.review(other.checkpoint(3), no_proofs)
    # ... and the log's next consistent checkpoint is cosigned, with a proof from the persisted size.
    log.grow(LOGS[0], 4)
    log.asked.clear()
    assert again.review(log.checkpoint(3), log.proofs).outcome == "cosigned"
    assert log.asked == [(LOGS[0], 9, 13)]


def test_no_state_file_means_a_first_start(tmp_path: Path) -> None:
    assert load_state(tmp_path / "witness.state.json", WITNESS_SIGNER.verifier, LOG_SIGNER.verifier) is None


def test_a_state_file_for_another_log_or_witness_or_damaged_is_refused(tmp_path: Path) -> None:
    log, witness = FakeLog(), new_witness()
    grown(witness, log)
    assert witness.state is not None
    path = tmp_path / "witness.state.json"
    save_state(path, witness.state, WITNESS_SIGNER.verifier, LOG_SIGNER.verifier)
    with pytest.raises(ConfigError, match="log key"):
        load_state(path, WITNESS_SIGNER.verifier, make_signer(ORIGIN, 7).verifier)
    with pytest.raises(ConfigError, match="belongs to witness"):
        load_state(path, make_signer(WITNESS, 8).verifier, LOG_SIGNER.verifier)
    path.write_text(path.read_text()[:40])
    with pytest.raises(ConfigError, match="not JSON"):
        load_state(path, WITNESS_SIGNER.verifier, LOG_SIGNER.verifier)
    data = witness.state.to_json(WITNESS_SIGNER.verifier, LOG_SIGNER.verifier)
    data["logs"][LOGS[0]]["root"] = "not base64!"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="malformed"):
        load_state(path, WITNESS_SIGNER.verifier, LOG_SIGNER.verifier)
