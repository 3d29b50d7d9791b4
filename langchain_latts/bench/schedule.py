"""``latts bench schedule``: vLLM's dynamic speculation against "never" and "always k", per batch size.

Three engines of the built-in pair, one after the other: no drafter ("never"), the
drafter at a fixed ``k`` ("always"), and the drafter under a per-batch-size schedule
("dynamic"; by default the planner's schedule from the cached profile, or the one given).
At every batch size ``b`` each engine runs ``b`` held-out problems at T = 0.8 for a fixed
number of tokens (``ignore_eos``, a warm-up run dropped) and reports the median seconds
per output token of a sequence. The dynamic schedule should be at least as fast as the
better of the other two at every ``b``; the table says where it is not.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from rich.console import Console
from rich.table import Table

from langchain_latts.engines.base import EngineConfig, SpeculativeConfig
from langchain_latts.engines.vllm_local import VLLMEngine
from langchain_latts.planner.engine_config import engine_config
from langchain_latts.planner.latency import SpeculationSetting
from langchain_latts.planner.profiler import (
    STEP_RUN_TOKENS,
    batch_sizes_for,
    builtin_calibration,
    per_token_seconds,
)
from langchain_latts.settings import TTSSettings

__all__ = ["run_schedule_bench"]


def _measure(config: EngineConfig, sizes: list[int]) -> list[float]:
    engine = VLLMEngine(config)
    try:
        engine.run_sync(engine.ensure_started())
        prompts = [engine.render_prompt([{"role": "user", "content": p.messages[0][1]}])
                   for p in builtin_calibration()]
        return [engine.run_sync(per_token_seconds(engine, prompts, b, tokens=STEP_RUN_TOKENS)) for b in sizes]
    finally:
        engine.shutdown()


def run_schedule_bench(*, k: int = 4, schedule: list[tuple[int, int, int]] | None = None,
                       max_batch: int = 64, console: Console | None = None) -> dict[str, Any]:
    """Measure the three engines (module docstring), print the table, return the numbers."""
    console = console or Console()
    settings = TTSSettings(speculative_method="draft_model")
    off = replace(engine_config(settings), speculative=None)
    drafter = settings.configured_drafter
    assert drafter is not None
    if schedule is None:
        from langchain_latts.planner.engine_config import cached_profile
        from langchain_latts.planner.plan import derive_schedule

        profile = cached_profile(TTSSettings())
        setting = derive_schedule(profile, profile.max_batch) if profile is not None else None
        schedule = list(setting.schedule) if setting is not None and setting.drafter else [(1, 4, 4), (5, 8, 2),
                                                                                           (9, 256, 0)]
        source = "the planner's, from the cached profile" if profile is not None else "default (no profile cached)"
    else:
        source = "given"
    k_max = max(c for _, _, c in schedule)
    always = replace(off, speculative=SpeculativeConfig(method=drafter[0], num_speculative_tokens=k, model=drafter[1]))
    dynamic = replace(off, speculative=SpeculativeConfig(method=drafter[0], num_speculative_tokens=k_max,
                                                         model=drafter[1], schedule=tuple(schedule)))
    sizes = batch_sizes_for(max_batch)
    results: dict[str, list[float]] = {}
    for name, config in (("never", off), (f"always k={k}", always), ("dynamic", dynamic)):
        with console.status(f"measuring {name} at batch sizes {sizes}..."):
            results[name] = _measure(config, sizes)
    lookup = SpeculationSetting(drafter=True, schedule=tuple(schedule))
    table = Table(title=f"ms per output token per sequence; schedule {schedule} ({source})")
    for column in ("sequences", "k (schedule)", "never", f"always k={k}", "dynamic", "dynamic / best other"):
        table.add_column(column, justify="right")
    rows = []
    for i, b in enumerate(sizes):
        never, fixed, dyn = (results[n][i] for n in results)
        ratio = dyn / min(never, fixed)
        rows.append({"batch": b, "k": lookup.k_at(b), "never_s": never, "always_s": fixed, "dynamic_s": dyn,
                     "ratio": ratio})
        table.add_row(str(b), str(lookup.k_at(b)), f"{never * 1000:.2f}", f"{fixed * 1000:.2f}", f"{dyn * 1000:.2f}",
                      f"{ratio:.2f}" + (" [red]slower[/]" if ratio > 1.05 else ""))
    console.print(table)
    ok = sum(r["ratio"] <= 1.05 for r in rows)
    console.print(f"dynamic within 5% of (or faster than) the better of never / always k={k} at {ok} of "
                  f"{len(rows)} batch sizes")
    return {"schedule": schedule, "rows": rows}
