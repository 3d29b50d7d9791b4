"""``latts bench confidence``: the model's own confidence as a vote weight and a cut-off.

1. **Calibration** (the profiler's, on its held-out calibration problems, 8 samples
   each): every sample's confidence by each measure of :mod:`~langchain_latts.tts.confidence`,
   graded, gives each measure's *separation* -- the chance that a right sample of a question
   is more confident than a wrong sample of the same question (:func:`separation`; 0.5 is
   no signal) -- and the cut-off's threshold (the value 95% of the right samples pass, as
   ``latts profile`` stores it).
2. **Selection**, on the held-out problems of ``latts bench tts`` (seed 20261126) at 16
   branches, one call at a time: ``majority`` against ``confidence_weighted`` and
   ``confidence_filtered`` by the default measure and by DeepConf's ``lowest_group``.
3. **Cut-off**: ``majority`` with ``prune="confidence"`` at the calibrated threshold,
   without replacements (tokens saved) and with them (the default), with DeepConf-online's
   in-call warm-up instead of the calibration (no profile); and with
   ``early_stop="adaptive"`` (cut branches stop holding the vote open).
4. **Tight deadline**: one branch's p90 latency (measured first): 16 branches with and
   without the cut-off, and the control -- log-probs asked for, nothing cut -- that
   separates what the cuts do from what asking for log-probs costs.

Prints the table and the ratios; writes ``bench-confidence.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, get_args

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from langchain_latts.bench.tts import Point, _measure, _one_call, bench_items
from langchain_latts.chat_models import LatencyOptimalTTSLLM
from langchain_latts.planner.profiler import (
    CALIBRATION_SAMPLES,
    builtin_calibration,
    confidence_calibration,
    graded_samples,
)
from langchain_latts.tts.confidence import TAIL, WINDOW, ConfidenceMeasure, branch_confidence

__all__ = ["run_confidence_bench", "separation"]

BRANCHES = 16
#: A cut-off threshold no sampled token falls below (the control run).
NEVER = -1e9


def separation(groups: Sequence[Sequence[tuple[float, bool]]]) -> float | None:
    """The chance that, within one group (a question's samples), a right sample has a
    higher value than a wrong one (ties count half): the AUROC of the value as a detector
    of right samples, pooled over pairs of the same question. None without such pairs."""
    wins = pairs = 0.0
    for group in groups:
        right = [v for v, ok in group if ok]
        wrong = [v for v, ok in group if not ok]
        for r in right:
            for w in wrong:
                wins += 1.0 if r > w else 0.5 if r == w else 0.0
        pairs += len(right) * len(wrong)
    return wins / pairs if pairs else None


def _calibrate(llm: LatencyOptimalTTSLLM) -> dict[str, Any]:
    """Sample the calibration problems with log-probs; each measure's separation and the threshold."""
    calibration = builtin_calibration()
    graded = llm.engine.run_sync(graded_samples(llm.engine, calibration, samples=CALIBRATION_SAMPLES,
                                                max_tokens=llm.max_tokens, temperature=llm.temperature,
                                                extractor=llm.extractor()))
    graded = [[(r, ok) for r, ok in group if r["logprobs"]] for group in graded]
    separations = {}
    for measure in get_args(ConfidenceMeasure):
        separations[measure] = separation([[(branch_confidence(r["confidences"], measure, window=WINDOW, tail=TAIL,
                                                                logprobs=r["logprobs"]), ok) for r, ok in group]
                                           for group in graded])
    cut = confidence_calibration([r for group in graded for r, _ in group], [ok for group in graded for _, ok in group])
    assert cut is not None
    return {"problems": len(calibration), "samples": CALIBRATION_SAMPLES, "separation": separations,
            "threshold": cut.threshold(llm.confidence_measure)}


def run_confidence_bench(*, problems: int = 200, out: Path | None = None,
                         console: Console | None = None) -> dict[str, Any]:
    """Run the benchmark (module docstring), print it and save ``out``."""
    console = console or Console(width=120)
    items = bench_items("arithmetic", problems)
    llm = LatencyOptimalTTSLLM(seed=0, max_tokens=160, branches=BRANCHES)
    points: list[Point] = []
    started = time.monotonic()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("starting the engine", total=15 * len(items))
        llm.warmup()
        progress.update(task, description="calibration")
        calibrated = _calibrate(llm)
        threshold = calibrated["threshold"]
        cut = {"prune": "confidence", "confidence_threshold": threshold}
        methods: list[tuple[str, dict[str, Any]]] = [
            ("majority", {}),
            ("confidence_weighted", {"strategy": "confidence_weighted"}),
            ("confidence_filtered", {"strategy": "confidence_filtered"}),
            ("confidence_weighted (DeepConf lowest_group)",
             {"strategy": "confidence_weighted", "confidence_measure": "lowest_group"}),
            ("confidence_filtered (DeepConf lowest_group)",
             {"strategy": "confidence_filtered", "confidence_measure": "lowest_group"}),
            ("majority + cut-off, no replacements", cut | {"max_respawns": 0}),
            ("majority + cut-off", cut),
            ("majority + cut-off, no replacements, in-call warm-up (no calibration)",
             {"prune": "confidence", "max_respawns": 0}),
            ("majority, adaptive early stop", {"early_stop": "adaptive"}),
            ("majority + cut-off, no replacements, adaptive early stop",
             cut | {"max_respawns": 0, "early_stop": "adaptive"}),
        ]

        def run(name: str, options: dict[str, Any], deadline: float | None = None) -> Point:
            progress.update(task, description=name)
            point = _measure(Point(name, "confidence", deadline), items, partial(_one_call, llm, options),
                             lambda: progress.advance(task))
            points.append(point)
            return point

        one = run("1 branch", {"branches": 1}).summary()
        for name, options in methods:
            run(f"{name}, {BRANCHES} branches", options)
        tight = round(one["p90_s"], 4)
        # the control: log-probs asked for (what the cut-off costs every step) but nothing cut
        asked = {"prune": "confidence", "confidence_threshold": NEVER}
        for name, options in (("majority", {}), ("majority + log-probs, nothing cut", asked),
                              ("majority + cut-off", cut)):
            run(f"{name} @ {tight * 1000:.0f} ms", options | {"deadline_s": tight}, tight)
        llm.engine.shutdown()
    summaries = [p.summary() for p in points]
    by = {s["method"]: s for s in summaries}

    def at16(name: str) -> dict[str, Any]:
        return by[f"{name}, {BRANCHES} branches"]

    base, tight_name = at16("majority"), f"@ {tight * 1000:.0f} ms"
    ratios = {
        "weighted_minus_majority_points": (at16("confidence_weighted")["accuracy"] - base["accuracy"]) * 100,
        "filtered_minus_majority_points": (at16("confidence_filtered")["accuracy"] - base["accuracy"]) * 100,
        "deepconf_weighted_minus_majority_points":
            (at16("confidence_weighted (DeepConf lowest_group)")["accuracy"] - base["accuracy"]) * 100,
        "deepconf_filtered_minus_majority_points":
            (at16("confidence_filtered (DeepConf lowest_group)")["accuracy"] - base["accuracy"]) * 100,
        "cutoff_token_saving": 1 - at16("majority + cut-off, no replacements")["tokens"] / base["tokens"],
        "cutoff_minus_majority_points":
            (at16("majority + cut-off, no replacements")["accuracy"] - base["accuracy"]) * 100,
        "cutoff_replaced_token_saving": 1 - at16("majority + cut-off")["tokens"] / base["tokens"],
        "cutoff_replaced_minus_majority_points": (at16("majority + cut-off")["accuracy"] - base["accuracy"]) * 100,
        "warmup_cutoff_token_saving":
            1 - at16("majority + cut-off, no replacements, in-call warm-up (no calibration)")["tokens"]
            / base["tokens"],
        "warmup_cutoff_minus_majority_points":
            (at16("majority + cut-off, no replacements, in-call warm-up (no calibration)")["accuracy"]
             - base["accuracy"]) * 100,
        "adaptive_cutoff_token_saving":
            1 - at16("majority + cut-off, no replacements, adaptive early stop")["tokens"]
            / at16("majority, adaptive early stop")["tokens"],
        "adaptive_cutoff_minus_adaptive_points":
            (at16("majority + cut-off, no replacements, adaptive early stop")["accuracy"]
             - at16("majority, adaptive early stop")["accuracy"]) * 100,
        "adaptive_cutoff_token_saving_vs_majority":
            1 - at16("majority + cut-off, no replacements, adaptive early stop")["tokens"] / base["tokens"],
        "tight_deadline_s": tight,
        "tight_cutoff_minus_majority_points": (by[f"majority + cut-off {tight_name}"]["accuracy"]
                                               - by[f"majority {tight_name}"]["accuracy"]) * 100,
        "tight_logprobs_minus_majority_points": (by[f"majority + log-probs, nothing cut {tight_name}"]["accuracy"]
                                                 - by[f"majority {tight_name}"]["accuracy"]) * 100,
        "tight_cutoff_minus_logprobs_points": (by[f"majority + cut-off {tight_name}"]["accuracy"]
                                               - by[f"majority + log-probs, nothing cut {tight_name}"]["accuracy"]) * 100,
    }
    report = {"problems": len(items), "branches": BRANCHES, "seconds": round(time.monotonic() - started, 1),
              "calibration": calibrated, "points": summaries, "ratios": ratios}
    _print(console, report)
    if out is not None:
        out.write_text(json.dumps(report, indent=1))
        console.print(f"saved {out} ({report['seconds']:.0f} s)")
    return report


def _print(console: Console, report: dict[str, Any]) -> None:
    calibrated, ratios = report["calibration"], report["ratios"]
    console.print(f"calibration ({calibrated['problems']} problems x {calibrated['samples']} samples): separation of "
                  "right from wrong samples of a question (0.5 = none): "
                  + ", ".join(f"{m} {v:.2f}" for m, v in calibrated["separation"].items() if v is not None)
                  + f"; cut-off threshold {calibrated['threshold']:.3f}")
    table = Table(title=f"latts bench confidence: {report['problems']} problems (built-in task, held out), "
                        "one call at a time")
    for column in ("method", "accuracy [95% CI]", "median ms", "tokens"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for s in report["points"]:
        table.add_row(s["method"], f"{s['accuracy']:.1%} [{s['ci95_low']:.1%}, {s['ci95_high']:.1%}]",
                      f"{s['median_s'] * 1000:.0f}", f"{s['tokens']:.0f}")
    console.print(table)
    console.print(
        f"against majority: confidence_weighted {ratios['weighted_minus_majority_points']:+.1f}, confidence_filtered "
        f"{ratios['filtered_minus_majority_points']:+.1f} points (DeepConf's lowest_group: "
        f"{ratios['deepconf_weighted_minus_majority_points']:+.1f} / {ratios['deepconf_filtered_minus_majority_points']:+.1f}; "
        f"goal >= 0); the cut-off generates {ratios['cutoff_token_saving']:.0%} fewer tokens at "
        f"{ratios['cutoff_minus_majority_points']:+.1f} points (goal >= 30% at >= -1), with replacements "
        f"{ratios['cutoff_replaced_token_saving']:.0%} at {ratios['cutoff_replaced_minus_majority_points']:+.1f}; "
        f"with the in-call warm-up instead of the calibration {ratios['warmup_cutoff_token_saving']:.0%} at "
        f"{ratios['warmup_cutoff_minus_majority_points']:+.1f}; "
        f"with adaptive early stopping the cut-off saves {ratios['adaptive_cutoff_token_saving']:.0%} against adaptive "
        f"alone at {ratios['adaptive_cutoff_minus_adaptive_points']:+.1f} points "
        f"({ratios['adaptive_cutoff_token_saving_vs_majority']:.0%} against plain majority); "
        f"at {ratios['tight_deadline_s'] * 1000:.0f} ms the cut-off is "
        f"{ratios['tight_cutoff_minus_majority_points']:+.1f} points against majority "
        f"({ratios['tight_logprobs_minus_majority_points']:+.1f} of them from asking for log-probs, "
        f"{ratios['tight_cutoff_minus_logprobs_points']:+.1f} from the cuts).")
