"""The server-fleet engine's pure pieces, and the engine over scripted HTTP answers.

The answers come from an ``httpx.MockTransport`` that speaks vLLM's completion stream --
and, where a test needs it, misbehaves the ways a real server or network can (5xx,
refused connections, streams cut mid-branch, malformed or oversized answers). The real
servers run in integration_tests/test_fleet.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from langchain_latts import BranchesFailedError, FleetUnavailableError, LatencyOptimalTTSLLM, LattsValueError
from langchain_latts.engines import vllm_server
from langchain_latts.engines.base import BranchRequest, BranchUpdate, EngineConfig
from langchain_latts.engines.fleet_protocol import (
    MAX_EVENT_BYTES,
    BranchFailure,
    ReplicaError,
    completion_body,
    normalize_endpoint,
    parse_prometheus,
    read_chunk,
    server_root,
)
from langchain_latts.engines.fleet_replicas import PROBE_INTERVAL_S, Replica, pick_replica
from langchain_latts.engines.launch import server_command
from langchain_latts.engines.vllm_server import VLLMServerEngine
from langchain_latts.models import DEFAULT_TARGET

A, B = "http://a:8001/v1", "http://b:8002/v1"
MODEL = str(DEFAULT_TARGET)


# -- pure pieces ------------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "expected"), [
    ("http://127.0.0.1:8001", "http://127.0.0.1:8001/v1"),
    ("http://127.0.0.1:8001/v1/", "http://127.0.0.1:8001/v1"),
    ("https://gpu-3.internal/serve/v1", "https://gpu-3.internal/serve/v1"),
])
def test_endpoints_are_normalized_to_their_v1_base(url: str, expected: str) -> None:
    assert normalize_endpoint(url) == expected
    assert server_root(expected) == expected.removesuffix("/v1")


@pytest.mark.parametrize(("url", "match"), [
    ("127.0.0.1:8001", "http:// or https://"),
    ("ftp://host/v1", "http:// or https://"),
    ("http://user:secret@host:1/v1", "must not carry credentials"),
    ("http://host:1/v1?x=1", "query"),
])
def test_bad_endpoints_are_named_errors(url: str, match: str) -> None:
    with pytest.raises(LattsValueError, match=f"endpoints .*{match}"):
        normalize_endpoint(url)


def test_a_branch_goes_to_the_replica_with_fewest_outstanding_branches() -> None:
    a, b, c = Replica(A, outstanding=2), Replica(B, outstanding=1), Replica("http://c/v1", outstanding=1, served=5)
    assert pick_replica([a, b, c]) is b  # fewest outstanding, then fewest served
    assert pick_replica([a, b, c], avoid=[B]) is c  # not the one this branch failed on
    assert pick_replica([a, b], avoid=[A, B]) is b  # all failed it: the best of them again
    b.in_rotation = c.in_rotation = False
    assert pick_replica([a, b, c]) is a
    a.in_rotation = False
    assert pick_replica([a, b, c]) is None


def test_a_replica_leaves_the_rotation_after_failures_in_a_row_and_comes_back_when_healthy() -> None:
    replica = Replica(A)
    replica.failed("ConnectError", now=10.0)
    assert replica.in_rotation, "one failure is not enough"
    replica.succeeded()
    replica.failed("ConnectError", now=11.0)
    assert replica.in_rotation, "a success resets the count"
    replica.failed("ConnectError", now=12.0)
    assert not replica.in_rotation and replica.probe_at == 12.0 + PROBE_INTERVAL_S
    replica.probed(False, now=13.0, error="refused")
    assert replica.probe_interval == 2 * PROBE_INTERVAL_S and replica.last_error == "refused"
    replica.probed(True, now=14.0)
    assert replica.in_rotation and replica.failures == 0


def test_a_continued_branch_sends_the_prompt_with_the_tokens_it_already_has() -> None:
    request = BranchRequest(prompt_token_ids=(1, 2, 3), max_tokens=10, temperature=0.7, seed=5, stop=("\n\n",),
                            grammar="root ::= \"x\"")
    first = completion_body("m", request, [], request_id="r")
    assert first["prompt"] == [1, 2, 3] and first["max_tokens"] == 10 and first["seed"] == 5
    assert first["stream"] and first["return_token_ids"] and first["stream_options"] == {"include_usage": True}
    assert first["stop"] == ["\n\n"] and first["structured_outputs"] == {"grammar": "root ::= \"x\""}
    later = completion_body("m", request, [7, 8], request_id="r-1")
    assert later["prompt"] == [1, 2, 3, 7, 8] and later["max_tokens"] == 8 and later["seed"] == 7


def _event(text: str = "", ids: list[int] | None = None, finish: str | None = None) -> str:
    return json.dumps({"choices": [{"index": 0, "text": text, "token_ids": ids or [], "finish_reason": finish}]})


def test_read_chunk_reads_text_ids_usage_and_speculation() -> None:
    chunk = read_chunk(_event("4", [52], "stop"))
    assert (chunk.text, chunk.token_ids, chunk.finish_reason) == ("4", [52], "stop")
    usage = read_chunk(json.dumps({"choices": [], "usage": {"completion_tokens": 3}, "metrics": {
        "speculative_decoding": {"num_spec_steps": 2, "num_draft_tokens": 8, "num_accepted_draft_tokens": 6,
                                 "mean_acceptance_length": 4.0, "draft_acceptance_rate": 0.75,
                                 "acceptance_histogram": [0, 0, 0, 2, 0]}}}))
    assert usage.completion_tokens == 3 and usage.spec is not None and usage.spec.acceptance_rate == 0.75
    assert read_chunk(json.dumps({"choices": [], "usage": {"completion_tokens": 3}})).spec is None


@pytest.mark.parametrize(("payload", "error", "match"), [
    ("{not json", BranchFailure, "not JSON"),
    ("[1, 2]", BranchFailure, "list where an object"),
    (json.dumps({"choices": [{"text": "a"}, {"text": "b"}]}), BranchFailure, "single choice"),
    (json.dumps({"choices": [{"text": "a"}]}), BranchFailure, "no token ids"),
    (json.dumps({"choices": [{"text": "a", "token_ids": ["import os"]}]}), BranchFailure, "no token ids"),
    (json.dumps({"choices": [{"text": 5, "token_ids": []}]}), BranchFailure, "without text"),
    (json.dumps({"choices": [], "usage": {"completion_tokens": "many"}}), BranchFailure, "token count"),
    (json.dumps({"error": {"message": "boom", "code": 500}}), ReplicaError, "failed during generation"),
    (json.dumps({"error": {"message": "too long", "code": 400}}), BranchFailure, "refused the request"),
])
def test_read_chunk_refuses_what_vllm_would_not_send(payload: str, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        read_chunk(payload)


def test_prometheus_metrics_are_summed_over_label_sets() -> None:
    text = ('# TYPE vllm:num_requests_running gauge\n'
            'vllm:num_requests_running{model_name="m",engine="0"} 2.0\n'
            'vllm:num_requests_running{model_name="m",engine="1"} 1.0\n'
            '# TYPE vllm:spec_decode_num_draft_tokens counter\n'
            'vllm:spec_decode_num_draft_tokens_total{model_name="m"} 40.0\n')
    metrics = parse_prometheus(text)
    assert metrics["vllm:num_requests_running"] == 3.0
    assert metrics["vllm:spec_decode_num_draft_tokens_total"] == 40.0


def test_the_server_command_speculates_with_the_shipped_draft_and_reports_it() -> None:
    command = server_command(port=8123)
    assert command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"] and "8123" in command
    spec = json.loads(command[command.index("--speculative-config") + 1])
    assert spec["method"] == "draft_model" and spec["num_speculative_tokens"] == 4
    assert command[command.index("--per-request-spec-decode-metrics") + 1] == "summary"
    assert "--speculative-config" not in server_command(port=1, draft=None)


def test_gpu_replicas_keep_cuda_graphs_and_get_their_memory_share() -> None:
    cpu = server_command(port=1, draft=None)
    assert "--enforce-eager" in cpu and "--gpu-memory-utilization" not in cpu
    gpu = server_command(port=1, draft=None, cpu=False, gpu_memory_utilization=0.425, reasoning_parser="qwen3")
    assert "--enforce-eager" not in gpu
    assert gpu[gpu.index("--gpu-memory-utilization") + 1] == "0.425"
    assert gpu[gpu.index("--reasoning-parser") + 1] == "qwen3"


def test_fleet_replicas_are_placed_round_robin_over_the_visible_gpus() -> None:
    from langchain_latts.engines.launch import Placement, replica_placement, server_env

    assert replica_placement(2, []) == [Placement(), Placement()], "CPU: nothing to place"
    # One GPU, two replicas: both on it, each with half of 0.85 of its memory.
    assert replica_placement(2, ["0"]) == [Placement("0", 0.425), Placement("0", 0.425)]
    # Four GPUs (as CUDA_VISIBLE_DEVICES lists them): one replica each, vLLM's default share.
    assert replica_placement(4, ["2", "3", "5", "7"]) == [Placement(d, None) for d in ("2", "3", "5", "7")]
    # Six replicas on four GPUs: two share each of the first two GPUs, so all split in two.
    six = replica_placement(6, ["0", "1", "2", "3"])
    assert [p.devices for p in six] == ["0", "1", "2", "3", "0", "1"] and {p.gpu_memory_utilization for p in six} == {0.425}
    assert server_env(devices="3")["CUDA_VISIBLE_DEVICES"] == "3"


# -- the engine over scripted answers ---------------------------------------------------------
Handler = Callable[[httpx.Request], Any]


def sse(*events: str, done: bool = True) -> bytes:
    return b"".join(f"data: {e}\n\n".encode() for e in events) + (b"data: [DONE]\n\n" if done else b"")


def good_stream(body: dict[str, Any], text: str = "#### 4", spec: bool = True) -> bytes:
    """What vLLM streams for ``body``: one token per character, then usage (with speculation)."""
    n = min(len(text), body["max_tokens"])
    events = [_event(c, [40 + i], "stop" if i == n - 1 else None) for i, c in enumerate(text[:n])]
    usage: dict[str, Any] = {"choices": [], "usage": {"completion_tokens": n, "prompt_tokens": 3}}
    if spec:
        usage["metrics"] = {"speculative_decoding": {"num_spec_steps": 1, "num_draft_tokens": 4,
                                                     "num_accepted_draft_tokens": 3}}
    return sse(*events, json.dumps(usage))


class FakeFleet:
    """Scripted servers: ``routes[url]`` answers a completion request (default: a good stream)."""

    def __init__(self, **routes: Handler) -> None:
        self.routes = routes
        self.requests: list[tuple[str, dict[str, Any], httpx.Headers]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        base = url[: url.index("/v1") + 3] if "/v1" in url else url.rsplit("/", 1)[0] + "/v1"
        if url.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": MODEL, "max_model_len": 512}]})
        if url.endswith("/health"):
            return httpx.Response(200)
        body = json.loads(request.content)
        self.requests.append((base, body, request.headers))
        handler = self.routes.get(base)
        if handler is not None and body["max_tokens"] != 8:  # the warm-up always succeeds
            result = handler(request)
            return await result if asyncio.iscoroutine(result) else result
        return httpx.Response(200, content=good_stream(body))


_MADE: list[VLLMServerEngine] = []


def make_engine(fleet: FakeFleet, endpoints: tuple[str, ...] = (A, B), api_key: str | None = None) -> VLLMServerEngine:
    config = EngineConfig(model=MODEL, endpoints=endpoints, api_key=None if api_key is None else SecretStr(api_key))
    engine = VLLMServerEngine(config, transport=httpx.MockTransport(fleet))
    _MADE.append(engine)
    return engine


@pytest.fixture(autouse=True)
async def _close_engines() -> AsyncIterator[None]:
    """Close every engine a test made on the test's own loop (its client lives there)."""
    yield
    while _MADE:
        engine = _MADE.pop()
        if engine._loop._loop is None:  # used on the test's loop
            await engine._close()
        else:  # used through the chat model, on its own loop thread
            await asyncio.to_thread(engine.shutdown)


