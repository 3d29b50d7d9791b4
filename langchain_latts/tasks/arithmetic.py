"""The built-in task: multi-step integer arithmetic with step-by-step solutions.

A problem is a chain of additions and subtractions, ``Compute 48 + 17 - 23 + 5.``,
and its solution writes one step per line, then the answer::

    48 + 17 = 65
    65 - 23 = 42
    42 + 5 = 47
    #### 47

Everything here is pure and seeded: the generator (with difficulty levels by number of
steps and digits), the prompt format, an exact grader and a *step verifier* that checks
every step of a candidate solution by parsing it -- model text is never evaluated.

The shipped tiny models (:mod:`langchain_latts.models`) are trained on this task, with a
deliberate per-step *slip rate* in the training solutions (a step's result is off by a
small carry/borrow error and the chain continues from the wrong value). That makes the
models' sampled solutions carry independent slips, the regime where voting over several
branches and step verification pay off, as they do for real reasoning models.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "LEVELS",
    "Level",
    "Problem",
    "format_prompt",
    "generate_problem",
    "generate_problems",
    "grade",
    "parse_problem",
    "step_scores",
]

Op = Literal["+", "-"]

# A step line: "<a> <op> <b> = <c>". Only digits, one operator and '=' are accepted.
_STEP_RE = re.compile(r"^\s*(-?\d+)\s*([+-])\s*(\d+)\s*=\s*(-?\d+)\s*$")
_ANSWER_RE = re.compile(r"^\s*####\s*(-?\d+)\s*$")
_PROBLEM_RE = re.compile(r"Compute\s+(\d+(?:\s*[+-]\s*\d+)+)\s*\.?")
_TERM_RE = re.compile(r"([+-])\s*(\d+)")

# Slips a careless solver makes: off by one or two, or a lost/extra carry.
_SLIPS = (-10, -2, -1, 1, 2, 10)


@dataclass(frozen=True)
class Level:
    """A difficulty level: ``steps`` operations on operands of up to ``digits`` digits."""

    steps: int
    digits: int


#: Difficulty levels, 1 (easiest) to 5. Accuracy falls as the level rises.
LEVELS: dict[int, Level] = {
    1: Level(steps=2, digits=1),
    2: Level(steps=2, digits=2),
    3: Level(steps=3, digits=2),
    4: Level(steps=4, digits=2),
    5: Level(steps=5, digits=2),
}


@dataclass(frozen=True)
class Problem:
    """One arithmetic problem: the first operand, then ``(op, operand)`` per step."""

    first: int
    terms: tuple[tuple[Op, int], ...]
    level: int = 0

    @property
    def question(self) -> str:
        """The problem as a user would ask it: ``Compute 48 + 17 - 23.``."""
        body = " ".join(f"{op} {b}" for op, b in self.terms)
        return f"Compute {self.first} {body}."

    @property
    def answer(self) -> int:
        """The exact result."""
        value = self.first
        for op, b in self.terms:
            value = _apply(value, op, b)
        return value

    def solution(self, *, slip_rate: float = 0.0, rng: random.Random | None = None) -> str:
        """A step-by-step solution; with ``slip_rate`` > 0 some steps carry a slip.

        A slipped step writes a wrong result and later steps continue from it, so the
        solution stays internally consistent apart from that one step.
        """
        if slip_rate and rng is None:
            raise ValueError("solution(slip_rate > 0) needs an rng for reproducibility")
        lines = []
        value = self.first
        for op, b in self.terms:
            result = _apply(value, op, b)
            if slip_rate and rng is not None and rng.random() < slip_rate:
                result = _slip(result, rng)
            lines.append(f"{value} {op} {b} = {result}")
            value = result
        lines.append(f"#### {value}")
        return "\n".join(lines)


def _apply(a: int, op: Op, b: int) -> int:
    return a + b if op == "+" else a - b


def _slip(result: int, rng: random.Random) -> int:
    # Keep a non-negative result non-negative; after an earlier slip the chain may
    # already be below zero (later steps then continue from there).
    choices = [d for d in _SLIPS if result + d >= 0] or list(_SLIPS)
    return result + rng.choice(choices)


def generate_problem(rng: random.Random, level: int) -> Problem:
    """One problem of ``level`` (a key of :data:`LEVELS`); results never go negative."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {sorted(LEVELS)}, got {level!r}.")
    spec = LEVELS[level]
    high = 10**spec.digits - 1
    low = 1 if spec.digits == 1 else 10 ** (spec.digits - 1)
    first = rng.randint(low, high)
    value = first
    terms: list[tuple[Op, int]] = []
    for _ in range(spec.steps):
        b = rng.randint(low, high)
        op: Op = "-" if rng.random() < 0.5 and value - b >= 0 else "+"
        terms.append((op, b))
        value = _apply(value, op, b)
    return Problem(first=first, terms=tuple(terms), level=level)


