"""langchain-latts: the best answer a local LLM can give within a deadline.

Data flow of one ``invoke``::

    messages -> prompt (chat template)                       _messages.py
             -> settings for this call (branches, speculation) settings.py
             -> engine branches, one request each             engines/ (vLLM on its own loop)
             -> answers, scores, selection, early stop,        tts/ (answers, verifiers, selection,
                deadline, pruning, progress                      voting, stopping, branches)
             -> the run's shared token/time budget            budget.py
             -> AIMessage with usage and TTS metadata         _messages.py

``LatencyOptimalTTSLLM`` (chat_models.py) is the LangChain surface over those stages.
"""

from langchain_latts._quiet import quiet_dependencies
from langchain_latts._version import __version__
from langchain_latts.budget import Budget, latts_budget
from langchain_latts.chat_models import LatencyOptimalTTSLLM
from langchain_latts.errors import (
    BranchesFailedError,
    BudgetExhaustedError,
    DeadlineExceededError,
    EngineDeadError,
    EngineStartError,
    FleetUnavailableError,
    LattsError,
    LattsValueError,
)

# Before anything imports vLLM: keep its and torch's start-up noise out of users' output.
quiet_dependencies()

__all__ = [
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
