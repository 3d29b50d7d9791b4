"""How sure the model was: DeepConf's confidence measures from per-token log-probs (pure).

Every function here takes numbers, not engine objects, so each is tested on hand-built
sequences. Notation follows DeepConf (Fu et al., 2025, arXiv 2508.15260):

* **token confidence** ``C_i = -(1/k) * sum_{j=1..k} log P_i(j)``: the negative mean
  log-probability of the ``k`` most likely tokens at position ``i``. A peaked distribution
  (the model sure of its token) leaves the runners-up very unlikely, so ``C_i`` is high; a
  flat one gives a low ``C_i``. Only the top ``k`` count -- the sampled token adds nothing
  unless it is one of them.
* **mean confidence** of a branch: the mean of its ``C_i``.
* **tail confidence**: the mean of its last ``tail`` token confidences (the final steps,
  where the answer is written).
* **group confidence** ``C_G``: the mean of ``C_i`` over a sliding window of ``window``
  consecutive tokens (a branch shorter than the window is one group of all its tokens);
  **lowest group confidence**: the smallest ``C_G`` -- one bad stretch marks the branch;
  **bottom-share confidence**: the mean of its lowest ``share`` of group confidences.
* **lowest log-prob** (``lowest_logprob``): the smallest log-probability of a token the
  branch *sampled*, ``min_i log P_i(sampled)`` -- the least likely step it took. DeepConf's
  ``C_i`` says how peaked the model's distribution was, whoever was sampled; this says
  whether the branch took a step the model itself thought unlikely (a slip). On the
  built-in task it is the measure that separates right from wrong branches *of the same
  question* (``latts bench confidence``: AUROC ~0.9 against ~0.5 for every ``C_i``
  measure), so it is the default; as a vote weight it counts as ``exp(lowest_logprob)``,
  the probability of that token (:func:`confidence_weight`).
* **warm-up threshold** (DeepConf-online): of the lowest group confidences of the first
  branches to finish, the value that keeps the most confident ``keep`` share above it
  (``keep=0.1``: the 90th percentile, DeepConf-low; ``keep=0.9``: the 10th, DeepConf-high).
  A running branch whose running measure (:class:`RunningConfidence`) falls below it is cut.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Literal

__all__ = ["TAIL", "TOP_K", "WARMUP_KEEP", "WINDOW", "ConfidenceMeasure", "GroupConfidence", "RunningConfidence",
           "bottom_share_confidence", "branch_confidence", "confidence_weight", "cut_measure", "group_confidences",
           "lowest_group_confidence", "lowest_logprob", "mean_confidence", "most_confident", "tail_confidence",
           "token_confidence", "warmup_threshold"]

#: Which number summarises a finished branch's confidence.
ConfidenceMeasure = Literal["lowest_logprob", "mean", "tail", "lowest_group", "bottom_share"]
#: Candidates per token whose log-probs make a token confidence (vLLM's ``logprobs=k``).
TOP_K = 5
#: Without a calibration, the in-flight cut-off's threshold is the value this share of a
#: call's warm-up branches pass (DeepConf-high's 90%: cut only what is weaker than nearly
#: all branches that finished).
WARMUP_KEEP = 0.9
#: Tokens per group (sliding window) and in the tail: the built-in task's branches run
#: 40-100 tokens (DeepConf's 2048 is for reasoning traces of thousands).
WINDOW = 16
TAIL = 16


def token_confidence(logprobs: Sequence[float], k: int) -> float:
    """``C_i`` of one position from its candidates' log-probs (any order; the top ``k`` count).

    Fewer than ``k`` candidates (the vocabulary, or the engine, gave fewer) average what
    there is; no candidate at all is a ValueError.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    top = sorted(logprobs, reverse=True)[:k]
    if not top:
        raise ValueError("a position needs at least one log-prob")
    return -math.fsum(top) / len(top)


def mean_confidence(confidences: Sequence[float]) -> float:
    """The mean token confidence of a branch."""
    _need(confidences)
    return math.fsum(confidences) / len(confidences)


def tail_confidence(confidences: Sequence[float], tail: int) -> float:
    """The mean confidence of the last ``tail`` tokens (all of them when shorter)."""
    _need(confidences)
    return mean_confidence(confidences[-tail:])


def group_confidences(confidences: Sequence[float], window: int) -> list[float]:
    """``C_G`` of every window of ``window`` consecutive tokens, in order (one group when
    the branch is shorter than the window)."""
    _need(confidences)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if len(confidences) <= window:
        return [mean_confidence(confidences)]
    groups, total = [], math.fsum(confidences[:window])
    groups.append(total / window)
    for i in range(window, len(confidences)):
        total += confidences[i] - confidences[i - window]
        groups.append(total / window)
    return groups


