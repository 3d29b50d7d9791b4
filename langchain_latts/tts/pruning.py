"""Cutting running branches (pure bookkeeping over a call's branches): the confidence
cut-off (DeepConf-online, adapted to a deadline), the verifier's step check, and how long
a replacement of a cut branch needs.

:func:`~langchain_latts.tts.branches.run_branches` calls these as branches stream:
:class:`ConfidenceGate` decides whether a running branch's confidence is low enough to cut
it, :func:`step_fails` whether its completed steps score below the prune threshold, and
:func:`time_to_finish` / :func:`step_time` whether a replacement can still finish by the
deadline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from langchain_latts.tts.confidence import (
    TAIL,
    WINDOW,
    ConfidenceMeasure,
    branch_confidence,
    cut_measure,
    warmup_threshold,
)
from langchain_latts.tts.verifiers import completed_steps, score_candidate

if TYPE_CHECKING:
    from langchain_latts.tts.branches import Branch, BranchPolicy

__all__ = ["MIN_UNCUT", "ConfidenceGate", "step_fails", "step_time", "time_to_finish", "warmup_size"]


#: The in-flight cut-off never leaves fewer uncut branches than this in a call.
MIN_UNCUT = 2


@dataclass
class ConfidenceGate:
    """The in-flight cut-off of one call. The threshold is a calibration's when there is
    one (cuts start at the first token); otherwise DeepConf-online's warm-up, adapted to a
    deadline: once ``warmup`` branches have finished, the value the most confident ``keep``
    share of them pass (:func:`~langchain_latts.tts.confidence.warmup_threshold` over their
    :func:`~langchain_latts.tts.confidence.cut_measure`), and nothing is cut before. A
    running branch whose running value falls below it is cut -- unless that would leave
    fewer than :data:`MIN_UNCUT` branches of the call uncut (a hard question makes every
    branch stumble; some must still answer)."""

    warmup: int
    keep: float
    measure: ConfidenceMeasure
    threshold: float | None
    #: How many of the call's branches are neither cut nor failed.
    uncut: Callable[[], int]

    def learn(self, finished: Sequence[Branch]) -> None:
        """Set the threshold once enough branches with log-probs have finished."""
        warm = [b for b in finished if b.logprobs and (b.confidences or self.measure == "lowest_logprob")]
        if self.threshold is None and len(warm) >= self.warmup:
            self.threshold = warmup_threshold(
                [branch_confidence(b.confidences, cut_measure(self.measure), window=WINDOW, tail=TAIL,
                                   logprobs=b.logprobs) for b in warm], self.keep)

    def cuts(self, value: float | None) -> bool:
        return (self.threshold is not None and value is not None and value < self.threshold
                and self.uncut() > MIN_UNCUT)


def warmup_size(branches: int) -> int:
    """Branches that finish before the in-flight cut-off starts: a quarter, at least 2."""
    return max(2, math.ceil(branches / 4))


async def step_fails(branch: Branch, policy: BranchPolicy) -> bool:
    """Whether the steps a running branch completed since the last check score below the
    prune threshold (a verifier failure never prunes); a passing check moves the
    branch's ``verified_text`` forward."""
    head, steps = completed_steps(branch.text, policy.step_delimiter)
    if steps <= branch.steps_checked or policy.verifier is None:
        return False
    branch.steps_checked = steps
    score, _ = await score_candidate(policy.verifier, policy.question, head,
                                     aggregation=policy.aggregation, steps=steps)
    if score is not None and score < policy.prune_threshold:
        return True
    if score is not None:
        branch.verified_text = head + policy.step_delimiter
    return False


def time_to_finish(branch: Branch, typical_tokens: int) -> float:
    """Seconds a replacement of a confidence-cut branch needs: the tokens a branch
    typically writes, less those its prefix already holds, at the cut branch's pace."""
    pace = ((branch.ended_at_s or branch.launched_at_s) - branch.launched_at_s) / max(1, branch.num_tokens)
    return pace * max(1, typical_tokens - branch.prefix_tokens - branch.num_tokens)


def step_time(branch: Branch, delimiter: str = "\n") -> float:
    """Seconds an ended branch took per step it wrote (the failing one included)."""
    steps = branch.steps_checked - completed_steps(branch.prefix, delimiter)[1]
    return ((branch.ended_at_s or branch.launched_at_s) - branch.launched_at_s) / max(1, steps)
