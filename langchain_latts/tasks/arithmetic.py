"""The built-in task: chains of integer additions and subtractions, solved step by step.

A problem is a chain of 2 to 6 non-negative integers below 1000 joined by ``+`` and ``-``,
asked the way people type it -- ``Compute 12 + 35 - 7.``, ``What is 512+37-908?``,
``48+17-23=`` or a bare ``12 + 35 - 7`` -- and its solution writes one step per line,
then the answer::

    12 + 35 = 47
    47 - 7 = 40
    #### 40

Everything here is pure and seeded: the generator (difficulty level = number of
operations, 1 to 5; operands of any digit mix), the question phrasings, an exact grader,
a *step verifier* that checks every step of a candidate solution by parsing it, and a
calculator that evaluates an expression by parsing it -- model text is never evaluated
as code.

The shipped tiny models (:mod:`langchain_latts.models`) are trained on this task, with a
deliberate per-step *slip rate* in the training solutions (a step's result is off by a
small carry/borrow error and the chain continues from the wrong value). That makes the
models' sampled solutions carry independent slips, the regime where voting over several
branches and step verification pay off, as they do for real reasoning models.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "LEVELS",
    "ORIGINAL_LEVELS",
    "PHRASINGS",
    "Problem",
    "calculator",
    "final_answer",
    "generate_original_problems",
    "generate_problem",
    "generate_problems",
    "grade",
    "parse_problem",
    "step_scores",
]

Op = Literal["+", "-"]

# A step line: "<a> <op> <b> = <c>". Only digits, one operator and '=' are accepted.
_STEP_RE = re.compile(r"^\s*(-?\d+)\s*([+-])\s*(\d+)\s*=\s*(-?\d+)\s*$")
# The answer line: "#### x", or a one-key JSON object '{"answer": x}' (the JSON format).
_ANSWER_RE = re.compile(r'^\s*(?:####\s*(-?\d+)|\{\s*"[A-Za-z_][A-Za-z0-9_]*"\s*:\s*(-?\d+)\s*\})\s*$')
# An expression as typed: non-negative integers joined by + and -, any spacing.
_EXPRESSION_RE = re.compile(r"\d+(?:\s*[+-]\s*\d+)+")
_TERM_RE = re.compile(r"([+-])\s*(\d+)")

#: Difficulty levels: level ``k`` has ``k`` operations (``k + 1`` numbers). Accuracy
#: falls as the level rises.
LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)
#: Operands are non-negative integers below this.
MAX_OPERAND = 1000
#: Seed and size of the held-out split (the model card's numbers, the profiler's calibration
#: questions); training never sees it.
HELD_OUT_SEED = 20251
HELD_OUT_SIZE = 1000

#: How questions are asked (``{e}`` is the expression as typed). The first is canonical.
PHRASINGS: tuple[str, ...] = (
    "Compute {e}.",
    "What is {e}?",
    "{e}=",
    "{e}",
    "Compute {e}",
    "compute {e}.",
    "What is {e}",
    "what is {e}?",
    "{e} =",
    "{e} = ?",
    "Calculate {e}.",
    "Evaluate {e}.",
)
# Spacings around an operator as people type them (the first is canonical).
_SPACINGS = (" {op} ", "{op}", " {op}", "{op} ")

# Slips a careless solver makes: off by one or two, or a lost/extra carry.
_SLIPS = (-100, -10, -2, -1, 1, 2, 10, 100)


@dataclass(frozen=True)
class Problem:
    """One arithmetic problem: the first operand, then ``(op, operand)`` per step.

    ``text`` is the question as asked (``""``: the canonical ``Compute a + b - c.``).
    """

    first: int
    terms: tuple[tuple[Op, int], ...]
    level: int = 0
    text: str = ""

    @property
    def expression(self) -> str:
        """The canonical expression: ``48 + 17 - 23``."""
        return " ".join([str(self.first), *(f"{op} {b}" for op, b in self.terms)])

    @property
    def question(self) -> str:
        """The question as asked (``Compute 48 + 17 - 23.`` when no phrasing was drawn)."""
        return self.text or f"Compute {self.expression}."

    @property
    def answer(self) -> int:
        """The exact result."""
        value = self.first
        for op, b in self.terms:
            value = _apply(value, op, b)
        return value

    def steps(self, *, slip_rate: float = 0.0, rng: random.Random | None = None) -> list[str]:
        """The step lines of a solution and, last, the (possibly slipped) final value.

        A slipped step writes a wrong result and later steps continue from it, so the
        solution stays internally consistent apart from that one step.
        """
        if slip_rate and rng is None:
            raise ValueError("steps(slip_rate > 0) needs an rng for reproducibility")
        lines = []
        value = self.first
        for op, b in self.terms:
            result = _apply(value, op, b)
            if slip_rate and rng is not None and rng.random() < slip_rate:
                result = _slip(result, rng)
            lines.append(f"{value} {op} {b} = {result}")
            value = result
        return [*lines, str(value)]

    def solution(self, *, slip_rate: float = 0.0, rng: random.Random | None = None, json_key: str | None = None) -> str:
        """A step-by-step solution ending in ``#### x`` (or ``{"<json_key>": x}``)."""
        *lines, value = self.steps(slip_rate=slip_rate, rng=rng)
        lines.append(f"#### {value}" if json_key is None else f'{{"{json_key}": {value}}}')
        return "\n".join(lines)


