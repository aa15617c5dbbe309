"""The witness: an independent process that cosigns the ledger's checkpoints once it has checked them.

A checkpoint signed by the log alone proves only that the log said something;
the log could show one history to one reader and another to the next (a fork),
or quietly roll a log back. A witness holds its own Ed25519 key, follows every
checkpoint the store publishes on ``ledger.checkpoints`` and adds its signature
line to a checkpoint only when it is consistent with the last one it cosigned:

- the log's signature verifies under the log's verifier key;
- the sequence increases (a second, different checkpoint under a sequence
  already cosigned is refused);
- no log disappears, no tree shrinks, no block height goes back, and the same
  height names the same block;
- for every log whose tree grew, the store's RFC 9162 consistency proof from
  the cosigned (size, root) to the new (size, root) verifies; equal sizes with
  different roots are a fork.

A cosignature is an ordinary signed-note signature line (Ed25519, type 0x01)
over the very same note text, published as ``{"sequence", "witness", "key_id",
"line"}`` on ``ledger.cosignatures``; the store appends such lines to the notes
it serves, and :func:`pipeline.core.bundle.verify_bundle` checks them given the
witness's verifier key.

The decision logic is the small :class:`Witness` class, which does no I/O: it
is handed the note and a function that fetches consistency proofs. The witness
persists what it last cosigned in a JSON file next to its key (written
atomically *before* the cosignature is released, so a crash can never let it
cosign two conflicting checkpoints); a restart replays the topic from the
beginning, skips what is older, re-sends the cosignature of the last cosigned
checkpoint (in case the crash came before it was published) and continues.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import signal
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from pipeline.core.checkpoint import Checkpoint, CheckpointEntry, open_checkpoint
from pipeline.core.merkle import verify_consistency
from pipeline.core.note import Signer, Verifier, decode_b64, encode_b64, parse_note
from pipeline.errors import BrokerError, ConfigError, InvalidChallenge, InvalidProof, PipelineError
from pipeline.keys import load_or_create_signer, load_verifier
from pipeline.settings import Settings

log = logging.getLogger(__name__)

STATE_VERSION = 1
HTTP_TIMEOUT = 10.0
RETRY_MIN = 0.5
RETRY_MAX = 10.0

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


# --- state file ------------------------------------------------------------------------


def state_path(key_file: Path) -> Path:
    """Where the witness keeps its state: next to its key, ``witness.key`` → ``witness.state.json``."""
    return key_file.with_name(key_file.stem + ".state.json")


def load_state(path: Path, witness: Verifier, log_key: Verifier) -> WitnessState | None:
    """The persisted state, or None when the witness has never cosigned (no file)."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read witness state {path}: {exc}") from None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"witness state {path} is not JSON: {exc}") from None
    try:
        return WitnessState.from_json(data, witness, log_key)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def save_state(path: Path, state: WitnessState, witness: Verifier, log_key: Verifier) -> None:
    """Write the state atomically: a temporary file, fsync, rename, fsync of the directory.

    A reader (or a restart after a crash) sees the old state or the new one,
    never a torn file.
    """
    data = json.dumps(state.to_json(witness, log_key), indent=1, sort_keys=True) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            os.write(fd, data.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# --- the store over HTTP -----------------------------------------------------------------


class StoreClient:
    """The two store endpoints a witness reads: the log's verifier key and consistency proofs."""

    def __init__(self, base_url: str, timeout: float = HTTP_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str) -> bytes:
        url = f"{self.base_url}{path}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as exc:
            body = exc.read().decode("utf-8", "replace")
            with contextlib.suppress(ValueError, AttributeError):
                body = str(json.loads(body).get("error", body))
            if 400 <= exc.code < 500:
                raise InvalidProof(f"store answered {exc.code} to GET {path}: {body}") from None
            raise ProofUnavailable(f"store answered {exc.code} to GET {path}: {body}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ProofUnavailable(f"cannot reach the store at {self.base_url}: {exc}") from None

    def log_key(self) -> str:
        """The log's verifier key as the store serves it (GET /checkpoints/key)."""
        return self._get("/checkpoints/key").decode("utf-8").strip()

    def consistency(self, log_id: str, from_size: int, to_size: int) -> list[bytes]:
        """GET /proofs/consistency?log_id=&from_size=&to_size=: the path as 32-byte hashes."""
        query = urllib.parse.urlencode({"log_id": log_id, "from_size": from_size, "to_size": to_size})
        raw = self._get(f"/proofs/consistency?{query}")
        try:
            hexes = json.loads(raw)["consistency_path"]
            if not isinstance(hexes, list):
                raise TypeError("consistency_path is not a list")
            path = [bytes.fromhex(h) for h in hexes]
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidChallenge(f"store sent a malformed consistency proof for {log_id}: {exc}") from None
        if any(len(h) != 32 for h in path):
            raise InvalidChallenge(f"store sent a consistency proof for {log_id} with hashes that are not 32 bytes")
        return path


# --- the process ---------------------------------------------------------------------------


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep unless stopped first."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class WitnessProcess:
    """Follows ``ledger.checkpoints``, asks :class:`Witness`, persists state, publishes cosignatures.

    The consumer has no group and reads every partition from the beginning:
    the state file, not Kafka offsets, says where the witness is, so it never
    depends on the broker to remember for it.
    """

    def __init__(self, settings: Settings, witness: Witness, state_file: Path, store: StoreClient) -> None:
        self.settings = settings
        self.witness = witness
        self.state_file = state_file
        self.store = store
        t = settings.topics
        self.checkpoints_topic = t.name(t.checkpoints)
        self.cosignatures_topic = t.name(t.cosignatures)
        self.replay_ends: dict[TopicPartition, int] = {}
        self.cosigned = 0
        self.refused = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Cosign checkpoints until `stop` is set."""
        kafka = self.settings.kafka
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka, group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", client_id="provenance-witness")
        producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", client_id="provenance-witness")
        try:
            try:
                await consumer.start()
                await producer.start()
            except KafkaError as exc:
                raise BrokerError(f"witness cannot reach Kafka at {kafka}: {exc}") from None
            parts = consumer.partitions_for_topic(self.checkpoints_topic)
            if not parts:
                raise BrokerError(f"topic {self.checkpoints_topic!r} does not exist on {kafka}")
            tps = [TopicPartition(self.checkpoints_topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            self.replay_ends = dict(await consumer.end_offsets(tps))
            log.info("witness following %s (%d partitions) from the beginning", self.checkpoints_topic, len(tps))
            while not stop.is_set():
                try:
                    polled = await consumer.getmany(timeout_ms=500, max_records=100)
                except KafkaError as exc:
                    log.warning("witness poll failed, retrying: %s", exc)
                    await _pause(stop, 1.0)
                    continue
                for tp, messages in polled.items():
                    for msg in messages:
                        if stop.is_set():
                            return
                        await self.handle(tp, msg.offset, msg.value, producer, stop)
        finally:
            await consumer.stop()
            await producer.stop()

    async def handle(self, tp: TopicPartition, offset: int, value: bytes | None, producer: AIOKafkaProducer,
                     stop: asyncio.Event) -> None:
        """Review one ``ledger.checkpoints`` record; retry while proofs are unavailable."""
        where = f"{tp.topic}[{tp.partition}]@{offset}"
        try:
            note = json.loads(value or b"")["note"]
            if not isinstance(note, str):
                raise TypeError("note is not a string")
        except (ValueError, KeyError, TypeError) as exc:
            log.error("skipping malformed checkpoint record %s: %s", where, exc)
            return
        delay = RETRY_MIN
        while True:
            try:
                verdict = await asyncio.to_thread(self.witness.review, note, self.store.consistency)
                break
            except ProofUnavailable as exc:
                log.warning("checkpoint at %s: consistency proof unavailable, retrying in %.1fs: %s", where, delay, exc)
                await _pause(stop, delay)
                if stop.is_set():
                    return
                delay = min(delay * 2, RETRY_MAX)
            except Refused as exc:
                self.refused += 1
                log.error("REFUSED to cosign the checkpoint at %s: %s\nevidence: %s", where, exc.reason,
                          json.dumps(exc.evidence, indent=1, sort_keys=True))
                return
        cp = verdict.checkpoint
        if verdict.outcome == "stale":
            last = self.witness.state.sequence if self.witness.state else None
            replay = offset < self.replay_ends.get(tp, 0)
            log.log(logging.DEBUG if replay else logging.WARNING,
                    "checkpoint %d at %s is older than the last cosigned (%s): not cosigned", cp.sequence, where, last)
            return
        if verdict.outcome == "cosigned":
            state = self.witness.state
            assert state is not None
            # Persist before release: a cosignature never leaves unless a restart will remember it.
            try:
                await asyncio.to_thread(save_state, self.state_file, state, self.witness.verifier, self.witness.log_key)
            except OSError as exc:
                raise ConfigError(f"cannot persist witness state {self.state_file}: {exc}") from None
            self.cosigned += 1
            log.info("cosigned checkpoint %d (%d logs, %d consistency proofs verified)", cp.sequence,
                     len(cp.entries), verdict.proofs_checked)
        else:
            log.info("checkpoint %d is the last one cosigned: sending its cosignature again", cp.sequence)
        assert verdict.cosignature is not None
        await self.publish(verdict.cosignature, producer, stop)

    async def publish(self, cosignature: Cosignature, producer: AIOKafkaProducer, stop: asyncio.Event) -> None:
        """Send a cosignature row, retrying until the broker takes it or the witness stops.

        Losing one to a stop is harmless: it is the last cosigned checkpoint,
        whose cosignature the next start sends again.
        """
        payload = json.dumps(cosignature.row()).encode()
        delay = RETRY_MIN
        while True:
            try:
                await producer.send_and_wait(self.cosignatures_topic, payload, key=cosignature.witness.encode())
                return
            except KafkaError as exc:
                log.warning("cosignature of checkpoint %d not published, retrying in %.1fs: %s",
                            cosignature.sequence, delay, exc)
                await _pause(stop, delay)
                if stop.is_set():
                    return
                delay = min(delay * 2, RETRY_MAX)


async def _fetch_log_key(store: StoreClient, stop: asyncio.Event) -> Verifier | None:
    """The log's verifier key from the store, retried until it answers; None if stopped first."""
    delay = RETRY_MIN
    while not stop.is_set():
        try:
            return Verifier.from_vkey(await asyncio.to_thread(store.log_key))
        except (ProofUnavailable, InvalidProof) as exc:
            log.warning("cannot fetch the log's key from %s yet, retrying in %.1fs: %s", store.base_url, delay, exc)
        except InvalidChallenge as exc:
            raise ConfigError(f"the store at {store.base_url} serves a malformed log key: {exc}") from None
        await _pause(stop, delay)
        delay = min(delay * 2, RETRY_MAX)
    return None


async def _main(settings: Settings, key_file: Path, name: str, store_url: str, log_key: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    signer = load_or_create_signer(key_file, name)
    print(f"witness key: {signer.verifier_key}", flush=True)
    store = StoreClient(store_url)
    if log_key is not None:
        log_verifier = load_verifier(log_key)
    else:
        log.warning("no log key given: trusting the key the store at %s serves (pin it with log_key)", store_url)
        fetched = await _fetch_log_key(store, stop)
        if fetched is None:
            return
        log_verifier = fetched
    print(f"witness follows log key: {log_verifier.vkey}", flush=True)
    state_file = state_path(key_file)
    state = load_state(state_file, signer.verifier, log_verifier)
    if state is not None:
        log.info("witness resumes after checkpoint %d (state %s)", state.sequence, state_file)
    process = WitnessProcess(settings, Witness(signer, log_verifier, state), state_file, store)
    try:
        await process.run(stop)
    finally:
        log.info("witness stopped: %d cosigned, %d refused", process.cosigned, process.refused)


def run_witness(settings: Settings, key_file: Path, name: str, store_url: str, log_key: str | None = None) -> None:
    """Run a witness until SIGINT or SIGTERM: key at `key_file` (created on first use) under `name`.

    `log_key` pins the log's verifier key (a C2SP vkey or a file holding one);
    without it the key is fetched once from the store at `store_url`, which
    trusts the store on first use. The witness's own verifier key is printed
    at start, for whoever verifies bundles.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_main(settings, key_file, name, store_url, log_key))
