"""``latts bench fleet``: a call's latency over one vLLM server against two, and in-process.

Starts real vLLM OpenAI servers of the shipped pair on loopback ports (draft-model
speculation, 4 tokens, as in-process), one and then two, and asks the same problems of
the built-in task at 8 and 16 branches (no early stop, so every branch runs to its end
and the spread of work is what is measured), one call at a time; then the in-process
engine with the same speculation as the reference. Prints median and p90 latency,
accuracy and the speed-up of two servers over one, and how late calls cut by a deadline
(``DEADLINE_S``, 16 branches) return on each; writes ``bench-fleet.json``.

On one machine both servers share its cores: two replicas only pay off when each has
hardware of its own (GPUs or hosts). The numbers here measure what the fleet costs and
what splitting a call's branches does on shared cores, not multi-GPU scaling.
"""

from __future__ import annotations

import json
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from langchain_latts.bench.tts import Point, _measure, _one_call, bench_items
from langchain_latts.chat_models import LatencyOptimalTTSLLM
from langchain_latts.engines.launch import running_fleet

__all__ = ["lateness", "run_fleet_bench"]

#: Settings shared by every point: same seeds, same lengths, same speculation.
SETTINGS: dict[str, Any] = {"seed": 0, "max_tokens": 160, "early_stop": False}
#: The deadline of the overshoot measurement: well below 16 branches' natural latency.
DEADLINE_S = 0.3


def lateness(latencies: list[float], deadline_s: float) -> dict[str, float]:
    """Median, p90 and largest time past ``deadline_s`` of calls that took ``latencies`` (pure)."""
    late = sorted(max(0.0, t - deadline_s) for t in latencies)
    return {"median": statistics.median(late), "p90": late[int(0.9 * (len(late) - 1))], "max": late[-1]}


def run_fleet_bench(*, problems: int = 30, branches: tuple[int, ...] = (8, 16), out: Path | None = None,
                    console: Console | None = None) -> dict[str, Any]:
    """Run the benchmark (module docstring); print the table; write ``out`` (JSON)."""
    console = console or Console(width=120)
    items = bench_items("arithmetic", problems)
    points: list[Point] = []
    overshoot: dict[str, dict[str, float]] = {}
    started = time.monotonic()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("starting", total=3 * (len(branches) + 1) * len(items))

        def sweep(llm: LatencyOptimalTTSLLM, label: str) -> None:
            llm.warmup()
            for n in branches:
                progress.update(task, description=f"{label}, {n} branches")
                points.append(_measure(Point(f"{label}, {n} branches", label), items,
                                       partial(_one_call, llm, {"branches": n}), lambda: progress.advance(task)))
            progress.update(task, description=f"{label}, deadline {DEADLINE_S} s")
            late = _measure(Point(label, label), items, partial(_one_call, llm, {"branches": 16, "deadline_s": DEADLINE_S}),
                            lambda: progress.advance(task)).latency_s
            overshoot[label] = lateness(late, DEADLINE_S)
            llm.engine.shutdown()

        for replicas in (1, 2):
            progress.update(task, description=f"starting {replicas} server(s)")
            with running_fleet(replicas, k=4) as servers:
                sweep(LatencyOptimalTTSLLM(endpoints=[s.endpoint for s in servers], **SETTINGS),
                      f"{replicas} server{'s' if replicas > 1 else ''}")
        progress.update(task, description="starting the in-process engine")
        sweep(LatencyOptimalTTSLLM(speculative_method="draft_model", num_speculative_tokens=4, **SETTINGS),
              "in-process")
    summaries = [p.summary() for p in points]
    by = {s["method"]: s for s in summaries}
    ratios = {f"one_over_two_servers_{n}": by[f"1 server, {n} branches"]["median_s"]
              / by[f"2 servers, {n} branches"]["median_s"] for n in branches}
    ratios |= {f"one_server_over_in_process_{n}": by[f"1 server, {n} branches"]["median_s"]
               / by[f"in-process, {n} branches"]["median_s"] for n in branches}
    report = {"problems": len(items), "seconds": round(time.monotonic() - started, 1), "points": summaries,
              "ratios": ratios, "deadline_s": DEADLINE_S, "overshoot_s": overshoot}
    table = Table(title=f"latts bench fleet: {len(items)} problems, one call at a time, no early stop")
    for column in ("engine, branches", "accuracy", "median ms", "p90 ms", "acceptance"):
        table.add_column(column, justify="left" if column.startswith("engine") else "right")
    for s in summaries:
        table.add_row(s["method"], f"{s['accuracy']:.1%}", f"{s['median_s'] * 1000:.0f}", f"{s['p90_s'] * 1000:.0f}",
                      "-" if s["acceptance"] is None else f"{s['acceptance']:.2f}")
    console.print(table)
    for n in branches:
        console.print(f"{n} branches: one server / two servers median latency = {ratios[f'one_over_two_servers_{n}']:.2f}x;"
                      f" one server / in-process = {ratios[f'one_server_over_in_process_{n}']:.2f}x")
    console.print(f"late past a {DEADLINE_S} s deadline (16 branches; median / p90 / max): " + "; ".join(
        f"{label} {o['median'] * 1000:.0f} / {o['p90'] * 1000:.0f} / {o['max'] * 1000:.0f} ms"
        for label, o in overshoot.items()))
    if out is not None:
        out.write_text(json.dumps(report, indent=1))
        console.print(f"saved {out} ({report['seconds']:.0f} s)")
    return report
