"""``latts bench planner``: ``branches="auto"`` against fixed plans at deadlines, alone and under concurrency.

On problems no other benchmark, the training or the calibration draws (seed :data:`SEED`),
of two forms of the built-in task -- the **original** form (2 to 5 operations on two-digit
operands, ``Compute 48 + 17 - 23.``) and the **wide** form the model was trained on (1 to 5
operations, operands below 1000, a dozen phrasings) -- with one engine (the model's
defaults: the speculation ``auto`` chose from the cached profile):

1. **one sample's p90**: every problem once with one branch and no deadline; the 90th
   percentile of those latencies is the unit of the deadlines, and each call's output
   length checks the length model's prediction (its median absolute error);
2. **one call at a time**, at deadlines of 1, 1.25, 1.5, 2 and 3 x that p90: greedy
   decoding, one sample, fixed 4 and 8 branches and ``auto``, each call seeded;
3. **calls that start together**: ``llm.batch(problems, max_concurrency=c)`` for c = 2, 4, 8,
   at 1 and 2 x the p90, with one branch each and with ``auto``.

Reported per cell: accuracy, the share of calls in which **no branch finished** (the call
returned a partial branch), median and p90 latency, and mean branches launched; then the
goals of the deadline-planning issue, checked on the measured numbers.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from langchain_latts.bench.stats import summarize
from langchain_latts.chat_models import LatencyOptimalTTSLLM
from langchain_latts.errors import LattsValueError
from langchain_latts.planner.runtime import engine_profile
from langchain_latts.tasks.arithmetic import Problem

__all__ = ["run_planner_bench"]

#: Seed of the benchmark's problems (no other benchmark draws it).
SEED = 20261130
FORMS = ("original", "wide")
MULTIPLES = (1.0, 1.25, 1.5, 2.0, 3.0)
CONCURRENCY = (2, 4, 8)
CONCURRENT_MULTIPLES = (1.0, 2.0)
#: Call options of each method of the one-at-a-time sweep.
METHODS: dict[str, dict[str, Any]] = {
    "greedy": {"temperature": 0.0, "branches": 1},
    "one sample": {"branches": 1},
    "4 branches": {"branches": 4},
    "8 branches": {"branches": 8},
    "auto": {"branches": "auto"},
}
#: Points of accuracy (and of the no-finished share) the goals allow.
SLACK = 0.02


def problems_of(form: str, n: int) -> list[Problem]:
    """``n`` problems of the ``"original"`` or ``"wide"`` form (module docstring)."""
    from langchain_latts.models.train import HELD_OUT_SEED, HELD_OUT_SIZE
    from langchain_latts.tasks.arithmetic import generate_original_problems, generate_problems

    if form not in FORMS:
        raise LattsValueError.bad("form", form, f"must be one of {list(FORMS)}", "e.g. --forms original,wide")
    if form == "original":
        return generate_original_problems(n, seed=SEED)
    held_out = {p.expression for p in generate_problems(HELD_OUT_SIZE, seed=HELD_OUT_SEED)}
    return generate_problems(n, seed=SEED, exclude=held_out)


def _row(problem: Problem, message: Any, elapsed: float) -> dict[str, Any]:
    tts = message.response_metadata["tts"]
    plan = tts.get("plan") or {}
    return {"correct": tts["answer"] == str(problem.answer), "none": tts["branches_finished"] == 0,
            "elapsed_s": elapsed, "branches": tts["branches_launched"],
            "tokens": message.usage_metadata["output_tokens"] if message.usage_metadata else 0,
            "planned": plan.get("branches"), "predicted_length": plan.get("output_length"),
            "greedy": bool(plan.get("greedy"))}


def _summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return summarize(rows, "none", "branches", "greedy")


def _one_at_a_time(llm: LatencyOptimalTTSLLM, problems: Sequence[Problem], deadline: float | None,
                   options: dict[str, Any], advance: Callable[[], None]) -> list[dict[str, Any]]:
    rows = []
    for problem in problems:
        started = time.monotonic()
        message = llm.invoke(problem.question, deadline_s=deadline, **options)
        rows.append(_row(problem, message, time.monotonic() - started))
        advance()
    return rows


def _together(llm: LatencyOptimalTTSLLM, problems: Sequence[Problem], deadline: float, callers: int,
              options: dict[str, Any]) -> list[dict[str, Any]]:
    """``llm.batch`` with ``callers`` calls in flight; each call's latency is timed inside it."""
    timed = llm.bind(deadline_s=deadline, **options)
    started = time.monotonic()
    messages = timed.batch([p.question for p in problems], config={"max_concurrency": callers})
    wall = time.monotonic() - started
    rows = [_row(p, m, m.response_metadata["tts"]["latency_s"]) for p, m in zip(problems, messages)]
    for row in rows:
        row["wall_s"] = wall
    return rows


