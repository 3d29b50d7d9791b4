"""``latts bench tts``: accuracy against latency, side by side with what users write instead.

Every method answers the same problems of the built-in task (generated from a seed that
neither training nor the other benchmarks use), one call at a time, seeded. Two engines,
one after the other: the plain engine (no speculation) for what a user would write with a
plain chat model, and the default engine (speculation ``auto``) for the package:

* **plain engine** -- one greedy sample; one sampled answer; *sequential best-of-N* (N
  single-sample calls one after another, majority vote at the end: a loop around a plain
  chat model); *parallel n=N* (``ChatOpenAI(n=N)``-style: N samples in one call, all to the
  end, majority vote, no early stop, deadline or speculation);
* **default engine** -- one branch with speculative decoding; ``LatencyOptimalTTSLLM`` at 8
  branches (fixed), sampled and with a greedy member (branch 0 at temperature 0); and at deadlines of 1, 1.5 and 2x one sample's p90 latency: one sample,
  8 fixed branches, ``branches="auto"``, ``auto`` with the step verifier (``weighted_majority``
  and ``best_of_n``) and with pruning (``best_of_n``).

Every point: accuracy with a 95% Wilson interval, median and p90 latency, output tokens,
tokens per correct answer and the drafts' acceptance. Files: JSON and CSV of every point, a
PNG of accuracy against median latency with the Pareto front marked.
"""

from __future__ import annotations

import csv
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from langchain_latts.bench.stats import nearest_rank, wilson_interval
from langchain_latts.chat_models import LatencyOptimalTTSLLM
from langchain_latts.errors import LattsValueError
from langchain_latts.tasks.arithmetic import Problem
from langchain_latts.tasks.gym import load_gym, parse_dataset
from langchain_latts.tts.voting import majority_vote

__all__ = ["Point", "bench_problems", "pareto_front", "run_tts_bench"]

#: The benchmark's problems come from this seed (training and the held-out split use others).
SEED = 20261126
DEADLINE_MULTIPLES = (1.0, 1.5, 2.0)


@dataclass(frozen=True)
class Item:
    """One question of the benchmark and how its voted answer is graded."""

    question: str
    grade: Callable[[str | None], bool]


def bench_problems(n: int) -> list[Problem]:
    """``n`` problems from :data:`SEED`, none of them in the held-out split."""
    from langchain_latts.models.train import HELD_OUT_SEED, HELD_OUT_SIZE
    from langchain_latts.tasks.arithmetic import LEVELS, generate_problems

    held_out = {p.expression for p in generate_problems(HELD_OUT_SIZE, seed=HELD_OUT_SEED)}
    return generate_problems(n, seed=SEED, levels=LEVELS, exclude=held_out)


def bench_items(dataset: str, n: int, path: Path | None = None, options: dict[str, Any] | None = None) -> list[Item]:
    """The questions of ``dataset``: the built-in task, MATH-500 graded by math-verify, or
    ``rg:NAME``, a reasoning-gym task (generator ``options``) graded by its own scorer."""
    gym = parse_dataset(dataset)
    if gym is not None:
        return [Item(g.question, g.grade) for g in load_gym(gym, n, seed=SEED, options=options)]
    if dataset == "math500":
        from langchain_latts.tasks.math500 import grade_answer, load_math500

        return [Item(p.question, partial(_graded, p.answer, grade_answer)) for p in load_math500(path)[:n]]
    if dataset != "arithmetic":
        raise LattsValueError.bad("dataset", dataset, "must be 'arithmetic', 'math500' or 'rg:NAME' (a reasoning-gym "
                                  "task)", "e.g. --dataset rg:chain_sum")
    return [Item(p.question, partial(_equals, str(p.answer))) for p in bench_problems(n)]


def _equals(expected: str, answer: str | None) -> bool:
    return answer == expected


def _graded(reference: str, grade: Callable[[str | None, str], bool], answer: str | None) -> bool:
    return grade(answer, reference)