def generate_problems(
    n: int,
    *,
    seed: int,
    levels: Sequence[int] = tuple(LEVELS),
    exclude: frozenset[str] | set[str] = frozenset(),
) -> list[Problem]:
    """``n`` distinct problems, levels cycling evenly, seeded; skips questions in ``exclude``."""
    return list(_iter_problems(n, seed=seed, levels=levels, exclude=exclude))


def _iter_problems(
    n: int, *, seed: int, levels: Sequence[int], exclude: frozenset[str] | set[str]
) -> Iterator[Problem]:
    rng = random.Random(seed)
    seen: set[str] = set()
    made = 0
    while made < n:
        problem = generate_problem(rng, levels[made % len(levels)])
        if problem.question in exclude or problem.question in seen:
            continue
        seen.add(problem.question)
        made += 1
        yield problem


def format_prompt(problem: Problem) -> list[dict[str, str]]:
    """The chat messages that ask ``problem`` (the format the shipped models learnt)."""
    return [{"role": "user", "content": problem.question}]


def parse_problem(text: str) -> Problem:
    """Read a problem back from its question text (``Compute 48 + 17 - 23.``)."""
    match = _PROBLEM_RE.search(text)
    if match is None:
        raise ValueError(
            f"text does not hold an arithmetic problem of the form "
            f"'Compute 48 + 17 - 23.', got {text[:80]!r}."
        )
    expr = match.group(1)
    first = int(re.match(r"\d+", expr).group(0))  # type: ignore[union-attr]
    terms = tuple((op, int(b)) for op, b in _TERM_RE.findall(expr[len(str(first)) :]))
    return Problem(first=first, terms=terms)  # type: ignore[arg-type]


def final_answer(candidate: str) -> int | None:
    """The integer after the last ``####`` line of ``candidate``, or None."""
    for line in reversed(candidate.strip().splitlines()):
        match = _ANSWER_RE.match(line)
        if match:
            return int(match.group(1))
    return None


def grade(problem: Problem, candidate: str) -> bool:
    """Exact grading: the candidate's ``#### x`` answer equals the true result."""
    return final_answer(candidate) == problem.answer


def step_scores(problem: Problem, candidate: str) -> list[float]:
    """Per-step scores of a candidate solution, one per expected step, plus the answer.

    Step ``k`` scores 1.0 when its line parses as ``a op b = c``, ``a`` is the previous
    step's result (the first operand for step 1), ``op b`` is the problem's k-th term
    and ``c`` is ``a op b``; otherwise 0.0. Lines that do not parse, missing steps and
    extra steps score 0.0. The last entry scores the ``#### x`` line: 1.0 when it
    repeats the last step's result. The list has ``len(problem.terms) + 1`` entries
    (more when the candidate has extra step lines). Nothing is ``eval``-ed.
    """
    lines = [line for line in candidate.strip().splitlines() if line.strip()]
    answer_line = lines.pop() if lines and _ANSWER_RE.match(lines[-1]) else None
    scores: list[float] = []
    previous = problem.first
    for k, line in enumerate(lines):
        match = _STEP_RE.match(line)
        if match is None:
            scores.append(0.0)
            continue
        a, op, b, c = int(match.group(1)), match.group(2), int(match.group(3)), int(match.group(4))
        expected_term = problem.terms[k] if k < len(problem.terms) else None
        ok = a == previous and (op, b) == expected_term and _apply(a, op, b) == c  # type: ignore[arg-type]
        scores.append(1.0 if ok else 0.0)
        previous = c
    scores.extend([0.0] * (len(problem.terms) - len(scores)))
    answer_ok = answer_line is not None and final_answer(answer_line) == previous and bool(lines)
    scores.append(1.0 if answer_ok else 0.0)
    return scores
