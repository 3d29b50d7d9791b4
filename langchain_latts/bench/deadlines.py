"""``latts bench deadlines``: do deadlines hold? Overshoot and leaks over many calls.

Runs ``calls`` questions (difficulty levels 3-5, so branches often outlive the
deadline) with deadlines cycling through ``deadlines``, ``concurrency`` calls at a time
on one shared engine. Each call is timed from the caller's side (``await ainvoke``),
so the overshoot includes everything: queueing in the engine, the abort, the vote and
the hop back to the caller. After the run, the engine's unfinished requests are the
leak count (goal 0).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from langchain_latts.chat_models import LatencyOptimalTTSLLM
from langchain_latts.tasks.arithmetic import generate_problems

__all__ = ["run_deadline_bench"]

#: A call is on time when it returns within its deadline plus this margin.
MARGIN_S = 0.1


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _measure(llm: LatencyOptimalTTSLLM, questions: list[str], deadlines: list[float],
                   concurrency: int) -> list[dict[str, Any]]:
    gate = asyncio.Semaphore(concurrency)

    async def one(question: str, deadline_s: float) -> dict[str, Any]:
        async with gate:
            started = time.perf_counter()
            message = await llm.ainvoke(question, deadline_s=deadline_s)
            elapsed = time.perf_counter() - started
        tts = message.response_metadata["tts"]
        return {"deadline_s": deadline_s, "elapsed_s": elapsed, "hit": tts["deadline_hit"],
                "finished": tts["branches_finished"], "partial": tts["partial"]}

    return list(await asyncio.gather(*(one(q, deadlines[i % len(deadlines)]) for i, q in enumerate(questions))))


def run_deadline_bench(*, calls: int, deadlines: list[float], concurrency: int, branches: int,
                       plot: Path | None, settings: dict[str, Any] | None = None,
                       console: Console | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table (and save a plot); returns the summary.
    ``settings`` choose another model (e.g. ``{"model": "smollm2-135m"}``), which is asked
    "What is a + b? Answer with the number." instead of the built-in task's chains."""
    console = console or Console(width=None if Console().is_terminal else 140)
    llm = LatencyOptimalTTSLLM(**{"branches": branches, "early_stop": True, **(settings or {})})
    with console.status("starting the vLLM engine..."):
        llm.warmup()
    if llm.model is None:
        questions = [p.question for p in generate_problems(calls, seed=777, levels=[3, 4, 5])]
    else:
        rng = random.Random(777)
        questions = [f"What is {rng.randint(0, 50)} + {rng.randint(0, 50)}? Answer with the number."
                     for _ in range(calls)]
    with console.status(f"{calls} calls, {concurrency} at a time..."):
        rows = asyncio.run(_measure(llm, questions, deadlines, concurrency))
    leaked = llm.engine.num_unfinished_requests()
    table = Table(title=f"latts bench deadlines: {calls} calls, {branches} branches, concurrency {concurrency}")
    for column in ("deadline", "calls", f"on time (+{MARGIN_S * 1e3:.0f} ms)", "deadline hit",
                   "median overshoot*", "p99 overshoot*", "max overshoot*", "partial", "branches finished"):
        table.add_column(column, justify="right")
    summary: dict[str, Any] = {"calls": calls, "leaked_requests": leaked, "per_deadline": {}}
    for deadline in deadlines:
        group = [r for r in rows if r["deadline_s"] == deadline]
        summary["per_deadline"][deadline] = _summarise(group)
        table.add_row(f"{deadline:g} s", *_cells(summary["per_deadline"][deadline]))
    summary["overall"] = _summarise(rows)
    table.add_row("all", *_cells(summary["overall"]))
    console.print(table)
    console.print("* overshoot = elapsed − deadline, over the calls that reached their deadline "
                  "(the others returned early, with every branch finished or the vote decided).")
    o = summary["overall"]
    console.print(f"on time: {o['on_time']:.1%} of {calls} calls (goal ≥ 99%); overshoot median "
                  f"{o['median_ms']:.1f} ms, p99 {o['p99_ms']:.1f} ms; leaked requests after the run: {leaked} "
                  "(goal 0)")
    if plot is not None:
        _plot(rows, plot)
        console.print(f"plot saved to {plot}")
    return summary


def _summarise(rows: list[dict[str, Any]]) -> dict[str, float]:
    over = [(r["elapsed_s"] - r["deadline_s"]) * 1e3 for r in rows if r["hit"]] or [0.0]
    return {
        "calls": len(rows),
        "on_time": sum(r["elapsed_s"] <= r["deadline_s"] + MARGIN_S for r in rows) / len(rows),
        "hit": sum(r["hit"] for r in rows) / len(rows),
        "median_ms": statistics.median(over),
        "p99_ms": _quantile(over, 0.99),
        "max_ms": max(over),
        "partial": sum(r["partial"] for r in rows) / len(rows),
        "finished": statistics.fmean(r["finished"] for r in rows),
    }


def _cells(s: dict[str, float]) -> list[str]:
    return [str(int(s["calls"])), f"{s['on_time']:.1%}", f"{s['hit']:.0%}", f"{s['median_ms']:.1f} ms",
            f"{s['p99_ms']:.1f} ms", f"{s['max_ms']:.1f} ms", f"{s['partial']:.0%}", f"{s['finished']:.1f}"]


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for deadline in sorted({r["deadline_s"] for r in rows}):
        over = [(r["elapsed_s"] - deadline) * 1e3 for r in rows if r["deadline_s"] == deadline and r["hit"]]
        if over:
            ax.hist(over, bins=30, alpha=0.6, label=f"deadline {deadline:g} s")
    ax.axvline(MARGIN_S * 1e3, color="k", linestyle="--", label=f"+{MARGIN_S * 1e3:.0f} ms")
    ax.set_xlabel("overshoot past the deadline (ms)")
    ax.set_ylabel("calls")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
