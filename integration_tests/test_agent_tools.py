"""A standard LangChain agent (create_agent) on the real engine with the built-in model and its
calculator tool: schema-valid calls, loops that end, answers right at the model card's rate."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from langchain_latts import LatencyOptimalTTSLLM
from langchain_latts.models.train import HELD_OUT_SEED, HELD_OUT_SIZE
from langchain_latts.tasks.arithmetic import generate_problems

from .conftest import BASE

PROBLEMS = 20


def _example() -> ModuleType:
    path = Path(__file__).parent.parent / "examples" / "agent_tools.py"
    spec = importlib.util.spec_from_file_location("agent_tools", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_create_agent_calls_the_calculator_and_answers(llm: LatencyOptimalTTSLLM) -> None:
    example = _example()
    agent = example.build_agent(LatencyOptimalTTSLLM(branches=8, deadline_s=2.0, **BASE))  # the session's engine
    problems = generate_problems(HELD_OUT_SIZE, seed=HELD_OUT_SEED)[:PROBLEMS]  # the model card's eval split
    right = 0
    for problem in problems:
        result = example.ask(agent, problem.question)
        assert result["calls"], result  # the agent used the tool ...
        for call in result["calls"]:  # ... with arguments that match its schema
            assert call["name"] == "calculator" and set(call["args"]) == {"expression"}
            assert isinstance(call["args"]["expression"], str)
        assert result["steps"] <= 3  # call, then answer: the loop ended
        right += result["answer"] == str(problem.answer)
    # The model card: 98.8% of conversations call the calculator correctly and then answer right.
    assert right >= 0.9 * PROBLEMS, f"{right}/{PROBLEMS} right"
