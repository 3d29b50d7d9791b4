"""The figures every benchmark reports for a set of calls (pure): accuracy with its 95%
interval, median and p90 latency, mean tokens, and the means of any other columns."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["nearest_rank", "summarize", "wilson_interval"]


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` by the nearest-rank method (a value that occurred)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summarize(rows: Sequence[dict[str, Any]], *means: str) -> dict[str, Any]:
    """Rows with ``correct``, ``elapsed_s`` and ``tokens`` -> accuracy (and its interval),
    median and p90 seconds, mean tokens, calls; plus the mean of each column in ``means``."""
    if not rows:
        raise ValueError("no calls to summarize")
    correct = sum(bool(r["correct"]) for r in rows)
    low, high = wilson_interval(correct, len(rows))
    latencies = [r["elapsed_s"] for r in rows]
    summary = {"accuracy": correct / len(rows), "ci95": [low, high], "correct": correct, "calls": len(rows),
               "median_s": statistics.median(latencies), "p90_s": nearest_rank(latencies, 0.9),
               "tokens": statistics.fmean(r["tokens"] for r in rows)}
    summary.update({column: statistics.fmean(float(r[column]) for r in rows) for column in means})
    return summary
