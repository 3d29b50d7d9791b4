"""Expected accuracy of a plan whose vote may not be complete by the deadline (pure).

A plan of ``B`` branches is worth its vote's accuracy only if the branches finish. The
planner therefore scores a candidate by its *expected* accuracy, over how many of its
branches finish before the deadline ``D``::

    c        seconds per output token of a branch while B (+ load) sequences run:
             the profiled step time / tokens per step, times the log-probs slowdown
    p0       seconds until the B branches have their first token (the prompt's prefill and
             each branch's set-up: ``latency.first_token_seconds``)
    w_j      the wave of branch j: 0 while the engine has a free slot for it, 1 after ...

    branch j finishes  iff  p0 + (w_j + 1) * L_j * c * e^d  <=  D
    ln L_j = ln m + e_q + e_j              (the question's length model: lengths.py)
    d ~ N(bias, sigma_t^2)                 (the latency model's own error, measured by
                                            ``latts profile --validate``)

    z = e_q + d ~ N(bias, sigma_q^2 + sigma_t^2)      shared by the call's branches
    p_j(z) = Phi((ln((D - p0) / ((w_j + 1) c)) - ln m - z) / sigma_b)
    K | z   = the number finished: Poisson-binomial over p_1(z) .. p_B(z)

    E[accuracy] = E_z[ sum_K P(K | z) * A(K) ],    A(K) = vote accuracy of K branches,
                                                   A(0) = 0 (nothing to vote on)

``E_z`` is the mean over ``NODES`` equally likely values of ``z`` (the midpoints of its
quantiles: exact to ``1 / NODES`` even where ``p_j`` jumps). The question's error ``e_q`` and the timing error
``d`` are *shared*: when a question is longer than predicted, or the machine slower,
every branch is late together, which is how a near-miss plan loses the whole answer.
So a plan predicted at 97% of the deadline with a 7% timing spread finishes with
probability ~0.67 and is worth ~0.67 of its vote, and loses to a smaller plan predicted
at 70% that finishes almost surely. Without a deadline every branch finishes:
``E[accuracy] = A(B)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np

from langchain_latts.planner.lengths import LengthEstimate

__all__ = ["Outcome", "expected_outcome", "finished_distribution"]

#: Equally likely values of the shared error averaged over.
NODES = 128
#: The standard normal CDF, tabulated on [-8, 8] for vectorized lookups (error < 1e-6).
_GRID = np.linspace(-8.0, 8.0, 4001)
_CDF = np.array([NormalDist().cdf(x) for x in _GRID])


@lru_cache(maxsize=4)
def _quantile_nodes(n: int) -> np.ndarray:
    """The midpoints of ``n`` equally likely slices of N(0, 1)."""
    unit = NormalDist()
    return np.array([unit.inv_cdf((i + 0.5) / n) for i in range(n)])


def _phi(x: np.ndarray) -> np.ndarray:
    return np.interp(x, _GRID, _CDF, left=0.0, right=1.0)


def finished_distribution(probabilities: Sequence[float]) -> list[float]:
    """P(K = k finished), k = 0 .. len(probabilities), for independent branches that
    each finish with the given probability (the Poisson-binomial distribution)."""
    return [float(q) for q in _poisson_binomial(np.array([list(probabilities)], dtype=float))[0]]


@dataclass(frozen=True)
class Outcome:
    """What a plan of ``B`` branches is expected to give."""

    #: Expected accuracy, counting the chance that fewer (or no) branches finish.
    expected_accuracy: float
    #: Probability that every branch finishes by the deadline.
    p_complete: float
    #: Probability that no branch finishes by the deadline.
    p_none: float
    #: Expected number of branches that finish.
    expected_finished: float


def expected_outcome(branches: int, *, seconds_per_token: float, first_token_s: float, deadline_s: float | None,
                     length: LengthEstimate, vote_accuracy: Callable[[int], float], timing_bias: float = 0.0,
                     timing_sigma: float = 0.0, free_slots: int | None = None,
                     max_tokens: int | None = None) -> Outcome:
    """The :class:`Outcome` of ``branches`` branches (module docstring).

    ``vote_accuracy(k)`` is the accuracy of a vote of ``k`` finished branches;
    ``free_slots`` the sequences the engine can still run at once (None: no limit);
    ``max_tokens`` caps a branch's length (it then ends, finished or not, at that length).
    """
    if branches < 1:
        raise ValueError(f"branches must be >= 1, got {branches}")
    accuracies = [0.0] + [vote_accuracy(k) for k in range(1, branches + 1)]
    if deadline_s is None:
        return Outcome(accuracies[branches], 1.0, 0.0, float(branches))
    room = deadline_s - first_token_s
    if room <= 0:
        return Outcome(0.0, 0.0, 1.0, 0.0)
    slots = max(1, free_slots) if free_slots is not None else branches
    waves = np.array([j // slots + 1 for j in range(branches)], dtype=float)
    shared = math.hypot(length.sigma_question, timing_sigma)
    nodes = _quantile_nodes(NODES) if shared > 0 else np.array([0.0])
    weights = np.full(len(nodes), 1.0 / len(nodes))
    z = timing_bias + shared * nodes
    # ln of the longest branch that fits, per node (rows) and branch (columns).
    fits = np.log(room / (waves[None, :] * seconds_per_token)) - z[:, None]
    log_median = math.log(max(1e-9, length.median))
    if length.sigma_branch > 0:
        probabilities = _phi((fits - log_median) / length.sigma_branch)
    else:
        probabilities = (fits >= log_median).astype(float)
    if max_tokens is not None:  # it ends at max_tokens before the deadline (z also holds the
        # question's error here, which only makes this rarer: conservative)
        probabilities = np.where(fits >= math.log(max_tokens), 1.0, probabilities)
    dist = _poisson_binomial(probabilities)
    by_node = dist @ np.array(accuracies)
    return Outcome(expected_accuracy=float(weights @ by_node), p_complete=float(weights @ dist[:, -1]),
                   p_none=float(weights @ dist[:, 0]), expected_finished=float(weights @ probabilities.sum(axis=1)))


def _poisson_binomial(probabilities: np.ndarray) -> np.ndarray:
    """Per row of independent success probabilities, P(K = k), k = 0 .. columns."""
    rows, columns = probabilities.shape
    dist = np.zeros((rows, columns + 1))
    dist[:, 0] = 1.0
    for j in range(columns):
        p = probabilities[:, j:j + 1]
        dist[:, 1:j + 2] = dist[:, 1:j + 2] * (1.0 - p) + dist[:, 0:j + 1] * p
        dist[:, 0:1] *= 1.0 - p
    return dist
