"""``latts bench logprobs``: what asking the engine for top-k log-probs costs.

Confidence measures (:mod:`langchain_latts.tts.confidence`) need the top ``k`` log-probs of
every generated token. This runs the same branches (same prompts, same seeds, so the same
tokens) with and without ``logprobs=k`` on the default engine, at 1, 8 and 16 branches,
alternating which goes first, and prints the median latency of each and their ratio.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from langchain_latts.bench.tts import bench_problems
from langchain_latts.chat_models import LatencyOptimalTTSLLM
from langchain_latts.engines.base import BranchRequest
from langchain_latts.planner.profiler import run_requests
from langchain_latts.tts.branches import branch_seeds

__all__ = ["run_logprobs_bench"]


def run_logprobs_bench(*, problems: int = 20, k: int = 5, branch_counts: tuple[int, ...] = (1, 8, 16),
                       out: Path | None = None, console: Console | None = None) -> dict[str, Any]:
    """Measure, print and save (``out``) median latencies with and without log-probs."""
    console = console or Console(width=110)
    llm = LatencyOptimalTTSLLM(seed=0, max_tokens=160)
    with console.status("starting the vLLM engine..."):
        llm.warmup()
    engine = llm.engine
    prompts = [tuple(engine.render_prompt([{"role": "user", "content": p.question}])) for p in bench_problems(problems)]
    rows: dict[int, dict[str, float]] = {}
    with console.status("measuring..."):
        for n in branch_counts:
            times: dict[str, list[float]] = {"without": [], "with": []}
            for i, prompt in enumerate(prompts):
                seeds = branch_seeds(0, prompt, n)
                order = ("without", "with") if i % 2 else ("with", "without")
                for side in order:
                    requests = [BranchRequest(prompt_token_ids=prompt, max_tokens=160, temperature=0.8, seed=s,
                                              logprobs=k if side == "with" else None) for s in seeds]
                    started = time.perf_counter()
                    engine.run_sync(run_requests(engine, requests, f"logprobs-{side}-{n}-{i}"))
                    times[side].append(time.perf_counter() - started)
            without, with_ = statistics.median(times["without"]), statistics.median(times["with"])
            rows[n] = {"without_s": without, "with_s": with_, "ratio": with_ / without}
    table = Table(title=f"latts bench logprobs: top-{k} log-probs per token, {problems} problems, same seeds")
    for column in ("branches", "median without", "median with", "with / without"):
        table.add_column(column, justify="right")
    for n, row in rows.items():
        table.add_row(str(n), f"{row['without_s'] * 1000:.0f} ms", f"{row['with_s'] * 1000:.0f} ms", f"{row['ratio']:.2f}x")
    console.print(table)
    report = {"problems": problems, "k": k, "speculative": str(engine.config.speculative), "rows": rows}
    if out is not None:
        out.write_text(json.dumps(report, indent=1))
        console.print(f"saved {out}")
    return report
