"""A scripted in-memory engine for unit tests of the branch logic (no vLLM)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any, TypeVar

from langchain_latts.engines.base import BranchRequest, BranchUpdate, Engine, EngineConfig, EngineStats

T = TypeVar("T")


class ScriptedEngine(Engine):
    """Branch ``i`` streams ``scripts[i]`` one piece every ``step_s`` seconds, then stops."""

    def __init__(self, scripts: Sequence[Sequence[str]], step_s: float = 0.01, fail_branch: int | None = None):
        self.config = EngineConfig(model="scripted")
        self.scripts = scripts
        self.step_s = step_s
        self.fail_branch = fail_branch
        self.running: set[str] = set()
        self.aborted: list[str] = []
        self.started_ids: list[str] = []

    async def branch(self, request: BranchRequest, request_id: str) -> AsyncIterator[BranchUpdate]:
        index = int(request_id.rsplit("-", 1)[1])
        self.running.add(request_id)
        self.started_ids.append(request_id)
        try:
            pieces = self.scripts[index]
            for k, piece in enumerate(pieces):
                await asyncio.sleep(self.step_s)
                if self.fail_branch == index:
                    raise RuntimeError("engine exploded")
                last = k == len(pieces) - 1
                yield BranchUpdate(text_delta=piece, num_new_tokens=1, finished=last,
                                   finish_reason="stop" if last else None)
        finally:
            self.running.discard(request_id)

    async def abort(self, request_ids: Sequence[str]) -> None:
        self.aborted.extend(request_ids)

    async def ensure_started(self, deadline: float | None = None) -> EngineStats:
        return EngineStats()

    def render_prompt(self, messages: Sequence[dict[str, Any]]) -> list[int]:
        return [1, 2, 3]

    def num_unfinished_requests(self) -> int:
        return len(self.running)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return await coro

    def run_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run(coro)

    def shutdown(self) -> None:
        pass

    @property
    def max_model_len(self) -> int:
        return 1024
