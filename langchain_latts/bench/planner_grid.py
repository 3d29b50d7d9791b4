"""``latts bench planner --grid``: the planner against every fixed configuration, at several deadlines.

On held-out problems of the built-in task that neither training, calibration nor ``latts
models eval`` use (held-out split from index 600), one call at a time, every call seeded
the same way, for each deadline:

* the **grid**: branches 1, 2, 4, 8, 16 x speculation off / on (draft, k = 4) / dynamic
  (the schedule k = 4 / 2 / 0 for 1-4 / 5-8 / 9+ sequences);
* **auto**: the model's defaults (``branches="auto"``, ``num_speculative_tokens="auto"``);
* **branches-only**: ``branches="auto"`` with speculation off;
* **speculation-only**: one branch with the speculation ``auto`` chooses.

Reported per method and deadline: accuracy and the share of calls that returned within
deadline + 100 ms. Deadlines default to multiples (1, 1.5, 2, 3) of one branch's predicted
median latency without speculation, from the cached profile (``latts profile`` first).

Then the early-stop rules on 16 branches without a deadline (``early_stop`` False, exact,
adaptive): accuracy and the output tokens generated.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from langchain_latts.bench.stats import summarize
from langchain_latts.chat_models import LatencyOptimalTTSLLM
from langchain_latts.errors import LattsValueError
from langchain_latts.planner.engine_config import cached_profile
from langchain_latts.planner.latency import predict_latency
from langchain_latts.settings import TTSSettings
from langchain_latts.tasks.arithmetic import Problem

__all__ = ["run_planner_grid"]

GRID_BRANCHES = (1, 2, 4, 8, 16)
DYNAMIC = [(1, 4, 4), (5, 8, 2), (9, 256, 0)]
DEADLINE_MULTIPLES = (1.0, 1.5, 2.0, 3.0)
ON_TIME_SLACK_S = 0.1
#: Where the benchmark's problems start in the held-out split.
FIRST_PROBLEM = 600

#: Engine settings per speculation arm of the grid.
ARMS: dict[str, dict[str, Any]] = {
    "off": {"num_speculative_tokens": 0},
    "on": {"speculative_method": "draft_model", "num_speculative_tokens": 4},
    "dynamic": {"speculative_method": "draft_model", "num_speculative_tokens": DYNAMIC},
}


def bench_problems(n: int) -> list[Problem]:
    from langchain_latts.models.train import HELD_OUT_SEED, HELD_OUT_SIZE
    from langchain_latts.tasks.arithmetic import generate_problems

    if n > HELD_OUT_SIZE - FIRST_PROBLEM:
        raise LattsValueError.bad("problems", n, f"must be <= {HELD_OUT_SIZE - FIRST_PROBLEM} (the unused part of "
                                  "the held-out split)", "Use e.g. --problems 200.")
    return generate_problems(HELD_OUT_SIZE, seed=HELD_OUT_SEED)[FIRST_PROBLEM:FIRST_PROBLEM + n]


def default_deadlines() -> list[float]:
    profile = cached_profile(TTSSettings())
    if profile is None:
        raise LattsValueError.bad("profile", None, "must be measured before the planner can be benchmarked",
                                  "Run `latts profile` first.")
    one = predict_latency(profile, lengths=[profile.output_length(0.5)], prompt_tokens=24)
    return [round(one * m, 3) for m in DEADLINE_MULTIPLES]


def _call(llm: LatencyOptimalTTSLLM, problem: Problem, deadline: float | None, **options: Any) -> dict[str, Any]:
    started = time.monotonic()
    message = llm.invoke(problem.question, deadline_s=deadline, **options)
    elapsed = time.monotonic() - started
    tts = message.response_metadata["tts"]
    plan = tts.get("plan") or {}
    return {"correct": tts["answer"] == str(problem.answer), "elapsed_s": elapsed,
            "on_time": deadline is None or elapsed <= deadline + ON_TIME_SLACK_S,
            "tokens": message.usage_metadata["output_tokens"] if message.usage_metadata else 0,
            "branches": tts["branches_launched"], "planned": plan.get("branches")}


def _summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return summarize(rows, "on_time", "branches")


def _sweep(llm: LatencyOptimalTTSLLM, items: Sequence[Problem], deadlines: Sequence[float | None],
           options: dict[str, Any], advance: Callable[[], None]) -> dict[str, dict[str, Any]]:
    """Every problem at every deadline with these call options: deadline -> summary."""
    summaries = {}
    for deadline in deadlines:
        rows = []
        for problem in items:
            rows.append(_call(llm, problem, deadline, **options))
            advance()
        summaries[str(deadline)] = _summary(rows)
    return summaries


def run_planner_grid(*, problems: int = 200, deadlines: list[float] | None = None, out: Path | None = None,
                      plot: Path | None = None, console: Console | None = None) -> dict[str, Any]:
    """Run the benchmark (module docstring), print the tables, save JSON and a plot."""
    console = console or Console()
    items = bench_problems(problems)
    deadlines = deadlines or default_deadlines()
    results: dict[str, dict[str, dict[str, Any]]] = {}  # method -> deadline -> summary
    early: dict[str, dict[str, Any]] = {}
    calls_per_arm = len(items) * len(deadlines) * (len(GRID_BRANCHES) + 1)
    with Progress(console=console, transient=True) as progress:
        for arm, engine_settings in ARMS.items():
            task = progress.add_task(f"{arm}: starting the engine", total=calls_per_arm)
            llm = LatencyOptimalTTSLLM(seed=0, **engine_settings)
            llm.warmup()
            methods: list[tuple[str, dict[str, Any]]] = [(f"B={b} {arm}", {"branches": b}) for b in GRID_BRANCHES]
            if arm == "off":
                methods.append(("branches-only", {"branches": "auto"}))
            for name, options in methods:
                progress.update(task, description=f"{name}")
                results[name] = _sweep(llm, items, deadlines, options, partial(progress.advance, task))
            llm.engine.shutdown()
        task = progress.add_task("auto", total=len(items) * (len(deadlines) * 2 + 3))
        auto = LatencyOptimalTTSLLM(seed=0)
        auto.warmup()
        for name, options in (("auto", {}), ("speculation-only", {"branches": 1})):
            results[name] = _sweep(auto, items, deadlines, options, partial(progress.advance, task))
        for rule in (False, "exact", "adaptive"):
            early[str(rule)] = _sweep(auto, items, [None], {"branches": 16, "early_stop": rule},
                                      partial(progress.advance, task))["None"]
        speculation = auto.engine.config.speculative
        auto.engine.shutdown()
    report = {"problems": len(items), "deadlines": deadlines, "results": results, "early_stop": early,
              "auto_speculation": None if speculation is None else {
                  "method": speculation.method, "k": speculation.num_speculative_tokens,
                  "schedule": speculation.schedule}}
    _print(report, console)
    if out is not None:
        out.write_text(json.dumps(report, indent=1, default=str))
    if plot is not None:
        _plot(report, plot)
        console.print(f"plot saved to {plot}")
    return report


def _grid_best(report: dict[str, Any], deadline: str) -> tuple[str, float]:
    grid = {name: r[deadline]["accuracy"] for name, r in report["results"].items() if name.startswith("B=")}
    name = max(grid, key=lambda n: grid[n])
    return name, grid[name]


def _print(report: dict[str, Any], console: Console) -> None:
    deadlines = [str(d) for d in report["deadlines"]]
    table = Table(title=f"latts bench planner --grid: {report['problems']} held-out problems; accuracy (on time within "
                        f"deadline + {ON_TIME_SLACK_S * 1000:.0f} ms)")
    table.add_column("method")
    for d in deadlines:
        table.add_column(f"{float(d) * 1000:.0f} ms", justify="right")
    order = ["auto", "branches-only", "speculation-only"] + [n for n in report["results"] if n.startswith("B=")]
    for name in order:
        cells = []
        for d in deadlines:
            r = report["results"][name][d]
            cells.append(f"{r['accuracy']:.1%} ({r['on_time']:.0%})" + (f" B~{r['branches']:.1f}"
                                                                         if not name.startswith("B=") else ""))
        table.add_row(name, *cells)
    best = [_grid_best(report, d) for d in deadlines]
    table.add_row("grid best", *(f"{acc:.1%} {name}" for name, acc in best))
    console.print(table)
    gaps = [report["results"]["auto"][d]["accuracy"] - acc for d, (_, acc) in zip(deadlines, best)]
    on_time = statistics.mean(report["results"]["auto"][d]["on_time"] for d in deadlines)
    joint = [d for d in deadlines if report["results"]["auto"][d]["accuracy"] > max(
        report["results"]["branches-only"][d]["accuracy"], report["results"]["speculation-only"][d]["accuracy"])]
    console.print(f"auto - grid best: {', '.join(f'{g * 100:+.1f}' for g in gaps)} points (goal >= -2 at every "
                  f"deadline); auto on time {on_time:.1%} (goal >= 95%); auto beats both branches-only and "
                  f"speculation-only at {len(joint)} of {len(deadlines)} deadlines (goal >= 1)")
    early = report["early_stop"]
    none, adaptive, exact = early["False"], early["adaptive"], early["exact"]
    console.print(
        f"early stop, 16 branches, no deadline: none {none['accuracy']:.1%} / {none['tokens']:.0f} tokens, "
        f"exact {exact['accuracy']:.1%} / {exact['tokens']:.0f}, adaptive {adaptive['accuracy']:.1%} / "
        f"{adaptive['tokens']:.0f}: adaptive saves {1 - adaptive['tokens'] / none['tokens']:.1%} of tokens at "
        f"{(adaptive['accuracy'] - none['accuracy']) * 100:+.1f} points (goal >= 30% at >= -1 point)")


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    deadlines = [str(d) for d in report["deadlines"]]
    xs = [float(d) * 1000 for d in deadlines]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, style in (("auto", "o-"), ("branches-only", "s--"), ("speculation-only", "^--")):
        ax.plot(xs, [report["results"][name][d]["accuracy"] * 100 for d in deadlines], style, label=name)
    ax.plot(xs, [_grid_best(report, d)[1] * 100 for d in deadlines], "k:", label="best fixed configuration")
    ax.set_xlabel("deadline (ms)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"latts bench planner --grid ({report['problems']} held-out problems)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
