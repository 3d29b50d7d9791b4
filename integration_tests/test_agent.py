"""The LangGraph agent example on the real engine: one budget over every step, verifier,
pruning and a ToolNode; the budget adds up, and an exhausted one ends the run with its ledger."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from langchain_latts import Budget, BudgetExhaustedError, LatencyOptimalTTSLLM
from langchain_latts.tasks.arithmetic import parse_problem

from .conftest import BASE

QUESTION = "Compute 512 + 37 - 98 + 260 - 45 + 19 - 330 + 81 - 7 + 150."


def _example() -> ModuleType:
    path = Path(__file__).parent.parent / "examples" / "agent_budget.py"
    spec = importlib.util.spec_from_file_location("agent_budget", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # LangGraph resolves the state's annotations in the module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def agent_llm(llm: LatencyOptimalTTSLLM) -> LatencyOptimalTTSLLM:
    return LatencyOptimalTTSLLM(branches=8, **BASE)  # the session's engine


def test_the_agent_solves_the_chain_and_the_budget_adds_up(agent_llm: LatencyOptimalTTSLLM) -> None:
    example = _example()
    budget = Budget(tokens=20_000, seconds=120)
    final = example.solve(agent_llm, QUESTION, budget)
    assert final["total"] == parse_problem(QUESTION).answer and not final["terms"]
    ledger = budget.ledger
    parts = -(-len(parse_problem(QUESTION).terms) // example.TERMS_PER_STEP)
    assert len(ledger) >= parts and all(e.step.startswith("reason[") for e in ledger)
    assert sum(e.tokens for e in ledger) == budget.tokens_spent > 0  # every step's spend, and nothing else
    assert sum(e.seconds for e in ledger) <= budget.seconds_spent  # sequential steps within the run's time
    assert all(e.branches >= 1 for e in ledger)


def test_an_exhausted_budget_ends_the_run_with_its_ledger(agent_llm: LatencyOptimalTTSLLM) -> None:
    example = _example()
    budget = Budget(tokens=150)
    with pytest.raises(BudgetExhaustedError) as info:
        example.solve(agent_llm, QUESTION, budget)
    error = info.value
    assert error.ledger and [e["step"] for e in error.ledger] == [e.step for e in budget.ledger]
    assert error.spent["tokens"] == budget.tokens_spent >= 150 and error.limits["tokens"] == 150
    assert sum(e["tokens"] for e in error.ledger) == budget.tokens_spent