async def run_branch(engine: VLLMServerEngine, max_tokens: int = 16, deadline: float | None = None,
                     request_id: str = "r") -> list[BranchUpdate]:
    await engine.ensure_started()
    request = BranchRequest(prompt_token_ids=(1, 2, 3), max_tokens=max_tokens, seed=1, deadline=deadline)
    return [u async for u in engine.branch(request, request_id)]


def text_of(updates: list[BranchUpdate]) -> str:
    return "".join(u.text_delta for u in updates)


async def test_a_branch_streams_its_tokens_and_speculation_counts_from_one_server() -> None:
    fleet = FakeFleet()
    engine = make_engine(fleet)
    updates = await run_branch(engine)
    assert text_of(updates) == "#### 4" and sum(u.num_new_tokens for u in updates) == 6
    last = updates[-1]
    assert last.finished and last.finish_reason == "stop" and last.spec is not None and last.spec.num_drafts == 1
    assert {u.server for u in updates} == {A} and engine.num_unfinished_requests() == 0


async def test_branches_spread_over_the_replicas() -> None:
    engine = make_engine(FakeFleet())
    await engine.ensure_started()
    request = BranchRequest(prompt_token_ids=(1, 2, 3), max_tokens=16)

    async def one(i: int) -> set[str | None]:
        return {u.server async for u in engine.branch(request, f"r{i}")}

    servers = await asyncio.gather(*(one(i) for i in range(8)))
    assert sorted(s.pop() or "" for s in servers).count(A) == 4, "four branches on each of two replicas"


