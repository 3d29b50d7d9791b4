"""How long a question's answer will be: a per-question output-length model (pure).

A call's latency is set by how many tokens its branches write, and that depends on the
question far more than on the branch: on the built-in task a 2-step question's branches
write 32-40 tokens and a 5-step question's 64-94 (measured: the spread of one question's
branches is ~1% in log terms, the spread across questions ~30-50%). Planning every call
for the profile's p90 length makes short questions waste their deadline and long ones
miss it. So the length is predicted per question::

    m(q)        = max(1, w . features(q))        the question's median output length
    ln L(q, i)  = ln m(q) + e_q + e_i            branch i's length
    e_q ~ N(0, sigma_question^2)                 how wrong the prediction is for a question
    e_i ~ N(0, sigma_branch^2)                   how a question's branches differ

``features`` are cheap counts of the question's text (:func:`prompt_features`: its
characters, numbers, digits and operator signs); ``w`` is fitted by least squares (a
small ridge) on the per-question median lengths of the calibration samples
(``latts profile``). ``sigma_question`` is the spread of the *leave-one-out* residuals,
``ln(median / prediction)`` -- what the model gets wrong on a question it was not fitted
on; ``sigma_branch`` is the pooled spread of each question's samples around their
median. Without calibration samples (:func:`marginal_length_model`) the model is the
profile's length distribution itself: its median for every question, and its whole
log-spread as ``sigma_question`` (the branches of one call are assumed to share it).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["FEATURES", "MIN_QUESTIONS", "LengthEstimate", "LengthModel", "fit_length_model", "heldout_error",
           "marginal_length_model", "order_statistic_z", "prompt_features"]

#: What :func:`prompt_features` counts, in order (the first is the intercept).
FEATURES: tuple[str, ...] = ("1", "characters", "numbers", "digits", "operators")
#: Ridge penalty of the least-squares fit (features are counts: keeps the fit stable
#: when a feature does not vary across the calibration prompts).
RIDGE = 1e-3
#: Questions a length model needs at least.
MIN_QUESTIONS = len(FEATURES) + 2
#: z of the 90th percentile of a normal distribution.
Z90 = 1.2815515655446004

_NUMBER = re.compile(r"\d+")
_OPERATOR = re.compile(r"[-+*/=^×÷]")


def prompt_features(text: str) -> list[float]:
    """The question's features, in :data:`FEATURES` order."""
    numbers = _NUMBER.findall(text)
    return [1.0, float(len(text)), float(len(numbers)), float(sum(len(n) for n in numbers)),
            float(len(_OPERATOR.findall(text)))]


@dataclass(frozen=True)
class LengthEstimate:
    """One question's predicted output length: median tokens and log-spreads."""

    median: float
    sigma_question: float
    sigma_branch: float

    @property
    def sigma(self) -> float:
        """The spread of one branch's length around the prediction (both sources)."""
        return math.hypot(self.sigma_question, self.sigma_branch)

    def quantile(self, z: float) -> float:
        """A branch's length at the standard-normal quantile ``z`` (e.g. :data:`Z90`)."""
        return self.median * math.exp(z * self.sigma)

    def mth_of(self, m: int, b: int) -> float:
        """The length of the ``m``-th shortest of this question's ``b`` branches: the
        question's error at its median (one question's branches share it), the branches'
        own spread at the order statistic's typical z (:func:`order_statistic_z`)."""
        return self.median * math.exp(order_statistic_z(m, b) * self.sigma_branch)


def order_statistic_z(m: int, b: int) -> float:
    """The typical standard-normal z of the ``m``-th smallest of ``b`` draws (Blom's
    approximation of its expectation, ``Phi^-1((m - 3/8) / (b + 1/4))``; exact for the
    median of an odd ``b`` and within 0.01 of the expectation for ``b <= 64``)."""
    if not 1 <= m <= b:
        raise ValueError(f"need 1 <= m <= b, got m={m}, b={b}")
    return statistics.NormalDist().inv_cdf((m - 0.375) / (b + 0.25))


