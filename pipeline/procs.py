"""Child processes that never outlive their parent: used by the demo and the embedded broker."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the parent dies, even by kill -9.

    The child also gets its own process group, so a Ctrl-C reaches only the
    parent, which then stops its children in order.
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # pragma: no cover - not Linux
        pass
    os.setpgrp()


def spawn(args: Sequence[str], env: dict[str, str] | None = None, log_file: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a child bound to this process's life; its output goes to `log_file` or nowhere."""
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            list(args), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent, env=env,
        )
    finally:
        if out is not subprocess.DEVNULL:
            out.close()


def stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
    """Signal a child and wait; kill it if it does not exit in time. Returns its exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
