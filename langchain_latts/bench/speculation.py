"""``latts bench speculation``: when does speculative decoding pay, per branch count?

Branch-wise and sequence-wise parallelism compete for the same spare compute: a
drafter that speeds one branch up may slow a batch of branches down. This measures
one call's latency with and without the draft model for each branch count, on the
same questions (all branches run to the end: ``early_stop=False``). With ``settings``
(e.g. ``{"model": "smollm2-135m", "speculative_method": "ngram"}``) the target and drafter
are the user's, and ``dataset`` (a reasoning-gym task) supplies the questions.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from langchain_latts.chat_models import LatencyOptimalTTSLLM
from langchain_latts.tasks.arithmetic import generate_problems

__all__ = ["run_speculation_bench"]


def run_speculation_bench(branch_counts: list[int], *, questions: int, num_speculative_tokens: int,
                          settings: dict[str, Any] | None = None, dataset: str = "arithmetic",
                          dataset_options: dict[str, Any] | None = None,
                          console: Console | None = None) -> dict[int, dict[str, float]]:
    """Median latency per branch count, plain and with the drafter (the shipped draft, or
    the one ``settings`` configure); prints a table."""
    console = console or Console(width=None if Console().is_terminal else 140)
    if dataset == "arithmetic":
        qs = [p.question for p in generate_problems(questions, seed=5)]
    else:
        from langchain_latts.bench.tts import bench_items

        qs = [item.question for item in bench_items(dataset, questions, options=dataset_options)]
    settings = {"seed": 0, "early_stop": False} | (settings or {})
    drafter = {k: settings.pop(k) for k in ("speculative_method", "draft_model") if k in settings}
    plain = LatencyOptimalTTSLLM(**settings, num_speculative_tokens=0)
    spec = LatencyOptimalTTSLLM(**settings, **(drafter or {"speculative_method": "draft_model"}),
                                num_speculative_tokens=num_speculative_tokens)
    with console.status("starting two vLLM engines (plain and with the draft)..."):
        plain.warmup()
        spec.warmup()
    results: dict[int, dict[str, float]] = {}
    for n in branch_counts:
        times: dict[str, list[float]] = {"plain": [], "sd": []}
        acceptance: list[float] = []
        for q in qs:
            for name, llm in (("plain", plain), ("sd", spec)):
                started = time.perf_counter()
                message = llm.invoke(q, branches=n)
                times[name].append(time.perf_counter() - started)
                meta = message.response_metadata["tts"]["speculative"]
                if meta and meta["acceptance_rate"] is not None:
                    acceptance.append(meta["acceptance_rate"])
        p, s = statistics.median(times["plain"]), statistics.median(times["sd"])
        results[n] = {"plain_s": p, "sd_s": s, "speedup": p / s, "acceptance": statistics.fmean(acceptance)}
        console.print(f"N={n}: plain {p * 1e3:.0f} ms, speculative {s * 1e3:.0f} ms ({p / s:.2f}x)")
    table = Table(title=f"latts bench speculation: {settings.get('model') or 'built-in pair'}, median of {questions} "
                        f"questions ({dataset}), {drafter or 'draft model'}, {num_speculative_tokens} speculative tokens")
    for column in ("branches", "plain", "speculative", "speed-up", "acceptance rate"):
        table.add_column(column, justify="right")
    for n, r in results.items():
        table.add_row(str(n), f"{r['plain_s'] * 1e3:.0f} ms", f"{r['sd_s'] * 1e3:.0f} ms", f"{r['speedup']:.2f}x",
                      f"{r['acceptance']:.3f}")
    console.print(table)
    return results