async def test_a_5xx_is_retried_on_another_replica() -> None:
    fleet = FakeFleet(**{A: lambda r: httpx.Response(503, text="overloaded")})
    engine = make_engine(fleet)
    updates = await run_branch(engine)
    assert text_of(updates) == "#### 4" and {u.server for u in updates} == {B}
    assert engine.replicas[0].failures == 1 and engine.replicas[0].last_error is not None


async def test_a_stream_cut_mid_branch_continues_on_another_replica_from_its_tokens() -> None:
    async def cut(request: httpx.Request) -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            yield sse(_event("##", [40, 41]), done=False)
            raise httpx.ReadError("connection reset by peer")

        return httpx.Response(200, content=body())

    fleet = FakeFleet(**{A: cut})
    engine = make_engine(fleet)
    updates = await run_branch(engine, max_tokens=16)
    assert text_of(updates).startswith("##") and updates[-1].finish_reason == "stop"
    continued = [body for url, body, _ in fleet.requests if url == B and body["max_tokens"] != 8]
    assert continued[0]["prompt"] == [1, 2, 3, 40, 41] and continued[0]["max_tokens"] == 14
    assert updates[0].server == A and updates[-1].server == B


async def test_no_replica_left_is_one_clear_error_naming_every_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    fleet = FakeFleet(**{A: refuse, B: refuse})
    engine = make_engine(fleet)
    await engine.ensure_started()
    for replica in engine.replicas:  # /health keeps answering in this script: make the probe fail too
        replica.in_rotation = True
    monkeypatch.setattr(engine, "_probe", _failing_probe)
    with pytest.raises(FleetUnavailableError, match=r"http://a:8001/v1: .*connection refused.*http://b:8002/v1") as e:
        await run_branch(engine)
    assert set(e.value.endpoints) == {A, B}


