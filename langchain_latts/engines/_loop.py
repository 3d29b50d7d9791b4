"""A long-lived event loop on its own thread, shared by sync and async callers.

vLLM's ``AsyncLLM`` is bound to the event loop it first ran on, while LangChain calls a
chat model from fresh loops (``asyncio.run`` per ``invoke``), pytest's per-test loops,
notebooks and thread pools. So each engine lives on one :class:`LoopThread`; callers
submit coroutines to it and wait, and a caller's cancellation (task cancel or Ctrl-C)
is forwarded: the coroutine on the loop is cancelled, and the caller waits (bounded)
for its cleanup -- aborting requests in the engine -- before the cancellation returns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a cancelled caller waits for the loop side to finish aborting, in seconds.
CLEANUP_WAIT_S = 10.0


class LoopThread:
    """An asyncio loop running forever on a daemon thread, started on first use."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop (started on first access)."""
        with self._lock:
            if self._loop is None or not self._loop.is_running():
                self._start()
            assert self._loop is not None
            return self._loop

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        thread = threading.Thread(target=main, name=self._name, daemon=True)
        thread.start()
        ready.wait()
        self._loop, self._thread = loop, thread

    @property
    def running(self) -> bool:
        """Whether the loop was started and still runs."""
        return self._loop is not None and self._loop.is_running()

    def in_loop_thread(self) -> bool:
        """Whether the caller runs on this loop's thread (where blocking would deadlock)."""
        return self._thread is not None and threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> tuple[concurrent.futures.Future[T], concurrent.futures.Future[None]]:
        """Schedule ``coro``; returns its result future and a future set once it has ended.

        The second future lets a cancelled caller wait until the coroutine's own
        ``finally``/``except CancelledError`` cleanup has run on the loop.
        """
        ended: concurrent.futures.Future[None] = concurrent.futures.Future()

        async def guarded() -> T:
            try:
                return await coro
            finally:
                ended.set_result(None)

        return asyncio.run_coroutine_threadsafe(guarded(), self.loop), ended

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on this loop from any other loop; cancellation is forwarded."""
        if self.in_loop_thread():
            return await coro
        result, ended = self.submit(coro)
        try:
            return await asyncio.wrap_future(result)
        except asyncio.CancelledError:
            result.cancel()
            await asyncio.wait([asyncio.wrap_future(ended)], timeout=CLEANUP_WAIT_S)
            raise

    def run_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on this loop and block for its result; Ctrl-C is forwarded."""
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError(
                "a synchronous call (invoke/stream/batch) was made from the engine's own "
                "event loop thread, where it would deadlock; use the async API (ainvoke) there."
            )
        result, ended = self.submit(coro)
        try:
            return result.result()
        except KeyboardInterrupt:
            result.cancel()
            concurrent.futures.wait([ended], timeout=CLEANUP_WAIT_S)
            raise

    def stop(self) -> None:
        """Cancel what still runs on the loop, stop it and join the thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None or not loop.is_running():
            return

        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if thread is not threading.current_thread():
            try:
                asyncio.run_coroutine_threadsafe(drain(), loop).result(timeout=CLEANUP_WAIT_S)
            except (concurrent.futures.TimeoutError, RuntimeError):
                logger.warning("tasks on %s did not finish cancelling in time", self._name)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=CLEANUP_WAIT_S)
        else:
            loop.call_soon(loop.stop)