@dataclass
class Point:
    """One method's measurements over every problem."""

    method: str
    family: str
    deadline_s: float | None = None
    correct: list[bool] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    acceptance: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        n, right = len(self.correct), sum(self.correct)
        low, high = wilson_interval(right, n)
        latencies = sorted(self.latency_s)
        return {
            "method": self.method, "family": self.family, "deadline_s": self.deadline_s, "problems": n,
            "accuracy": right / n, "ci95_low": low, "ci95_high": high,
            "median_s": statistics.median(latencies), "p90_s": nearest_rank(latencies, 0.9),
            "tokens": statistics.mean(self.tokens), "tokens_per_correct": sum(self.tokens) / right if right else None,
            "acceptance": statistics.mean(self.acceptance) if self.acceptance else None,
        }


def pareto_front(points: Sequence[dict[str, Any]]) -> list[str]:
    """Methods no other method beats on both accuracy and median latency."""
    front = []
    for p in points:
        dominated = any(q["accuracy"] >= p["accuracy"] and q["median_s"] <= p["median_s"]
                        and (q["accuracy"] > p["accuracy"] or q["median_s"] < p["median_s"]) for q in points)
        if not dominated:
            front.append(p["method"])
    return front


def _one_call(llm: LatencyOptimalTTSLLM, options: dict[str, Any], item: Item) -> tuple[bool, float, int, float | None]:
    started = time.monotonic()
    message = llm.invoke(item.question, **options)
    elapsed = time.monotonic() - started
    tts = message.response_metadata["tts"]
    spec = tts.get("speculative") or {}
    tokens = message.usage_metadata["output_tokens"] if message.usage_metadata else 0
    return item.grade(tts["answer"]), elapsed, tokens, spec.get("acceptance_rate")


def _sequential(llm: LatencyOptimalTTSLLM, n: int, item: Item) -> tuple[bool, float, int, float | None]:
    """N single-sample calls one after another, majority vote at the end (a user's loop)."""
    started = time.monotonic()
    answers, tokens = [], 0
    extract = llm.extractor()
    for i in range(n):
        message = llm.invoke(item.question, branches=1, seed=i)
        answers.append(extract(str(message.content)))
        tokens += message.usage_metadata["output_tokens"] if message.usage_metadata else 0
    return item.grade(majority_vote(answers).answer), time.monotonic() - started, tokens, None


def _measure(point: Point, items: Sequence[Item],
             call: Callable[[Item], tuple[bool, float, int, float | None]], advance: Callable[[], None]) -> Point:
    for problem in items:
        correct, latency, tokens, acceptance = call(problem)
        point.correct.append(correct)
        point.latency_s.append(latency)
        point.tokens.append(tokens)
        if acceptance is not None:
            point.acceptance.append(acceptance)
        advance()
    return point


