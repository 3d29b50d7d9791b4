"""Majority vote over branch answers, with a deterministic tie-break and an early-stop rule.

Tie-break rule: among answers with the most votes, the one given by the branch with the
lowest index wins (branch ``i`` samples with a seed derived from ``(seed, prompt, i)``,
so the rule depends only on what the branches wrote, never on which finished first). Branches without an answer
(``None``) do not vote.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Vote", "front_runners", "majority_vote", "vote_is_decided"]


@dataclass(frozen=True)
class Vote:
    """The outcome of a vote."""

    #: The winning answer (None when no branch gave an answer).
    answer: str | None
    #: Votes per answer, most votes first (ties in tie-break order).
    counts: dict[str, int]
    #: Index (into the voted sequence) of the first branch that gave the winning answer.
    winner_index: int | None


def majority_vote(answers: Sequence[str | None]) -> Vote:
    """Count ``answers`` (one per branch, in branch order) and pick the winner."""
    counts: dict[str, int] = {}
    first_seen: dict[str, int] = {}
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        counts[answer] = counts.get(answer, 0) + 1
        first_seen.setdefault(answer, i)
    ranked = sorted(counts, key=lambda a: (-counts[a], first_seen[a]))
    if not ranked:
        return Vote(answer=None, counts={}, winner_index=None)
    winner = ranked[0]
    return Vote(answer=winner, counts={a: counts[a] for a in ranked}, winner_index=first_seen[winner])


def front_runners(counts: dict[str, int]) -> tuple[int, int]:
    """Votes of the leader and of the runner-up (0 when there is none)."""
    ordered = sorted(counts.values(), reverse=True)
    return (ordered[0] if ordered else 0), (ordered[1] if len(ordered) > 1 else 0)


def vote_is_decided(counts: dict[str, int], remaining: int) -> bool:
    """Whether ``remaining`` more votes can no longer change the winner.

    True when the leader has more votes than the runner-up could reach by taking every
    remaining vote (strictly more, so that no tie -- and no tie-break -- is possible).
    """
    if not counts:
        return False
    leader, runner_up = front_runners(counts)
    return leader > runner_up + remaining
