"""Progress while a call thinks: branch events forwarded to LangChain callbacks.

Each time a branch ends, the branch runner (on the engine's loop thread) reports the
finished and running counts, the current votes and the leader. :class:`ProgressEmitter`
hands that to the caller's callbacks as the custom event ``latts_progress`` of the
model's run, so ``astream_events`` consumers (a chat UI, LangSmith) watch the vote form::

    async for event in llm.astream_events("Compute 12 + 35 - 7.", version="v2"):
        if event["event"] == "on_custom_event" and event["name"] == "latts_progress":
            print(event["data"]["finished"], event["data"]["votes"])

Sync callers' handlers run on the engine's loop thread; async callers' handlers run on
the caller's own loop (delivered in order, and all delivered before the call returns).

LangChain hands the run's callback manager to ``_generate``/``_agenerate`` but not to
``_stream``/``_astream``; :meth:`LatencyOptimalTTSLLM.stream`/``astream`` therefore fix
the run's id in its config and leave the config in :data:`STREAM_RUN`, from which the
same handlers are rebuilt (:meth:`ProgressEmitter.for_stream`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from contextvars import ContextVar
from typing import Any
from uuid import UUID

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.runnables import RunnableConfig

__all__ = ["PROGRESS_EVENT", "STREAM_RUN", "ProgressEmitter"]

#: The name of the custom event (``on_custom_event`` in ``astream_events``).
PROGRESS_EVENT = "latts_progress"

#: The config of the ``stream``/``astream`` call running in this context (its
#: ``run_id`` fixed), or None.
STREAM_RUN: ContextVar[RunnableConfig | None] = ContextVar("latts_stream_run", default=None)


class ProgressEmitter:
    """Forwards progress dicts from the engine's loop to one run's callback handlers."""

    def __init__(self, handlers: list[Any], run_id: UUID, *, tags: list[str] | None = None,
                 metadata: dict[str, Any] | None = None, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._run_id = run_id
        self._loop = loop
        self._pending: list[concurrent.futures.Future[Any]] = []
        self._sync = CallbackManager(handlers, tags=tags, metadata=metadata) if loop is None else None
        self._async = AsyncCallbackManager(handlers, tags=tags, metadata=metadata) if loop is not None else None

    @classmethod
    def create(cls, run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
               loop: asyncio.AbstractEventLoop | None = None, *, model_callbacks: Any = None,
               ) -> ProgressEmitter | None:
        """An emitter for the run, or None when nobody listens (nothing to do per branch).

        Without a run manager (the streaming paths), the run is the one in :data:`STREAM_RUN`.
        """
        if run_manager is not None:
            if not run_manager.handlers:
                return None
            return cls(run_manager.handlers, run_manager.run_id, tags=run_manager.tags,
                       metadata=run_manager.metadata, loop=loop)
        config = STREAM_RUN.get()
        if config is None or config.get("run_id") is None:
            return None
        manager = CallbackManager.configure(config.get("callbacks"), model_callbacks, False, config.get("tags"),
                                            None, config.get("metadata"))
        if not manager.handlers:
            return None
        run_id: UUID = config["run_id"]  # type: ignore[assignment]
        return cls(manager.handlers, run_id, tags=manager.tags, metadata=manager.metadata, loop=loop)

    def __call__(self, data: dict[str, Any]) -> None:
        if self._sync is not None:
            self._sync.on_custom_event(PROGRESS_EVENT, data, run_id=self._run_id)
        elif self._async is not None and self._loop is not None:
            event = self._async.on_custom_event(PROGRESS_EVENT, data, run_id=self._run_id)
            self._pending.append(asyncio.run_coroutine_threadsafe(event, self._loop))

    async def flush(self) -> None:
        """Wait (on the caller's loop) until every event has reached the handlers."""
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*(asyncio.wrap_future(f) for f in pending))
