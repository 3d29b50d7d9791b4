"""The latency model's error corrected by the calls it planned (pure)."""

from __future__ import annotations

import math

import pytest

from langchain_latts.planner.calibration import PRIOR_CALLS, adjusted_error, timing_observation
from langchain_latts.planner.profile import LatencyError


def test_a_call_measures_how_much_slower_than_predicted_its_branches_ran() -> None:
    # Predicted: first tokens after 20 ms, then 2 ms a token: a 50-token branch in 120 ms.
    # Measured: the last first token after 40 ms, branches at 2, 3 and 4 ms a token (median 3): 190 ms.
    value = timing_observation(predicted_first_token_s=0.020, predicted_seconds_per_token=0.002, length=50,
                               first_tokens_s=[0.030, 0.040, 0.035], paces_s=[0.002, 0.003, 0.004])
    assert value == pytest.approx(math.log(0.190 / 0.120))


def test_nothing_to_measure_is_no_observation() -> None:
    assert timing_observation(predicted_first_token_s=0.02, predicted_seconds_per_token=0.002, length=50,
                              first_tokens_s=[], paces_s=[0.002]) is None
    assert timing_observation(predicted_first_token_s=0.02, predicted_seconds_per_token=0.002, length=50,
                              first_tokens_s=[0.02], paces_s=[]) is None


def test_the_error_moves_from_the_validated_one_to_the_calls_by_their_number() -> None:
    prior = LatencyError(bias=0.2, slope=0.0, sigma=0.25, source="validated")
    assert adjusted_error(prior, []) == prior
    # 8 calls, as many as the prior counts for, all 5% slower than predicted (no spread):
    calls = [(4, math.log(1.05))] * PRIOR_CALLS
    adjusted = adjusted_error(prior, calls)
    assert adjusted.bias == pytest.approx(0.5 * math.log(1.05) + 0.5 * 0.2)
    assert adjusted.sigma == pytest.approx(math.sqrt(0.5 * 0.25 ** 2))
    assert "adjusted by this engine's last 8 planned calls" in adjusted.source
    # Many more calls: the calls' own error dominates.
    many = adjusted_error(prior, [(4, 0.05), (4, -0.05)] * 32)
    assert many.bias == pytest.approx((64 / 72) * 0.0 + (8 / 72) * 0.2)
    assert many.sigma == pytest.approx(math.sqrt((64 / 72) * 0.05 ** 2 + (8 / 72) * 0.25 ** 2))


def test_the_validated_slope_in_the_branch_count_is_kept() -> None:
    prior = LatencyError(bias=0.0, slope=0.1, sigma=0.1)
    # Calls of 1 and 16 branches that ran exactly as the slope says: their residuals are 0.
    adjusted = adjusted_error(prior, [(1, 0.0), (16, 0.1 * math.log(16))] * 8)
    assert adjusted.bias == pytest.approx(0.0) and adjusted.slope == 0.1
    assert adjusted.bias_at(16) == pytest.approx(0.1 * math.log(16))
