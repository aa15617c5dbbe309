"""Fail loudly: a crashed task ends the process with EXIT_CRASHED, its error logged; a normal stop does not."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pipeline import fatal


class Exited(BaseException):
    def __init__(self, code: int) -> None:
        self.code = code


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        raise Exited(code)

    monkeypatch.setattr(fatal.os, "_exit", fake_exit)
    return codes


def test_guarded_crash_exits_with_the_error_logged(exits: None, caplog: pytest.LogCaptureFixture,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    async def agent() -> None:
        raise RecursionError("maximum recursion depth exceeded")

    with caplog.at_level(logging.CRITICAL), pytest.raises(Exited) as info:
        asyncio.run(fatal.guarded("the ledger agent", agent))
    assert info.value.code == fatal.EXIT_CRASHED != 0
    assert "the ledger agent crashed (RecursionError: maximum recursion depth exceeded)" in caplog.text
    err = capsys.readouterr().err
    assert "FATAL: the ledger agent crashed" in err and "Traceback" in err


def test_cancellation_and_results_pass_through(exits: None) -> None:
    async def body() -> int:
        return 7

    async def main() -> None:
        assert await fatal.guarded("x", body) == 7
        task = asyncio.ensure_future(fatal.guarded("x", lambda: asyncio.sleep(10)))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_watched_task_that_fails_exits(exits: list[int]) -> None:
    async def boom() -> None:
        raise ValueError("checkpointer bug")

    async def main() -> None:
        fatal.watch(asyncio.ensure_future(boom()), "the checkpoint task")
        await asyncio.sleep(0.01)

    asyncio.run(main())  # the real os._exit never returns; the fake one is only recorded from a callback
    assert exits == [fatal.EXIT_CRASHED]


def test_watched_task_cancelled_or_finished_does_not_exit(exits: list[int]) -> None:
    async def main() -> None:
        done = fatal.watch(asyncio.ensure_future(asyncio.sleep(0)), "a")
        pending = fatal.watch(asyncio.ensure_future(asyncio.sleep(10)), "b")
        await done
        pending.cancel()
        await asyncio.sleep(0.01)

    asyncio.run(main())
    assert exits == []
