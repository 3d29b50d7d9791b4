"""The package's errors: one base class, and a message that says what to change.

Every message names the parameter, the value received and the fix, in the style of
vLLM's validation errors (``"branches must be >= 1, got 0. ..."``).
"""

from __future__ import annotations

__all__ = [
    "BranchesFailedError",
    "BudgetExhaustedError",
    "DeadlineExceededError",
    "EngineDeadError",
    "EngineStartError",
    "FleetUnavailableError",
    "LattsError",
    "LattsValueError",
]


class LattsError(Exception):
    """Base class of every error raised by langchain-latts."""


class LattsValueError(LattsError, ValueError):
    """A bad setting or input; the message names the parameter, the value and the fix."""

    @classmethod
    def bad(cls, name: str, value: object, requirement: str, fix: str = "") -> LattsValueError:
        """``"<name> <requirement>, got <value!r>. <fix>"``."""
        message = f"{name} {requirement}, got {value!r}."
        return cls(f"{message} {fix}".strip())


class EngineStartError(LattsError, RuntimeError):
    """The inference engine could not be started (bad model path, out of memory, ...)."""

    #: Whether trying again may help (a crash), as opposed to a configuration or capacity
    #: error that would fail the same way.
    retryable: bool = False


class EngineDeadError(LattsError, RuntimeError):
    """The engine process died during a call; the next call restarts it."""


class FleetUnavailableError(LattsError, RuntimeError):
    """No server of the fleet (``endpoints``) could serve a branch.

    ``endpoints`` maps every endpoint to its last error (None: it was serving).
    """

    def __init__(self, message: str, *, endpoints: dict[str, str | None]) -> None:
        super().__init__(message)
        self.endpoints = endpoints


class BranchesFailedError(LattsError, RuntimeError):
    """Every branch of a call failed in the engine (e.g. servers answering malformed
    output); ``errors`` holds each branch's error."""

    def __init__(self, message: str, *, errors: list[str]) -> None:
        super().__init__(message)
        self.errors = errors


class DeadlineExceededError(LattsError, TimeoutError):
    """No branch finished before the deadline and ``on_deadline="raise"`` was set."""

    def __init__(self, message: str, *, deadline_s: float, elapsed_s: float, tokens: int) -> None:
        super().__init__(message)
        self.deadline_s = deadline_s
        self.elapsed_s = elapsed_s
        self.tokens = tokens


class BudgetExhaustedError(LattsError, RuntimeError):
    """A run's shared token or time budget is spent (:class:`langchain_latts.Budget`).

    ``ledger`` lists what was spent where: one dict per call (step, tokens, seconds,
    branches, answer); ``spent`` has the totals and ``limits`` the budget.
    """

    def __init__(self, message: str, *, ledger: list[dict[str, object]], spent: dict[str, float],
                 limits: dict[str, float | None]) -> None:
        super().__init__(message)
        self.ledger = ledger
        self.spent = spent
        self.limits = limits
