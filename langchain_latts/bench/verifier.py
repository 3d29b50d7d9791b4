"""``latts bench verifier``: what the step verifier buys -- selection strategies, and pruning
at a tight deadline.

On the last 200 problems of the held-out split (index 800 on; neither training, ``latts
models eval``, calibration nor ``latts bench planner`` uses them), one call at a time,
seeded, on the default engine (speculation ``auto``), with the shipped step verifier
``arithmetic_steps``:

1. **Strategies at 8 branches**, no deadline: ``majority``, ``weighted_majority`` and
   ``best_of_n`` (each with its exact early-stop rule), plus one branch for reference.
2. **Pruning at a tight deadline**: the deadline is a multiple (1x, 1.5x) of one branch's
   median latency measured in step 1. Branches chosen by the planner (``"auto"``) and
   pinned at 8, each selected by ``best_of_n`` with the verifier run only on finished
   branches ("verify at end"), against the same with ``prune=True`` (a branch is aborted
   at its first wrong step and a replacement continues from its last verified step while
   time allows); one branch for reference.

Printed: accuracy with a 95% Wilson interval, median latency, output tokens, pruned and
respawned branches per call, and the differences the issue asks for.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, cast, get_args

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from langchain_latts.bench.stats import summarize
from langchain_latts.chat_models import LatencyOptimalTTSLLM
from langchain_latts.errors import LattsValueError
from langchain_latts.tasks.arithmetic import Problem
from langchain_latts.tts.selection import Strategy

__all__ = ["run_verifier_bench"]

#: Where this benchmark's problems start in the held-out split (the last 200).
FIRST_PROBLEM = 800
BRANCHES = 8
DEADLINE_MULTIPLES = (1.0, 1.5)
#: The methods compared at each tight deadline (call options).
TIGHT_METHODS: dict[str, dict[str, Any]] = {
    "1 branch": {"branches": 1, "strategy": "majority"},
    "auto, verify at end": {"branches": "auto", "strategy": "best_of_n"},
    "auto, prune": {"branches": "auto", "strategy": "best_of_n", "prune": True},
    f"{BRANCHES} branches, verify at end": {"branches": BRANCHES, "strategy": "best_of_n"},
    f"{BRANCHES} branches, prune": {"branches": BRANCHES, "strategy": "best_of_n", "prune": True},
}


def bench_problems(n: int) -> list[Problem]:
    from langchain_latts.tasks.arithmetic import HELD_OUT_SEED, HELD_OUT_SIZE, generate_problems

    if not 1 <= n <= HELD_OUT_SIZE - FIRST_PROBLEM:
        raise LattsValueError.bad("problems", n, f"must be in 1..{HELD_OUT_SIZE - FIRST_PROBLEM} (the unused end of "
                                  "the held-out split)", "Use e.g. --problems 200.")
    return generate_problems(HELD_OUT_SIZE, seed=HELD_OUT_SEED)[FIRST_PROBLEM:FIRST_PROBLEM + n]


def _call(llm: LatencyOptimalTTSLLM, problem: Problem, **options: Any) -> dict[str, Any]:
    started = time.monotonic()
    message = llm.invoke(problem.question, **options)
    elapsed = time.monotonic() - started
    tts = message.response_metadata["tts"]
    return {"correct": tts["answer"] == str(problem.answer), "elapsed_s": elapsed,
            "tokens": message.usage_metadata["output_tokens"] if message.usage_metadata else 0,
            "pruned": tts["branches_pruned"], "respawned": tts["branches_respawned"],
            "finished": tts["branches_finished"]}


def _summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return summarize(rows, "pruned", "respawned", "finished")


def _sweep(llm: LatencyOptimalTTSLLM, items: Sequence[Problem], options: dict[str, Any],
           advance: Callable[[], None]) -> dict[str, Any]:
    rows = []
    for problem in items:
        rows.append(_call(llm, problem, **options))
        advance()
    return _summary(rows)


def parse_strategies(text: str) -> list[Strategy]:
    """``"majority,best_of_n"`` as strategies; an unknown name is a LattsValueError."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    known = get_args(Strategy)
    for name in names:
        if name not in known:
            raise LattsValueError.bad("strategies", name, f"must name strategies among {', '.join(known)}",
                                      "e.g. --strategies majority,best_of_n")
    return cast(list[Strategy], names)


