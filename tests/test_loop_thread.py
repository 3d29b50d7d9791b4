"""The engine's event-loop thread: any caller, cancellation forwarded, cleanup awaited."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import pytest

from langchain_latts.engines._loop import LoopThread


@pytest.fixture
def loop_thread():  # type: ignore[no-untyped-def]
    lt = LoopThread("test-loop")
    yield lt
    lt.stop()


async def _where() -> str:
    await asyncio.sleep(0)
    return threading.current_thread().name


def test_sync_callers_run_on_the_loop_thread(loop_thread: LoopThread) -> None:
    assert loop_thread.run_sync(_where()) == "test-loop"
    # A fresh asyncio.run per call (what sync LangChain code does) reuses the same loop.
    assert asyncio.run(loop_thread.run(_where())) == "test-loop"
    assert asyncio.run(loop_thread.run(_where())) == "test-loop"


def test_sync_call_inside_a_running_loop(loop_thread: LoopThread) -> None:
    async def notebook_cell() -> str:
        return loop_thread.run_sync(_where())  # blocking call while a loop runs here

    assert asyncio.run(notebook_cell()) == "test-loop"


def test_sync_call_from_the_loop_thread_is_refused(loop_thread: LoopThread) -> None:
    async def reenter() -> None:
        loop_thread.run_sync(_where())

    with pytest.raises(RuntimeError, match="would deadlock; use the async API"):
        loop_thread.run_sync(reenter())


async def test_cancellation_is_forwarded_and_cleanup_awaited(loop_thread: LoopThread) -> None:
    cleaned = threading.Event()

    async def long_call() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.05)  # e.g. aborting requests in the engine
            cleaned.set()

    task = asyncio.create_task(loop_thread.run(long_call()))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned.is_set()  # the caller saw the cancellation only after the cleanup ran


def test_ctrl_c_is_forwarded(loop_thread: LoopThread) -> None:
    cleaned = threading.Event()

    async def long_call() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cleaned.set()

    # A process started in the background by a non-interactive shell ignores SIGINT
    # (POSIX), so Python never installed its Ctrl-C handler: install it for this test.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.1, os.kill, args=(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            loop_thread.run_sync(long_call())
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert cleaned.is_set()


def test_errors_propagate(loop_thread: LoopThread) -> None:
    async def boom() -> None:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        loop_thread.run_sync(boom())


def test_restarts_after_stop(loop_thread: LoopThread) -> None:
    assert loop_thread.run_sync(_where()) == "test-loop"
    loop_thread.stop()
    assert loop_thread.run_sync(_where()) == "test-loop"
