"""When to stop spending: early-stop rules over the votes counted so far (pure).

``exact``
    Stop when the leader can no longer be overtaken, even if every branch still running
    voted for the runner-up (:func:`~langchain_latts.tts.voting.vote_is_decided`). The
    answer is then the one the full vote would give.
``adaptive``
    Also stop when the votes make it probable enough that the leader is the more likely
    answer of the two front-runners -- Adaptive-Consistency's Beta criterion (Aggarwal et
    al., 2023): with ``v1`` votes for the leader and ``v2`` for the runner-up, and a
    uniform prior, the leader's share ``p`` among the two has posterior
    ``Beta(v1 + 1, v2 + 1)``; stop when ``P(p > 1/2) >= threshold``. For integer
    parameters ``P(p > 1/2) = P(Binomial(v1 + v2 + 1, 1/2) <= v1)``, computed exactly.
    With the default threshold 0.95 four unanimous votes stop a call (15/16 = 0.9375 after
    three is not enough: 31/32 = 0.969 after four), and six votes against one do.

Either rule only ever stops a call whose leader has at least one vote.
"""

from __future__ import annotations

from math import comb
from typing import Literal

from langchain_latts.tts.voting import front_runners, vote_is_decided

__all__ = ["EarlyStop", "leader_posterior", "should_stop"]

#: How a call stops early: ``"exact"`` (the vote cannot change), ``"adaptive"`` (it very
#: probably will not) or ``False`` (every branch runs to the end or to the deadline).
EarlyStop = Literal["exact", "adaptive"] | bool


def leader_posterior(leader_votes: int, runner_up_votes: int) -> float:
    """``P(p > 1/2)`` for ``p ~ Beta(leader_votes + 1, runner_up_votes + 1)`` (exact)."""
    n = leader_votes + runner_up_votes + 1
    return sum(comb(n, k) for k in range(leader_votes + 1)) / 2**n


def should_stop(counts: dict[str, int], remaining: int, rule: EarlyStop, *, threshold: float = 0.95) -> bool:
    """Whether a call with these vote ``counts`` and ``remaining`` running branches stops now."""
    if rule is False or not counts or remaining <= 0:
        return False
    if vote_is_decided(counts, remaining):
        return True
    if rule != "adaptive":
        return False
    return leader_posterior(*front_runners(counts)) >= threshold