def run_verifier_bench(*, problems: int = 200, strategies: Sequence[Strategy] = get_args(Strategy),
                       out: Path | None = None, console: Console | None = None) -> dict[str, Any]:
    """Run the benchmark (module docstring), print the tables and save the JSON."""
    console = console or Console(width=120)
    items = bench_problems(problems)
    selection: dict[str, dict[str, Any]] = {}  # method -> summary, 8 branches without a deadline
    tight: dict[str, dict[str, dict[str, Any]]] = {}
    llm = LatencyOptimalTTSLLM(seed=0, verifier="arithmetic_steps")
    with Progress(console=console, transient=True) as progress:
        calls = len(items) * (1 + len(strategies) + len(TIGHT_METHODS) * len(DEADLINE_MULTIPLES))
        task = progress.add_task("starting the engine", total=calls)
        llm.warmup()
        advance = partial(progress.advance, task)
        progress.update(task, description="one branch")
        one = _sweep(llm, items, {"branches": 1, "strategy": "majority"}, advance)
        selection["1 branch"] = one
        one_median = one["median_s"]
        for strategy in strategies:
            progress.update(task, description=f"{BRANCHES} branches, {strategy}")
            selection[strategy] = _sweep(llm, items, {"branches": BRANCHES, "strategy": strategy}, advance)
        deadlines = [round(one_median * m, 4) for m in DEADLINE_MULTIPLES]
        for deadline in deadlines:
            row: dict[str, dict[str, Any]] = {}
            for name, options in TIGHT_METHODS.items():
                progress.update(task, description=f"deadline {deadline * 1000:.0f} ms, {name}")
                row[name] = _sweep(llm, items, {"deadline_s": deadline, **options}, advance)
            tight[str(deadline)] = row
        speculation = llm.engine.config.speculative
        llm.engine.shutdown()
    report = {"problems": len(items), "first_problem": FIRST_PROBLEM, "branches": BRANCHES,
              "one_branch_median_s": one_median, "strategies": selection, "deadlines": deadlines,
              "tight": tight, "speculation": None if speculation is None else {
                  "method": speculation.method, "k": speculation.num_speculative_tokens}}
    _print(report, console)
    if out is not None:
        out.write_text(json.dumps(report, indent=1))
        console.print(f"numbers saved to {out}")
    return report


def _cell(r: dict[str, Any]) -> list[str]:
    low, high = r["ci95"]
    return [f"{r['accuracy']:.1%} [{low:.1%}, {high:.1%}]", f"{r['median_s'] * 1000:.0f}", f"{r['tokens']:.0f}",
            f"{r['finished']:.1f}", f"{r['pruned']:.1f} / {r['respawned']:.1f}"]


def _table(title: str) -> Table:
    table = Table(title=title)
    for name in ("method", "accuracy [95% CI]", "median ms", "tokens/call", "finished", "pruned / respawned"):
        table.add_column(name, justify="left" if name == "method" else "right")
    return table


def _print(report: dict[str, Any], console: Console) -> None:
    n = report["problems"]
    table = _table(f"latts bench verifier: {n} held-out problems, {report['branches']} branches, no deadline, "
                   "verifier arithmetic_steps")
    for name, r in report["strategies"].items():
        table.add_row(name, *_cell(r))
    console.print(table)
    s = report["strategies"]
    scored = [k for k in ("weighted_majority", "best_of_n") if k in s]
    if scored and "majority" in s:
        best = max(scored, key=lambda k: s[k]["accuracy"])
        console.print(f"{best} - majority: {(s[best]['accuracy'] - s['majority']['accuracy']) * 100:+.1f} points "
                      f"(goal >= +5)")
    for deadline in report["deadlines"]:
        row = report["tight"][str(deadline)]
        table = _table(f"deadline {deadline * 1000:.0f} ms ({deadline / report['one_branch_median_s']:.1f}x one "
                       "branch's median latency)")
        for name, r in row.items():
            table.add_row(name, *_cell(r))
        console.print(table)
        gains = [f"{kind}: {(row[f'{kind}, prune']['accuracy'] - row[f'{kind}, verify at end']['accuracy']) * 100:+.1f}"
                 for kind in ("auto", f"{report['branches']} branches")]
        console.print(f"prune - verify at end: {', '.join(gains)} points (goal >= +5)")
