"""MATH-500 for ``latts bench tts --dataset math500``: loading and grading.

The 500 problems ship with the package (``tasks/data/math500.jsonl``, MIT, see its README);
a model's answer is the content of its last ``\\boxed{}`` and is graded against the
reference by `math-verify <https://github.com/huggingface/Math-Verify>`_ equivalence
(``1/2`` = ``\\frac{1}{2}`` = ``0.5``, intervals, sets, ...). Real models are needed to
score on it; the shipped tiny pair is not expected to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DATA", "MathProblem", "grade_answer", "load_math500"]

#: The vendored MATH-500 file.
DATA = Path(__file__).parent / "data" / "math500.jsonl"
#: What every MATH-500 question is asked with (the usual instruction for \boxed answers).
INSTRUCTION = "Solve the problem step by step. Put the final answer in \\boxed{}."


@dataclass(frozen=True)
class MathProblem:
    """One MATH-500 problem."""

    problem: str
    solution: str
    answer: str
    subject: str
    level: int

    @property
    def question(self) -> str:
        return f"{self.problem}\n\n{INSTRUCTION}"


def load_math500(path: Path | None = None) -> list[MathProblem]:
    """The problems of a MATH-500 JSON-lines file (default: the vendored copy)."""
    rows = [json.loads(line) for line in (path or DATA).read_text().splitlines() if line.strip()]
    return [MathProblem(r["problem"], r["solution"], r["answer"], r["subject"], int(r["level"])) for r in rows]


def grade_answer(answer: str | None, reference: str) -> bool:
    """Whether ``answer`` (a ``\\boxed{}`` content) is math-verify equivalent to ``reference``."""
    if answer is None:
        return False
    from math_verify import parse, verify

    gold = parse(f"${reference}$")
    return bool(verify(gold, parse(f"${answer}$")))
