"""The witness process: follows the ledger's checkpoints, cosigns those it has checked, publishes the lines.

A witness holds its own Ed25519 key, follows every checkpoint the store
publishes on ``ledger.checkpoints`` and asks :class:`pipeline.core.witness.Witness`
whether to cosign it; the decision, and the checks behind it, live there and do
no I/O. A cosignature is published as ``{"sequence", "witness", "key_id",
"line"}`` on ``ledger.cosignatures``; the store appends such lines to the notes
it serves.

The witness persists what it last cosigned in a JSON file next to its key (written
atomically *before* the cosignature is released, so a crash can never let it
cosign two conflicting checkpoints); a restart replays the topic from the
beginning, skips what is older, re-sends the cosignature of the last cosigned
checkpoint (in case the crash came before it was published) and continues.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from pipeline.core.note import Verifier
from pipeline.core.witness import Cosignature, ProofUnavailable, Refused, Witness, WitnessState
from pipeline.errors import BrokerError, ConfigError, InvalidChallenge, InvalidProof
from pipeline.keys import fsync_directory, load_or_create_signer, load_verifier
from pipeline.settings import Settings

log = logging.getLogger(__name__)

HTTP_TIMEOUT = 10.0
RETRY_MIN = 0.5
RETRY_MAX = 10.0


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
    fsync_directory(path.parent)


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