def _length_error(problems: Sequence[Problem], rows: Sequence[dict[str, Any]],
                  predict: Callable[[str], float]) -> float:
    """Median absolute percentage error of the predicted median length against each
    one-sample call's output tokens."""
    errors = [abs(predict(p.question) - r["tokens"]) / max(1, r["tokens"]) for p, r in zip(problems, rows)]
    return statistics.median(errors)


def run_planner_bench(*, problems: int = 200, forms: Sequence[str] = ("original", "wide"),
                      multiples: Sequence[float] = MULTIPLES, concurrency: Sequence[int] = CONCURRENCY,
                      out: Path | None = None, plot: Path | None = None,
                      console: Console | None = None) -> dict[str, Any]:
    """Run the benchmark (module docstring), print the tables, save JSON and a plot."""
    console = console or Console()
    sets = {form: problems_of(form, problems) for form in forms}  # a bad form fails before the engine starts
    llm = LatencyOptimalTTSLLM(seed=0)
    llm.warmup()
    engine = llm.engine
    state = engine.run_sync(engine_profile(engine, llm, engine.run_sync(engine.ensure_started()).max_num_seqs))
    profile = state.current()
    report: dict[str, Any] = {"problems": problems, "profile": state.source, "multiples": list(multiples),
                              "speculation": _speculation(llm), "forms": {}}
    started = time.monotonic()
    with Progress(console=console, transient=True) as progress:
        for form in forms:
            items = sets[form]
            task = progress.add_task(f"{form}: one sample, no deadline", total=len(items) * (1 + len(multiples)
                                                                                             * len(METHODS)))
            base = _one_at_a_time(llm, items, None, METHODS["one sample"], lambda: progress.advance(task))
            p90 = _summary(base)["p90_s"]
            deadlines = [round(p90 * m, 4) for m in multiples]
            section: dict[str, Any] = {
                "p90_s": p90, "deadlines": deadlines, "no_deadline": _summary(base),
                "length_model": profile.length_model.source if profile.length_model else "marginal",
                "length_mdape": _length_error(items, base, lambda q: profile.length_estimate(q).median),
                "one_at_a_time": {}, "together": {}}
            for name, options in METHODS.items():
                section["one_at_a_time"][name] = {}
                for deadline in deadlines:
                    progress.update(task, description=f"{form}: {name} at {deadline * 1000:.0f} ms")
                    rows = _one_at_a_time(llm, items, deadline, options, lambda: progress.advance(task))
                    section["one_at_a_time"][name][str(deadline)] = _summary(rows)
            for callers in concurrency:
                for m in CONCURRENT_MULTIPLES:
                    deadline = round(p90 * m, 4)
                    key = f"{callers} x {deadline}"
                    section["together"][key] = {}
                    for name in ("one sample", "auto"):
                        progress.update(task, description=f"{form}: {callers} callers, {name}, {deadline * 1000:.0f} ms")
                        section["together"][key][name] = _summary(
                            _together(llm, items, deadline, callers, METHODS[name]))
            report["forms"][form] = section
    report["minutes"] = round((time.monotonic() - started) / 60, 1)
    llm.engine.shutdown()
    report["goals"] = check_goals(report)
    _print(report, console)
    if out is not None:
        out.write_text(json.dumps(report, indent=1))
    if plot is not None:
        _plot(report, plot)
        console.print(f"plot saved to {plot}")
    return report


def _speculation(llm: LatencyOptimalTTSLLM) -> str:
    spec = llm.engine.config.speculative
    return "off" if spec is None else f"{spec.method}, k={spec.num_speculative_tokens}"


