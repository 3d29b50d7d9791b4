"""``latts bench core``: latency per branch count, and our overhead over raw ``AsyncLLM``.

Both sides run the same branches on the same engine with the same sampling and seeds
(so they generate the same tokens): *raw* submits ``N`` requests straight to vLLM's
``AsyncLLM`` and times them on the engine's loop; *latts* times ``llm.invoke`` from the
caller's thread, so it includes everything the package adds (the hop to the engine
thread, chat template, answer extraction, vote, message and LangChain callbacks).
Each round runs both sides, alternating which goes first; medians are reported.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from langchain_latts.chat_models import LatencyOptimalTTSLLM
from langchain_latts.engines.vllm_local import VLLMEngine
from langchain_latts.tts.branches import branch_seeds

__all__ = ["run_core_bench"]

QUESTION = "Compute 48 + 17 - 23 + 15 - 30 + 12."


async def _raw_branches(engine: VLLMEngine, prompt: list[int], n: int, *, max_tokens: int,
                        temperature: float, seed: int) -> tuple[float, int]:
    """Run ``n`` requests directly on ``AsyncLLM``; returns (seconds, tokens)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    llm: Any = engine._llm

    seeds = branch_seeds(seed, prompt, n)  # the same seeds the chat model uses

    async def one(i: int) -> int:
        params = SamplingParams(n=1, temperature=temperature, top_p=1.0, max_tokens=max_tokens,
                                seed=seeds[i], output_kind=RequestOutputKind.DELTA)
        tokens = 0
        async for out in llm.generate({"prompt_token_ids": prompt}, params, f"raw-{time.monotonic_ns()}-{i}"):
            tokens += len(out.outputs[0].token_ids)
        return tokens

    started = time.perf_counter()
    counts = await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - started, sum(counts)


def run_core_bench(branch_counts: list[int], *, repeats: int, max_tokens: int, plot: Path | None,
                   console: Console | None = None) -> dict[int, dict[str, float]]:
    """Measure and print the table (and save a plot); returns the medians per branch count."""
    console = console or Console(width=None if Console().is_terminal else 140)
    llm = LatencyOptimalTTSLLM(branches=1, seed=0, max_tokens=max_tokens, early_stop=False)
    with console.status("starting the vLLM engine..."):
        llm.warmup()
    engine = llm.engine
    assert isinstance(engine, VLLMEngine)
    prompt = engine.render_prompt([{"role": "user", "content": QUESTION}])
    results: dict[int, dict[str, float]] = {}
    for n in branch_counts:
        raw_times: list[float] = []
        latts_times: list[float] = []
        tokens_raw = tokens_latts = 0
        for r in range(repeats + 1):  # the first round warms up and is not kept
            # Alternate which side goes first, so neither always runs on a warmer engine.
            for side in (("raw", "latts") if r % 2 else ("latts", "raw")):
                if side == "raw":
                    raw_s, tokens_raw = engine.run_sync(
                        _raw_branches(engine, prompt, n, max_tokens=max_tokens, temperature=llm.temperature, seed=0))
                    if r:
                        raw_times.append(raw_s)
                else:
                    started = time.perf_counter()
                    message = llm.invoke(QUESTION, branches=n)
                    if r:
                        latts_times.append(time.perf_counter() - started)
                    tokens_latts = message.usage_metadata["output_tokens"] if message.usage_metadata else 0
        raw_med, latts_med = statistics.median(raw_times), statistics.median(latts_times)
        results[n] = {"raw_s": raw_med, "latts_s": latts_med, "overhead": latts_med / raw_med - 1,
                      "tokens_raw": tokens_raw, "tokens_latts": tokens_latts}
        console.print(f"N={n}: raw {raw_med * 1e3:.1f} ms, latts {latts_med * 1e3:.1f} ms "
                      f"({(latts_med / raw_med - 1) * 100:+.1f}%)")
    _print_table(console, results, repeats=repeats, max_tokens=max_tokens)
    if plot is not None:
        _plot(results, plot)
        console.print(f"plot saved to {plot}")
    return results


def _print_table(console: Console, results: dict[int, dict[str, float]], *, repeats: int, max_tokens: int) -> None:
    table = Table(title=f"latts bench core: one call, median of {repeats}, max_tokens={max_tokens}, "
                        f"question {QUESTION!r}")
    for column in ("branches", "raw AsyncLLM", "LatencyOptimalTTSLLM", "overhead", "tokens (raw/latts)",
                   "tokens/s", "latency vs N=1"):
        table.add_column(column, justify="right")
    base = results[min(results)]["latts_s"]
    for n, r in results.items():
        table.add_row(str(n), f"{r['raw_s'] * 1e3:.1f} ms", f"{r['latts_s'] * 1e3:.1f} ms",
                      f"{r['overhead'] * 100:+.1f}%", f"{r['tokens_raw']:.0f}/{r['tokens_latts']:.0f}",
                      f"{r['tokens_latts'] / r['latts_s']:.0f}", f"{r['latts_s'] / base:.2f}x")
    console.print(table)


def _plot(results: dict[int, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = list(results)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ns, [results[n]["raw_s"] for n in ns], "o-", label="raw AsyncLLM")
    ax.plot(ns, [results[n]["latts_s"] for n in ns], "s--", label="LatencyOptimalTTSLLM")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("parallel branches")
    ax.set_ylabel("latency of one call (s)")
    ax.set_title("Branch-wise parallelism on this machine")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