def run_tts_bench(*, problems: int = 200, quick: bool = False, out_dir: Path = Path("."),
                  dataset: str = "arithmetic", data_path: Path | None = None,
                  model: dict[str, Any] | None = None, dataset_options: dict[str, Any] | None = None,
                  name: str = "bench-tts", console: Console | None = None) -> dict[str, Any]:
    """Run the benchmark (module docstring); print the table and ratios; write the files
    ``<name>.json``, ``.csv`` and ``.png``.

    ``dataset="math500"`` asks MATH-500 (graded by math-verify, answers in ``\\boxed{}``);
    ``"rg:NAME"`` a reasoning-gym task with generator ``dataset_options``, its questions as
    written, graded by the task's scorer (sequential best-of-8 only, and the confidence
    strategies at 8 branches); ``model`` holds model settings (``model``, ``draft_model``,
    ``max_tokens``, ...), e.g. ``{"model": "smollm2-135m", "max_tokens": 96}``. The step
    verifier only knows the built-in task: with other datasets its methods are left out.
    """
    console = console or Console(width=130)
    items = bench_items(dataset, 40 if quick else problems, data_path, dataset_options)
    gym = parse_dataset(dataset) is not None
    sizes = (4, 8) if quick else (4, 8, 16)
    sequential_sizes = (8,) if gym else sizes
    multiples = (1.0,) if quick else DEADLINE_MULTIPLES
    points: list[Point] = []
    started = time.monotonic()
    settings: dict[str, Any] = {"seed": 0, "max_tokens": 160} | (
        {"answer_extractor": "boxed"} if dataset == "math500" else {}) | (model or {})
    plain = LatencyOptimalTTSLLM(**settings | {"num_speculative_tokens": 0, "early_stop": False})
    package = LatencyOptimalTTSLLM(**settings)
    deadline_methods: list[tuple[str, dict[str, Any]]] = [("1 sample", {"branches": 1}),
                                                          ("latts, 8 branches", {"branches": 8}), ("latts auto", {})]
    if dataset == "arithmetic":
        deadline_methods += [("latts auto + weighted vote", {"verifier": "arithmetic_steps",
                                                             "strategy": "weighted_majority"}),
                             ("latts auto + verifier", {"verifier": "arithmetic_steps", "strategy": "best_of_n"}),
                             ("latts auto + prune", {"verifier": "arithmetic_steps", "strategy": "best_of_n",
                                                     "prune": True})]
    free_methods: list[tuple[str, dict[str, Any]]] = [("latts, 8 branches", {"branches": 8}),
                                                      ("latts 8, greedy member", {"branches": 8, "greedy_member": True})]
    if gym:
        free_methods += [("latts 8, confidence_weighted", {"branches": 8, "strategy": "confidence_weighted"}),
                         ("latts 8, confidence_filtered", {"branches": 8, "strategy": "confidence_filtered"})]
    calls = len(items) * (2 + len(sizes) + len(sequential_sizes) + 1 + len(free_methods)
                          + len(multiples) * len(deadline_methods))
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("plain engine: starting", total=calls)

        def advance() -> None:
            progress.advance(task)

        def run(point: Point, call: Callable[[Item], tuple[bool, float, int, float | None]]) -> None:
            progress.update(task, description=point.method)
            points.append(_measure(point, items, call, advance))

        plain.warmup()
        run(Point("greedy, 1 sample", "plain"), partial(_one_call, plain, {"branches": 1, "temperature": 0.0}))
        run(Point("1 sample", "plain"), partial(_one_call, plain, {"branches": 1}))
        for n in sequential_sizes:
            run(Point(f"sequential best-of-{n}", "sequential"), partial(_sequential, plain, n))
        for n in sizes:
            run(Point(f"parallel n={n} (no early stop)", "parallel"), partial(_one_call, plain, {"branches": n}))
        plain.engine.shutdown()
        progress.update(task, description="default engine: starting")
        package.warmup()
        run(Point("1 branch + speculation", "package"), partial(_one_call, package, {"branches": 1}))
        for method, options in free_methods:
            run(Point(method, "package"), partial(_one_call, package, options))
        one = next(pt for pt in points if pt.method == "1 sample").summary()
        for m in multiples:
            deadline = round(one["p90_s"] * m, 4)
            for method, options in deadline_methods:  # not `name`: that is the output files' name
                run(Point(f"{method} @ {deadline * 1000:.0f} ms", "deadline", deadline),
                    partial(_one_call, package, {**options, "deadline_s": deadline}))
        package.engine.shutdown()
    summaries = [p.summary() for p in points]
    report = {"problems": len(items), "dataset": dataset, "dataset_options": dataset_options or {},
              "model": settings.get("model") or "latts-tiny-arith", "seed": SEED, "quick": quick,
              "seconds": round(time.monotonic() - started, 1), "points": summaries, "pareto": pareto_front(summaries),
              "ratios": _ratios(summaries, one["p90_s"])}
    _print(report, console)
    _write(report, out_dir, name)
    console.print(f"files: {out_dir / name}.json, .csv, .png ({report['seconds']:.0f} s)")
    return report


def _by(summaries: Sequence[dict[str, Any]], method: str) -> dict[str, Any]:
    return next(s for s in summaries if s["method"] == method)


