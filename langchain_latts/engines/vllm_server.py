"""A fleet of vLLM OpenAI-compatible servers behind the :class:`Engine` interface.

Set ``endpoints=["http://host:8001/v1", ...]`` on the chat model and its branches run on
these servers (``vllm serve MODEL``, each replica with its own speculative decoding, or
one server spanning GPUs with vLLM's own tensor/data parallelism) instead of an
in-process engine. Everything above the engine -- planner, early stop, verifiers,
budgets, deadlines -- is unchanged.

* **One branch, one streamed completion.** The prompt goes as token ids (rendered here
  with the model's chat template), so every replica sees the same prompt; the server
  returns the new token ids with the text (``return_token_ids``) and, on its last chunk,
  the request's speculative-decoding counts when it runs with
  ``--per-request-spec-decode-metrics summary`` (otherwise acceptance is reported as
  unavailable). Closing the stream -- at the deadline, on early stop, on cancellation --
  makes vLLM abort the request.
* **Placement.** A branch goes to the replica in rotation with the fewest outstanding
  branches (ties: the one that served fewest).
* **Failures.** Opening a stream is retried with tenacity on connection errors, timeouts
  and 5xx answers, until the call's deadline (``BranchRequest.deadline``), each attempt on
  the best replica that has not failed this branch yet. A replica failing
  ``FAILURES_TO_EVICT`` times in a row leaves the rotation; a background task probes its
  ``/health`` and brings it back. A stream that breaks mid-branch continues on another
  replica from the tokens already received (the prompt plus those tokens, a fresh sample
  of the rest). When no replica is left, the branch raises
  :class:`~langchain_latts.errors.FleetUnavailableError` naming every endpoint and its
  last error. A malformed or hostile answer (bad JSON, wrong token counts, an oversized
  body) ends only that branch, with ``finish_reason="error"``; nothing a server sends is
  ever evaluated.
* **Secrets.** The API key (``api_key``, by default ``$VLLM_API_KEY``) is a pydantic
  ``SecretStr``: sent as a bearer header, never logged, never in metadata or traces.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)
from tenacity.stop import stop_base

from langchain_latts.engines.base import (
    BranchRequest,
    BranchUpdate,
    EngineConfig,
    EngineStats,
    LoopEngine,
)
from langchain_latts.engines.fleet_protocol import (
    MAX_BYTES_PER_TOKEN,
    MAX_EVENT_BYTES,
    BranchFailure,
    Chunk,
    ReplicaError,
    completion_body,
    describe,
    events,
    parse_prometheus,
    read_chunk,
    server_root,
)
from langchain_latts.engines.fleet_replicas import FAILURES_TO_EVICT, PROBE_INTERVAL_S, Replica, pick_replica
from langchain_latts.errors import EngineStartError, FleetUnavailableError, LattsValueError

logger = logging.getLogger(__name__)


__all__ = ["VLLMServerEngine"]

#: Seconds to connect to a server, and the longest silence of a running stream.
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 30.0
#: Attempts to open one branch's stream (over all replicas), within its deadline.
OPEN_ATTEMPTS = 6
#: Times one branch may move to another replica after its stream broke.
MAX_FAILOVERS = 4
#: How long a start waits for at least one server to answer (servers may still be starting).
START_WAIT_S = 120.0


# -- the engine ----------------------------------------------------------------------------
class VLLMServerEngine(LoopEngine):
    """Branches on a fleet of vLLM OpenAI servers (see the module docstring)."""

    def __init__(self, config: EngineConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        """``transport`` replaces the network (unit tests feed it recorded or hostile answers)."""
        if not config.endpoints:
            raise LattsValueError.bad("endpoints", [], "must list at least one server", "e.g. ['http://127.0.0.1:8001/v1']")
        super().__init__(config, "latts-fleet")
        self.replicas = [Replica(url) for url in config.endpoints]
        self._client: httpx.AsyncClient | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._open: dict[str, httpx.Response] = {}
        self._transport = transport

    @property
    def started(self) -> bool:
        return self._client is not None and self._tokenizer is not None

    def status(self) -> dict[str, str | None]:
        """Every endpoint and its last error (None: serving)."""
        return {r.url: None if r.in_rotation and not r.failures else r.last_error for r in self.replicas}

    async def _start(self, deadline: float | None) -> EngineStats:
        """Connect (waiting up to ``START_WAIT_S`` for a server to answer), load the
        tokenizer, check the served model and time a warm-up branch per server."""
        started = time.perf_counter()
        headers = {} if self.config.api_key is None else {
            "Authorization": f"Bearer {self.config.api_key.get_secret_value()}"}
        self._client = httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256), transport=self._transport)
        try:
            tokenizer = await asyncio.to_thread(_load_tokenizer, self.config.model)
        except Exception as e:
            raise EngineStartError(
                f"could not load the tokenizer of model={self.config.model!r} ({describe(e)}); with endpoints, "
                "model must name what the servers serve (vllm serve MODEL) and be loadable here for the chat "
                "template: a local directory or a Hugging Face id.") from e
        cards = await self._describe_servers()
        self._max_model_len = min(cards.values())
        # The engine is not "started" (no tokenizer) until ready: the warm-up takes it as an argument.
        self._stats = EngineStats(start_s=time.perf_counter() - started,
                                  min_step_s=await self._fastest_step(self.warmup_request(tokenizer)))
        self._tokenizer = tokenizer
        self._probe_task = asyncio.get_running_loop().create_task(self._probe_forever())
        logger.info("fleet of %d server(s) ready: %s", len(self.replicas), self.status())
        return self._stats

    async def _describe_servers(self) -> dict[str, int]:
        """``/v1/models`` of every server (waiting for at least one to answer); returns the
        context length of each answering server that serves ``model``."""
        assert self._client is not None
        cards: dict[str, int] = {}

        async def ask(replica: Replica) -> None:
            try:
                response = await self._client.get(f"{replica.url}/models")  # type: ignore[union-attr]
                self._check_auth(replica, response)
                response.raise_for_status()
                models = {m.get("id"): m for m in response.json().get("data", []) if isinstance(m, dict)}
            except (httpx.HTTPError, ValueError, AttributeError) as e:
                replica.failed(describe(e), time.monotonic())
                return
            card = models.get(self.config.model)
            if card is None:
                raise LattsValueError.bad(
                    "model", self.config.model, f"must be served by every endpoint; {replica.url} serves "
                    f"{sorted(map(str, models))}",
                    "Pass model= the name the servers were started with (vllm serve MODEL or --served-model-name).")
            replica.failures, replica.last_error = 0, None
            cards[replica.url] = int(card.get("max_model_len") or 1 << 30)

        async def until_one_answers() -> None:
            await asyncio.gather(*(ask(r) for r in self.replicas if r.url not in cards))
            if not cards:
                raise ReplicaError("no server answered")

        retrying = AsyncRetrying(stop=stop_after_delay(START_WAIT_S), wait=wait_exponential(0.2, max=2),
                                 retry=retry_if_exception_type(ReplicaError), reraise=True)
        try:
            await retrying(until_one_answers)
        except ReplicaError:
            raise self._unavailable(f"none answered GET /v1/models within {START_WAIT_S:.0f} s") from None
        for replica in self.replicas:
            if replica.url not in cards:
                replica.failures = FAILURES_TO_EVICT - 1
                replica.failed(replica.last_error or "did not answer at start", time.monotonic())
        return cards

    async def _fastest_step(self, probe: BranchRequest) -> float:
        """The fastest decode step of the warm-up branch ``probe`` over the replicas (a
        lower bound on any deadline, as in-process)."""
        fastest: list[float] = []
        for replica in [r for r in self.replicas if r.in_rotation]:
            stamps: list[float] = []
            try:
                async for chunk in self._segment(replica, probe, [], f"latts-warmup-{id(replica)}"):
                    if chunk.token_ids:
                        stamps.append(time.perf_counter())
            except (ReplicaError, BranchFailure) as e:
                replica.failed(describe(e), time.monotonic())
                continue
            if len(stamps) > 1:
                fastest.append(self.fastest_step(stamps))
        return min(fastest, default=0.0)

    async def _probe(self, replica: Replica) -> None:
        assert self._client is not None
        try:
            response = await self._client.get(f"{server_root(replica.url)}/health", timeout=CONNECT_TIMEOUT_S)
            replica.probed(response.status_code == 200, time.monotonic(), f"/health answered {response.status_code}")
        except httpx.HTTPError as e:
            replica.probed(False, time.monotonic(), describe(e))

    async def _probe_forever(self) -> None:
        while True:
            now = time.monotonic()
            due = [r for r in self.replicas if not r.in_rotation and r.probe_at <= now]
            if due:
                await asyncio.gather(*(self._probe(r) for r in due))
            await asyncio.sleep(PROBE_INTERVAL_S / 2)

    async def _close(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            await asyncio.gather(self._probe_task, return_exceptions=True)
            self._probe_task = None
        client, self._client, self._tokenizer = self._client, None, None
        if client is not None:
            await client.aclose()

    # -- prompts -------------------------------------------------------------------------
    def num_unfinished_requests(self) -> int:
        return sum(r.outstanding for r in self.replicas)

    async def abort(self, request_ids: Sequence[str]) -> None:
        for request_id in request_ids:
            response = self._open.pop(request_id, None)
            if response is not None:
                await response.aclose()

    async def server_metrics(self) -> dict[str, dict[str, float] | None]:
        """Each server's Prometheus ``/metrics`` (None where it does not answer)."""
        assert self._client is not None

        async def one(replica: Replica) -> dict[str, float] | None:
            try:
                response = await self._client.get(f"{server_root(replica.url)}/metrics")  # type: ignore[union-attr]
                response.raise_for_status()
                return parse_prometheus(response.text)
            except (httpx.HTTPError, ValueError):
                return None

        results = await asyncio.gather(*(one(r) for r in self.replicas))
        return dict(zip((r.url for r in self.replicas), results))

    # -- branches ------------------------------------------------------------------------
    def _check_auth(self, replica: Replica, response: httpx.Response) -> None:
        if response.status_code in (401, 403):
            raise LattsValueError.bad(
                "api_key", "<set>" if self.config.api_key is not None else None,
                f"was refused by {replica.url} ({response.status_code})",
                "Give the key the servers were started with (vllm serve --api-key) as api_key= or $VLLM_API_KEY.")

    def _unavailable(self, why: str) -> FleetUnavailableError:
        status = {r.url: r.last_error for r in self.replicas}
        listing = "; ".join(f"{url}: {error or 'no error recorded'}" for url, error in status.items())
        return FleetUnavailableError(
            f"no server of the fleet could serve this branch ({why}). Endpoints and their last errors: {listing}. "
            "Check that the servers run (python -m vllm.entrypoints.openai.api_server --model MODEL --port N) and "
            "answer GET /health.", endpoints=status)

    async def _pick(self, avoid: Sequence[str]) -> Replica:
        replica = pick_replica(self.replicas, avoid)
        if replica is None:  # every server is out of rotation: probe them all once now
            await asyncio.gather(*(self._probe(r) for r in self.replicas))
            replica = pick_replica(self.replicas, avoid)
        if replica is None:
            raise self._unavailable("every endpoint is out of the rotation")
        return replica

    async def _segment(self, replica: Replica, request: BranchRequest, produced: Sequence[int],
                       request_id: str) -> AsyncIterator[Chunk]:
        """Stream one branch (from ``produced`` tokens on) from one replica; checked chunks."""
        assert self._client is not None
        body = completion_body(self.config.model, request, produced, request_id=request_id)
        limit = MAX_EVENT_BYTES + MAX_BYTES_PER_TOKEN * max(1, body["max_tokens"])
        try:
            async with self._client.stream("POST", f"{replica.url}/completions", json=body) as response:
                self._check_auth(replica, response)
                if response.status_code >= 500:
                    raise ReplicaError(f"{replica.url} answered {response.status_code}")
                if response.status_code >= 400:
                    detail = (await response.aread())[:300].decode("utf-8", errors="replace")
                    raise BranchFailure(f"{replica.url} refused the request ({response.status_code}): {detail}")
                self._open[request_id] = response
                async for payload in events(response, limit):
                    if payload == "[DONE]":
                        return
                    yield read_chunk(payload)
        except httpx.HTTPError as e:  # connect, read, protocol errors and timeouts
            raise ReplicaError(f"{replica.url}: {describe(e)}") from e
        finally:
            self._open.pop(request_id, None)

    async def branch(self, request: BranchRequest, request_id: str) -> AsyncIterator[BranchUpdate]:
        if not self.started:
            raise RuntimeError("the fleet engine is not started: await ensure_started() first")
        produced: list[int] = []
        failed_here: list[str] = []
        for failover in range(MAX_FAILOVERS + 1):
            opened = await self._open_segment(request, produced, failed_here,
                                              f"{request_id}-{failover}" if failover else request_id)
            if isinstance(opened, str):  # the request itself was refused, or the answer is unusable
                yield BranchUpdate("", 0, finished=True, finish_reason="error", error=opened)
                return
            replica = opened.replica
            try:
                async for update in self._follow(request, produced, opened):
                    if update.finished:  # before yielding: the consumer may close the stream there
                        replica.succeeded()
                    yield update
                    if update.finished:
                        return
                raise ReplicaError(f"{replica.url} ended the stream before the branch finished")
            except ReplicaError as e:
                replica.failed(str(e), time.monotonic())
                failed_here.append(replica.url)
                logger.info("branch %s lost %s after %d tokens; continuing on another server", request_id,
                            replica.url, len(produced))
            except BranchFailure as e:
                replica.failed(str(e), time.monotonic())
                yield BranchUpdate("", 0, finished=True, finish_reason="error", error=f"{replica.url}: {e}",
                                   server=replica.url)
                return
            finally:
                replica.outstanding -= 1
                await opened.aclose()
        yield BranchUpdate("", 0, finished=True, finish_reason="error",
                           error=f"the branch lost its server {MAX_FAILOVERS + 1} times ({', '.join(failed_here)})")

    async def _open_segment(self, request: BranchRequest, produced: list[int], failed_here: list[str],
                            request_id: str) -> _Opened | str:
        """Open the branch's stream (from ``produced`` tokens on) on the best replica; retried
        with tenacity on replica errors until it opens, the attempts run out or the deadline
        passes (then :class:`FleetUnavailableError`). A refused request or an unusable first
        answer returns the error message instead (the branch fails, the call goes on)."""

        async def open_once() -> _Opened | str:
            replica = await self._pick(failed_here)
            stream = self._segment(replica, request, produced, request_id)
            replica.outstanding += 1
            try:
                return _Opened(replica, stream, await anext(stream, None))
            except ReplicaError as e:
                replica.outstanding -= 1
                replica.failed(str(e), time.monotonic())
                failed_here.append(replica.url)
                raise
            except BranchFailure as e:
                replica.outstanding -= 1
                replica.failed(str(e), time.monotonic())
                return f"{replica.url}: {e}"
            except BaseException:
                replica.outstanding -= 1
                raise

        stop: stop_base = stop_after_attempt(OPEN_ATTEMPTS)
        if request.deadline is not None:
            stop = stop | stop_after_delay(max(0.0, request.deadline - time.monotonic()))
        retrying = AsyncRetrying(stop=stop, wait=wait_exponential(multiplier=0.05, max=0.5),
                                 retry=retry_if_exception_type(ReplicaError), reraise=True)
        try:
            return await retrying(open_once)
        except ReplicaError as e:
            raise self._unavailable(f"opening its stream failed: {e}") from e

    async def _follow(self, request: BranchRequest, produced: list[int], opened: _Opened) -> AsyncIterator[BranchUpdate]:
        """Updates from an opened stream's checked chunks; ``produced`` grows with its tokens.

        The finishing update waits for the usage chunk (the segment's token count, checked,
        and its speculative-decoding counts); a stream that breaks after the finish still
        finished."""
        segment, pending = 0, None
        budget = request.max_tokens - len(produced)
        server = opened.replica.url
        try:
            async for chunk in opened:
                if chunk.completion_tokens is not None:
                    if chunk.completion_tokens != segment:
                        raise BranchFailure(f"the server counted {chunk.completion_tokens} tokens but sent {segment}")
                    if pending is not None:
                        pending.spec, pending.num_cached_tokens = chunk.spec, chunk.num_cached_tokens
                    continue
                if pending is not None:
                    raise BranchFailure("the server sent output after the branch finished")
                segment += len(chunk.token_ids)
                if segment > budget:
                    raise BranchFailure(f"the server sent {segment} tokens where at most {budget} were asked")
                produced.extend(chunk.token_ids)
                update = BranchUpdate(chunk.text, len(chunk.token_ids), finished=chunk.finish_reason is not None,
                                      finish_reason=chunk.finish_reason, stop_reason=chunk.stop_reason, server=server,
                                      top_logprobs=chunk.top_logprobs, token_logprobs=chunk.token_logprobs)
                if update.finished:
                    pending = update
                else:
                    yield update
        except ReplicaError:
            if pending is None:
                raise
        if pending is not None:
            yield pending


def _load_tokenizer(model: str) -> Any:
    """The chat template and tokenizer of ``model`` (in a worker thread: importing and
    loading take seconds that must not block the engine's loop); an alias or a GGUF file
    is read from its converted folder."""
    from transformers import AutoTokenizer

    from langchain_latts.engines.gguf import tokenizer_of

    return AutoTokenizer.from_pretrained(tokenizer_of(model))


class _Opened:
    """A stream opened on ``replica`` whose first chunk was already read (to know it opened)."""

    def __init__(self, replica: Replica, stream: AsyncIterator[Chunk], first: Chunk | None) -> None:
        self.replica, self.stream, self.first = replica, stream, first

    async def __aiter__(self) -> AsyncIterator[Chunk]:  # type: ignore[misc]
        if self.first is not None:
            yield self.first
        async for chunk in self.stream:
            yield chunk

    async def aclose(self) -> None:
        close = getattr(self.stream, "aclose", None)
        if close is not None:
            try:
                await close()
            except (httpx.HTTPError, RuntimeError):
                logger.debug("error while closing a stream", exc_info=True)
