"""Budgets shared across calls: the Budget object, and calls of the chat model that find,
plan within, charge and record it (scripted engine)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import RunnableLambda

from langchain_latts import Budget, BudgetExhaustedError, LatencyOptimalTTSLLM, LattsValueError, latts_budget
from langchain_latts.budget import active_budget, branches_within

from .fakes import ScriptedEngine

FAST = ["#### ", "5"]


def test_charges_from_many_threads_add_up_exactly() -> None:
    budget = Budget(tokens=100_000)

    def work() -> None:
        for _ in range(1000):
            budget.charge(3)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert budget.tokens_spent == 24_000 and budget.tokens_left == 76_000


def test_charge_reports_the_end_and_nested_budgets_both_count() -> None:
    with Budget(tokens=10) as outer, Budget(tokens=100) as inner:
        assert active_budget() is inner
        assert inner.charge(6) and inner.tokens_left == 4  # the outer budget is the tighter one
        assert not inner.charge(5) and outer.exhausted and inner.exhausted
    assert active_budget() is None and outer.tokens_spent == inner.tokens_spent == 11


def test_budget_arguments_are_checked() -> None:
    with pytest.raises(LattsValueError, match=r"^tokens must be a positive integer or None, got 0\."):
        Budget(tokens=0)
    with pytest.raises(LattsValueError, match=r"^seconds must be a positive number of seconds or None, got -1"):
        Budget(seconds=-1)
    with pytest.raises(LattsValueError, match=r"configurable\['latts_budget'\] must be a langchain_latts.Budget"):
        active_budget({"latts_budget": 500})


def test_pinned_branches_shrink_to_the_tokens_left() -> None:
    assert branches_within(8, None, 100) == 8
    assert branches_within(8, 350, 100) == 3
    assert branches_within(8, 50, 100) == 1  # never fewer than one


def test_steps_record_their_spend_and_the_ledger_adds_up(engine_for) -> None:  # type: ignore[no-untyped-def]
    engine_for(ScriptedEngine([FAST] * 4))
    llm = LatencyOptimalTTSLLM(branches=4, seed=0, early_stop=False, max_tokens=10)
    with latts_budget(tokens=1000) as budget:
        first = llm.invoke("q", config={"run_name": "plan"})
        llm.invoke("q", config={"tags": ["check"]})
    ledger = budget.ledger
    assert [e.step for e in ledger] == ["plan", "check"]
    assert [e.tokens for e in ledger] == [8, 8] and [e.branches for e in ledger] == [4, 4]
    assert sum(e.tokens for e in ledger) == budget.tokens_spent == 16
    assert ledger[0].answer == "5" and ledger[1].started_at_s >= ledger[0].started_at_s
    meta = first.response_metadata["tts"]["budget"]
    assert meta["spent"]["tokens"] == 8 and meta["limits"] == {"tokens": 1000, "seconds": None}
    assert meta["ledger"][0]["step"] == "plan"


def test_a_budget_in_the_config_reaches_calls_inside_a_chain(engine_for) -> None:  # type: ignore[no-untyped-def]
    engine_for(ScriptedEngine([FAST] * 2))
    llm = LatencyOptimalTTSLLM(branches=2, seed=0, early_stop=False, max_tokens=10)
    budget = Budget(tokens=1000)
    chain = RunnableLambda(lambda x: x) | llm
    chain.invoke("q", config={"configurable": {"latts_budget": budget}})
    asyncio.run(llm.ainvoke("q", config={"configurable": {"latts_budget": budget}, "run_name": "async-step"}))
    assert [e.tokens for e in budget.ledger] == [4, 4] and budget.ledger[1].step == "async-step"


def test_an_exhausted_budget_raises_with_the_ledger(engine_for) -> None:  # type: ignore[no-untyped-def]
    engine_for(ScriptedEngine([FAST] * 4))
    llm = LatencyOptimalTTSLLM(branches=4, seed=0, early_stop=False, max_tokens=2)
    with latts_budget(tokens=8) as budget:
        llm.invoke("q", config={"run_name": "first"})
        with pytest.raises(BudgetExhaustedError, match=r"no budget left for step 'second': spent 8 of 8 tokens .*"
                                                        r"first: 8 tokens") as info:
            llm.invoke("q", config={"run_name": "second"})
    assert [e["step"] for e in info.value.ledger] == ["first"] and info.value.spent["tokens"] == 8
    assert len(budget.ledger) == 1


def test_a_call_shrinks_its_branches_to_the_tokens_left(engine_for) -> None:  # type: ignore[no-untyped-def]
    engine = engine_for(ScriptedEngine([FAST] * 8))
    # No profile for pinned branches: one branch may take max_tokens (100): 250 tokens -> 2 branches.
    with latts_budget(tokens=250):
        LatencyOptimalTTSLLM(branches=8, seed=0, max_tokens=100, early_stop=False).invoke("q")
    assert len(engine.requests) == 2


def test_token_budget_caps_one_call_and_votes_over_what_finished(engine_for) -> None:  # type: ignore[no-untyped-def]
    engine_for(ScriptedEngine([FAST, ["x"] * 100, ["x"] * 100], step_s=0.01))
    message = LatencyOptimalTTSLLM(branches=3, seed=0, early_stop=False, token_budget=20, max_tokens=5).invoke("q")
    tts = message.response_metadata["tts"]
    assert tts["budget_hit"] and tts["answer"] == "5" and tts["token_budget"] == 20
    assert tts["branch_finish_reasons"] == ["stop", "budget", "budget"]
    assert 20 <= message.usage_metadata["output_tokens"] <= 22  # type: ignore[index]


def test_a_budget_spent_before_any_branch_finished_raises(engine_for) -> None:  # type: ignore[no-untyped-def]
    engine_for(ScriptedEngine([["x"] * 100] * 2, step_s=0.001))
    with latts_budget(tokens=30), pytest.raises(BudgetExhaustedError, match="before any branch finished"):
        LatencyOptimalTTSLLM(branches=2, seed=0, max_tokens=10).invoke("q", config={"run_name": "s"})


def test_the_seconds_left_bound_the_call(engine_for) -> None:  # type: ignore[no-untyped-def]
    engine_for(ScriptedEngine([FAST, ["x"] * 300], step_s=0.01))
    with latts_budget(seconds=0.3):
        tts = LatencyOptimalTTSLLM(branches=2, seed=0, early_stop=False).invoke("q").response_metadata["tts"]
    assert tts["deadline_hit"] and tts["answer"] == "5"


def test_the_langsmith_run_metadata_carries_the_ledger(engine_for) -> None:  # type: ignore[no-untyped-def]
    engine_for(ScriptedEngine([FAST]))
    seen: list[dict[str, Any]] = []

    class Recorder(BaseCallbackHandler):
        def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
            seen.append(kwargs.get("metadata") or {})

    llm = LatencyOptimalTTSLLM(branches=1, seed=0)
    with latts_budget(tokens=500) as budget:
        llm.invoke("q", config={"callbacks": [Recorder()]})
        llm.invoke("q", config={"callbacks": [Recorder()]})
    assert seen[0]["latts_budget"]["spent"]["tokens"] == 0
    assert seen[1]["latts_budget"]["ledger"][0]["tokens"] == budget.ledger[0].tokens == 2


def test_concurrent_steps_share_one_budget(engine_for) -> None:  # type: ignore[no-untyped-def]
    engine_for(ScriptedEngine([["x"] * 5 + ["#### 5"]] * 4, step_s=0.005))
    llm = LatencyOptimalTTSLLM(branches=4, seed=0, early_stop=False, max_tokens=6)
    budget = Budget(tokens=10_000)
    configs = [{"configurable": {"latts_budget": budget}, "run_name": f"step{i}"} for i in range(6)]
    asyncio.run(llm.abatch(["q"] * 6, configs))  # type: ignore[arg-type]
    llm.batch(["q"] * 6, configs)  # type: ignore[arg-type]  # threads
    assert len(budget.ledger) == 12 and sum(e.tokens for e in budget.ledger) == budget.tokens_spent == 12 * 24


def test_multi_token_updates_overshoot_a_call_s_cap_by_at_most_one_update_per_branch(engine_for) -> None:  # type: ignore[no-untyped-def]
    # Speculation (k = 4) and the fleet stream several tokens per update; the cap is checked per update.
    engine_for(ScriptedEngine([["x"] * 100] * 3, step_s=0.002, tokens_per_update=5))
    message = LatencyOptimalTTSLLM(branches=3, seed=0, early_stop=False, token_budget=22, max_tokens=100).invoke("q")
    tts = message.response_metadata["tts"]
    assert tts["budget_hit"] and set(tts["branch_finish_reasons"]) == {"budget"}
    spent = message.usage_metadata["output_tokens"]  # type: ignore[index]
    assert 22 <= spent <= 22 + 3 * 5, "at most one update of each running branch past the cap"
    assert all(n % 5 == 0 for n in tts["branch_tokens"]), "whole updates are counted, none is split"


def test_concurrent_calls_exhausting_one_small_budget_each_end_one_way(engine_for) -> None:  # type: ignore[no-untyped-def]
    # 6 calls of 4 branches x 12 tokens (288 in all), two at a time, share 100 tokens: each call either answers
    # (its branches finished, or it voted over what finished when the budget ran out) or raises
    # BudgetExhaustedError; the ledger adds up to what was spent, and the overshoot is bounded by
    # one update of every branch running when the budget ran out.
    engine_for(ScriptedEngine([["x"] * 10 + ["#### ", "5"]] * 4, step_s=0.002, tokens_per_update=2))
    llm = LatencyOptimalTTSLLM(branches=4, seed=0, early_stop=False, max_tokens=12)
    budget = Budget(tokens=100)
    configs = [{"configurable": {"latts_budget": budget}, "run_name": f"step{i}", "max_concurrency": 2}
               for i in range(6)]
    results = asyncio.run(llm.abatch(["q"] * 6, configs, return_exceptions=True))  # type: ignore[arg-type]
    answered = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(e, BudgetExhaustedError) for e in failed), failed
    assert answered and failed, "some calls ran before the budget was spent, later ones found it spent"
    assert sum(e.tokens for e in budget.ledger) == budget.tokens_spent
    assert 100 <= budget.tokens_spent <= 100 + 2 * 4 * 2
