"""The fleet's wire protocol (pure): what a branch sends to a vLLM OpenAI server and how
what comes back is read and checked.

One branch is one streamed ``/v1/completions`` request with the prompt as token ids
(:func:`completion_body`); every server-sent event is checked by :func:`read_chunk`, and
anything vLLM would not send is a :class:`BranchFailure` (that branch ends) while a
server-side failure is a :class:`ReplicaError` (worth retrying elsewhere). Nothing a
server sends is ever evaluated. No state, no I/O beyond reading one response's bytes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from langchain_latts.engines.base import BranchRequest, SpecDecodeStats
from langchain_latts.errors import LattsValueError

__all__ = ["BranchFailure", "Chunk", "ReplicaError", "completion_body", "describe", "events", "normalize_endpoint",
           "parse_prometheus", "read_chunk", "server_root"]

#: Largest server-sent event, and body bytes allowed per requested token (plus one event).
MAX_EVENT_BYTES = 1 << 20
MAX_BYTES_PER_TOKEN = 4096


class ReplicaError(Exception):
    """A replica failed to serve (connection error, timeout, 5xx, a stream cut short):
    worth retrying, on another replica if there is one."""


class BranchFailure(Exception):
    """A replica answered something unusable for this branch (malformed, hostile, or a 4xx
    for this request): the branch ends with this error; retrying would not help."""


def normalize_endpoint(url: str) -> str:
    """``url`` as the base URL of an OpenAI-compatible server, ending in ``/v1`` (pure).

    A bad URL (no http(s) scheme or host, credentials in it, a query) is a
    :class:`LattsValueError` naming ``endpoints``.
    """
    fix = "Give base URLs of vLLM OpenAI servers, e.g. endpoints=['http://127.0.0.1:8001/v1']."
    if not isinstance(url, str):
        raise LattsValueError.bad("endpoints", url, "must hold URL strings", fix)
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LattsValueError.bad("endpoints", url, "must hold http:// or https:// URLs with a host", fix)
    if parts.username or parts.password:
        raise LattsValueError.bad("endpoints", url, "must not carry credentials",
                                  "Give the servers' key as api_key= (or $VLLM_API_KEY), never in the URL.")
    if parts.query or parts.fragment:
        raise LattsValueError.bad("endpoints", url, "must not carry a query or fragment", fix)
    path = parts.path.rstrip("/")
    if not path.endswith("/v1"):
        path += "/v1"
    return f"{parts.scheme}://{parts.netloc}{path}"


def server_root(endpoint: str) -> str:
    """The server's root URL (where ``/health`` and ``/metrics`` live) of a ``.../v1`` endpoint."""
    return endpoint.removesuffix("/v1")


def completion_body(model: str, request: BranchRequest, produced: Sequence[int], *,
                    request_id: str) -> dict[str, Any]:
    """The ``/v1/completions`` request of one branch that already has ``produced`` tokens (pure)."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": [*request.prompt_token_ids, *produced],
        "max_tokens": request.max_tokens - len(produced),
        "temperature": request.temperature,
        "top_p": request.top_p,
        "stream": True,
        "stream_options": {"include_usage": True},
        "return_token_ids": True,
        "add_special_tokens": False,
        "request_id": request_id,
    }
    if request.top_k is not None:
        body["top_k"] = request.top_k
    if request.min_p is not None:
        body["min_p"] = request.min_p
    if request.seed is not None:
        body["seed"] = request.seed + len(produced)  # a continuation samples afresh
    if request.stop:
        body["stop"] = list(request.stop)
    if request.ignore_eos:
        body["ignore_eos"] = True
    if request.priority:
        body["priority"] = request.priority
    if request.grammar is not None:
        body["structured_outputs"] = {"grammar": request.grammar}
    if request.logprobs is not None:
        body["logprobs"] = request.logprobs
    return body


@dataclass
class Chunk:
    """What one server-sent event of a completion stream says."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    #: ``usage.completion_tokens`` of the usage chunk (None on content chunks).
    completion_tokens: int | None = None
    spec: SpecDecodeStats | None = None
    num_cached_tokens: int = 0
    #: Per token of this chunk, its candidates' log-probs (when asked for).
    top_logprobs: list[list[float]] | None = None
    #: Per token of this chunk, the sampled token's log-prob (when asked for).
    token_logprobs: list[float] | None = None


