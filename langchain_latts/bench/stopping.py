"""``latts bench stop-at-answer``: what ending a branch once it has stated its answer saves.

Models that answer, then ramble (SmolLM2: "12 + 9 = 21 cows.\\n\\nThis is the result of a
game of probability...") spend most of a branch's tokens after the answer. With
``stop_at_answer=True`` a branch ends at the first line break or end of sentence after a
stated answer. On the same questions and seeds, one call at a time, ``branches`` fixed and
no early stop (so only the setting differs): accuracy, output tokens per call and median
latency, with and without it.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from langchain_latts.bench.tts import bench_items
from langchain_latts.chat_models import LatencyOptimalTTSLLM

__all__ = ["run_stop_bench"]


def run_stop_bench(*, settings: dict[str, Any], dataset: str, dataset_options: dict[str, Any] | None = None,
                   problems: int = 100, branches: int = 8, out: Path | None = None,
                   console: Console | None = None) -> dict[str, Any]:
    """Run the comparison (module docstring); print it and save JSON."""
    console = console or Console(width=120)
    items = bench_items(dataset, problems, options=dataset_options)
    llm = LatencyOptimalTTSLLM(**{"seed": 0} | settings)
    llm.warmup()
    results: dict[str, dict[str, float]] = {}
    for name, stop in (("runs to its end", False), ("stop_at_answer", True)):
        rows = []
        with console.status(f"{name}..."):
            for item in items:
                started = time.monotonic()
                message = llm.invoke(item.question, branches=branches, early_stop=False, stop_at_answer=stop)
                rows.append((item.grade(message.response_metadata["tts"]["answer"]), time.monotonic() - started,
                             message.usage_metadata["output_tokens"] if message.usage_metadata else 0))
        results[name] = {"accuracy": sum(r[0] for r in rows) / len(rows),
                         "median_s": statistics.median(r[1] for r in rows),
                         "tokens": statistics.fmean(r[2] for r in rows)}
    llm.engine.shutdown()
    base, cut = results["runs to its end"], results["stop_at_answer"]
    report = {"model": settings.get("model") or "latts-tiny-arith", "dataset": dataset,
              "dataset_options": dataset_options or {}, "problems": len(items), "branches": branches,
              "results": results, "tokens_saved": 1 - cut["tokens"] / base["tokens"],
              "accuracy_change": cut["accuracy"] - base["accuracy"],
              "latency_ratio": base["median_s"] / cut["median_s"]}
    table = Table(title=f"latts bench stop-at-answer: {report['model']} on {dataset}, {len(items)} problems, "
                        f"{branches} branches, no early stop")
    for column in ("branches", "accuracy", "tokens/call", "median ms"):
        table.add_column(column, justify="left" if column == "branches" else "right")
    for name, r in results.items():
        table.add_row(name, f"{r['accuracy']:.1%}", f"{r['tokens']:.0f}", f"{r['median_s'] * 1000:.0f}")
    console.print(table)
    console.print(f"tokens saved {report['tokens_saved']:.1%}, accuracy {report['accuracy_change'] * 100:+.1f} "
                  f"points, median latency {report['latency_ratio']:.2f}x faster")
    if out is not None:
        out.write_text(json.dumps(report, indent=1))
    return report
