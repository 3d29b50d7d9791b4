"""``latts profile --validate``: the latency model against measured calls it was not fitted on.

The profile was fitted on fixed-length runs of one calibration prompt at batch sizes
1, 2, 4, ... with an idle engine. Validation runs real calls of the built-in task, on the
engine the settings choose (with the speculation ``num_speculative_tokens="auto"`` picks),
that differ on every axis the model predicts from:

* branch counts the profile never timed (3, 6, 12, 24),
* concurrent load: 0 or ``LOAD`` other sequences already running on the engine,
* prompt length: the bare question, or the question after a long system message,

and compares each call's latency with :func:`~langchain_latts.planner.latency.predict_latency`
given what the call turned out to be (its branches' output lengths, its prompt, the load
it met). It reports the median absolute percentage error overall and per axis, and
stores the error's distribution -- ``ln(measured / predicted)``, its mean and standard
deviation -- in the profile (:class:`~langchain_latts.planner.profile.LatencyError`): the
planner prices the risk of missing a deadline with it.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import statistics
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from langchain_latts.engines.base import BranchRequest
from langchain_latts.engines.vllm_local import VLLMEngine
from langchain_latts.errors import LattsValueError
from langchain_latts.planner.engine_config import engine_config, profile_identity
from langchain_latts.planner.latency import predict_latency
from langchain_latts.planner.profile import LatencyError, Profile, load_profile, save_profile
from langchain_latts.planner.profiler import (
    builtin_calibration,
    run_requests,
)
from langchain_latts.planner.runtime import speculation_of
from langchain_latts.settings import TTSSettings

__all__ = ["validate_latency_model"]

BRANCHES = (3, 6, 12, 24)
LOAD = 12
LONG_SYSTEM = ("You are a careful calculator. Work one operation per line, left to right, and end with the "
               "final answer after four hash marks. ") * 3


def _ape(predicted: float, measured: float) -> float:
    return abs(predicted - measured) / measured


async def _call(engine: VLLMEngine, prompt: list[int], branches: int, load: int, seed: int,
                background: list[int]) -> tuple[float, list[int], int]:
    """One call with ``load`` background sequences running; (seconds, output lengths, load seen)."""
    hold = [BranchRequest(prompt_token_ids=tuple(background), max_tokens=2000, temperature=0.8, seed=seed * 100 + i,
                          ignore_eos=True) for i in range(load)]
    ids = [f"latts-validate-load-{seed}-{i}" for i in range(load)]

    async def keep(request: BranchRequest, request_id: str) -> None:
        async for _ in engine.branch(request, request_id):
            pass

    tasks = [asyncio.create_task(keep(r, i)) for r, i in zip(hold, ids)]
    while load and engine.num_unfinished_requests() < load:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05 if load else 0)  # let the background sequences reach decoding
    seen = engine.num_unfinished_requests()
    requests = [BranchRequest(prompt_token_ids=tuple(prompt), max_tokens=512, temperature=0.8, seed=seed * 1000 + i)
                for i in range(branches)]
    started = time.perf_counter()
    runs = await run_requests(engine, requests, f"validate-{seed}")
    elapsed = time.perf_counter() - started
    await engine.abort(ids)
    await asyncio.gather(*tasks, return_exceptions=True)
    return elapsed, [r["tokens"] for r in runs], seen


def validate_latency_model(settings: dict[str, Any] | None = None, *, repeats: int = 4,
                           console: Console | None = None) -> dict[str, Any]:
    """Run the validation grid (module docstring) and print the errors; returns the summary."""
    console = console or Console()
    tts = TTSSettings.model_validate(settings or {})
    if tts.model is not None:
        raise LattsValueError.bad("model", tts.model, "must be the built-in model for --validate",
                                  "Validation asks held-out arithmetic questions; leave model unset.")
    profile: Profile | None = load_profile(profile_identity(tts))
    if profile is None:
        raise LattsValueError.bad("profile", None, "must exist before it can be validated",
                                  "Run `latts profile` first.")
    config = engine_config(tts)  # the speculation the planner's calls run with
    speculation = speculation_of(config)
    engine = VLLMEngine(config)
    rows: list[dict[str, Any]] = []
    try:
        engine.run_sync(engine.ensure_started())
        problems = builtin_calibration()
        background = engine.render_prompt([{"role": "user", "content": problems[-1].messages[0][1]}])
        grid = list(itertools.product(BRANCHES, (0, LOAD), ("short", "long")))
        with console.status("validating the latency model...") as status:
            for n, (branches, load, prompt_kind) in enumerate(grid):
                status.update(f"validating the latency model: {n + 1}/{len(grid)} settings")
                for r in range(repeats):
                    question = problems[(n * repeats + r) % len(problems)].messages[0][1]
                    messages = [{"role": "user", "content": question}]
                    if prompt_kind == "long":
                        messages.insert(0, {"role": "system", "content": LONG_SYSTEM})
                    prompt = engine.render_prompt(messages)
                    elapsed, lengths, seen = engine.run_sync(
                        _call(engine, prompt, branches, load, n * repeats + r, background))
                    predicted = predict_latency(profile, lengths=lengths, prompt_tokens=len(prompt), load=seen,
                                                speculation=speculation)
                    rows.append({"branches": branches, "load": load, "prompt": prompt_kind,
                                 "prompt_tokens": len(prompt), "measured_s": elapsed, "predicted_s": predicted,
                                 "ape": _ape(predicted, elapsed)})
    finally:
        engine.shutdown()
    summary = _summarise(rows)
    error = latency_error(rows)
    summary["latency_error"] = error.model_dump()
    save_profile(profile.model_copy(update={"latency_error": error}))
    _print(summary, rows, console, profile)
    console.print(f"latency error ln(measured / predicted) = {error.bias:+.3f} {error.slope:+.3f} ln(branches), sd "
                  f"{error.sigma:.3f} (stored in the profile: the planner prices deadline risk with it)")
    return summary


def latency_error(rows: list[dict[str, Any]]) -> LatencyError:
    """The distribution of ``ln(measured / predicted)`` over validation calls: a least-squares
    line in ``ln(branches)`` and the spread of the calls around it."""
    points = [(math.log(r["branches"]), math.log(r["measured_s"] / r["predicted_s"])) for r in rows
              if r["predicted_s"] > 0 and r["measured_s"] > 0]
    xs, ys = [x for x, _ in points], [y for _, y in points]
    slope, bias = statistics.linear_regression(xs, ys) if len(set(xs)) > 1 else (0.0, statistics.fmean(ys))
    sigma = math.sqrt(statistics.fmean((y - bias - slope * x) ** 2 for x, y in points))
    return LatencyError(bias=bias, slope=slope, sigma=sigma, calls=len(points),
                        source=f"latts profile --validate: {len(points)} calls")


def _summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def mdape(selected: list[dict[str, Any]]) -> float:
        return statistics.median(r["ape"] for r in selected)

    summary: dict[str, Any] = {"calls": len(rows), "median_ape": mdape(rows), "by": {}}
    for axis in ("branches", "load", "prompt"):
        values = sorted({r[axis] for r in rows}, key=str)
        summary["by"][axis] = {str(v): mdape([r for r in rows if r[axis] == v]) for v in values}
    return summary


def _print(summary: dict[str, Any], rows: list[dict[str, Any]], console: Console, profile: Profile) -> None:
    table = Table(title=f"latency model vs measured calls (profile {profile.profile_id})")
    for column in ("branches", "load", "prompt", "median measured", "median predicted", "median |error|"):
        table.add_column(column, justify="right")
    for key, group in itertools.groupby(rows, key=lambda r: (r["branches"], r["load"], r["prompt"])):
        group_rows = list(group)
        table.add_row(str(key[0]), str(key[1]), f"{key[2]} ({group_rows[0]['prompt_tokens']} tok)",
                      f"{statistics.median(r['measured_s'] for r in group_rows) * 1000:.0f} ms",
                      f"{statistics.median(r['predicted_s'] for r in group_rows) * 1000:.0f} ms",
                      f"{statistics.median(r['ape'] for r in group_rows):.1%}")
    console.print(table)
    by = "; ".join(f"{axis}: " + ", ".join(f"{k} {v:.1%}" for k, v in values.items())
                   for axis, values in summary["by"].items())
    console.print(f"median absolute error {summary['median_ape']:.1%} over {summary['calls']} calls "
                  f"(goal <= 15%); by {by}")