async def _failing_probe(replica: Replica) -> None:
    replica.probed(False, time.monotonic(), "ConnectError: connection refused")


async def test_a_fleet_that_never_answers_fails_the_start_naming_every_endpoint(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_server, "START_WAIT_S", 0.3)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    engine = VLLMServerEngine(EngineConfig(model=MODEL, endpoints=(A, B)), transport=httpx.MockTransport(refuse))
    with pytest.raises(FleetUnavailableError, match=r"none answered .*http://a:8001/v1: ConnectError.*http://b:8002"):
        await engine.ensure_started()


@pytest.mark.parametrize(("answer", "match"), [
    (lambda body: sse("{broken"), "not JSON"),
    (lambda body: sse(_event("4", [1, 2, 3], "stop"), json.dumps({"choices": [], "usage": {"completion_tokens": 9}})),
     "counted 9 tokens but sent 3"),
    (lambda body: sse(_event("x" * 10, list(range(40)))), "sent 40 tokens where at most 16"),
    (lambda body: b"data: " + b"x" * (MAX_EVENT_BYTES + 10), "longer than"),
    (lambda body: sse(_event("4", [1], "stop"), _event("5", [2])), "output after the branch finished"),
])
async def test_a_malformed_or_hostile_answer_fails_only_that_branch(answer: Callable[[dict[str, Any]], bytes],
                                                                     match: str) -> None:
    fleet = FakeFleet(**{A: lambda r: httpx.Response(200, content=answer(json.loads(r.content)))})
    engine = make_engine(fleet, endpoints=(A,))
    updates = await run_branch(engine)
    last = updates[-1]
    assert last.finished and last.finish_reason == "error" and last.error is not None
    assert match in last.error and A in last.error