def lowest_group_confidence(confidences: Sequence[float], window: int) -> float:
    """The smallest group confidence of a branch."""
    return min(group_confidences(confidences, window))


def bottom_share_confidence(confidences: Sequence[float], window: int, share: float = 0.1) -> float:
    """The mean of the lowest ``share`` of a branch's group confidences (at least one)."""
    groups = sorted(group_confidences(confidences, window))
    return mean_confidence(groups[: max(1, math.floor(share * len(groups)))])


def lowest_logprob(logprobs: Sequence[float]) -> float:
    """The smallest log-prob among the tokens a branch sampled."""
    _need(logprobs)
    return min(logprobs)


def branch_confidence(confidences: Sequence[float], measure: ConfidenceMeasure, *, window: int, tail: int,
                      logprobs: Sequence[float] = ()) -> float:
    """One number for a finished branch, by ``measure`` (``logprobs``: the sampled tokens'
    log-probs, for ``lowest_logprob``; ``confidences``: the token confidences, for the rest)."""
    if measure == "lowest_logprob":
        return lowest_logprob(logprobs)
    if measure == "mean":
        return mean_confidence(confidences)
    if measure == "tail":
        return tail_confidence(confidences, tail)
    if measure == "lowest_group":
        return lowest_group_confidence(confidences, window)
    return bottom_share_confidence(confidences, window)


def confidence_weight(value: float, measure: ConfidenceMeasure) -> float:
    """A branch's confidence as a positive vote weight: ``exp`` of a log-prob measure (the
    probability of the least likely sampled token), DeepConf's ``C`` as it is."""
    return math.exp(value) if measure == "lowest_logprob" else value


def warmup_threshold(lowest_groups: Sequence[float], keep: float) -> float:
    """The cut-off that the most confident ``keep`` share of warm-up branches pass: of
    ``n`` lowest group confidences, the ``ceil(keep * n)``-th largest (at least one
    branch passes; a branch passes when its confidence is >= the cut-off)."""
    _need(lowest_groups)
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    ordered = sorted(lowest_groups)
    passing = max(1, math.ceil(keep * len(ordered) - 1e-9))
    return ordered[len(ordered) - passing]


def most_confident(confidences: Sequence[float | None], keep: float) -> list[bool]:
    """Which branches are among the most confident ``keep`` share (at least one; ties at
    the cut keep the lower index); None (no confidence) is never kept while another is."""
    known = [(c, -i) for i, c in enumerate(confidences) if c is not None]
    if not known:
        return [False] * len(confidences)
    count = max(1, round(keep * len(known)))
    chosen = {-i for _, i in sorted(known, reverse=True)[:count]}
    return [i in chosen for i in range(len(confidences))]


class GroupConfidence:
    """The running group confidence of a branch as its tokens arrive (for in-flight cuts)."""

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self._recent: deque[float] = deque(maxlen=window)
        self._total = 0.0
        self.lowest: float | None = None

    def push(self, confidence: float) -> float | None:
        """Add one token's confidence; the window's mean once it is full (else None)."""
        if len(self._recent) == self.window:
            self._total -= self._recent[0]
        self._recent.append(confidence)
        self._total += confidence
        if len(self._recent) < self.window:
            return None
        current = self._total / self.window
        self.lowest = current if self.lowest is None else min(self.lowest, current)
        return current


class RunningConfidence:
    """The in-flight form of a measure, fed token by token: for ``lowest_logprob`` each
    token's sampled log-prob (a branch falls below a threshold at its first token below
    it); for the other measures DeepConf's group confidence over the last ``window``
    tokens (None until the window is full). The lowest value it ever returns is the
    finished branch's :func:`cut_measure`."""

    def __init__(self, measure: ConfidenceMeasure, window: int = WINDOW) -> None:
        self.by_logprob = measure == "lowest_logprob"
        self._groups = GroupConfidence(window)

    def push(self, confidence: float, logprob: float) -> float | None:
        """Add one token (its ``C_i`` and its sampled log-prob); the current value or None."""
        if self.by_logprob:
            return logprob
        return self._groups.push(confidence)


def cut_measure(measure: ConfidenceMeasure) -> ConfidenceMeasure:
    """The finished-branch measure that :class:`RunningConfidence` tracks for ``measure``
    (so thresholds are learned on it): ``lowest_logprob``, else ``lowest_group``."""
    return "lowest_logprob" if measure == "lowest_logprob" else "lowest_group"


def _need(values: Sequence[float]) -> None:
    if not values:
        raise ValueError("a branch needs at least one token confidence")
