"""Deadlines, cancellation, concurrent callers and engine faults on the real engine.

Time bounds here are generous (they catch hangs, not milliseconds): the measured
overshoot figures come from ``latts bench deadlines``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import ConfigurableField

from langchain_latts import DeadlineExceededError, EngineDeadError, LatencyOptimalTTSLLM, LattsValueError
from langchain_latts.tasks.arithmetic import generate_problems

from .conftest import BASE

HARD = "Compute 91 + 78 - 64 + 85 - 33 + 57."  # level 5: ~90 tokens per branch
#: Slack allowed over a deadline in these tests (the benchmark reports the real overshoot).
SLACK_S = 1.0


def test_deadline_votes_over_finished_branches_and_aborts_the_rest(llm: LatencyOptimalTTSLLM) -> None:
    started = time.monotonic()
    message = llm.invoke(HARD, branches=16, early_stop=False, deadline_s=0.5)
    elapsed = time.monotonic() - started
    tts = message.response_metadata["tts"]
    assert elapsed < 0.5 + SLACK_S
    assert tts["deadline_s"] == 0.5
    assert tts["branches_finished"] + tts["branches_aborted"] == 16
    if tts["deadline_hit"]:
        assert tts["branches_aborted"] >= 1 and tts["decided_at_s"] >= 0.5
    assert llm.engine.num_unfinished_requests() == 0


def test_nothing_finished_returns_the_best_partial(llm: LatencyOptimalTTSLLM) -> None:
    message = llm.invoke(HARD, deadline_s=0.15, early_stop=False)
    tts = message.response_metadata["tts"]
    assert tts["branches_finished"] == 0 and tts["partial"] is True and tts["deadline_hit"] is True
    assert message.response_metadata["finish_reason"] == "deadline"
    # The most advanced partial branch is returned: it has the most tokens.
    assert tts["branch_tokens"][tts["selected_branch"]] == max(tts["branch_tokens"]) > 0
    assert message.content  # partial text, not nothing
    assert llm.engine.num_unfinished_requests() == 0


def test_nothing_finished_raises_when_asked(llm: LatencyOptimalTTSLLM) -> None:
    with pytest.raises(DeadlineExceededError, match=r"no branch finished within deadline_s=0\.15 \(elapsed "
                                                    r"0\.\d+ s, \d+ tokens generated over 8 branches"):
        llm.invoke(HARD, deadline_s=0.15, on_deadline="raise", early_stop=False)
    assert llm.engine.num_unfinished_requests() == 0


def test_deadline_shorter_than_a_decode_step_is_a_clear_error(llm: LatencyOptimalTTSLLM) -> None:
    with pytest.raises(LattsValueError, match=r"deadline_s must be at least this engine's fastest decode step"):
        llm.invoke(HARD, deadline_s=1e-6)


async def test_cancelling_ainvoke_aborts_every_branch(llm: LatencyOptimalTTSLLM) -> None:
    task = asyncio.create_task(llm.ainvoke(HARD, branches=16, early_stop=False, max_tokens=400))
    await asyncio.sleep(0.3)
    assert llm.engine.num_unfinished_requests() > 0  # branches are running
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert llm.engine.num_unfinished_requests() == 0


def test_ctrl_c_in_invoke_aborts_every_branch(llm: LatencyOptimalTTSLLM) -> None:
    timer = threading.Timer(0.3, os.kill, args=(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            llm.invoke(HARD, branches=16, early_stop=False, max_tokens=400)
    finally:
        timer.cancel()
    assert llm.engine.num_unfinished_requests() == 0


async def test_many_concurrent_callers_each_get_their_own_answer(llm: LatencyOptimalTTSLLM) -> None:
    problems = generate_problems(32, seed=321, levels=[1, 2])
    messages = await asyncio.gather(*(llm.ainvoke(p.question, branches=4) for p in problems))
    for problem, message in zip(problems, messages):
        tts = message.response_metadata["tts"]
        # No cross-talk: the returned text works on this call's own first operands ...
        first_op, first_b = problem.terms[0]
        assert message.content.startswith(f"{problem.first} {first_op} {first_b} = "), (problem, message.content)
        # ... and the vote counts this call's branches only.
        assert tts["branches_launched"] == 4 and sum(tts["votes"].values()) <= 4
    correct = sum(m.response_metadata["tts"]["answer"] == str(p.answer) for p, m in zip(problems, messages))
    assert correct >= 24  # easy levels: most answers right
    assert llm.engine.num_unfinished_requests() == 0


def test_abatch_of_many_questions(llm: LatencyOptimalTTSLLM) -> None:
    problems = generate_problems(40, seed=5, levels=[1])
    messages = asyncio.run(llm.abatch([p.question for p in problems], config={"max_concurrency": 40}, branches=2))
    assert [m.content.split(" ")[0] for m in messages] == [str(p.first) for p in problems]
    assert llm.engine.num_unfinished_requests() == 0


def test_per_step_deadline_with_bind_touches_only_that_step(llm: LatencyOptimalTTSLLM) -> None:
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    fast_step = prompt | llm.bind(deadline_s=0.2, early_stop=False)
    free_step = prompt | llm
    fast = fast_step.invoke({"q": HARD})
    free = free_step.invoke({"q": "Compute 3 + 4 - 2."})
    assert fast.response_metadata["tts"]["deadline_s"] == 0.2
    assert free.response_metadata["tts"]["deadline_s"] is None


def test_per_step_deadline_with_config(llm: LatencyOptimalTTSLLM) -> None:
    configurable = llm.configurable_fields(deadline_s=ConfigurableField(id="reasoning_deadline_s"))
    message = configurable.with_config(configurable={"reasoning_deadline_s": 0.25}).invoke(HARD, early_stop=False)
    assert message.response_metadata["tts"]["deadline_s"] == 0.25
    assert configurable.invoke("Compute 3 + 4 - 2.").response_metadata["tts"]["deadline_s"] is None


def test_engine_death_fails_fast_and_the_next_call_restarts_it() -> None:
    # A separate engine (max_num_seqs differs), so the shared one is not disturbed.
    victim = LatencyOptimalTTSLLM(branches=8, max_num_seqs=64, **BASE)
    # Cold start under a short deadline: the call gives up at the deadline, the engine
    # keeps starting.
    with pytest.raises(DeadlineExceededError, match="while the engine was still starting"):
        victim.invoke("Compute 3 + 4 - 2.", deadline_s=0.5)
    victim.warmup()
    engine = victim.engine
    pids = engine.engine_core_pids()
    assert pids
    timer = threading.Timer(0.5, os.kill, args=(pids[0], signal.SIGKILL))
    timer.start()
    started = time.monotonic()
    with pytest.raises(EngineDeadError, match="engine process .* died during this call .* retry the call"):
        victim.invoke(HARD, branches=16, early_stop=False, max_tokens=400)
    assert time.monotonic() - started < 15  # fails fast instead of hanging
    message = victim.invoke("Compute 3 + 4 - 2.")  # restarts the engine
    assert message.response_metadata["tts"]["answer"] == "5"
    assert engine.engine_core_pids() != pids
    engine.shutdown()