async def test_a_refused_request_fails_the_branch_with_the_servers_reason() -> None:
    fleet = FakeFleet(**{A: lambda r: httpx.Response(400, json={"error": {"message": "prompt too long"}})})
    updates = await run_branch(make_engine(fleet, endpoints=(A,)))
    assert updates[-1].finish_reason == "error" and "prompt too long" in (updates[-1].error or "")


async def test_a_refused_key_names_api_key_and_never_shows_it() -> None:
    fleet = FakeFleet(**{A: lambda r: httpx.Response(401)})
    engine = make_engine(fleet, endpoints=(A,), api_key="sk-very-secret")
    await engine.ensure_started()
    assert fleet.requests[0][2]["authorization"] == "Bearer sk-very-secret"
    with pytest.raises(LattsValueError, match="api_key .*was refused by http://a:8001/v1 \\(401\\)") as e:
        await run_branch(engine)
    assert "sk-very-secret" not in str(e.value) and "sk-very-secret" not in repr(engine.config)


async def test_an_early_stop_closes_the_stream_and_leaves_nothing_outstanding() -> None:
    released = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            yield sse(_event("#", [40]), done=False)
            await released.wait()  # never set: only closing the stream ends this
            yield b""

        return httpx.Response(200, content=body())

    engine = make_engine(FakeFleet(**{A: slow}), endpoints=(A,))
    await engine.ensure_started()
    stream = engine.branch(BranchRequest(prompt_token_ids=(1,), max_tokens=16), "r")
    first = await anext(stream)
    assert first.text_delta == "#" and engine.num_unfinished_requests() == 1
    await stream.aclose()
    assert engine.num_unfinished_requests() == 0


# -- through the chat model ------------------------------------------------------------------
def fleet_llm(engine_for: Any, engine: VLLMServerEngine, **settings: Any) -> LatencyOptimalTTSLLM:
    engine_for(engine)
    return LatencyOptimalTTSLLM(endpoints=list(engine.config.endpoints), seed=0, **settings)


def test_a_call_votes_over_branches_from_both_servers(engine_for: Any) -> None:
    engine = make_engine(FakeFleet())
    msg = fleet_llm(engine_for, engine, branches=4, early_stop=False).invoke("What is 2 + 2?")
    tts = msg.response_metadata["tts"]
    assert tts["answer"] == "4" and tts["servers"] == {A: 2, B: 2}
    assert tts["speculative"]["reported"] and tts["speculative"]["acceptance_rate"] == 0.75


def test_when_every_branch_gets_a_malformed_answer_the_call_raises_with_the_reason(engine_for: Any) -> None:
    broken = FakeFleet(**{A: lambda r: httpx.Response(200, content=sse("{broken"))})
    engine = make_engine(broken, endpoints=(A,))
    with pytest.raises(BranchesFailedError, match="every branch .* not JSON") as e:
        fleet_llm(engine_for, engine, branches=2).invoke("What is 2 + 2?")
    assert len(e.value.errors) == 2


