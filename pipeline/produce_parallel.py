"""`provenance produce --processes N`: N sender processes, each owning a fixed share of the keys.

kafka-python spends about 25 µs of CPU on each record in pure Python (the accumulator,
the record builder, a future per record), which holds one process near 35-40 k msg/s.
Here the parent reads or generates the records and hands each to the process that owns
its key (`share_of`; keyless records go round), in chunks over a pipe.
Each process runs the single-process sender on its share. A key therefore always goes
through one process, in input order, and gets the partition one process would give it:
the run sends the same records, to the same partitions, in the same per-key order.

The reports are summed. A process that dies before reporting is a SenderDied error
counting everything it was given and did not confirm; Ctrl-C or SIGTERM stops the
input, lets every process flush what it holds and reports (a second one makes them give
up waiting).
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from pipeline.errors import PipelineError
from pipeline.procs import die_with_parent
from pipeline.produce_report import ProduceReport
from pipeline.produce_sources import KeyValue
from pipeline.producer import (
    KeyPartitions, batches, broker_away, check_pacing, produce_records, progress_bar, send_batches,
)
from pipeline.settings import Settings

_CHUNK = 1_000  # records a process gets at a time from an unpaced run
_PIPE_BYTES = 1 << 20  # room for a few chunks in each process's pipe (Linux's limit for a user)
_PROGRESS_EVERY = 0.25  # seconds between a process's progress messages
_STOPS = {signal.SIGINT, signal.SIGTERM}


class SenderDied(PipelineError):
    """A sender process died before reporting: what it was given and did not confirm is not accounted for."""


def produce_parallel(
    settings: Settings,
    records: Iterable[KeyValue],
    processes: int,
    rate: float | None = None,
    count: int | None = None,
    progress: bool = True,
    topic: str | None = None,
) -> ProduceReport:
    """`produce_records` through `processes` sender processes (one process: exactly `produce_records`).

    Raises what a process raised (a BrokerError when there is no broker), the summed
    broker-away BrokerError if one gave up on the broker, or SenderDied.
    """
    if processes <= 1:
        return produce_records(settings, records, rate=rate, count=count, progress=progress, topic=topic)
    check_pacing(rate, count)
    topic = topic or settings.topics.name(settings.topics.events)
    senders: list[_Sender] = []
    interrupted = False
    try:
        for i in range(processes):  # forked before the progress bar starts its thread
            senders.append(_Sender(settings, topic, i, processes, senders))
        started = time.monotonic()
        with progress_bar(topic, count, progress) as bar, _TermAsInterrupt():
            try:
                _dispatch(senders, batches(records, rate, count, _CHUNK * processes), bar, settings.topics.partitions)
            except KeyboardInterrupt:
                interrupted = True
            interrupted = _collect(senders) or interrupted
    except BaseException:
        for sender in senders:
            sender.kill()
        raise
    return _outcome(settings, senders, time.monotonic() - started, interrupted)


def _dispatch(senders: list[_Sender], source: Iterator[list[KeyValue]], bar: Any, partitions: int) -> None:
    """Hand each record to the process owning its key, until the input ends or a process stops early."""
    n = len(senders)
    owner = share_of(n, partitions)
    turn = 0
    for batch in source:
        shares: list[list[KeyValue]] = [[] for _ in senders]
        for record in batch:
            key = record[0]
            if key is None:
                turn = (turn + 1) % n
                shares[turn].append(record)
            else:
                shares[owner(key)].append(record)
        for sender, share in zip(senders, shares):
            if share and not sender.give(share):
                return
        bar.update(len(batch))
        failed = 0
        for sender in senders:
            if not sender.listen():
                return
            failed += sender.failed
        if failed:
            bar.set_postfix(failed=failed, refresh=False)


def share_of(processes: int, partitions: int) -> Callable[[bytes], int]:
    """Which process owns a key: the partition produce gives it on a topic of `partitions`, mod `processes`.

    Any fixed function of the key keeps each key in one process. This one also gives
    each process whole partitions when the topic has that many (so `processes` is best
    a divisor of the partition count): each partition's batches fill as fast as with one
    process, and a partition's keyed records go through one process, in input order.

    >>> own = share_of(2, 4)
    >>> sorted({own(f"SHP-{i}".encode()) for i in range(20)}), own(b"SHP-1") == own(b"SHP-1")
    ([0, 1], True)
    """
    partition_of = KeyPartitions(list(range(partitions)))
    return lambda key: partition_of(key) % processes  # type: ignore[operator]


def _collect(senders: list[_Sender]) -> bool:
    """End every process's input and read its report; Ctrl-C makes them give up waiting, a second kills them.

    Returns whether an interrupt came while waiting.
    """
    interrupted = False
    for sender in senders:
        sender.end()
    while waiting := [s for s in senders if s.outcome is None and not s.gone]:
        try:
            for conn in wait([s.results for s in waiting]):
                next(s for s in waiting if s.results is conn).listen(block=True)
        except KeyboardInterrupt:
            for sender in waiting:
                sender.kill() if interrupted else sender.signal(signal.SIGINT)
            interrupted = True
    for sender in senders:
        sender.process.join()
    return interrupted


def _outcome(settings: Settings, senders: list[_Sender], elapsed: float, interrupted: bool) -> ProduceReport:
    """The summed report, or the error of the run: a process that died, one that raised, a broker gone."""
    reports = [s.outcome if isinstance(s.outcome, ProduceReport) else s.unreported() for s in senders]
    report = ProduceReport.alongside(reports, elapsed, interrupted)
    dead = [s for s in senders if s.outcome is None]
    if dead:
        problems = report.problems()
        raise SenderDied(
            f"{'; '.join(s.death() for s in dead)}: input stopped after {report.handed} records, {report.sent} "
            f"confirmed, {report.failed + report.unconfirmed} not" + (f": {problems}" if problems else ""))
    for sender in senders:
        if isinstance(sender.outcome, PipelineError):
            raise sender.outcome
    if report.broker_away:
        raise broker_away(settings, report)
    return report


class _Sender:
    """One sender process, its input pipe and its report pipe, as the parent sees them."""

    def __init__(self, settings: Settings, topic: str, index: int, of: int, before: list[_Sender]) -> None:
        self.index, self.of = index, of
        inbox, self.records = multiprocessing.Pipe(duplex=False)
        self.results, outbox = multiprocessing.Pipe(duplex=False)
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.records.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        # The child closes the parent's ends it inherits: a copy of an input's writing end would keep that
        # pipe open after the parent closed its own.
        inherited = [self.records, self.results, *(c for s in before for c in (s.records, s.results))]
        self.process: BaseProcess = multiprocessing.get_context("fork").Process(
            target=_sender_main, args=(settings, topic, inbox, outbox, inherited), name=f"produce-{index + 1}",
            daemon=True)
        self.process.start()
        inbox.close()
        outbox.close()
        self.given = self.acked = self.failed = 0
        self.outcome: ProduceReport | PipelineError | None = None
        self.gone = False  # its report pipe closed

    def give(self, share: list[KeyValue]) -> bool:
        """Send records to the process; False when it no longer reads (it stopped or died)."""
        try:
            self.records.send(share)
        except OSError:
            return False
        self.given += len(share)
        return True

    def listen(self, block: bool = False) -> bool:
        """Read what the process said (one message when `block`); False once it has ended, reported or not."""
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)  # an interrupt mid-message would garble the rest
        try:
            while block or self.results.poll():
                block = False
                kind, value = self.results.recv()
                if kind == "progress":
                    self.acked, self.failed = value
                else:
                    self.outcome = value
        except (EOFError, OSError):
            self.gone = True
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        return self.outcome is None and not self.gone

    def end(self) -> None:
        """No more input (the pipe's end, even after a message cut short): the process flushes and reports."""
        self.records.close()

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.process.pid is not None and self.process.exitcode is None:
                os.kill(self.process.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def unreported(self) -> ProduceReport:
        """What is known of a process without a report: its last progress, the rest of its share unconfirmed."""
        return ProduceReport(self.acked, self.failed, 0.0, 0.0,
                             unconfirmed=self.given - self.acked - self.failed,
                             first_error=None if self.outcome is None else str(self.outcome))

    def death(self) -> str:
        self.process.join()
        code = self.process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return (f"producer process {self.index + 1} of {self.of} (pid {self.process.pid}) died ({how}) "
                f"before reporting, holding {self.given - self.acked - self.failed} unconfirmed records")


def _sender_main(settings: Settings, topic: str, inbox: Connection, outbox: Connection,
                 inherited: list[Connection]) -> None:
    """A sender process: its share of the records, from the pipe, through the single-process sender."""
    for conn in inherited:
        conn.close()
    die_with_parent()  # its own process group: Ctrl-C reaches the parent, which tells it what to do
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPS)
    last = 0.0

    def chunks() -> Iterator[list[KeyValue]]:
        while True:
            try:
                yield inbox.recv()
            except EOFError:
                return

    def progress(_handed: int, tally: Any) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= _PROGRESS_EVERY:
            last = now
            outbox.send(("progress", (tally.acked, tally.failed)))

    try:
        outcome: ProduceReport | PipelineError = send_batches(settings, chunks(), topic, progress)
    except PipelineError as exc:
        outcome = exc
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a late Ctrl-C must not cost the report
    outbox.send(("report", outcome))


class _TermAsInterrupt:
    """While sending, SIGTERM stops the run as Ctrl-C does (only the main thread can set a handler)."""

    def __enter__(self) -> None:
        self.main = threading.current_thread() is threading.main_thread()
        if self.main:
            self.previous = signal.signal(signal.SIGTERM, _interrupt)

    def __exit__(self, *_exc: object) -> None:
        if self.main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if self.previous is None else self.previous)


def _interrupt(_sig: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt
