"""The planner inside a call (planner/runtime.py): the profile an engine plans with, what
calls teach it, and the load a plan sees."""

from __future__ import annotations

from langchain_latts.planner.latency import NO_SPECULATION
from langchain_latts.planner.runtime import MIN_OBSERVED, EngineProfile

from .test_planner import flat_profile


def startup(lengths: list[int]) -> EngineProfile:
    """A start-up profile of a user model: lengths unknown until calls finish."""
    profile = flat_profile([0.001, 0.002], [1, 16]).model_copy(update={"output_lengths": lengths})
    return EngineProfile(profile, "start-up", NO_SPECULATION, learns_lengths=True)


def test_a_first_call_s_max_tokens_does_not_cap_later_plans() -> None:
    state = startup([16])  # the start-up profile was measured for a first call with max_tokens=16
    assert state.current(512).output_lengths == [512], "a later call plans with its own limit"
    assert state.current(64).output_lengths == [64]
    assert state.current().output_lengths == [16], "without a call, the profile as measured"


def test_observed_lengths_replace_the_limit_once_there_are_enough() -> None:
    state = startup([512])
    state.observe([40] * (MIN_OBSERVED - 1))
    assert state.current(512).output_lengths == [512], "too few to trust"
    state.observe([44])
    assert state.current(512).output_lengths == [40] * (MIN_OBSERVED - 1) + [44]


def test_a_cached_profile_keeps_its_measured_lengths() -> None:
    profile = flat_profile([0.001, 0.002], [1, 16]).model_copy(update={"output_lengths": [30, 35, 40]})
    state = EngineProfile(profile, "latts profile x", NO_SPECULATION)
    state.observe([500] * 20)
    assert state.current(512).output_lengths == [30, 35, 40]


def test_timing_observations_move_the_error_the_plans_price() -> None:
    state = startup([100])
    before = state.current().timing_error
    state.timings.extend([(4, 0.4)] * 32)  # calls ran 1.5x slower than predicted
    after = state.current().timing_error
    assert after.bias > before.bias + 0.1