def _apply(a: int, op: Op, b: int) -> int:
    return a + b if op == "+" else a - b


def _slip(result: int, rng: random.Random) -> int:
    # Keep a non-negative result non-negative where a slip allows it.
    choices = [d for d in _SLIPS if result + d >= 0] or list(_SLIPS)
    return result + rng.choice(choices)


def _operand(rng: random.Random) -> int:
    digits = rng.randint(1, 3)  # any digit mix: 1, 2 or 3 digits, equally often
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def two_digit_operand(rng: random.Random) -> int:
    """An operand of the task's original form: 10 to 99."""
    return rng.randint(10, 99)


#: Levels of the task's original form (:func:`generate_original_problems`).
ORIGINAL_LEVELS: tuple[int, ...] = (2, 3, 4, 5)


def phrase(first: int, terms: Sequence[tuple[Op, int]], rng: random.Random) -> str:
    """The question as a person might type it: a random phrasing and random spacing."""
    spacing = rng.choice(_SPACINGS) if rng.random() < 0.5 else _SPACINGS[0]
    expression = str(first) + "".join(
        (spacing if rng.random() < 0.8 else rng.choice(_SPACINGS)).format(op=op) + str(b) for op, b in terms
    )
    template = PHRASINGS[0] if rng.random() < 0.3 else rng.choice(PHRASINGS)
    return template.format(e=expression)


