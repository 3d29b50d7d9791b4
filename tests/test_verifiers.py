"""Verifiers (every accepted form), scoring failures, and scored selection, pruning and
respawning in the branch runner on a scripted engine."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from langchain_core.runnables import RunnableLambda

from langchain_latts import LattsValueError
from langchain_latts.engines.base import BranchRequest
from langchain_latts.tts.answers import extract_hash
from langchain_latts.tts.branches import BranchPolicy, run_branches
from langchain_latts.tts.verifiers import completed_steps, resolve_verifier, score_candidate, verifier_name

from .fakes import ScriptedEngine

QUESTION = "Compute 48 + 17 - 23."
RIGHT = ["48 + 17 = 65\n", "65 - 23 = 42\n", "#### 42"]
SLIPPED = ["48 + 17 = 66\n", "66 - 23 = 43\n", "#### 43"]  # a slip in step 1, consistent after


async def _score(spec: object, candidate: str = "".join(RIGHT), **kwargs):  # type: ignore[no-untyped-def]
    verifier = resolve_verifier(spec)
    assert verifier is not None
    return await score_candidate(verifier, QUESTION, candidate, **kwargs)


async def test_every_form_of_verifier_is_called_with_question_and_candidate() -> None:
    seen: list[tuple[str, str]] = []

    def sync(question: str, candidate: str) -> float:
        seen.append((question, candidate))
        return 0.25

    async def coro(question: str, candidate: str) -> list[float]:
        return [1.0, 0.5]

    runnable = RunnableLambda(lambda d: 0.75 if d["question"] == QUESTION and d["candidate"] else 0.0)
    assert await _score(sync, "c") == (0.25, None) and seen == [(QUESTION, "c")]
    assert await _score(coro) == (0.5, None)  # min of the step scores
    assert await _score(coro, aggregation="mean") == (0.75, None)
    assert await _score(runnable) == (0.75, None)
    assert await _score("arithmetic_steps") == (1.0, None)
    assert await _score("arithmetic_steps", "".join(SLIPPED)) == (0.0, None)
    assert verifier_name(runnable).startswith("runnable:") and verifier_name("arithmetic_steps") == "arithmetic_steps"


@pytest.mark.parametrize("result", [1.5, -0.1, float("nan"), "high", [0.5, "x"], None])
async def test_a_score_outside_0_1_or_not_a_number_is_a_failure_not_an_error(result: object) -> None:
    score, why = await _score(lambda q, c: result)
    assert score is None and why is not None and ("score" in why)


async def test_a_raising_verifier_is_a_failure_not_an_error() -> None:
    def boom(question: str, candidate: str) -> float:
        raise KeyError("no reward model")

    assert await _score(boom) == (None, "KeyError: 'no reward model'")
    verifier = resolve_verifier("arithmetic_steps")
    assert verifier is not None
    score, why = await score_candidate(verifier, "tell me a joke", "#### 3")  # not an arithmetic question
    assert score is None and why is not None and why.startswith("ValueError")


def test_bad_verifiers_are_named() -> None:
    with pytest.raises(LattsValueError, match=r"^verifier is not a shipped verifier .*got 'oracle'\. Pass"):
        resolve_verifier("oracle")
    with pytest.raises(LattsValueError, match=r"^verifier must be .*got 3\."):
        resolve_verifier(3)


def test_completed_steps_counts_only_finished_lines() -> None:
    assert completed_steps("48 + 17 = 65\n65 - 2") == ("48 + 17 = 65", 1)
    assert completed_steps("48 + 17 = 65\n\n65 - 23 = 42\n") == ("48 + 17 = 65\n\n65 - 23 = 42", 2)
    assert completed_steps("48 + 1") == ("", 0)


async def test_partial_scores_judge_only_the_completed_steps() -> None:
    # The step verifier pads missing steps with 0: a running branch is judged on its
    # completed steps only.
    assert await _score("arithmetic_steps", "48 + 17 = 65", steps=1) == (1.0, None)
    assert await _score("arithmetic_steps", "48 + 17 = 66", steps=1) == (0.0, None)


def _requests(n: int) -> list[BranchRequest]:
    return [BranchRequest(prompt_token_ids=(1,), max_tokens=64, seed=i) for i in range(n)]


async def _run(engine: ScriptedEngine, n: int, policy: BranchPolicy, **kwargs):  # type: ignore[no-untyped-def]
    return await run_branches(engine, _requests(n), call_id="c", extractor=extract_hash,
                              started=time.monotonic(), policy=policy, **kwargs)


def _check(strategy: str = "best_of_n", **kwargs: object) -> BranchPolicy:
    return BranchPolicy(verifier=resolve_verifier("arithmetic_steps"), question=QUESTION,
                        strategy=strategy, **kwargs)  # type: ignore[arg-type]


async def test_best_of_n_picks_the_verified_answer_the_majority_voted_down() -> None:
    engine = ScriptedEngine([SLIPPED, SLIPPED, RIGHT])
    run = await _run(engine, 3, _check("best_of_n"), early_stop=False)
    assert run.vote.answer == "43" and run.answer == "42" and run.winner_index == 2
    assert [b.score for b in run.branches] == [0.0, 0.0, 1.0]
    weighted = await _run(ScriptedEngine([SLIPPED, SLIPPED, RIGHT]), 3, _check("weighted_majority"), early_stop=False)
    assert weighted.answer == "42" and weighted.selection is not None
    assert weighted.selection.weights == {"42": 1.0, "43": 0.0}


async def test_branches_are_scored_while_others_still_run() -> None:
    scored_at: list[float] = []
    started = time.monotonic()

    async def verifier(question: str, candidate: str) -> float:
        scored_at.append(time.monotonic() - started)
        return 1.0

    slow = ["x"] * 30 + ["#### 5"]
    engine = ScriptedEngine([["#### ", "5"], slow], step_s=0.01)
    run = await _run(engine, 2, BranchPolicy(verifier=resolve_verifier(verifier), strategy="best_of_n"),
                     early_stop=False)
    assert len(scored_at) == 2 and scored_at[0] < 0.15 < run.branches[1].ended_at_s  # type: ignore[operator]


async def test_a_verifier_past_the_deadline_scores_lowest_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    async def slow(question: str, candidate: str) -> float:
        await asyncio.sleep(5)
        return 1.0

    engine = ScriptedEngine([["#### ", "5"], ["#### ", "6"]])
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="langchain_latts.tts.branches"):
        run = await run_branches(engine, _requests(2), call_id="c", extractor=extract_hash, started=started,
                                 deadline=started + 0.2, early_stop=False,
                                 policy=BranchPolicy(verifier=resolve_verifier(slow), strategy="best_of_n"))
    assert time.monotonic() - started < (0.2 + 5) / 2 and run.deadline_hit  # not waiting for the 5 s verifier
    assert [b.score for b in run.branches] == [None, None] and run.answer == "5"  # tie -> lowest branch
    assert all("deadline" in (b.score_error or "") for b in run.branches)
    assert "failed on 2 of 2 branches" in caplog.text


async def test_a_raising_verifier_never_fails_the_call(caplog: pytest.LogCaptureFixture) -> None:
    def boom(question: str, candidate: str) -> float:
        raise RuntimeError("reward model offline")

    with caplog.at_level(logging.WARNING, logger="langchain_latts.tts.branches"):
        run = await _run(ScriptedEngine([["#### ", "5"]] * 2), 2,
                         BranchPolicy(verifier=resolve_verifier(boom), strategy="weighted_majority"),
                         early_stop=False)
    assert run.answer == "5" and "reward model offline" in caplog.text


async def test_weighted_early_stop_waits_for_scores_and_stops_when_decided() -> None:
    # Three verified "42"s (weight 3) against at most one more branch: decided.
    slow = ["x"] * 100 + ["#### 9"]
    engine = ScriptedEngine([RIGHT, RIGHT, RIGHT, slow])
    run = await _run(engine, 4, _check("weighted_majority"), early_stop=True)
    assert run.stopped_early and run.answer == "42" and engine.aborted == ["c-3"]
    # Two "43"s scoring 0 do not outweigh one verified "42" with a branch left: no stop on them.
    engine = ScriptedEngine([SLIPPED, SLIPPED, RIGHT, RIGHT, ["x"] * 60 + ["#### 43"]])
    run = await _run(engine, 5, _check("weighted_majority"), early_stop=True)
    assert run.answer == "42"


async def test_prune_aborts_a_branch_at_its_first_wrong_step_and_respawns() -> None:
    long_wrong = ["48 + 17 = 66\n"] + ["x"] * 100  # wrong first step, then a long tail
    engine = ScriptedEngine([long_wrong, RIGHT, RIGHT], step_s=0.01)
    run = await _run(engine, 2, _check("best_of_n", prune="verifier", max_respawns=1), early_stop=False,
                     respawn=lambda i, prefix: _requests(i + 1)[i])
    first = run.branches[0]
    assert first.pruned and first.finish_reason == "pruned" and first.num_tokens == 1
    assert "c-0" in engine.aborted
    assert [b.respawned for b in run.branches] == [False, False, True] and run.branches[2].finished
    assert run.answer == "42" and engine.num_unfinished_requests() == 0


async def test_a_replacement_continues_the_pruned_branch_from_its_last_verified_step() -> None:
    slip_at_step_2 = ["48 + 17 = 65\n", "65 - 23 = 41\n"] + ["x"] * 100
    continuation = ["65 - 23 = 42\n", "#### 42"]
    engine = ScriptedEngine([slip_at_step_2, continuation], step_s=0.01)
    prefixes: list[str] = []

    def respawn(index: int, prefix: str) -> BranchRequest:
        prefixes.append(prefix)
        return BranchRequest(prompt_token_ids=(1, *engine.tokenize(prefix)), max_tokens=64, seed=index)

    run = await _run(engine, 1, _check("best_of_n", prune="verifier", max_respawns=1), early_stop=False, respawn=respawn)
    assert prefixes == ["48 + 17 = 65\n"] and run.branches[0].pruned
    replacement = run.branches[1]
    assert replacement.respawned and replacement.text == "48 + 17 = 65\n65 - 23 = 42\n#### 42"
    assert replacement.num_tokens == 2 and replacement.score == 1.0 and run.answer == "42"


async def test_prune_respawns_at_most_max_respawns_and_not_past_the_deadline() -> None:
    wrong = ["48 + 17 = 66\n"] + ["x"] * 50
    engine = ScriptedEngine([wrong] * 6, step_s=0.01)
    run = await _run(engine, 2, _check("best_of_n", prune="verifier", max_respawns=2), early_stop=False,
                     respawn=lambda i, prefix: _requests(i + 1)[i])
    assert len(run.branches) == 4 and all(b.pruned for b in run.branches) and run.answer is None
    # Pruned at 0.21 s after one slow step, with 0.09 s left: less than a step, no respawn.
    slow_wrong = ["x"] * 20 + ["48 + 17 = 66\n"] + ["x"] * 50
    engine = ScriptedEngine([slow_wrong] * 4, step_s=0.01)
    started = time.monotonic()
    run = await run_branches(engine, _requests(1), call_id="c", extractor=extract_hash, started=started,
                             deadline=started + 0.3, policy=_check("best_of_n", prune="verifier", max_respawns=2),
                             respawn=lambda i, prefix: _requests(i + 1)[i])
    assert len(run.branches) == 1 and run.branches[0].pruned


async def test_a_spent_token_budget_stops_every_branch_and_selects_over_the_finished() -> None:
    charged: list[int] = []

    def spend(tokens: int) -> bool:
        charged.append(tokens)
        return sum(charged) < 10

    engine = ScriptedEngine([["#### ", "5"], ["x"] * 100, ["x"] * 100], step_s=0.01)
    run = await _run(engine, 3, BranchPolicy(), early_stop=False, spend=spend)
    assert run.budget_hit and run.answer == "5"
    assert [b.finish_reason for b in run.branches] == ["stop", "budget", "budget"]
    assert run.num_output_tokens == sum(charged) and 10 <= sum(charged) <= 12  # one step per branch over
    assert sorted(engine.aborted) == ["c-1", "c-2"] and engine.num_unfinished_requests() == 0


def test_the_bench_reads_strategies_from_the_shared_literal() -> None:
    from langchain_latts.bench.stats import wilson_interval
    from langchain_latts.bench.verifier import parse_strategies

    assert parse_strategies("majority, best_of_n") == ["majority", "best_of_n"]
    with pytest.raises(LattsValueError, match=r"^strategies must name strategies among majority, "
                                              r"weighted_majority, best_of_n, confidence_weighted, confidence_filtered, got 'vote'"):
        parse_strategies("vote")
    low, high = wilson_interval(182, 200)
    assert round(low, 3) == 0.862 and round(high, 3) == 0.942
