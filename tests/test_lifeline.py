"""The lifeline: a call that would finish no branch keeps its leader alone (pure rule, then on a scripted engine)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from langchain_latts.engines.base import BranchRequest
from langchain_latts.tts.answers import resolve_extractor
from langchain_latts.tts.branches import BranchRun, run_branches
from langchain_latts.tts.lifeline import Lifeline, keep_alone

from .fakes import ScriptedEngine


@dataclass
class B:
    index: int
    num_tokens: int
    first_token_at_s: float | None = 0.0
    finished: bool = False
    ended_at_s: float | None = None


LIFELINE = Lifeline(expected_tokens=40, solo_speedup=2.0)


def test_the_leader_is_kept_alone_when_only_alone_it_makes_the_deadline() -> None:
    # The leader wrote 21 tokens, 20 of them in 0.2 s since its first (10 ms a token): 19 more take
    # 0.19 s with the others running, 0.095 s alone. With 0.15 s left only alone does it make it.
    branches = [B(0, 18), B(1, 21), B(2, 21), B(3, 5)]
    assert keep_alone(branches, now_s=0.2, deadline_s=0.35, lifeline=LIFELINE) == 1, "ties go to the lowest index"


@pytest.mark.parametrize(("now", "deadline", "why"), [
    (0.2, 0.45, "0.25 s left: it makes it as is"),
    (0.2, 0.29, "0.09 s left: not even alone (0.095 s)"),
])
def test_no_lifeline_when_it_is_not_needed_or_cannot_help(now: float, deadline: float, why: str) -> None:
    branches = [B(0, 21), B(1, 10)]
    assert keep_alone(branches, now_s=now, deadline_s=deadline, lifeline=LIFELINE) is None, why


def test_no_lifeline_once_a_branch_finished_or_while_one_runs_or_too_early() -> None:
    assert keep_alone([B(0, 20, finished=True, ended_at_s=0.1), B(1, 20)], 0.2, 0.35, LIFELINE) is None
    assert keep_alone([B(0, 20), B(1, 20, ended_at_s=0.1)], 0.2, 0.35, LIFELINE) is None, "one running"
    assert keep_alone([B(0, 7), B(1, 2)], 0.2, 0.35, LIFELINE) is None, "pace unknown below 8 tokens"
    assert keep_alone([B(0, 21, first_token_at_s=None), B(1, 2)], 0.2, 0.35, LIFELINE) is None


async def test_a_call_that_would_finish_nothing_finishes_its_leader() -> None:
    # 4 branches of 30 tokens; a token takes 4 ms alone and 2 ms more per other running branch:
    # together 10 ms (0.3 s a branch), alone 4 ms. The deadline, 0.2 s, lets no branch of four finish.
    def engine() -> ScriptedEngine:
        return ScriptedEngine([["1"] * 29 + ["#### 7"]] * 4, step_s=0.004, per_running_s=0.002)

    async def call(lifeline: Lifeline | None) -> tuple[ScriptedEngine, BranchRun]:
        e = engine()
        started = time.monotonic()
        request = BranchRequest(prompt_token_ids=(1, 2, 3), max_tokens=64)
        run = await run_branches(e, [request] * 4, call_id="c", extractor=resolve_extractor("auto"),
                                 started=started, deadline=started + 0.2, lifeline=lifeline)
        return e, run

    _, without = await call(None)
    assert without.finished == [] and without.deadline_hit
    e, run = await call(Lifeline(expected_tokens=30, solo_speedup=2.5, tick_s=0.01))
    assert run.kept_alone and [b.index for b in run.finished] == [0]
    assert run.answer == "7"
    assert [b.finish_reason for b in run.branches[1:]] == ["lifeline"] * 3
    assert sorted(e.aborted) >= ["c-1", "c-2", "c-3"]