def generate_problem(rng: random.Random, level: int, *, phrased: bool = True,
                     operand: Callable[[random.Random], int] = _operand) -> Problem:
    """One problem of ``level`` operations (a value of :data:`LEVELS`), seeded by ``rng``.

    Operands have 1, 2 or 3 digits (or what ``operand`` draws); subtraction below zero is
    allowed but rarer, so most chains stay non-negative. ``phrased=False`` keeps the
    canonical question.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {list(LEVELS)}, got {level!r}.")
    first = operand(rng)
    value = first
    terms: list[tuple[Op, int]] = []
    for _ in range(level):
        b = operand(rng)
        op: Op = "-" if rng.random() < 0.5 else "+"
        if op == "-" and value - b < 0 and rng.random() < 0.75:
            op = "+"
        terms.append((op, b))
        value = _apply(value, op, b)
    text = phrase(first, terms, rng) if phrased else ""
    return Problem(first=first, terms=tuple(terms), level=level, text=text)


def generate_problems(
    n: int,
    *,
    seed: int,
    levels: Sequence[int] = LEVELS,
    exclude: frozenset[str] | set[str] = frozenset(),
    phrased: bool = True,
    operand: Callable[[random.Random], int] = _operand,
) -> list[Problem]:
    """``n`` problems with distinct expressions, levels cycling evenly, seeded; skips
    expressions in ``exclude`` (canonical :attr:`Problem.expression` strings)."""
    return list(_iter_problems(n, seed=seed, levels=levels, exclude=exclude, phrased=phrased, operand=operand))


def generate_original_problems(n: int, *, seed: int) -> list[Problem]:
    """The task's original form: 2 to 5 operations on two-digit operands, asked the
    canonical way (``Compute 48 + 17 - 23.``), levels cycling evenly, seeded."""
    return generate_problems(n, seed=seed, levels=ORIGINAL_LEVELS, phrased=False, operand=two_digit_operand)


def _iter_problems(
    n: int, *, seed: int, levels: Sequence[int], exclude: frozenset[str] | set[str], phrased: bool,
    operand: Callable[[random.Random], int],
) -> Iterator[Problem]:
    rng = random.Random(seed)
    seen: set[str] = set()
    made = 0
    while made < n:
        problem = generate_problem(rng, levels[made % len(levels)], phrased=phrased, operand=operand)
        if problem.expression in exclude or problem.expression in seen:
            continue
        seen.add(problem.expression)
        made += 1
        yield problem


def parse_problem(text: str) -> Problem:
    """Read a problem back from a question in any of its phrasings (the first chain of
    integers joined by ``+``/``-`` in ``text``)."""
    match = _EXPRESSION_RE.search(text)
    if match is None:
        raise ValueError(
            f"text does not hold an arithmetic problem (integers joined by + and -, e.g. "
            f"'Compute 48 + 17 - 23.'), got {text[:80]!r}."
        )
    expr = match.group(0)
    first = int(re.match(r"\d+", expr).group(0))  # type: ignore[union-attr]
    terms = tuple((op, int(b)) for op, b in _TERM_RE.findall(expr[len(str(first)) :]))
    return Problem(first=first, terms=terms, level=len(terms), text=text)  # type: ignore[arg-type]


def calculator(expression: str) -> str:
    """The built-in calculator tool: the value of ``expression`` (integers joined by
    ``+``/``-``), by parsing -- never ``eval``. Raises ValueError for anything else."""
    stripped = expression.strip()
    if re.fullmatch(r"\d+", stripped):
        return str(int(stripped))
    if _EXPRESSION_RE.fullmatch(stripped) is None:
        raise ValueError(
            f"expression must be integers joined by + and - (e.g. '12 + 35 - 7'), got {expression[:80]!r}."
        )
    return str(parse_problem(stripped).answer)


def final_answer(candidate: str) -> int | None:
    """The integer of the last answer line of ``candidate`` (``#### x`` or ``{"key": x}``)."""
    for line in reversed(candidate.strip().splitlines()):
        match = _ANSWER_RE.match(line)
        if match:
            return int(match.group(1) or match.group(2))
    return None


def grade(problem: Problem, candidate: str) -> bool:
    """Exact grading: the candidate's answer line equals the true result."""
    return final_answer(candidate) == problem.answer


def step_scores(problem: Problem, candidate: str) -> list[float]:
    """Per-step scores of a candidate solution, one per expected step, plus the answer.

    Step ``k`` scores 1.0 when its line parses as ``a op b = c``, ``a`` is the previous
    step's result (the first operand for step 1), ``op b`` is the problem's k-th term
    and ``c`` is ``a op b``; otherwise 0.0. Lines that do not parse, missing steps and
    extra steps score 0.0. The last entry scores the answer line (``#### x`` or the JSON
    ``{"answer": x}``): 1.0 when it repeats the last step's result. The list has
    ``len(problem.terms) + 1`` entries (more when the candidate has extra step lines).
    Nothing is ``eval``-ed.
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
