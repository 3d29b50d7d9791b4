"""The lifeline: a call that risks finishing no branch keeps one that will (pure).

The planner prices the risk of a vote that is not complete by the deadline, but a
prediction can still be wrong -- a question longer than its length model says, a machine
slower than its profile, other callers arriving after the plan. When the call has no
finished branch yet and its most advanced branch (the *leader*) will not finish in time
at the pace it runs, but would alone -- every other branch aborted, the batch smaller,
each step faster -- the others are aborted and the leader carries on. One answer on time
beats a vote that never comes.

At time ``t`` (seconds since the call started), with ``D`` the deadline::

    pace       = (t - leader's first token) / (leader's tokens - 1)     seconds per token since
    remaining  = max(1, expected_tokens - leader's tokens)   tokens still to write
    keep the leader alone  iff   remaining * pace > D - t                (it would miss)
                           and   remaining * pace / solo_speedup <= D - t   (alone it makes it)

``expected_tokens`` is the question's predicted length at its 75th percentile and
``solo_speedup`` the profiled ratio of a token's time with the call's branches running to
its time with one (both from the planner). Nothing is done while a branch has finished, while
fewer than two run, or before the leader has written :data:`MIN_TOKENS` tokens (its pace is
not known yet: with speculative decoding tokens arrive in bursts of several). The pace is
measured from the leader's first token, since the wait for it -- every branch's set-up and
the prompt's prefill -- is behind the call already.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["MIN_TOKENS", "Lifeline", "keep_alone"]

#: Tokens the leader must have written before its pace is trusted.
MIN_TOKENS = 8


class _Running(Protocol):
    index: int
    num_tokens: int
    first_token_at_s: float | None
    finished: bool
    ended_at_s: float | None


@dataclass(frozen=True)
class Lifeline:
    """What the lifeline needs from the planner (module docstring)."""

    #: The question's predicted output length at its 75th percentile, in tokens.
    expected_tokens: float
    #: A token's time with the call's branches running over its time with one running (>= 1).
    solo_speedup: float
    #: How often the call checks, in seconds.
    tick_s: float = 0.01


def keep_alone(branches: Sequence[_Running], now_s: float, deadline_s: float, lifeline: Lifeline) -> int | None:
    """The index of the branch to keep alone (the others to be aborted), or None."""
    if any(b.finished for b in branches):
        return None
    running = [b for b in branches if b.ended_at_s is None]
    if len(running) < 2:
        return None
    leader = max(running, key=lambda b: (b.num_tokens, -b.index))
    if leader.num_tokens < MIN_TOKENS or leader.first_token_at_s is None:
        return None
    pace = (now_s - leader.first_token_at_s) / (leader.num_tokens - 1)
    needed = max(1.0, lifeline.expected_tokens - leader.num_tokens) * pace
    left = deadline_s - now_s
    if needed <= left or needed / max(1.0, lifeline.solo_speedup) > left:
        return None
    return leader.index