def check_goals(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals on the measured numbers: per form, whether ``auto`` is within
    :data:`SLACK` of the best of one sample and the fixed plans at every deadline, never
    falls (by more than SLACK) as the deadline grows, and has no more calls with no
    finished branch than one sample + SLACK; under concurrency, ``auto`` against one
    branch each the same way."""
    goals: dict[str, Any] = {}
    for form, section in report["forms"].items():
        alone = section["one_at_a_time"]
        gaps, none_gaps, falls, greedy_gaps = [], [], [], []
        previous = None
        for d in map(str, section["deadlines"]):
            best = max(alone[n][d]["accuracy"] for n in ("one sample", "4 branches", "8 branches"))
            gaps.append(alone["auto"][d]["accuracy"] - best)
            greedy_gaps.append(alone["auto"][d]["accuracy"] - alone["greedy"][d]["accuracy"])
            none_gaps.append(alone["auto"][d]["none"] - alone["one sample"][d]["none"])
            if previous is not None:
                falls.append(alone["auto"][d]["accuracy"] - previous)
            previous = alone["auto"][d]["accuracy"]
        together = section["together"]
        t_gaps = [cell["auto"]["accuracy"] - cell["one sample"]["accuracy"] for cell in together.values()]
        t_none = [cell["auto"]["none"] - cell["one sample"]["none"] for cell in together.values()]
        goals[form] = {
            "auto_minus_best": gaps, "auto_none_minus_one_sample": none_gaps, "auto_change_with_deadline": falls,
            "together_auto_minus_one_each": t_gaps, "together_none_minus_one_each": t_none,
            "auto_minus_greedy": greedy_gaps,
            "met": {"accuracy": min(gaps) >= -SLACK, "none": max(none_gaps) <= SLACK,
                    "monotone": min(falls, default=0.0) >= -SLACK,
                    "together_accuracy": min(t_gaps, default=0.0) >= -SLACK,
                    "together_none": max(t_none, default=0.0) <= SLACK,
                    "greedy": min(greedy_gaps) >= -0.01},
        }
    return goals


def _print(report: dict[str, Any], console: Console) -> None:
    for form, section in report["forms"].items():
        deadlines = [str(d) for d in section["deadlines"]]
        table = Table(title=f"{form} form, {report['problems']} problems, one call at a time: accuracy "
                            f"(no branch finished) median/p90 ms; one sample's p90 {section['p90_s'] * 1000:.0f} ms")
        table.add_column("method")
        for d, m in zip(deadlines, report["multiples"]):
            table.add_column(f"{float(d) * 1000:.0f} ms ({m:g}x)", justify="right")
        for name, cells in section["one_at_a_time"].items():
            table.add_row(name, *(f"{c['accuracy']:.1%} ({c['none']:.0%}) {c['median_s'] * 1000:.0f}/"
                                  f"{c['p90_s'] * 1000:.0f}" + (f" B={c['branches']:.1f} greedy {c.get('greedy', 0):.0%}" if name == "auto" else "")
                                  for c in (cells[d] for d in deadlines)))
        console.print(table)
        together = Table(title=f"{form} form: callers that start together (llm.batch, max_concurrency)")
        for column in ("callers x deadline", "one branch each", "auto"):
            together.add_column(column, justify="right")
        for key, cell in section["together"].items():
            callers, deadline = key.split(" x ")
            together.add_row(f"{callers} x {float(deadline) * 1000:.0f} ms", *(
                f"{c['accuracy']:.1%} ({c['none']:.0%} none) p90 {c['p90_s'] * 1000:.0f} ms B={c['branches']:.1f}"
                for c in (cell["one sample"], cell["auto"])))
        console.print(together)
        goals = report["goals"][form]
        console.print(
            f"{form}: length model {section['length_model']}, median |error| {section['length_mdape']:.1%} on these "
            f"problems; auto - best of one sample/4/8: {', '.join(f'{g * 100:+.1f}' for g in goals['auto_minus_best'])}"
            f" points; auto - greedy: {', '.join(f'{g * 100:+.1f}' for g in goals['auto_minus_greedy'])}"
            f" points; no-finished share auto - one sample: "
            f"{', '.join(f'{g * 100:+.1f}' for g in goals['auto_none_minus_one_sample'])}; together, auto - one each: "
            f"{', '.join(f'{g * 100:+.1f}' for g in goals['together_auto_minus_one_each'])} points, none "
            f"{', '.join(f'{g * 100:+.1f}' for g in goals['together_none_minus_one_each'])}; goals met: {goals['met']}")


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    forms = list(report["forms"])
    fig, axes = plt.subplots(1, len(forms), figsize=(6 * len(forms), 4.2), squeeze=False)
    for ax, form in zip(axes[0], forms):
        section = report["forms"][form]
        xs = [d / section["p90_s"] for d in section["deadlines"]]
        for name, cells in section["one_at_a_time"].items():
            ax.plot(xs, [cells[str(d)]["accuracy"] * 100 for d in section["deadlines"]],
                    "o-" if name == "auto" else "--", label=name, linewidth=2.5 if name == "auto" else 1.2)
        ax.set_xlabel("deadline (x one sample's p90 latency)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{form} form (p90 {section['p90_s'] * 1000:.0f} ms)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"latts bench planner: {report['problems']} problems per form, one call at a time")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
