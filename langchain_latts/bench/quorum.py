"""``latts bench quorum``: deciding on the first M of B branches, and how well the planner
predicts when the M-th finishes.

On a real model a call's latency is set by its stragglers: of 8 SmolLM2 branches two or
three run into ``max_tokens`` while the rest finished long before. With ``quorum=M`` the
call votes over the first M branches to answer and aborts the rest. On the same questions
and seeds, one call at a time, ``branches`` fixed and no early stop (so only the quorum
differs): accuracy, median and p90 latency and output tokens for every branch, each fixed
M and ``quorum="auto"``.

The latency model's order statistic is checked on the same calls: for a quorum of M of B,
the time until the M-th branch finishes is predicted as the first-token time of B branches
plus the question's M-th shortest of B branch lengths
(:meth:`~langchain_latts.planner.lengths.LengthEstimate.mth_of`) at B branches' seconds per
token, from the profile the engine plans with; the median absolute percentage error
against each call's measured ``decided_at_s`` is reported per M.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from langchain_latts.bench.stats import summarize
from langchain_latts.bench.tts import bench_items
from langchain_latts.chat_models import LatencyOptimalTTSLLM
from langchain_latts.planner.latency import first_token_seconds, mth_finish_seconds, seconds_per_token
from langchain_latts.planner.runtime import engine_profile, speculation_of

__all__ = ["predicted_quorum_latency", "run_quorum_bench"]


def predicted_quorum_latency(profile: Any, question: str, *, m: int, b: int, prompt_tokens: int,
                             max_tokens: int, speculation: Any) -> float:
    """Seconds until the ``m``-th of ``b`` branches finishes on an idle engine, as the
    planner predicts it (:func:`~langchain_latts.planner.latency.mth_finish_seconds`)."""
    return mth_finish_seconds(profile.length_estimate(question, max_tokens=max_tokens), m, b,
                              first_token_s=first_token_seconds(profile, b, prompt_tokens, speculation),
                              seconds_per_token=seconds_per_token(profile, b, speculation, prompt_tokens),
                              max_tokens=max_tokens)


def run_quorum_bench(*, settings: dict[str, Any], dataset: str, dataset_options: dict[str, Any] | None = None,
                     problems: int = 24, branches: int = 8, quorums: Sequence[int | str] = (4, 6, "auto"),
                     out: Path | None = None, console: Console | None = None) -> dict[str, Any]:
    """Run the comparison (module docstring); print it and save JSON."""
    console = console or Console(width=120)
    items = bench_items(dataset, problems, options=dataset_options)
    llm = LatencyOptimalTTSLLM(**{"seed": 0} | settings)
    llm.warmup()
    engine = llm.engine
    call_settings = llm._settings_for_call(None, {"branches": "auto"})
    stats = engine.run_sync(engine.ensure_started())
    state = engine.run_sync(engine_profile(engine, call_settings, stats.max_num_seqs))
    profile, speculation = state.current(llm.max_tokens), speculation_of(engine.config)
    results: dict[str, dict[str, Any]] = {}
    for quorum in (None, *quorums):
        name = f"all {branches}" if quorum is None else f"quorum {quorum}"
        rows, errors = [], []
        with console.status(f"{name}..."):
            for item in items:
                started = time.monotonic()
                message = llm.invoke(item.question, branches=branches, early_stop=False, quorum=quorum)
                elapsed = time.monotonic() - started
                tts = message.response_metadata["tts"]
                m = tts["quorum"] or branches
                prompt_tokens = message.usage_metadata["input_tokens"] if message.usage_metadata else 0
                predicted = predicted_quorum_latency(profile, item.question, m=m, b=branches,
                                                     prompt_tokens=prompt_tokens,
                                                     max_tokens=llm.output_budget(engine.max_model_len - prompt_tokens),
                                                     speculation=speculation)
                errors.append(abs(predicted - tts["decided_at_s"]) / tts["decided_at_s"])
                rows.append({"correct": item.grade(tts["answer"]), "elapsed_s": elapsed, "m": m,
                             "tokens": message.usage_metadata["output_tokens"] if message.usage_metadata else 0})
        results[name] = summarize(rows, "m") | {"prediction_mdape": statistics.median(errors)}
    llm.engine.shutdown()
    base = results[f"all {branches}"]
    report = {"model": settings.get("model") or "latts-tiny-arith", "dataset": dataset,
              "dataset_options": dataset_options or {}, "problems": len(items), "branches": branches,
              "profile": state.source, "results": results,
              "speedup": {k: base["median_s"] / r["median_s"] for k, r in results.items()},
              "accuracy_change": {k: r["accuracy"] - base["accuracy"] for k, r in results.items()}}
    table = Table(title=f"latts bench quorum: {report['model']} on {dataset}, {len(items)} problems, {branches} "
                        "branches, no early stop")
    for column in ("decide on", "mean M", "accuracy", "median ms", "p90 ms", "speed-up", "tokens/call",
                   "predicted M-th finish: MdAPE"):
        table.add_column(column, justify="left" if column == "decide on" else "right")
    for name, r in results.items():
        table.add_row(name, f"{r['m']:.1f}", f"{r['accuracy']:.1%}", f"{r['median_s'] * 1000:.0f}",
                      f"{r['p90_s'] * 1000:.0f}", f"{report['speedup'][name]:.2f}x", f"{r['tokens']:.0f}",
                      f"{r['prediction_mdape']:.1%}")
    console.print(table)
    if out is not None:
        out.write_text(json.dumps(report, indent=1))
    return report
