"""Fail loudly: a crashed agent, timer or background task takes its whole process down.

A worker whose ledger agent died but whose process lives on consumes nothing
and reports nothing; that is the worst state a stream processor can be in. So
every long-running task of the worker, the store and the witness ends in
`crash` when it raises: the error and its traceback go to the log (and to
stderr), and the process exits with `EXIT_CRASHED` at once, without a graceful
drain that could itself hang. A supervisor (compose `restart:`, systemd,
Kubernetes) then restarts it, and the committed offsets replay whatever was not
sealed yet: the ledger is safe against a kill at any point (docs/design.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

log = logging.getLogger(__name__)

EXIT_CRASHED = 70  # EX_SOFTWARE (sysexits.h): an internal error; restart me

T = TypeVar("T")


def crash(what: str, exc: BaseException | None = None) -> NoReturn:
    """Log `what` crashed (with the traceback of `exc`) and exit the process with EXIT_CRASHED now."""
    detail = f"{type(exc).__name__}: {exc}" if exc is not None else "see the error above"
    message = (f"{what} crashed ({detail}); exiting with status {EXIT_CRASHED} so a supervisor restarts "
               "the process and the committed offsets replay what was not sealed")
    try:
        log.critical(message, exc_info=exc)
        for handler in logging.getLogger().handlers + log.handlers:
            handler.flush()
        text = "".join(traceback.format_exception(exc)) if exc is not None else ""
        sys.stderr.write(f"FATAL: {message}\n{text}")
        sys.stderr.flush()
        sys.stdout.flush()
    finally:
        os._exit(EXIT_CRASHED)


async def guarded(what: str, body: Callable[[], Awaitable[T]]) -> T:
    """Await `body()`; any exception but cancellation (a normal stop) crashes the process."""
    try:
        return await body()
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # noqa: BLE001 - anything at all: that is the point
        crash(what, exc)


def watch(task: asyncio.Task[Any], what: str) -> asyncio.Task[Any]:
    """Crash the process when `task` ends with an exception (cancellation excepted)."""

    def done(t: asyncio.Task[Any]) -> None:
        if not t.cancelled() and t.exception() is not None:
            crash(what, t.exception())

    task.add_done_callback(done)
    return task