def _ratios(summaries: Sequence[dict[str, Any]], one_p90: float) -> dict[str, Any]:
    sequential, latts8 = _by(summaries, "sequential best-of-8"), _by(summaries, "latts, 8 branches")
    tight = f"@ {round(one_p90, 4) * 1000:.0f} ms"
    one_tight = _by(summaries, f"1 sample {tight}")
    best_tight = max((s for s in summaries if s["method"].startswith("latts") and s["method"].endswith(tight)),
                     key=lambda s: s["accuracy"])
    return {
        "sequential8_over_latts8_latency": sequential["median_s"] / latts8["median_s"],
        "sequential8_accuracy": sequential["accuracy"], "latts8_accuracy": latts8["accuracy"],
        "tight_deadline_s": one_p90, "tight_best_method": best_tight["method"],
        "tight_latts_minus_one_sample_points": (best_tight["accuracy"] - one_tight["accuracy"]) * 100,
        "tight_auto_minus_one_sample_points": (_by(summaries, f"latts auto {tight}")["accuracy"]
                                               - one_tight["accuracy"]) * 100,
        "tokens_per_correct": {s["method"]: s["tokens_per_correct"] for s in summaries},
    }


def _print(report: dict[str, Any], console: Console) -> None:
    source = {"math500": "MATH-500", "arithmetic": f"built-in task, seed {report['seed']}"}.get(
        report["dataset"], f"{report['dataset']} {report.get('dataset_options') or ''}, seed {report['seed']}")
    source += f", {report.get('model', 'latts-tiny-arith')}"
    table = Table(title=f"latts bench tts: {report['problems']} problems ({source}), one call at a time")
    for column in ("method", "accuracy [95% CI]", "median ms", "p90 ms", "tokens", "tokens/correct", "acceptance"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for s in report["points"]:
        mark = " *" if s["method"] in report["pareto"] else ""
        table.add_row(s["method"] + mark, f"{s['accuracy']:.1%} [{s['ci95_low']:.1%}, {s['ci95_high']:.1%}]",
                      f"{s['median_s'] * 1000:.0f}", f"{s['p90_s'] * 1000:.0f}", f"{s['tokens']:.0f}",
                      "-" if s["tokens_per_correct"] is None else f"{s['tokens_per_correct']:.0f}",
                      "-" if s["acceptance"] is None else f"{s['acceptance']:.2f}")
    console.print(table)
    r = report["ratios"]
    console.print(f"* on the Pareto front (accuracy vs median latency). Sequential best-of-8 takes "
                  f"{r['sequential8_over_latts8_latency']:.1f}x the latency of latts at 8 branches "
                  f"({r['sequential8_accuracy']:.1%} vs {r['latts8_accuracy']:.1%}; goal >= 5x). At one sample's p90 "
                  f"({r['tight_deadline_s'] * 1000:.0f} ms): {r['tight_best_method']} "
                  f"{r['tight_latts_minus_one_sample_points']:+.1f} points over one sample (auto alone "
                  f"{r['tight_auto_minus_one_sample_points']:+.1f}; goal >= +15).")


def _write(report: dict[str, Any], out_dir: Path, name: str = "bench-tts") -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(report, indent=1))
    with (out_dir / f"{name}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(report["points"][0]))
        writer.writeheader()
        writer.writerows(report["points"])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    styles = {"plain": "o", "sequential": "s", "parallel": "^", "package": "D", "deadline": "*"}
    for family, marker in styles.items():
        pts = [s for s in report["points"] if s["family"] == family]
        ax.scatter([s["median_s"] * 1000 for s in pts], [s["accuracy"] * 100 for s in pts], marker=marker,
                   label=family, s=60)
    front = sorted((s for s in report["points"] if s["method"] in report["pareto"]), key=lambda s: s["median_s"])
    ax.plot([s["median_s"] * 1000 for s in front], [s["accuracy"] * 100 for s in front], "k--", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("median latency per question (ms, log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"latts bench tts: {report['dataset']}, {report['model']} ({report['problems']} problems)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / f"{name}.png", dpi=120)
