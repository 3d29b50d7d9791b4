"""Token and time budgets shared by every call of a chain or agent run.

A :class:`Budget` holds a limit of generated tokens and/or wall-clock seconds and a
ledger of what each call spent. Calls of :class:`~langchain_latts.LatencyOptimalTTSLLM`
find the active budget in, by priority:

1. the run's config: ``config={"configurable": {"latts_budget": budget}}`` (passed to the
   model, to a chain or to a LangGraph graph -- its nodes see it);
2. the innermost ``with Budget(...)`` / ``with latts_budget(...)`` block around the call
   (a context variable, so it follows threads started with ``contextvars`` and asyncio
   tasks, in the style of langchain-core's ``get_usage_metadata_callback``).

Every call then

* raises :class:`~langchain_latts.BudgetExhaustedError` (with the ledger) when nothing is
  left when it starts;
* plans within what remains: its deadline is at most the seconds left, and its branches
  fit the tokens left -- through the planner for ``branches="auto"``, otherwise by the
  rule of :func:`branches_within`;
* charges every generated token as it arrives, under a lock, so concurrent steps share
  the budget safely: once it is spent each running branch stops at its next token and
  the call selects over the branches that finished (if none did, the call raises
  :class:`~langchain_latts.BudgetExhaustedError`);
* adds one ledger entry (step, tokens, seconds, branches, answer).

Only generated tokens count (prompts are prefilled once per call and cached). A budget
nested in another charges both. The ledger is in each call's
``response_metadata["tts"]["budget"]``, and the ledger as of a call's start in the
metadata of its LangSmith run (``latts_budget``).
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Self, TypeVar

from langchain_latts.errors import BudgetExhaustedError, LattsValueError

#: A number type (limits are ints or floats).
N = TypeVar("N", int, float)

__all__ = [
    "Budget", "BudgetExhaustedError", "StepSpend", "active_budget", "branches_within", "latts_budget", "least", "spender",
]

#: The key of a budget in a ``RunnableConfig``'s ``configurable``.
CONFIG_KEY = "latts_budget"

_CURRENT: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("latts_budget", default=None)


@dataclass(frozen=True)
class StepSpend:
    """What one call spent."""

    step: str
    tokens: int
    seconds: float
    branches: int
    answer: str | None
    #: Seconds from the budget's start to the call's start.
    started_at_s: float


class Budget:
    """A shared budget of generated tokens and/or seconds (None: unlimited), with a ledger.

    The clock starts when the budget is created. Use it as a context manager around a
    run, or pass it in the run's config (module docstring)::

        with Budget(tokens=4000, seconds=30) as budget:
            agent.invoke({"messages": [...]})
        budget.ledger   # one StepSpend per model call
    """

    def __init__(self, tokens: int | None = None, seconds: float | None = None) -> None:
        if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1):
            raise LattsValueError.bad("tokens", tokens, "must be a positive integer or None",
                                      "e.g. Budget(tokens=4000); None means no token limit.")
        if seconds is not None and (not isinstance(seconds, (int, float)) or not seconds > 0):
            raise LattsValueError.bad("seconds", seconds, "must be a positive number of seconds or None",
                                      "e.g. Budget(seconds=30); None means no time limit.")
        self.tokens = tokens
        self.seconds = None if seconds is None else float(seconds)
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._spent_tokens = 0
        self._ledger: list[StepSpend] = []
        self._parent: Budget | None = None
        self._token: contextvars.Token[Budget | None] | None = None

    # -- context manager ---------------------------------------------------------------
    def __enter__(self) -> Self:
        self._parent = _CURRENT.get()
        self._token = _CURRENT.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None

    # -- state --------------------------------------------------------------------------
    @property
    def tokens_spent(self) -> int:
        with self._lock:
            return self._spent_tokens

    @property
    def seconds_spent(self) -> float:
        return time.monotonic() - self.started

    @property
    def tokens_left(self) -> int | None:
        """Tokens left (None: no limit), the tightest over this budget and its parents."""
        own = None if self.tokens is None else max(0, self.tokens - self.tokens_spent)
        parent = None if self._parent is None else self._parent.tokens_left
        return least(own, parent)

    @property
    def seconds_left(self) -> float | None:
        """Seconds left (None: no limit), the tightest over this budget and its parents."""
        own = None if self.seconds is None else max(0.0, self.seconds - self.seconds_spent)
        parent = None if self._parent is None else self._parent.seconds_left
        return least(own, parent)

    @property
    def exhausted(self) -> bool:
        tokens, seconds = self.tokens_left, self.seconds_left
        return tokens == 0 or seconds == 0.0

    @property
    def ledger(self) -> list[StepSpend]:
        with self._lock:
            return list(self._ledger)

    # -- what calls do ------------------------------------------------------------------
    def charge(self, tokens: int) -> bool:
        """Count ``tokens`` just generated (here and in the parents); False once spent."""
        with self._lock:
            self._spent_tokens += tokens
            own_left = self.tokens is None or self._spent_tokens < self.tokens
        parent_left = self._parent.charge(tokens) if self._parent is not None else True
        return own_left and parent_left

    def record(self, spend: StepSpend) -> None:
        """Add a call's entry to the ledger (and the parents')."""
        with self._lock:
            self._ledger.append(spend)
        if self._parent is not None:
            self._parent.record(spend)

    def check(self, step: str) -> None:
        """Raise :class:`BudgetExhaustedError` when nothing is left for ``step``."""
        if self.exhausted:
            raise self.exhausted_error(f"no budget left for step {step!r}")

    def exhausted_error(self, why: str) -> BudgetExhaustedError:
        """The error for a spent budget, listing what was spent where."""
        ledger = self.as_metadata()
        where = "; ".join(f"{e['step']}: {e['tokens']} tokens, {e['seconds']:.2f} s" for e in ledger["ledger"])
        return BudgetExhaustedError(
            f"{why}: spent {ledger['spent']['tokens']} of {_limit(self.tokens)} tokens and "
            f"{ledger['spent']['seconds']:.2f} of {_limit(self.seconds)} s ({where or 'nothing recorded yet'}). "
            "Give the run a larger Budget(tokens=..., seconds=...) or fewer steps.",
            ledger=ledger["ledger"], spent=ledger["spent"], limits=ledger["limits"],
        )

    def as_metadata(self) -> dict[str, Any]:
        """The limits, totals, what is left and the ledger, as plain data."""
        ledger = [asdict(e) | {"seconds": round(e.seconds, 4), "started_at_s": round(e.started_at_s, 4)}
                  for e in self.ledger]
        seconds_left = self.seconds_left
        return {
            "limits": {"tokens": self.tokens, "seconds": self.seconds},
            "spent": {"tokens": self.tokens_spent, "seconds": round(self.seconds_spent, 4)},
            "left": {"tokens": self.tokens_left, "seconds": None if seconds_left is None else round(seconds_left, 4)},
            "ledger": ledger,
        }

    def __repr__(self) -> str:
        return f"Budget(tokens={self.tokens}, seconds={self.seconds}, spent={self.tokens_spent} tokens)"


@contextmanager
def latts_budget(tokens: int | None = None, seconds: float | None = None) -> Iterator[Budget]:
    """``with latts_budget(tokens=4000) as budget:`` -- a :class:`Budget` for the calls inside."""
    with Budget(tokens, seconds) as budget:
        yield budget


def active_budget(configurable: dict[str, Any] | None = None) -> Budget | None:
    """The budget a call spends from: the config's ``latts_budget``, else the innermost
    ``with Budget(...)`` block (None: no budget)."""
    value = (configurable or {}).get(CONFIG_KEY)
    if value is not None:
        if not isinstance(value, Budget):
            raise LattsValueError.bad(
                f"configurable[{CONFIG_KEY!r}]", value, "must be a langchain_latts.Budget",
                "Pass config={'configurable': {'latts_budget': Budget(tokens=4000)}}.",
            )
        return value
    return _CURRENT.get()


def branches_within(branches: int, tokens_left: int | None, branch_tokens: int) -> int:
    """The rule for pinned ``branches`` under a token budget: at most
    ``tokens_left // branch_tokens`` branches (the tokens one branch typically needs:
    the profile's p90 output length, else ``max_tokens``), and never fewer than one."""
    if tokens_left is None:
        return branches
    return max(1, min(branches, tokens_left // max(1, branch_tokens)))


def spender(capped: bool, call_cap: int | None, budget: Budget | None) -> Callable[[int], bool] | None:
    """Charges a call's tokens to its own cap and the run's budget; False once either is
    spent (None: nothing to charge)."""
    if not capped and budget is None:
        return None
    spent = 0

    def spend(tokens: int) -> bool:
        nonlocal spent
        spent += tokens
        within_call = call_cap is None or spent < call_cap
        within_run = budget.charge(tokens) if budget is not None else True
        return within_call and within_run

    return spend


def least(a: N | None, b: N | None) -> N | None:
    """The smaller of two optional limits (None: no limit)."""
    return b if a is None else a if b is None else min(a, b)


def _limit(value: float | None) -> str:
    return "unlimited" if value is None else f"{value:g}"
