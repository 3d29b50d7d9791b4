"""Selection strategies: how scored branches become one answer (pure).

``majority``
    The plurality of answers (:func:`~langchain_latts.tts.voting.majority_vote`); scores
    are ignored.
``weighted_majority``
    Each answer's weight is the sum of its branches' scores; the heaviest wins.
``best_of_n``
    The answer of the single highest-scoring branch.
``confidence_weighted``
    Each answer's weight is the sum of its branches' confidences (from the model's own
    log-probs, :mod:`~langchain_latts.tts.confidence`), each times the branch's verifier
    score when there is a verifier (DeepConf's weighted vote).
``confidence_filtered``
    Only the most confident ``keep`` share of the answering branches vote (DeepConf's
    filtered vote), by plain count -- or by verifier score when there is a verifier.

Ties go to the answer first given by the lowest-numbered branch, as in the plain vote.
A branch without an answer never wins; a branch without a score (the verifier failed or
ran past the deadline) scores :data:`LOWEST_SCORE`.

A verifier may return one outcome score or a list of per-step scores (process-reward
style); :func:`aggregate` turns the list into one score by ``min`` (a solution is as good
as its worst step), ``last``, ``prod`` or ``mean``.

Early stopping under weights: with scores in [0, 1] a branch still running can add at
most 1 to any answer's weight, so the leader is decided when its weight exceeds the
runner-up's by more than the number of branches still running -- a finished branch whose
score is not in yet counts as running (:func:`weighted_vote_is_decided`); ``best_of_n`` is
decided when a finished branch scores the maximum, 1: a branch still running could only
tie it (and would win the tie only with a lower index and a different answer, which a
verifier that gives 1 only to correct solutions never allows).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from langchain_latts.tts.confidence import most_confident

__all__ = ["CONFIDENCE_STRATEGIES", "LOWEST_SCORE", "Aggregation", "Selection", "Strategy", "aggregate", "select", "weighted_vote_is_decided"]

#: The strategies, shared by code, configuration and the command line.
Strategy = Literal["majority", "weighted_majority", "best_of_n", "confidence_weighted", "confidence_filtered"]
#: The strategies that need each branch's confidence (log-probs from the engine).
CONFIDENCE_STRATEGIES: tuple[str, ...] = ("confidence_weighted", "confidence_filtered")
#: How per-step scores become one score.
Aggregation = Literal["min", "last", "prod", "mean"]
#: The score of a candidate whose verification failed.
LOWEST_SCORE = 0.0


def aggregate(scores: float | Sequence[float], how: Aggregation = "min") -> float:
    """One score from an outcome score or a list of per-step scores."""
    if isinstance(scores, (int, float)):
        return float(scores)
    values = [float(s) for s in scores]
    if not values:
        return LOWEST_SCORE
    if how == "min":
        return min(values)
    if how == "last":
        return values[-1]
    if how == "prod":
        return math.prod(values)
    if how == "mean":
        return sum(values) / len(values)
    raise ValueError(f"unknown aggregation {how!r}")


@dataclass(frozen=True)
class Selection:
    """The outcome of a selection."""

    answer: str | None
    #: Index of the branch whose text is returned (None when no branch has an answer).
    winner_index: int | None
    #: Weight per answer (votes for ``majority``, summed scores for ``weighted_majority``,
    #: the best branch score for ``best_of_n``), heaviest first.
    weights: dict[str, float]


def select(answers: Sequence[str | None], scores: Sequence[float | None], strategy: Strategy, *,
           confidences: Sequence[float | None] | None = None, keep: float = 0.5) -> Selection:
    """Pick the answer of ``answers`` (one per branch, in branch order) by ``strategy``.

    ``confidences`` (one per branch, None where unknown) are needed by the confidence
    strategies; a verifier's ``scores`` then multiply them (``confidence_weighted``) or
    weigh the filtered votes (``confidence_filtered``) when any score is given. The
    returned branch is the highest-weighted branch with the winning answer (the first such
    branch for ``majority``)."""
    if len(scores) != len(answers):
        raise ValueError("one score per answer is needed")
    confidence = list(confidences) if confidences is not None else [None] * len(answers)
    verified = any(s is not None for s in scores)
    voting = [a is not None for a in answers]
    if strategy == "confidence_filtered":
        kept = most_confident([c if v else None for c, v in zip(confidence, voting)], keep)
        voting = [v and k for v, k in zip(voting, kept)]
    branch_weight: list[float] = []
    for score, conf in zip(scores, confidence):
        value = LOWEST_SCORE if score is None else score
        if strategy == "confidence_weighted":
            value = (conf or 0.0) * (value if verified else 1.0)
        elif strategy == "confidence_filtered":
            value = value if verified else 1.0
        branch_weight.append(value)
    weights: dict[str, float] = {}
    first: dict[str, int] = {}
    for i, answer in enumerate(answers):
        if answer is None or not voting[i]:
            continue
        first.setdefault(answer, i)
        if strategy == "majority":
            weights[answer] = weights.get(answer, 0.0) + 1.0
        elif strategy in ("weighted_majority", "confidence_weighted", "confidence_filtered"):
            weights[answer] = weights.get(answer, 0.0) + branch_weight[i]
        elif strategy == "best_of_n":
            weights[answer] = max(weights.get(answer, -math.inf), branch_weight[i])
        else:
            raise ValueError(f"unknown strategy {strategy!r}")
    if not weights:
        return Selection(answer=None, winner_index=None, weights={})
    ranked = sorted(weights, key=lambda a: (-weights[a], first[a]))
    winner = ranked[0]
    if strategy == "majority":
        index = first[winner]
    else:
        candidates = [i for i, a in enumerate(answers) if a == winner and voting[i]]
        index = max(candidates, key=lambda i: (branch_weight[i], -i))
    return Selection(answer=winner, winner_index=index, weights={a: weights[a] for a in ranked})


def weighted_vote_is_decided(weights: dict[str, float], remaining: int, strategy: Strategy) -> bool:
    """Whether ``remaining`` running branches (scores in [0, 1]) can no longer change the winner.

    Confidence strategies are never decided early: a confidence has no upper bound, and a
    filtered vote's cut moves with every branch that finishes."""
    if not weights or strategy in CONFIDENCE_STRATEGIES:
        return False
    ordered = sorted(weights.values(), reverse=True)
    runner_up = ordered[1] if len(ordered) > 1 else 0.0
    if strategy == "best_of_n":
        return ordered[0] >= 1.0 and ordered[0] > runner_up
    return ordered[0] > runner_up + remaining
