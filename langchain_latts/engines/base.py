"""The engine interface: where branch tokens come from.

An engine runs one *branch* -- one sampled completion of a prompt -- per request, so
that any branch can be aborted without touching the others. Engines own an event loop
of their own (vLLM's ``AsyncLLM`` is bound to the loop it first ran on): callers from
any thread or loop hand coroutines to :meth:`Engine.run` / :meth:`Engine.run_sync`.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import SecretStr

from langchain_latts.engines._loop import LoopThread
from langchain_latts.engines._prompt import render_chat

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Speculative decoding methods accepted by name (vLLM's ``speculative_config.method``).
SpeculativeMethod = Literal["draft_model", "ngram", "eagle", "eagle3"]
SPECULATIVE_METHODS: tuple[str, ...] = ("draft_model", "ngram", "eagle", "eagle3")


@dataclass(frozen=True)
class SpeculativeConfig:
    """Speculative decoding: a drafter proposes ``num_speculative_tokens``, the target verifies.

    ``model`` is the draft model (``draft_model``) or the EAGLE head (``eagle``/``eagle3``);
    ``ngram`` drafts by looking up the prompt and needs no model.
    """

    method: SpeculativeMethod
    num_speculative_tokens: int
    model: str | None = None
    prompt_lookup_min: int = 2
    prompt_lookup_max: int = 5
    #: Dynamic speculation: inclusive ``(first_batch, last_batch, k)`` ranges starting at 1
    #: (vLLM's ``num_speculative_tokens_per_batch_size``; ``num_speculative_tokens`` is then
    #: the largest ``k``). None: always ``num_speculative_tokens``.
    schedule: tuple[tuple[int, int, int], ...] | None = None

    def to_vllm(self) -> dict[str, Any]:
        """The ``speculative_config`` dict of vLLM's engine arguments."""
        config: dict[str, Any] = {
            "method": self.method,
            "num_speculative_tokens": self.num_speculative_tokens,
        }
        if self.method == "ngram":
            config["prompt_lookup_min"] = self.prompt_lookup_min
            config["prompt_lookup_max"] = self.prompt_lookup_max
        else:
            config["model"] = self.model
        if self.schedule is not None:
            config["num_speculative_tokens_per_batch_size"] = [list(r) for r in self.schedule]
        return config


@dataclass(frozen=True)
class EngineConfig:
    """Everything that needs a separate engine. Equal configs share one engine per process."""

    model: str
    speculative: SpeculativeConfig | None = None
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    kv_cache_gib: float | None = None
    #: Share of each GPU's memory (None: what the process's other engines left, see
    #: :func:`~langchain_latts.engines.vllm_local.gpu_share`). Unused on CPU.
    gpu_memory_utilization: float | None = None
    dtype: str = "auto"
    #: None: the platform's default (eager on CPU, CUDA graphs on GPU).
    enforce_eager: bool | None = None
    #: Extra ``AsyncEngineArgs`` as a JSON object (a string, so the config stays hashable).
    extra_json: str = "{}"
    #: OpenAI-compatible vLLM servers to run branches on instead of an in-process engine
    #: (base URLs ending in ``/v1``; see :mod:`~langchain_latts.engines.vllm_server`).
    endpoints: tuple[str, ...] = ()
    #: The servers' API key (``vllm serve --api-key``); masked in every repr.
    api_key: SecretStr | None = field(default=None, repr=False)


@dataclass(frozen=True)
class BranchRequest:
    """One branch: sampling settings for a single completion of the prompt."""

    prompt_token_ids: tuple[int, ...]
    max_tokens: int
    temperature: float = 0.8
    top_p: float = 1.0
    #: Sample among this many most likely tokens only (None: no cut).
    top_k: int | None = None
    #: Drop tokens less likely than this share of the most likely one (None: no cut).
    min_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    priority: int = 0
    #: Keep generating past the end-of-sequence token (for timing runs of a fixed length).
    ignore_eos: bool = False
    #: An EBNF grammar the output must match (vLLM structured outputs); None: free text.
    grammar: str | None = None
    #: The call's deadline (``time.monotonic()``): an engine that retries stops retrying then.
    deadline: float | None = None
    #: Log-probs of the top ``logprobs`` candidates per generated token (vLLM's
    #: ``logprobs=k``), for confidence measures; None: none.
    logprobs: int | None = None


@dataclass(frozen=True)
class SpecDecodeStats:
    """Speculative-decoding counts of one branch (or summed over several)."""

    num_drafts: int = 0
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0

    @property
    def acceptance_rate(self) -> float | None:
        """Accepted / proposed draft tokens (None before any draft)."""
        return self.num_accepted_tokens / self.num_draft_tokens if self.num_draft_tokens else None

    @property
    def mean_acceptance_length(self) -> float | None:
        """Tokens produced per target step: 1 + accepted / drafts (None before any draft)."""
        return 1 + self.num_accepted_tokens / self.num_drafts if self.num_drafts else None

    def __add__(self, other: SpecDecodeStats) -> SpecDecodeStats:
        return SpecDecodeStats(
            self.num_drafts + other.num_drafts,
            self.num_draft_tokens + other.num_draft_tokens,
            self.num_accepted_tokens + other.num_accepted_tokens,
        )


@dataclass
class BranchUpdate:
    """New output of a running branch (text and token count since the previous update)."""

    text_delta: str
    num_new_tokens: int
    finished: bool = False
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    spec: SpecDecodeStats | None = None
    num_cached_tokens: int = 0
    #: Why the branch failed (``finish_reason="error"``): it then does not vote.
    error: str | None = None
    #: Which server produced this output (server engines; None in-process).
    server: str | None = None
    #: Per new token, its candidates' log-probs (when the request asked for ``logprobs``).
    top_logprobs: list[list[float]] | None = None
    #: Per new token, the log-prob of the token sampled (when the request asked for ``logprobs``).
    token_logprobs: list[float] | None = None


