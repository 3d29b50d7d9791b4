"""The latency model keeps measuring: each planned call's own timing corrects its error (pure).

``latts profile --validate`` measures the latency model's error once, on its own grid of
calls; deployed, the prompts, the load and the machine differ (a long system message lowers
the draft's acceptance; other callers slow every step). So every planned call is also an
observation. With ``t_first`` and ``c`` the first-token time and seconds per token the plan
predicted, and, measured on the call's branches, ``T_first`` the time until the last of them
had its first token and ``pace`` their median seconds per token after it::

    observation = ln((T_first + m * pace) / (t_first + m * c))     m: the question's predicted length

-- how much slower than predicted a branch of the predicted length runs, which a branch cut
by the deadline or an early stop measures as well as a finished one (its pace is known), so
calls that miss their deadline are not left out. The planner's error is the validated one
moved towards the last :data:`WINDOW` observations, by their weight ``n / (n + PRIOR_CALLS)``::

    bias  = w * mean(r) + (1 - w) * bias_validated      r = observation - slope * ln B
    sigma = sqrt(w * var(r) + (1 - w) * sigma_validated^2)
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from langchain_latts.planner.profile import LatencyError

__all__ = ["MIN_PACE_TOKENS", "PRIOR_CALLS", "WINDOW", "adjusted_error", "timing_observation"]

#: Observations the planner remembers (per engine).
WINDOW = 64
#: How many calls the validated error counts as.
PRIOR_CALLS = 8
#: Tokens a branch must have written (after its first) for its pace to count.
MIN_PACE_TOKENS = 6


def timing_observation(*, predicted_first_token_s: float, predicted_seconds_per_token: float, length: float,
                       first_tokens_s: Sequence[float], paces_s: Sequence[float]) -> float | None:
    """The call's ``ln(measured / predicted)`` (module docstring), from the seconds until each
    branch had its first token and the seconds per token of each branch with at least
    :data:`MIN_PACE_TOKENS` tokens; None when there is nothing to measure."""
    if not first_tokens_s or not paces_s or predicted_seconds_per_token <= 0:
        return None
    measured = max(first_tokens_s) + length * statistics.median(paces_s)
    predicted = predicted_first_token_s + length * predicted_seconds_per_token
    return math.log(measured / predicted) if measured > 0 and predicted > 0 else None


def adjusted_error(prior: LatencyError, observations: Sequence[tuple[int, float]]) -> LatencyError:
    """``prior`` moved towards ``observations`` of ``(branches, ln(measured / predicted))``
    (module docstring); ``prior`` itself without observations."""
    if not observations:
        return prior
    residuals = [value - prior.slope * math.log(max(1, b)) for b, value in observations]
    n = len(residuals)
    weight = n / (n + PRIOR_CALLS)
    variance = statistics.pvariance(residuals) if n > 1 else prior.sigma ** 2
    return LatencyError(
        bias=weight * statistics.fmean(residuals) + (1 - weight) * prior.bias, slope=prior.slope,
        sigma=math.sqrt(weight * variance + (1 - weight) * prior.sigma ** 2), calls=prior.calls + n,
        source=f"{prior.source}; adjusted by this engine's last {n} planned calls")
