"""Verifiers: a score for a candidate answer, from a user's check or the shipped step checker.

A verifier is called with the question (the text of the last human message) and a
candidate -- a branch's text -- and returns either one *outcome* score or a list of
*per-step* scores (process-reward style), each in [0, 1]. It can be:

* a plain function ``(question, candidate) -> float | list[float]`` (run in a worker
  thread, so a slow check never stalls the engine's event loop),
* an ``async`` function with that signature (awaited on the engine's loop),
* any LangChain ``Runnable``, invoked with ``{"question": ..., "candidate": ...}``,
* a name of :data:`VERIFIERS`: ``"arithmetic_steps"`` checks every step of a solution
  to the built-in task (:func:`langchain_latts.tasks.arithmetic.step_scores`).

A verifier that raises, returns something else than numbers in [0, 1], or is still
running at the deadline does not fail the call: :func:`score_candidate` reports the
failure and the candidate scores :data:`~langchain_latts.tts.selection.LOWEST_SCORE`.

For pruning, the same verifier scores a *running* branch's text up to its last step
boundary (:func:`completed_steps`): a list's first ``n`` entries (the ``n`` completed
steps) are aggregated, a single score is taken as is.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.runnables import Runnable

from langchain_latts.errors import LattsValueError
from langchain_latts.tts.selection import Aggregation, aggregate

__all__ = [
    "VERIFIERS",
    "RawScore",
    "Verifier",
    "VerifierName",
    "VerifierSpec",
    "arithmetic_steps",
    "completed_steps",
    "resolve_verifier",
    "score_candidate",
    "verifier_name",
]

#: What a verifier returns: one outcome score or one score per step.
RawScore = float | Sequence[float]
#: Verifiers that ship with the package, by name.
VerifierName = Literal["arithmetic_steps"]
#: What the ``verifier`` setting accepts.
VerifierSpec = VerifierName | Callable[[str, str], Any] | Runnable[Any, Any]


def arithmetic_steps(question: str, candidate: str) -> list[float]:
    """The built-in task's step verifier: one score per step of ``candidate``, plus its
    answer line (:func:`~langchain_latts.tasks.arithmetic.step_scores`); a question that
    is not an arithmetic chain raises ValueError."""
    from langchain_latts.tasks.arithmetic import parse_problem, step_scores

    return step_scores(parse_problem(question), candidate)


VERIFIERS: dict[str, Callable[[str, str], RawScore]] = {"arithmetic_steps": arithmetic_steps}


@dataclass(frozen=True)
class Verifier:
    """A resolved verifier: its name (for metadata) and one async way to call it."""

    name: str
    call: Callable[[str, str], Awaitable[Any]]


def verifier_name(value: Any) -> str | None:
    """A stable name for metadata, tracing and the cache key."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Runnable):
        return f"runnable:{value.get_name()}"
    return f"callable:{getattr(value, '__qualname__', type(value).__name__)}"


def resolve_verifier(value: Any) -> Verifier | None:
    """The :class:`Verifier` for a ``verifier`` setting (None: no verifier)."""
    if value is None:
        return None
    name = verifier_name(value) or ""
    if isinstance(value, str):
        if value not in VERIFIERS:
            raise LattsValueError.bad(
                "verifier", value, f"is not a shipped verifier (shipped: {', '.join(VERIFIERS)})",
                "Pass a shipped name, a function (question, candidate) -> score or list of step scores, "
                "or a LangChain Runnable.",
            )
        fn = VERIFIERS[value]
        return Verifier(name, lambda q, c: asyncio.to_thread(fn, q, c))
    if isinstance(value, Runnable):
        runnable = value
        return Verifier(name, lambda q, c: runnable.ainvoke({"question": q, "candidate": c}))
    if callable(value):
        if inspect.iscoroutinefunction(value) or inspect.iscoroutinefunction(type(value).__call__):
            return Verifier(name, value)
        sync_fn = value
        return Verifier(name, lambda q, c: asyncio.to_thread(sync_fn, q, c))
    raise LattsValueError.bad(
        "verifier", value, "must be a shipped verifier's name, a callable or a LangChain Runnable",
        f"e.g. verifier='arithmetic_steps' or verifier=lambda question, candidate: 1.0 (shipped: {', '.join(VERIFIERS)}).",
    )


def _checked(raw: Any) -> float | list[float]:
    """``raw`` as a score or a list of scores in [0, 1]; ValueError otherwise."""

    def one(x: Any) -> float:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise TypeError(f"a score must be a number, got {type(x).__name__} {x!r}")
        value = float(x)
        if math.isnan(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"a score must lie in [0, 1], got {value!r}")
        return value

    if isinstance(raw, (list, tuple)):
        return [one(x) for x in raw]
    return one(raw)


def completed_steps(text: str, delimiter: str = "\n") -> tuple[str, int]:
    """The part of a running branch's ``text`` up to its last step boundary, and the
    number of non-empty steps in it."""
    cut = text.rfind(delimiter)
    if cut < 0:
        return "", 0
    head = text[:cut]
    return head, sum(1 for step in head.split(delimiter) if step.strip())


async def score_candidate(verifier: Verifier, question: str, candidate: str, *, aggregation: Aggregation = "min",
                          steps: int | None = None) -> tuple[float | None, str | None]:
    """Score one candidate: ``(score, None)``, or ``(None, why)`` when the verifier
    failed. ``steps``: score only the first ``steps`` per-step scores (a running branch;
    ``(None, None)`` when a list has none of them)."""
    try:
        raw = _checked(await verifier.call(question, candidate))
    except asyncio.CancelledError:
        raise
    except Exception as e:  # noqa: BLE001 -- a verifier's failure must never fail the call
        return None, f"{type(e).__name__}: {e}"
    if isinstance(raw, list) and steps is not None:
        raw = raw[:steps]
        if not raw:
            return None, None
    return aggregate(raw, aggregation), None