def test_the_api_key_is_in_no_trace_metadata_or_log(engine_for: Any, caplog: pytest.LogCaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.load import dumps

    seen: list[str] = []

    class Recorder(BaseCallbackHandler):
        def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
            seen.append(repr(serialized) + repr(kwargs))

        def on_llm_end(self, response: Any, **kwargs: Any) -> None:
            seen.append(repr(response))

    monkeypatch.setenv("VLLM_API_KEY", "sk-from-env")
    engine = make_engine(FakeFleet(), api_key="sk-from-env")
    caplog.set_level(logging.DEBUG)
    llm = fleet_llm(engine_for, engine, branches=2)
    assert llm.api_key is not None and llm.api_key.get_secret_value() == "sk-from-env"
    msg = llm.invoke("What is 2 + 2?", config={"callbacks": [Recorder()]})
    everything = "".join(seen) + repr(msg) + caplog.text + dumps(llm) + repr(llm) + str(llm._identifying_params)
    assert seen and "sk-from-env" not in everything


def test_lateness_counts_only_time_past_the_deadline() -> None:
    from langchain_latts.bench.fleet import lateness

    late = lateness([0.2, 0.31, 0.35, 0.5, 0.3], 0.3)
    assert late["median"] == pytest.approx(0.01) and late["max"] == pytest.approx(0.2)
    assert late["p90"] == pytest.approx(0.05)


def test_log_probs_are_asked_for_and_read_per_token() -> None:
    request = BranchRequest(prompt_token_ids=(1,), max_tokens=4, logprobs=5)
    assert completion_body("m", request, [], request_id="r")["logprobs"] == 5
    assert "logprobs" not in completion_body("m", BranchRequest(prompt_token_ids=(1,), max_tokens=4), [],
                                             request_id="r")
    payload = json.dumps({"choices": [{"text": "ab", "token_ids": [1, 2], "logprobs": {
        "tokens": ["a", "c"], "token_logprobs": [-0.1, -1.5],
        "top_logprobs": [{"a": -0.1, "c": -2.5}, {"b": -0.5, "d": -1.0, "c": -1.5}]}}]})
    chunk = read_chunk(payload)
    assert chunk.top_logprobs == [[-0.1, -2.5], [-0.5, -1.0, -1.5]]
    assert chunk.token_logprobs == [-0.1, -1.5]
    assert read_chunk(_event("a", [1])).top_logprobs is None
    assert read_chunk(_event("a", [1])).token_logprobs is None


@pytest.mark.parametrize(("top", "sampled"), [
    ([{"a": -0.1}], [-0.1, -0.2]), ([{"a": "x"}, {"b": -1.0}], [-0.1, -0.2]),
    ([{"a": 0.5}, {"b": -1.0}], [-0.1, -0.2]), ("many", [-0.1, -0.2]),
    ([{"a": -0.1}, {"b": -1.0}], [-0.1]), ([{"a": -0.1}, {"b": -1.0}], [-0.1, 0.3]),
    ([{"a": -0.1}, {"b": -1.0}], None)])
def test_malformed_log_probs_fail_the_branch(top: Any, sampled: Any) -> None:
    payload = json.dumps({"choices": [{"text": "ab", "token_ids": [1, 2], "logprobs": {
        "top_logprobs": top, "token_logprobs": sampled}}]})
    with pytest.raises(BranchFailure, match="log-probs|token_logprobs"):
        read_chunk(payload)


def test_vllm_log_probs_become_plain_lists() -> None:
    from types import SimpleNamespace

    from langchain_latts.engines.vllm_local import sampled_logprobs_of, top_logprobs_of

    # vLLM puts the sampled token first, here one outside the top 1 (so k + 1 entries)
    positions = [{5: SimpleNamespace(logprob=-0.2)}, {7: SimpleNamespace(logprob=-2.5), 9: SimpleNamespace(logprob=-0.1)}]
    assert top_logprobs_of(positions) == [[-0.2], [-2.5, -0.1]]
    assert sampled_logprobs_of(positions) == [-0.2, -2.5]
    assert top_logprobs_of(None) == [] and sampled_logprobs_of(None) == []
