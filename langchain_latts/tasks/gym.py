"""reasoning-gym tasks for ``latts bench tts --dataset rg:NAME``: questions and their own scorers.

`reasoning-gym <https://github.com/open-thought/reasoning-gym>`_ (PyPI ``reasoning-gym``)
generates procedural reasoning tasks offline, each from a seed and options (e.g.
``chain_sum`` with ``min_terms``/``max_terms``/``min_digits``/``max_digits``), and scores an
answer string with the task's own scorer. The question goes to the model exactly as
reasoning-gym writes it; the voted answer (what the model's answer extractor read) is
graded by the task's scorer: correct when it scores 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langchain_latts.errors import LattsValueError

__all__ = ["CALIBRATION_SEED", "GymItem", "load_gym", "parse_dataset"]

#: Calibration prompts (``latts bench prompts``) come from this seed; the benchmarks use others.
CALIBRATION_SEED = 20261130

#: Prefix of a reasoning-gym dataset name on the command line.
PREFIX = "rg:"


@dataclass(frozen=True)
class GymItem:
    """One reasoning-gym question and how to grade an answer to it."""

    question: str
    answer: str
    grade: Callable[[str | None], bool]


def parse_dataset(dataset: str) -> str | None:
    """The reasoning-gym task of ``"rg:NAME"`` (None for another dataset)."""
    if not dataset.startswith(PREFIX):
        return None
    name = dataset[len(PREFIX):]
    if not name:
        raise LattsValueError.bad("dataset", dataset, "must name a reasoning-gym task after 'rg:'", "e.g. rg:chain_sum")
    return name


def load_gym(name: str, n: int, *, seed: int, options: dict[str, Any] | None = None) -> list[GymItem]:
    """``n`` questions of reasoning-gym's task ``name`` from ``seed`` with generator ``options``."""
    try:
        import reasoning_gym
    except ImportError as e:
        raise LattsValueError.bad("dataset", f"rg:{name}", "needs the reasoning-gym package",
                                  "pip install 'langchain-latts[bench]' (or pip install reasoning-gym)") from e
    try:
        data = reasoning_gym.create_dataset(name, size=n, seed=seed, **(options or {}))
    except (ValueError, KeyError, TypeError, AssertionError) as e:
        known = ", ".join(sorted(getattr(reasoning_gym, "DATASETS", {}) or []))[:600]
        raise LattsValueError.bad("dataset", f"rg:{name} {options or {}}",
                                  f"is not a reasoning-gym task with valid options ({type(e).__name__}: {e})",
                                  f"Check the name and the generator's options; tasks include: {known}") from e
    items = []
    for entry in data:
        def grade(answer: str | None, entry: dict[str, Any] = entry) -> bool:
            return answer is not None and float(data.score_answer(answer, entry)) >= 1.0

        items.append(GymItem(question=str(entry["question"]), answer=str(entry["answer"]), grade=grade))
    return items
