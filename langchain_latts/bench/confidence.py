"""``latts bench confidence``: the model's own confidence as a vote weight and a cut-off.

On the same held-out problems of the built-in task (seed 20261126, as ``latts bench tts``),
at 16 branches on the default engine, one call at a time: ``majority`` against
``confidence_weighted`` and ``confidence_filtered`` (accuracy); ``majority`` with and
without ``prune="confidence"`` (generated tokens and accuracy); and at a tight deadline --
one branch's p90 latency, measured first -- with and without the cut-off. Prints the table
and the ratios; writes ``bench-confidence.json``.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from langchain_latts.bench.tts import Point, _measure, _one_call, bench_items
from langchain_latts.chat_models import LatencyOptimalTTSLLM

__all__ = ["run_confidence_bench"]

BRANCHES = 16


def run_confidence_bench(*, problems: int = 200, out: Path | None = None,
                         console: Console | None = None) -> dict[str, Any]:
    """Run the benchmark (module docstring), print it and save ``out``."""
    console = console or Console(width=120)
    items = bench_items("arithmetic", problems)
    llm = LatencyOptimalTTSLLM(seed=0, max_tokens=160, branches=BRANCHES)
    methods: list[tuple[str, dict[str, Any]]] = [
        ("majority", {}),
        ("confidence_weighted", {"strategy": "confidence_weighted"}),
        ("confidence_filtered (keep 0.5)", {"strategy": "confidence_filtered"}),
        ("majority + prune='confidence'", {"prune": "confidence"}),
    ]
    points: list[Point] = []
    started = time.monotonic()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("starting the engine", total=(len(methods) + 3) * len(items))
        llm.warmup()

        def run(name: str, options: dict[str, Any], deadline: float | None = None) -> Point:
            progress.update(task, description=name)
            point = _measure(Point(name, "confidence", deadline), items, partial(_one_call, llm, options),
                             lambda: progress.advance(task))
            points.append(point)
            return point

        one = run("1 branch", {"branches": 1}).summary()
        for name, options in methods:
            run(f"{name}, {BRANCHES} branches", options)
        tight = round(one["p90_s"], 4)
        for name, options in (("majority", {}), ("majority + prune='confidence'", {"prune": "confidence"})):
            run(f"{name} @ {tight * 1000:.0f} ms", options | {"deadline_s": tight}, tight)
        llm.engine.shutdown()
    summaries = [p.summary() for p in points]
    by = {s["method"]: s for s in summaries}
    base, cut = by[f"majority, {BRANCHES} branches"], by[f"majority + prune='confidence', {BRANCHES} branches"]
    tight_name = f"@ {tight * 1000:.0f} ms"
    ratios = {
        "weighted_minus_majority_points": (by[f"confidence_weighted, {BRANCHES} branches"]["accuracy"]
                                           - base["accuracy"]) * 100,
        "filtered_minus_majority_points": (by[f"confidence_filtered (keep 0.5), {BRANCHES} branches"]["accuracy"]
                                           - base["accuracy"]) * 100,
        "cutoff_token_saving": 1 - cut["tokens"] / base["tokens"],
        "cutoff_minus_majority_points": (cut["accuracy"] - base["accuracy"]) * 100,
        "tight_deadline_s": tight,
        "tight_cutoff_minus_majority_points": (by[f"majority + prune='confidence' {tight_name}"]["accuracy"]
                                               - by[f"majority {tight_name}"]["accuracy"]) * 100,
    }
    report = {"problems": len(items), "branches": BRANCHES, "seconds": round(time.monotonic() - started, 1),
              "points": summaries, "ratios": ratios}
    table = Table(title=f"latts bench confidence: {len(items)} problems (built-in task, held out), one call at a time")
    for column in ("method", "accuracy [95% CI]", "median ms", "tokens"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for s in summaries:
        table.add_row(s["method"], f"{s['accuracy']:.1%} [{s['ci95_low']:.1%}, {s['ci95_high']:.1%}]",
                      f"{s['median_s'] * 1000:.0f}", f"{s['tokens']:.0f}")
    console.print(table)
    console.print(
        f"confidence_weighted {ratios['weighted_minus_majority_points']:+.1f} and confidence_filtered "
        f"{ratios['filtered_minus_majority_points']:+.1f} points against majority (goal >= 0); the cut-off generates "
        f"{ratios['cutoff_token_saving']:.0%} fewer tokens at {ratios['cutoff_minus_majority_points']:+.1f} points "
        f"(goal >= 30% fewer at >= -1 point); at {tight * 1000:.0f} ms the cut-off is "
        f"{ratios['tight_cutoff_minus_majority_points']:+.1f} points against majority.")
    if out is not None:
        out.write_text(json.dumps(report, indent=1))
        console.print(f"saved {out} ({report['seconds']:.0f} s)")
    return report