class LengthModel(BaseModel):
    """Predicts a question's median output length from its text (module docstring)."""

    model_config = ConfigDict(frozen=True)

    #: Weights of :data:`FEATURES` (only the intercept for a marginal model).
    coefficients: list[float]
    sigma_question: float = Field(ge=0)
    sigma_branch: float = Field(ge=0)
    #: Questions and samples per question it was fitted on.
    questions: int = 0
    samples: int = 0
    #: Median absolute percentage error of the predicted median on held-out questions
    #: (None: not checked).
    heldout_mdape: float | None = None
    source: str = ""

    def predict(self, text: str) -> float:
        """The question's median output length, in tokens (at least 1)."""
        features = prompt_features(text)[: len(self.coefficients)]
        return max(1.0, float(np.dot(self.coefficients, features)))

    def estimate(self, text: str, *, max_tokens: int | None = None) -> LengthEstimate:
        """The question's :class:`LengthEstimate` (its median capped at ``max_tokens``)."""
        median = self.predict(text)
        if max_tokens is not None:
            median = min(median, float(max_tokens))
        return LengthEstimate(median, self.sigma_question, self.sigma_branch)


def _branch_spread(lengths: Sequence[Sequence[int]]) -> float:
    """Pooled standard deviation of each question's log lengths around its own mean."""
    squares, dof = 0.0, 0
    for question in lengths:
        logs = [math.log(max(1, n)) for n in question]
        if len(logs) > 1:
            mean = sum(logs) / len(logs)
            squares += sum((x - mean) ** 2 for x in logs)
            dof += len(logs) - 1
    return math.sqrt(squares / dof) if dof else 0.0


def fit_length_model(texts: Sequence[str], lengths: Sequence[Sequence[int]], *,
                     source: str = "") -> LengthModel:
    """Fit :class:`LengthModel` on calibration questions and their samples' lengths
    (module docstring); needs at least :data:`MIN_QUESTIONS` questions (twice that for
    the held-out check, :func:`heldout_error`)."""
    if len(texts) != len(lengths) or len(texts) < MIN_QUESTIONS or any(not q for q in lengths):
        raise ValueError(f"a length model needs >= {MIN_QUESTIONS} questions with >= 1 sample each")
    x = np.array([prompt_features(t) for t in texts])
    y = np.array([statistics.median(q) for q in lengths], dtype=float)
    gram = x.T @ x + RIDGE * np.eye(x.shape[1])
    weights = np.linalg.solve(gram, x.T @ y)
    # Leave-one-out residuals of a (ridge) least-squares fit: r_i / (1 - h_ii).
    hat = np.einsum("ij,jk,ik->i", x, np.linalg.inv(gram), x)
    predicted = x @ weights
    held_out = np.maximum(1.0, y - (y - predicted) / np.clip(1.0 - hat, 1e-6, None))
    residuals = np.log(np.maximum(1.0, y) / held_out)
    return LengthModel(
        coefficients=[float(w) for w in weights],
        sigma_question=float(np.sqrt(np.mean(residuals ** 2))),
        sigma_branch=_branch_spread(lengths),
        questions=len(texts), samples=min(len(q) for q in lengths),
        heldout_mdape=heldout_error(texts, lengths) if len(texts) >= 2 * MIN_QUESTIONS else None,
        source=source or f"fitted on {len(texts)} questions x {min(len(q) for q in lengths)} samples",
    )


def heldout_error(texts: Sequence[str], lengths: Sequence[Sequence[int]]) -> float:
    """Median absolute percentage error of the predicted median length on questions the
    model was not fitted on: fitted on every other question, checked on the rest, and
    the other way round."""
    errors = []
    for part in (0, 1):
        fit = [i for i in range(len(texts)) if i % 2 != part]
        model = fit_length_model([texts[i] for i in fit], [lengths[i] for i in fit])
        for i in range(part, len(texts), 2):
            truth = statistics.median(lengths[i])
            errors.append(abs(model.predict(texts[i]) - truth) / max(1.0, truth))
    return statistics.median(errors)


def marginal_length_model(lengths: Sequence[int], *, source: str = "the profile's length distribution") -> LengthModel:
    """The fallback without calibration questions: the distribution's median for every
    question and its log-spread as ``sigma_question`` (module docstring)."""
    if not lengths:
        raise ValueError("a length distribution needs at least one length")
    logs = [math.log(max(1, n)) for n in lengths]
    spread = statistics.pstdev(logs) if len(logs) > 1 else 0.0
    return LengthModel(coefficients=[float(statistics.median(lengths))], sigma_question=spread, sigma_branch=0.0,
                       questions=0, samples=len(lengths), source=source)
