"""Log-probs from the real engine, with and without speculation, become token confidences."""

from __future__ import annotations

import pytest

from langchain_latts import LatencyOptimalTTSLLM
from langchain_latts.engines.base import BranchRequest, BranchUpdate
from langchain_latts.tts.answers import resolve_extractor
from langchain_latts.tts.branches import run_branches


@pytest.mark.parametrize("fixture", ["llm", "spec_llm"])
def test_the_engine_returns_each_tokens_top_log_probs(fixture: str, request: pytest.FixtureRequest) -> None:
    llm: LatencyOptimalTTSLLM = request.getfixturevalue(fixture)
    engine = llm.engine
    prompt = tuple(engine.render_prompt([{"role": "user", "content": "Compute 38 + 4 - 19."}]))

    async def one() -> list[BranchUpdate]:
        branch = BranchRequest(prompt_token_ids=prompt, max_tokens=60, temperature=0.8, seed=3, logprobs=5)
        return [u async for u in engine.branch(branch, f"latts-logprobs-{fixture}")]

    updates = engine.run_sync(one())
    per_token = [p for u in updates for p in (u.top_logprobs or [])]
    assert len(per_token) == sum(u.num_new_tokens for u in updates) > 5
    assert all(5 <= len(p) <= 6 and max(p) <= 0.0 for p in per_token), "top 5 (+ the sampled token when outside)"
    sampled = [lp for u in updates for lp in (u.token_logprobs or [])]
    assert sampled == [p[0] for p in per_token], "the sampled token's log-prob, first among its candidates"
    assert all(lp >= min(p) for lp, p in zip(sampled, per_token))


def test_logprobs_0_returns_only_the_sampled_tokens(llm: LatencyOptimalTTSLLM) -> None:
    engine = llm.engine
    prompt = tuple(engine.render_prompt([{"role": "user", "content": "Compute 38 + 4 - 19."}]))

    async def one() -> list[BranchUpdate]:
        branch = BranchRequest(prompt_token_ids=prompt, max_tokens=60, temperature=0.8, seed=3, logprobs=0)
        return [u async for u in engine.branch(branch, "latts-logprobs-0")]

    updates = engine.run_sync(one())
    sampled = [lp for u in updates for lp in (u.token_logprobs or [])]
    assert len(sampled) == sum(u.num_new_tokens for u in updates) > 5 and all(lp <= 0 for lp in sampled)
    assert all(len(p) == 1 for u in updates for p in (u.top_logprobs or [])), "no runners-up asked for"


def test_branches_carry_their_token_confidences(llm: LatencyOptimalTTSLLM) -> None:
    engine = llm.engine
    prompt = tuple(engine.render_prompt([{"role": "user", "content": "Compute 38 + 4 - 19."}]))
    requests = [BranchRequest(prompt_token_ids=prompt, max_tokens=60, temperature=0.8, seed=s, logprobs=5)
                for s in range(4)]

    async def run() -> list[tuple[int, list[float], list[float]]]:
        import time

        result = await run_branches(engine, requests, call_id="latts-conf", extractor=resolve_extractor("auto"),
                                    started=time.monotonic(), early_stop=False)
        return [(b.num_tokens, b.confidences, b.logprobs) for b in result.branches]

    for tokens, confidences, logprobs in engine.run_sync(run()):
        assert len(confidences) == len(logprobs) == tokens
        assert all(c > 0 for c in confidences) and all(lp <= 0 for lp in logprobs)


def test_a_confidence_weighted_call_on_the_real_engine(llm: LatencyOptimalTTSLLM) -> None:
    message = llm.invoke("Compute 3 + 4 - 2.", branches=4, strategy="confidence_weighted", prune="confidence")
    tts = message.response_metadata["tts"]
    assert tts["answer"] == "5" and tts["strategy"] == "confidence_weighted"
    assert len(tts["branch_confidences"]) == tts["branches_launched"]
    assert all(c is None or c <= 0 for c in tts["branch_confidences"]), "lowest sampled log-probs"
    assert sum(tts["weights"].values()) > 0


def test_the_confidence_cut_off_cuts_branches_below_its_threshold(llm: LatencyOptimalTTSLLM) -> None:
    from langchain_latts.tts.pruning import MIN_UNCUT

    # A threshold almost every sampled token falls below: branches are cut, but
    # never so many that fewer than MIN_UNCUT are left.
    message = llm.invoke("Compute 48 + 17 - 23 + 15 - 30 + 12.", branches=8, prune="confidence",
                         confidence_threshold=-1e-4, max_respawns=0, early_stop=False)
    tts = message.response_metadata["tts"]
    cut = [r for r in tts["branch_finish_reasons"] if r not in ("stop", "length")]
    assert 1 <= tts["branches_pruned"] == len(cut) <= 8 - MIN_UNCUT, tts["branch_finish_reasons"]
    assert tts["branches_respawned"] == 0 and tts["answer"] is not None


def test_the_first_confidence_call_calibrates_the_cut_off_and_prices_log_probs(llm: LatencyOptimalTTSLLM) -> None:
    from langchain_latts.planner.runtime import engine_profile

    tts = llm.invoke("Compute 3 + 4 - 2.", branches="auto", prune="confidence").response_metadata["tts"]
    assert tts["plan"]["profile"] == "start-up" and tts["answer"] == "5"
    settings = llm._settings_for_call(None, {"branches": "auto"})
    stats = llm.engine.run_sync(llm.engine.ensure_started())
    state = llm.engine.run_sync(engine_profile(llm.engine, settings, stats.max_num_seqs))  # the call's, cached
    profile = state.current()
    assert profile.confidence is not None and profile.confidence.right_lowest_logprob, "graded held-out samples"
    assert profile.confidence.threshold("lowest_logprob") is not None
    assert set(profile.logprobs_slowdown) == {"0"} and profile.logprobs_slowdown["0"] > 0.5, "what the call asked for"
