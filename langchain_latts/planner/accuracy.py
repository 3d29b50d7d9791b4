"""Expected accuracy of a majority vote over B branches (pure).

The model
---------
A question's single-sample accuracy ``p`` differs from question to question; across the
questions a model is asked it follows a Beta distribution ``p ~ Beta(alpha, beta)``.
Given ``p``, each of the ``B`` branches independently

* gives the correct answer with probability ``p``,
* gives the question's *main wrong answer* with probability ``(1 - p) * c``,
* gives a wrong answer no other branch gives with probability ``(1 - p) * (1 - c)``.

``c`` (the *concentration* of wrong answers) is what makes votes fail: with ``c = 0``
wrong answers never agree and two correct votes always win; with ``c = 1`` every wrong
branch agrees on one answer. The vote is a plurality vote; a tie between the correct
answer and ``t - 1`` others counts ``1 / t`` (the lowest-branch-index tie-break of
:mod:`langchain_latts.tts.voting` is a uniform choice under exchangeable branches).

:func:`vote_accuracy` sums the multinomial outcomes, each integrated over the Beta
distribution exactly (``E[p^x (1-p)^n] = B(alpha + x, beta + n) / B(alpha, beta)``: no
grid, right even where a calibrated ``beta < 1`` piles the density up at ``p = 1``).
:func:`fit_accuracy_model` fits ``alpha`` and ``beta`` from calibration samples (``latts
profile``: per question, how many of ``k`` samples were correct) and ``c`` so that the
model's vote of ``k`` scores what the calibration questions' own votes of ``k`` scored.

A vote may also hold one *greedy member*: branch 0 decodes at temperature 0, the others
sample, and a tie goes to the greedy answer. Its accuracy is not modelled but counted:
:func:`member_vote_accuracy` averages, over the calibration questions, the vote of their
greedy answer and every subset of their samples (``AccuracyModel.greedy_member``).

Without calibration :data:`DEFAULT_ACCURACY_MODEL` is used: ``Beta(1, 1)`` (no idea
how hard the questions are: single-sample accuracy uniform on [0, 1]) and ``c = 0.5``.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DEFAULT_ACCURACY_MODEL", "AccuracyModel", "concentration_for_vote", "fit_accuracy_model", "fit_length_slope",
    "member_vote", "member_vote_accuracy", "member_vote_table", "observed_vote", "paired_standard_error", "quorum_size", "vote_accuracy",
]



class AccuracyModel(BaseModel):
    """``p ~ Beta(alpha, beta)`` per question and the concentration ``c`` of wrong answers."""

    model_config = ConfigDict(frozen=True)

    alpha: float = Field(gt=0)
    beta: float = Field(gt=0)
    concentration: float = Field(ge=0, le=1)
    #: Where the numbers come from ("default" or "calibrated on N questions x k samples").
    source: str = "default"
    #: How a question's expected single-sample accuracy moves with its output length: the
    #: change in its logit per unit of ``ln(length / reference_length)`` (0: it does not;
    #: on the built-in task longer questions are harder). See :meth:`for_length`.
    length_slope: float = 0.0
    reference_length: float = Field(default=0.0, ge=0)
    #: Accuracy of one greedy (temperature 0) answer on the calibration questions (None:
    #: not measured). The planner weighs greedy decoding against the vote with it.
    greedy_accuracy: float | None = Field(default=None, ge=0, le=1)
    #: Standard error of the calibration's mean gain of the vote of ``k`` over greedy,
    #: paired per question (0: not measured). A vote must beat greedy by more than this to
    #: be planned over it: a gain the calibration cannot tell from noise does not justify
    #: a sampled vote that may lose to greedy on the user's questions.
    vote_gain_se: float = Field(default=0.0, ge=0)
    #: Accuracy of a vote with one greedy member: the plurality of one greedy answer and
    #: ``B - 1`` samples, ties to the greedy answer, for ``B = 1 .. k`` with ``k`` samples
    #: per calibration question (item ``B - 1``; item 0 is greedy alone), counted on the
    #: calibration questions (:func:`member_vote_accuracy`). None: not measured.
    greedy_member: list[float] | None = None
    #: Standard error of the calibration's mean gain of the greedy-member vote of ``k``
    #: (the largest counted) over greedy alone, paired per question (0: not measured).
    member_gain_se: float = Field(default=0.0, ge=0)

    @property
    def mean_single_accuracy(self) -> float:
        """Expected single-sample accuracy, ``alpha / (alpha + beta)``."""
        return self.alpha / (self.alpha + self.beta)

    def for_length(self, length: float) -> AccuracyModel:
        """The model of a question whose branches write ``length`` tokens: the same spread
        ``alpha + beta`` around a mean moved by :attr:`length_slope` (itself when unfitted)."""
        if not self.length_slope or not self.reference_length or length <= 0:
            return self
        shift = self.length_slope * math.log(length / self.reference_length)
        shifted = round(_shift(self.mean_single_accuracy, shift), 3)  # rounded: vote_accuracy is cached
        strength = self.alpha + self.beta
        greedy = None if self.greedy_accuracy is None else _shift(self.greedy_accuracy, shift)
        member = None if self.greedy_member is None else [_shift(a, shift) for a in self.greedy_member]
        return self.model_copy(update={"alpha": shifted * strength, "beta": (1 - shifted) * strength,
                                       "length_slope": 0.0, "greedy_accuracy": greedy, "greedy_member": member})

    def vote_accuracy(self, branches: int) -> float:
        """Expected accuracy of the plurality vote of ``branches`` samples."""
        return vote_accuracy(branches, self.alpha, self.beta, self.concentration)

    def member_accuracy(self, branches: int) -> float | None:
        """Expected accuracy of a vote of ``branches`` with one greedy member (None: not
        measured at that size; the calibration counts up to its samples per question)."""
        if self.greedy_member is None or not 1 <= branches <= len(self.greedy_member):
            return None
        return self.greedy_member[branches - 1]

    def best_vote(self, branches: int) -> tuple[float, bool]:
        """The better of a sampled vote of ``branches`` and one with a greedy member (same
        cost: the greedy branch runs in the same batch): its accuracy, and whether it is the
        greedy-member vote (which must do strictly better to be chosen)."""
        sampled = self.vote_accuracy(branches)
        member = self.member_accuracy(branches)
        if branches >= 2 and member is not None and member > sampled:
            return member, True
        return sampled, False


def member_vote_table(samples: Sequence[Sequence[str | None]], greedy: Sequence[str | None],
                      truths: Sequence[str]) -> list[list[float]]:
    """Per question, the accuracy of the vote of its greedy answer and ``k`` of its ``n``
    samples, for ``k = 0 .. n - 1`` (B = 1 .. n branches), each the mean over every
    ``k``-subset of the samples: answers normalized, an answer-less branch votes for
    nothing, the plurality wins and a tie goes to the greedy answer when it is among the
    leaders (it is branch 0, and ties go to the lowest branch index), else is split evenly.
    ``k = n`` (one draw per question, no subsets to average) is left out: the best point of
    a curve that noisy is where the calibration flatters the member vote most."""
    n = min((len(s) for s in samples), default=0)
    return [[statistics.fmean(member_vote(first, [answers[i] for i in subset], truth)
                              for subset in itertools.combinations(range(n), k)) for k in range(n)]
            for answers, first, truth in zip(samples, greedy, truths)]


def member_vote_accuracy(samples: Sequence[Sequence[str | None]], greedy: Sequence[str | None],
                         truths: Sequence[str]) -> list[float]:
    """The greedy-member vote's accuracy for B = 1 .. n branches, averaged over the
    questions (:func:`member_vote_table`)."""
    table = member_vote_table(samples, greedy, truths)
    return [statistics.fmean(column) for column in zip(*table)] if table else []


def member_vote(first: str | None, others: Sequence[str | None], truth: str) -> float:
    """1 if the greedy-member vote of ``first`` and ``others`` picks ``truth``, 0 if not, the
    share of a split tie."""
    counts = Counter(a for a in (first, *others) if a is not None)
    if not counts:
        return 0.0
    top = max(counts.values())
    leaders = [a for a, c in counts.items() if c == top]
    if first is not None and first in leaders:
        return float(first == truth)
    return (truth in leaders) / len(leaders)


def quorum_size(model: AccuracyModel, branches: int, tolerance: float) -> int:
    """The fewest finished branches whose vote is expected within ``tolerance`` of the vote
    of all ``branches``: a call that launches ``branches`` can decide on the first that
    many to finish and abort the stragglers (``quorum="auto"``)."""
    full = model.vote_accuracy(branches)
    return next(m for m in range(1, branches + 1) if model.vote_accuracy(m) >= full - tolerance)


def _shift(p: float, logit: float) -> float:
    """``p`` moved by ``logit`` on the logit scale (kept within [0.01, 0.99])."""
    p = min(0.99, max(0.01, p))
    return min(0.99, max(0.01, 1 / (1 + math.exp(-(math.log(p / (1 - p)) + logit)))))


DEFAULT_ACCURACY_MODEL = AccuracyModel(alpha=1.0, beta=1.0, concentration=0.5, source="default")


def _plurality_correct(x: int, y: int, z: int) -> float:
    """Probability that the correct answer wins with ``x`` correct votes, ``y`` for the main
    wrong answer and ``z`` singleton wrong answers (ties split uniformly)."""
    if x == 0:
        return 0.0
    best_other = max(y, 1 if z else 0)
    if x > best_other:
        return 1.0
    if x < best_other:
        return 0.0
    tied = 1 + (y == x) + (z if x == 1 else 0)
    return 1.0 / tied


@lru_cache(maxsize=4096)
def vote_accuracy(branches: int, alpha: float, beta: float, concentration: float) -> float:
    """Expected plurality-vote accuracy of ``branches`` samples (module docstring)."""
    if branches < 1:
        raise ValueError(f"branches must be >= 1, got {branches}")
    b = branches
    log_beta = math.lgamma(alpha) + math.lgamma(beta) - math.lgamma(alpha + beta)
    total = 0.0
    for x in range(1, b + 1):
        for y in range(b - x + 1):
            z = b - x - y
            win = _plurality_correct(x, y, z)
            if win == 0.0 or (y and concentration == 0.0) or (z and concentration == 1.0):
                continue
            # E over p ~ Beta(alpha, beta) of p^x (1-p)^(y+z) is B(alpha + x, beta + y + z) / B(alpha, beta).
            log_moment = (math.lgamma(alpha + x) + math.lgamma(beta + y + z) - math.lgamma(alpha + beta + b)
                          - log_beta)
            log_coef = math.lgamma(b + 1) - math.lgamma(x + 1) - math.lgamma(y + 1) - math.lgamma(z + 1)
            log_share = (y * math.log(concentration) if y else 0.0) + (z * math.log(1.0 - concentration) if z else 0.0)
            total += win * math.exp(log_coef + log_share + log_moment)
    return min(1.0, max(0.0, total))


def fit_accuracy_model(correct: Sequence[int], main_wrong: Sequence[int], samples: int,
                       votes: Sequence[float] | None = None) -> AccuracyModel:
    """Fit :class:`AccuracyModel` to calibration counts.

    ``correct[i]`` and ``main_wrong[i]`` are, for question ``i``, how many of its
    ``samples`` answers were correct and how many gave its most common wrong answer.
    ``alpha`` and ``beta`` come from the method of moments of the beta-binomial
    distribution (clipped to a spread the data can support).

    ``c`` is fitted to what the vote did: given ``votes[i]``, the plurality vote of
    question ``i``'s ``samples`` answers (1 right, 0 wrong, ``1/t`` for a ``t``-way tie:
    :func:`observed_vote`), ``c`` is the concentration at which the model's
    ``vote_accuracy(samples)`` equals their mean (bisection; clipped to [0, 1]). Without
    ``votes``, ``c`` is the share of wrong answers that went to the main wrong answer,
    beyond the one a single wrong answer always contributes -- an estimate that ignores
    how wrong answers bunch on the hard questions, and on both models we measured it
    predicted the vote of 8 several points off (README, "The planner").
    """
    n = len(correct)
    if n < 2 or samples < 2 or len(main_wrong) != n or (votes is not None and len(votes) != n):
        raise ValueError("calibration needs >= 2 questions with >= 2 samples each")
    shares = [c / samples for c in correct]
    mean = sum(shares) / n
    var = sum((s - mean) ** 2 for s in shares) / (n - 1)
    mean = min(max(mean, 1e-3), 1 - 1e-3)
    # Var of the observed share = m(1-m)/k * (1 + (k-1) rho), rho = 1 / (alpha + beta + 1).
    binomial = mean * (1 - mean) / samples
    rho = (var - binomial) / (mean * (1 - mean) - binomial) if mean * (1 - mean) > binomial else 1.0
    rho = min(max(rho, 0.01), 0.99)
    strength = 1.0 / rho - 1.0
    alpha, beta = mean * strength, (1 - mean) * strength
    wrong = sum(samples - c for c in correct)
    source = f"calibrated on {n} questions x {samples} samples ({wrong} wrong answers)"
    if votes is not None:
        concentration = concentration_for_vote(samples, alpha, beta, sum(votes) / n)
        source += f"; c fitted to their vote of {samples} ({sum(votes) / n:.1%})"
    else:
        # A question with w >= 2 wrong answers puts main_wrong of them on one answer; under the
        # model main_wrong - 1 of the other w - 1 joined it with probability c.
        joined = sum(m - 1 for c, m in zip(correct, main_wrong) if samples - c >= 2)
        chances = sum(samples - c - 1 for c in correct if samples - c >= 2)
        concentration = joined / chances if chances else 0.5
    return AccuracyModel(alpha=alpha, beta=beta, concentration=min(max(concentration, 0.0), 1.0), source=source)


def paired_standard_error(first: Sequence[float], second: Sequence[float]) -> float:
    """Standard error of ``mean(first - second)``, paired item by item (0 for < 2 items)."""
    if len(first) != len(second):
        raise ValueError("paired samples must have equal lengths")
    gaps = [a - b for a, b in zip(first, second)]
    if len(gaps) < 2:
        return 0.0
    mean = sum(gaps) / len(gaps)
    return math.sqrt(sum((g - mean) ** 2 for g in gaps) / (len(gaps) - 1) / len(gaps))


def observed_vote(correct: int, main_wrong: int, tied_wrong: int = 1) -> float:
    """What one question's plurality vote scored: 1 when the correct answer has more votes
    than any wrong one, ``1 / (1 + tied_wrong)`` when ``tied_wrong`` wrong answers have as
    many (the tie-break is a uniform choice under exchangeable branches), else 0."""
    if correct == 0 or correct < main_wrong:
        return 0.0
    return 1.0 if correct > main_wrong else 1.0 / (1 + max(1, tied_wrong))


def concentration_for_vote(samples: int, alpha: float, beta: float, target: float) -> float:
    """The concentration ``c`` at which ``vote_accuracy(samples, alpha, beta, c)`` is
    ``target`` (bisection: the vote only gets worse as wrong answers agree more; an
    unreachable target gives the nearer end, 0 or 1)."""
    low, high = 0.0, 1.0
    if vote_accuracy(samples, alpha, beta, low) <= target:
        return low
    if vote_accuracy(samples, alpha, beta, high) >= target:
        return high
    for _ in range(30):
        middle = (low + high) / 2
        if vote_accuracy(samples, alpha, beta, middle) > target:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def fit_length_slope(correct: Sequence[int], samples: int, lengths: Sequence[float]) -> tuple[float, float]:
    """``(slope, reference_length)`` of :attr:`AccuracyModel.length_slope`: a logistic
    regression of each sample's correctness on ``ln(length / reference)`` (Newton's
    method on the per-question counts; ``reference`` is the lengths' geometric mean).
    ``correct[i]`` of ``samples`` samples of question ``i`` were right; its samples wrote
    ``lengths[i]`` tokens (their median)."""
    if len(correct) != len(lengths) or len(correct) < 2 or samples < 1:
        raise ValueError("a length slope needs >= 2 questions with their lengths")
    logs = [math.log(max(1.0, length)) for length in lengths]
    reference = math.exp(sum(logs) / len(logs))
    x = np.array([lg - math.log(reference) for lg in logs])
    k = np.array(correct, dtype=float)
    weights = np.zeros(2)
    design = np.stack([np.ones_like(x), x], axis=1)
    for _ in range(25):
        p = 1 / (1 + np.exp(-(design @ weights)))
        gradient = design.T @ (k - samples * p)
        hessian = (design * (samples * p * (1 - p) + 1e-6)[:, None]).T @ design + 1e-3 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        weights += step
        if float(np.abs(step).max()) < 1e-8:
            break
    return float(weights[1]), reference
