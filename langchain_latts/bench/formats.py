"""``latts bench formats``: structured output and tool calling on the built-in model.

On problems of the model card's evaluation split (held-out, the first ``--problems``),
one call at a time, seeded, on the default engine, for 1 and 8 branches:

* **structured output**: ``with_structured_output(Answer)`` (``{"total": int}``, method
  ``json_schema``) -- the share of calls returning an object, and of correct ones;
* **tool calling**: ``bind_tools([calculator])`` for each way of reading calls
  (``tool_calling="parser"`` with vLLM's hermes parser, ``"constrained"``) -- the share of
  calls that call the calculator with the problem's expression (its value equal to the
  answer);
* **the agent**: ``create_agent`` with the calculator (``examples/agent_tools.py``'s
  loop) -- the share of right final answers (8 branches).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from langchain_core.tools import tool
from pydantic import BaseModel
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from langchain_latts.chat_models import LatencyOptimalTTSLLM
from langchain_latts.tasks.arithmetic import Problem, calculator

__all__ = ["run_formats_bench"]


class Answer(BaseModel):
    """The structured answer of an arithmetic problem."""

    total: int


@tool("calculator")
def calculator_tool(expression: str) -> str:
    """Evaluate integers joined by + and -, e.g. '12 + 35 - 7'."""
    return calculator(expression)


def _problems(n: int) -> list[Problem]:
    from langchain_latts.models.train import HELD_OUT_SEED, HELD_OUT_SIZE
    from langchain_latts.tasks.arithmetic import generate_problems

    return generate_problems(HELD_OUT_SIZE, seed=HELD_OUT_SEED)[:n]


def _structured(llm: LatencyOptimalTTSLLM, problem: Problem) -> dict[str, Any]:
    out = llm.with_structured_output(Answer, include_raw=True).invoke(problem.question)
    parsed = out["parsed"]
    return {"ok": parsed is not None, "correct": parsed is not None and parsed.total == problem.answer}


def _tool(llm: LatencyOptimalTTSLLM, problem: Problem, mode: str) -> dict[str, Any]:
    message = llm.bind_tools([calculator_tool]).invoke(problem.question, tool_calling=mode)
    calls = message.tool_calls
    ok = len(calls) == 1 and calls[0]["name"] == "calculator" and isinstance(calls[0]["args"].get("expression"), str)
    correct = False
    if ok:
        try:
            correct = int(calculator(calls[0]["args"]["expression"])) == problem.answer
        except ValueError:
            correct = False
    return {"ok": ok, "correct": correct}


def _agent(agent: Any, problem: Problem) -> dict[str, Any]:
    messages = agent.invoke({"messages": [{"role": "user", "content": problem.question}]})["messages"]
    answer = messages[-1].response_metadata.get("tts", {}).get("answer")
    called = any(getattr(m, "tool_calls", None) for m in messages)
    return {"ok": called, "correct": answer == str(problem.answer)}


def _rate(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    return {"format_ok": statistics.mean(r["ok"] for r in rows), "correct": statistics.mean(r["correct"] for r in rows),
            "median_s": statistics.median(r["elapsed_s"] for r in rows)}


def run_formats_bench(*, problems: int = 200, out: Path | None = None, console: Console | None = None) -> dict[str, Any]:
    """Run the benchmark (module docstring), print the table and save the JSON."""
    from langchain.agents import create_agent

    console = console or Console(width=120)
    items = _problems(problems)
    llm = LatencyOptimalTTSLLM(seed=0, max_tokens=160)  # one engine: every model below shares it
    agent = create_agent(LatencyOptimalTTSLLM(seed=0, max_tokens=160, branches=8), tools=[calculator_tool])
    methods: dict[str, Callable[[Problem], dict[str, Any]]] = {}
    for b in (1, 8):
        fixed = LatencyOptimalTTSLLM(seed=0, max_tokens=160, branches=b)
        methods[f"structured output, {b} branch(es)"] = partial(_structured, fixed)
        for mode in ("parser", "constrained"):
            methods[f"tool call ({mode}), {b} branch(es)"] = partial(_tool, fixed, mode=mode)
    methods["create_agent + calculator, 8 branches"] = partial(_agent, agent)
    results: dict[str, dict[str, float]] = {}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("starting the engine", total=len(items) * len(methods))
        llm.warmup()
        for name, method in methods.items():
            progress.update(task, description=name)
            rows = []
            for problem in items:
                started = time.monotonic()
                row = method(problem)
                rows.append(row | {"elapsed_s": time.monotonic() - started})
                progress.advance(task)
            results[name] = _rate(rows)
        llm.engine.shutdown()
    report = {"problems": len(items), "results": results}
    table = Table(title=f"latts bench formats: {len(items)} held-out problems (the model card's split)")
    for column in ("method", "format right", "correct", "median ms"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for name, r in results.items():
        table.add_row(name, f"{r['format_ok']:.1%}", f"{r['correct']:.1%}", f"{r['median_s'] * 1000:.0f}")
    console.print(table)
    if out is not None:
        out.write_text(json.dumps(report, indent=1))
        console.print(f"numbers saved to {out}")
    return report
