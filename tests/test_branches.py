"""The branch runner on a scripted engine: vote, early stop, deadline, errors, cancel."""

from __future__ import annotations

import asyncio
import time

import pytest

from langchain_latts.engines.base import BranchRequest
from langchain_latts.tts.answers import extract_hash
from langchain_latts.tts.branches import run_branches

from .fakes import ScriptedEngine


def _requests(n: int) -> list[BranchRequest]:
    return [BranchRequest(prompt_token_ids=(1,), max_tokens=8, seed=i) for i in range(n)]


async def _run(engine: ScriptedEngine, n: int, **kwargs):  # type: ignore[no-untyped-def]
    started = time.monotonic()
    return await run_branches(engine, _requests(n), call_id="c", extractor=extract_hash, started=started, **kwargs)


async def test_all_branches_vote() -> None:
    engine = ScriptedEngine([["#### ", "3"], ["#### ", "4"], ["#### ", "3"]])
    run = await _run(engine, 3, early_stop=False)
    assert run.vote.answer == "3" and run.vote.counts == {"3": 2, "4": 1}
    assert [b.text for b in run.branches] == ["#### 3", "#### 4", "#### 3"]
    assert run.num_output_tokens == 6 and not run.deadline_hit and not run.stopped_early
    assert engine.aborted == [] and engine.num_unfinished_requests() == 0


async def test_early_stop_aborts_branches_that_cannot_change_the_vote() -> None:
    # Branches 0-2 answer "3" quickly; 3 and 4 are slow (50 pieces). After three
    # votes for "3" with two branches left, "3" can no longer lose.
    fast = ["#### ", "3"]
    slow = ["x"] * 50 + ["#### 9"]
    engine = ScriptedEngine([fast, fast, fast, slow, slow])
    run = await _run(engine, 5, early_stop=True)
    assert run.stopped_early and run.vote.answer == "3"
    assert sorted(engine.aborted) == ["c-3", "c-4"]
    assert [b.finished for b in run.branches] == [True, True, True, False, False]
    assert engine.num_unfinished_requests() == 0
    # What the stop saved: each slow branch, at n tokens, would have run to the mean of the
    # typical lengths above n (here 51, the slow script's length) ...
    (n3, n4) = (run.branches[3].num_tokens, run.branches[4].num_tokens)
    tokens, seconds = run.early_stop_savings([2, 51])
    assert tokens == (51 - n3) + (51 - n4) and seconds > 0
    # ... and without typical lengths, at least to the finished branches' mean length (2).
    assert run.early_stop_savings()[0] == max(0, 2 - n3) + max(0, 2 - n4)


async def test_deadline_votes_over_finished_and_aborts_the_rest() -> None:
    fast = ["#### ", "5"]
    slow = ["x"] * 200
    engine = ScriptedEngine([slow, fast, slow], step_s=0.01)
    started = time.monotonic()
    run = await _run(engine, 3, deadline=started + 0.3)
    elapsed = time.monotonic() - started
    assert run.deadline_hit and run.vote.answer == "5"
    assert sorted(engine.aborted) == ["c-0", "c-2"]
    assert elapsed < (0.3 + 2.0) / 2  # at the deadline, not after the 2 s slow branches (halfway: no timing slack)
    assert run.branches[0].num_tokens > 0 and run.branches[0].text.startswith("x")  # partial kept


async def test_engine_error_in_one_branch_aborts_the_others_and_raises() -> None:
    engine = ScriptedEngine([["x"] * 100, ["x"] * 100], fail_branch=1)
    with pytest.raises(RuntimeError, match="engine exploded"):
        await _run(engine, 2)
    assert engine.aborted == ["c-0"] and engine.num_unfinished_requests() == 0


async def test_cancelling_the_call_aborts_every_branch() -> None:
    engine = ScriptedEngine([["x"] * 1000] * 4)
    task = asyncio.create_task(_run(engine, 4))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(engine.aborted) == ["c-0", "c-1", "c-2", "c-3"]
    assert engine.num_unfinished_requests() == 0


def test_branch_seeds_are_reproducible_and_never_shared_across_prompts() -> None:
    from langchain_latts.tts.branches import branch_seeds

    a = branch_seeds(0, [1, 2, 3], 8)
    assert a == branch_seeds(0, [1, 2, 3], 8)  # same call, same seeds
    assert len(set(a)) == 8  # distinct branches
    b = branch_seeds(0, [1, 2, 4], 8)  # another question, same user seed
    assert not set(a) & set(b)
    assert branch_seeds(1, [1, 2, 3], 8) != a
    assert branch_seeds(None, [1, 2, 3], 3) == [None, None, None]
    assert all(0 <= s < 2**62 for s in a)


async def test_adaptive_stop_aborts_earlier_than_the_exact_rule() -> None:
    # Four fast branches agree on "3"; four slow ones are still running. The exact rule
    # must wait (4 slow votes could tie), the adaptive rule stops (P = 31/32 >= 0.95).
    fast = ["#### ", "3"]
    slow = ["x"] * 50 + ["#### 9"]
    exact = await _run(ScriptedEngine([fast] * 4 + [slow] * 4), 8, early_stop="exact")
    assert not exact.stopped_early and len(exact.finished) == 8
    engine = ScriptedEngine([fast] * 4 + [slow] * 4)
    adaptive = await _run(engine, 8, early_stop="adaptive")
    assert adaptive.stopped_early and adaptive.vote.answer == "3" and len(adaptive.finished) == 4
    assert sorted(engine.aborted) == ["c-4", "c-5", "c-6", "c-7"]


async def test_a_quorum_decides_on_the_first_branches_to_answer_and_aborts_the_stragglers() -> None:
    # Three branches answer quickly (two "3", one "4"); two ramble. A quorum of 3 votes over
    # the three answers, although the exact early-stop rule (off here) could not decide yet.
    fast3, fast4, slow = ["#### ", "3"], ["x", "#### ", "4"], ["x"] * 50 + ["#### 4"]
    engine = ScriptedEngine([fast3, slow, fast4, slow, fast3])
    run = await _run(engine, 5, early_stop=False, quorum=3)
    assert run.quorum == 3 and run.quorum_reached and run.stopped_early
    assert run.vote.counts == {"3": 2, "4": 1} and run.answer == "3"
    assert sorted(engine.aborted) == ["c-1", "c-3"] and engine.num_unfinished_requests() == 0


async def test_a_branch_without_an_answer_does_not_count_towards_the_quorum() -> None:
    engine = ScriptedEngine([["no answer"], ["x", "#### ", "7"], ["x", "x", "#### ", "7"]])
    run = await _run(engine, 3, early_stop=False, quorum=2)
    assert run.quorum_reached and [b.finished for b in run.branches] == [True, True, True]
    assert run.vote.counts == {"7": 2}