@dataclass
class EngineStats:
    """What an engine measured about itself at start-up (used for deadline checks)."""

    #: Seconds the last start took.
    start_s: float = 0.0
    #: Fastest decode step seen in the warm-up request: no deadline shorter than this
    #: can produce a token.
    min_step_s: float = 0.0
    #: Sequences the engine runs at once (further branches wait in its queue).
    max_num_seqs: int = 0


class Engine(abc.ABC):
    """An inference engine that runs branches as independent, abortable requests."""

    config: EngineConfig

    @abc.abstractmethod
    def branch(self, request: BranchRequest, request_id: str) -> AsyncIterator[BranchUpdate]:
        """Stream one branch. Must be iterated on the engine's loop (inside :meth:`run`)."""

    @abc.abstractmethod
    async def abort(self, request_ids: Sequence[str]) -> None:
        """Abort running branches (unknown or finished ids are ignored)."""

    @abc.abstractmethod
    async def ensure_started(self, deadline: float | None = None) -> EngineStats:
        """Start the engine if needed (on its loop); returns its start-up measurements.

        Waits at most until ``deadline`` (``time.monotonic()``), then raises TimeoutError
        while the start goes on in the background."""

    @abc.abstractmethod
    def render_prompt(self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None,
                      template_kwargs: Mapping[str, Any] | None = None) -> list[int]:
        """Apply the model's chat template (with offered ``tools`` and the template's options,
        ``chat_template_kwargs``) and tokenize (needs a started engine); input the tokenizer
        cannot encode is a LattsValueError."""

    @property
    def tokenizer(self) -> Any:
        """The tokenizer prompts are rendered with (None before the engine started)."""
        return getattr(self, "_tokenizer", None)

    @abc.abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text``, without special tokens (needs a started engine)."""

    @abc.abstractmethod
    def num_unfinished_requests(self) -> int:
        """Requests the engine still holds (0 when idle: nothing leaked)."""

    @abc.abstractmethod
    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the engine's loop from any loop; cancelling cancels it there."""

    @abc.abstractmethod
    def run_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the engine's loop from synchronous code (works inside a running loop)."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Stop the engine and its loop; further use starts it again."""

    @property
    @abc.abstractmethod
    def max_model_len(self) -> int:
        """Longest prompt + output the started engine accepts, in tokens."""


class LoopEngine(Engine):
    """An engine on its own event-loop thread, started by one shared task: what the
    in-process engine and the server fleet have in common.

    Subclasses say whether they are ``started``, how to ``_start`` (returning the start-up
    measurements, setting ``_max_model_len``) and how to ``_close``.
    """

    def __init__(self, config: EngineConfig, loop_name: str) -> None:
        self.config = config
        self._loop = LoopThread(loop_name)
        self._stats = EngineStats()
        self._max_model_len = 0
        self._tokenizer: Any = None
        self._start_task: asyncio.Task[EngineStats] | None = None

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return await self._loop.run(coro)

    def run_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_sync(coro)

    @property
    @abc.abstractmethod
    def started(self) -> bool:
        """Whether the engine is up and can take branches."""

    @property
    def stats(self) -> EngineStats:
        """Start-up measurements of the running engine."""
        return self._stats

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    # Both engines render with the model's own tokenizer (``_tokenizer``, set by ``_start``).
    def render_prompt(self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None,
                      template_kwargs: Mapping[str, Any] | None = None) -> list[int]:
        return render_chat(self._tokenizer, messages, tools, template_kwargs)

    def tokenize(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    # Both engines time the same warm-up branch once started: its fastest decode step is a
    # lower bound on any deadline (``EngineStats.min_step_s``).
    def warmup_request(self, tokenizer: Any) -> BranchRequest:
        """A short greedy branch of a fixed length: the BOS token four times, 8 tokens."""
        bos = getattr(tokenizer, "bos_token_id", None) or 0
        return BranchRequest(prompt_token_ids=(bos,) * 4, max_tokens=8, temperature=0.0, ignore_eos=True)

    @staticmethod
    def fastest_step(stamps: Sequence[float]) -> float:
        """The shortest gap between consecutive token arrivals (0.0 with fewer than two)."""
        return min((b - a for a, b in itertools.pairwise(stamps)), default=0.0)

    async def ensure_started(self, deadline: float | None = None) -> EngineStats:
        """Start (or restart) the engine; wait for it at most until ``deadline``.

        ``deadline`` is a ``time.monotonic()`` value. The start runs as one shared task
        that callers only wait for: a caller whose deadline passes gets
        :class:`TimeoutError` while the engine keeps starting for the next call.
        """
        if self.started:
            return self._stats
        if self._start_task is None or self._start_task.done():
            self._start_task = asyncio.get_running_loop().create_task(self._start(deadline))
        task = self._start_task
        if deadline is None:
            return await asyncio.shield(task)
        return await asyncio.wait_for(asyncio.shield(task), timeout=max(0.0, deadline - time.monotonic()))

    @abc.abstractmethod
    async def _start(self, deadline: float | None) -> EngineStats:
        """Start the engine (on its loop); ``deadline`` bounds retries when given."""

    @abc.abstractmethod
    async def _close(self) -> None:
        """Release what the engine holds (on its loop); a closed engine starts again on use."""

    def shutdown(self) -> None:
        if self._loop.running:
            try:
                self._loop.run_sync(self._close())
            except RuntimeError:
                logger.debug("could not close %s on its loop", type(self).__name__, exc_info=True)
        self._loop.stop()
        self._start_task = None
