"""A scripted in-memory engine for unit tests of the branch logic (no vLLM)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from langchain_latts.engines.base import BranchRequest, BranchUpdate, Engine, EngineConfig, EngineStats

T = TypeVar("T")


class ScriptedEngine(Engine):
    """Branch ``i`` streams ``scripts[i]`` one piece (one token) every ``step_s`` seconds
    (plus ``per_running_s`` for every other branch running, like a batch that slows each
    step), then ends with ``finish_reasons[i]`` (default ``"stop"``)."""

    def __init__(self, scripts: Sequence[Sequence[str]], step_s: float = 0.01, fail_branch: int | None = None,
                 finish_reasons: Sequence[str] | None = None, min_step_s: float = 0.0, max_model_len: int = 1024,
                 fail_all: bool = False, confidence: Sequence[float] | None = None,
                 token_logprobs: Sequence[Sequence[float]] | None = None, per_running_s: float = 0.0,
                 tokens_per_update: int = 1):
        self.config = EngineConfig(model="scripted")
        self.scripts = scripts
        self.step_s = step_s
        self.per_running_s = per_running_s
        self.fail_branch = fail_branch
        self.fail_all = fail_all
        self.finish_reasons = finish_reasons
        self.min_step_s = min_step_s
        self._max_model_len = max_model_len
        self.running: set[str] = set()
        self.aborted: list[str] = []
        self.started_ids: list[str] = []
        self.requests: list[BranchRequest] = []
        #: Branch i's token confidence when log-probs are asked for: every candidate at -confidence[i].
        self.confidence = confidence
        #: Branch i's sampled log-prob per token (default: -1 / confidence[i], so a more
        #: confident branch also sampled likelier tokens).
        self.token_logprobs = token_logprobs
        #: Tokens per streamed update (speculation and the fleet send several at once).
        self.tokens_per_update = tokens_per_update

    async def branch(self, request: BranchRequest, request_id: str) -> AsyncIterator[BranchUpdate]:
        index = int(request_id.rsplit("-", 1)[1])
        self.running.add(request_id)
        self.started_ids.append(request_id)
        self.requests.append(request)
        reason = self.finish_reasons[index] if self.finish_reasons else "stop"
        try:
            script, size = self.scripts[index], self.tokens_per_update
            groups = [range(k, min(k + size, len(script))) for k in range(0, len(script), size)]
            for g, tokens in enumerate(groups):
                await asyncio.sleep(self.step_s + self.per_running_s * (len(self.running) - 1))
                if self.fail_branch == index or self.fail_all:
                    raise RuntimeError("engine exploded")
                last = g == len(groups) - 1
                top = sampled = None
                if request.logprobs is not None and (self.confidence is not None or self.token_logprobs is not None):
                    confidence = self.confidence[index] if self.confidence is not None else 1.0
                    top = [[-confidence] * max(1, request.logprobs) for _ in tokens]
                    sampled = [self.token_logprobs[index][k] if self.token_logprobs is not None else -1 / confidence
                               for k in tokens]
                piece = "".join(script[k] for k in tokens)
                yield BranchUpdate(text_delta=piece, num_new_tokens=len(tokens), finished=last,
                                   finish_reason=reason if last else None, top_logprobs=top, token_logprobs=sampled)
        finally:
            self.running.discard(request_id)

    async def abort(self, request_ids: Sequence[str]) -> None:
        self.aborted.extend(request_ids)

    async def ensure_started(self, deadline: float | None = None) -> EngineStats:
        return EngineStats(min_step_s=self.min_step_s)

    def render_prompt(self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None,
                      template_kwargs: Mapping[str, Any] | None = None) -> list[int]:
        self.template_kwargs = template_kwargs
        return [1, 2, 3]

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]

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
        return self._max_model_len
