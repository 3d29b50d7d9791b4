"""The public surface is pinned: a change here is an API change."""

from __future__ import annotations

import langchain_latts


def test_all() -> None:
    assert sorted(langchain_latts.__all__) == [
        "BranchesFailedError",
        "Budget",
        "BudgetExhaustedError",
        "DeadlineExceededError",
        "EngineDeadError",
        "EngineStartError",
        "FleetUnavailableError",
        "LatencyOptimalTTSLLM",
        "LattsError",
        "LattsValueError",
        "__version__",
        "latts_budget",
    ]


def test_errors_are_one_family() -> None:
    assert issubclass(langchain_latts.LattsValueError, ValueError)
    for name in ("BranchesFailedError", "BudgetExhaustedError", "DeadlineExceededError", "EngineDeadError",
                 "EngineStartError", "FleetUnavailableError", "LattsValueError"):
        assert issubclass(getattr(langchain_latts, name), langchain_latts.LattsError)