def read_chunk(payload: str) -> Chunk:
    """One ``data:`` payload of a vLLM completion stream, checked (pure).

    Anything that is not what vLLM sends raises :class:`BranchFailure`; an error event
    raises :class:`ReplicaError` for a server-side (5xx) error, else :class:`BranchFailure`.
    """
    try:
        data = json.loads(payload)
    except ValueError as e:
        raise BranchFailure(f"the server sent an event that is not JSON ({e})") from None
    if not isinstance(data, dict):
        raise BranchFailure(f"the server sent a {type(data).__name__} where an object was expected")
    if "error" in data:
        error = data["error"] if isinstance(data["error"], dict) else {"message": data["error"]}
        message = str(error.get("message"))[:300]
        code = error.get("code")
        if isinstance(code, int) and code < 500:
            raise BranchFailure(f"the server refused the request ({code}): {message}")
        raise ReplicaError(f"the server failed during generation ({code}): {message}")
    chunk = Chunk()
    choices = data.get("choices")
    if not isinstance(choices, list) or len(choices) > 1:
        raise BranchFailure("the server sent an event without a single choice")
    if choices:
        choice = choices[0]
        if not isinstance(choice, dict) or not isinstance(choice.get("text", ""), str):
            raise BranchFailure("the server sent a choice without text")
        ids = choice.get("token_ids")
        if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0
                                                 for t in ids):
            raise BranchFailure("the server sent no token ids (it must be vLLM >= 0.10, which returns them "
                                "with return_token_ids)")
        chunk.text, chunk.token_ids = choice.get("text", ""), ids
        chunk.top_logprobs, chunk.token_logprobs = _logprobs(choice.get("logprobs"), len(ids))
        chunk.finish_reason = choice.get("finish_reason")
        chunk.stop_reason = choice.get("stop_reason")
        if chunk.finish_reason is not None and not isinstance(chunk.finish_reason, str):
            raise BranchFailure("the server sent a finish reason that is not a string")
    usage = data.get("usage")
    if isinstance(usage, dict):
        tokens = usage.get("completion_tokens")
        if not isinstance(tokens, int) or tokens < 0:
            raise BranchFailure("the server sent a usage without a token count")
        chunk.completion_tokens = tokens
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        chunk.num_cached_tokens = cached if isinstance(cached, int) else 0
        chunk.spec = _spec_of(data.get("metrics"))
    return chunk


def _logprobs(logprobs: Any, tokens: int) -> tuple[list[list[float]] | None, list[float] | None]:
    """The completions API's ``logprobs``: its ``top_logprobs`` (a ``{token: logprob}`` per
    token) as log-prob lists and its ``token_logprobs`` (the sampled tokens'); (None, None)
    when absent; a wrong shape is a :class:`BranchFailure`."""
    if logprobs is None:
        return None, None
    top = logprobs.get("top_logprobs") if isinstance(logprobs, dict) else None
    sampled = logprobs.get("token_logprobs") if isinstance(logprobs, dict) else None
    if not isinstance(top, list) or len(top) != tokens or not all(
            isinstance(p, dict) and all(_is_logprob(v) for v in p.values()) for p in top):
        raise BranchFailure("the server sent log-probs that are not one {token: log-prob <= 0} per token")
    if not isinstance(sampled, list) or len(sampled) != tokens or not all(_is_logprob(v) for v in sampled):
        raise BranchFailure("the server sent token_logprobs that are not one log-prob <= 0 per token")
    return [[float(v) for v in p.values()] for p in top], [float(v) for v in sampled]


def _is_logprob(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0


def _spec_of(metrics: Any) -> SpecDecodeStats | None:
    """The speculative-decoding counts of vLLM's per-request metrics (None when absent)."""
    spec = metrics.get("speculative_decoding") if isinstance(metrics, dict) else None
    if not isinstance(spec, dict):
        return None
    try:
        return SpecDecodeStats(num_drafts=int(spec["num_spec_steps"]), num_draft_tokens=int(spec["num_draft_tokens"]),
                               num_accepted_tokens=int(spec["num_accepted_draft_tokens"]))
    except (KeyError, TypeError, ValueError):
        return None


def parse_prometheus(text: str) -> dict[str, float]:
    """Prometheus text exposition as ``{sample name: value}``, summed over label sets (pure)."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + float(sample.value)
    return values


async def events(response: httpx.Response, max_bytes: int) -> AsyncIterator[str]:
    """The ``data:`` payloads of a server-sent event stream, within size limits."""
    buffer, total = b"", 0
    async for piece in response.aiter_bytes():
        total += len(piece)
        if total > max_bytes:
            raise BranchFailure(f"the server's answer exceeded {max_bytes} bytes for this branch")
        buffer += piece
        *lines, buffer = buffer.split(b"\n")
        if len(buffer) > MAX_EVENT_BYTES:
            raise BranchFailure(f"the server sent an event longer than {MAX_EVENT_BYTES} bytes")
        for line in lines:
            if line.startswith(b"data:"):
                yield line[5:].strip().decode("utf-8", errors="replace")


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:300] if str(error) else type(error).__name__
