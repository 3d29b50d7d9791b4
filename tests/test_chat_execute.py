"""The whole call (:func:`langchain_latts.call.run_call`) on a scripted engine: deadlines, errors, requests and metadata.

The scripted engine streams one piece per token every ``step_s`` seconds, so token counts,
votes and which branches finish before a deadline are exact.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler

from langchain_latts import DeadlineExceededError, LatencyOptimalTTSLLM, LattsValueError
from langchain_latts import chat_models as chat_models_module

from .fakes import ScriptedEngine

FAST = ["#### ", "5"]  # 2 tokens, ends after ~20 ms
SLOW = ["x"] * 300  # 300 tokens, ~3 s: outlives every deadline here


def test_deadline_votes_over_finished_and_aborts_the_rest(engine_for) -> None:  # type: ignore[no-untyped-def]
    engine = engine_for(ScriptedEngine([FAST, SLOW, FAST, SLOW], step_s=0.01))
    started = time.monotonic()
    message = LatencyOptimalTTSLLM(branches=4, seed=0, deadline_s=0.3).invoke("q")
    elapsed = time.monotonic() - started
    tts = message.response_metadata["tts"]
    assert tts["branches_finished"] == 2 and tts["branches_aborted"] == 2 and tts["deadline_hit"] is True
    assert sorted(engine.aborted) == [r for r in engine.started_ids if r.endswith(("-1", "-3"))]
    assert tts["votes"] == {"5": 2} and tts["answer"] == "5" and tts["selected_branch"] == 0
    # Decided at the deadline, not when the 3 s branches would end: bounds halfway between the
    # two, so a slow shared machine cannot fail them and a runner that waits cannot pass.
    halfway = (0.3 + 3.0) / 2
    assert 0.3 - 0.01 <= tts["decided_at_s"] < halfway
    assert elapsed < halfway
    assert tts["branch_finish_reasons"] == ["stop", "abort", "stop", "abort"]
    # Prompt [1, 2, 3] once; 2 + 2 tokens of the finished branches plus what the slow ones
    # produced before the abort (one per 10 ms: about 30 each).
    usage = message.usage_metadata
    assert usage is not None and usage["input_tokens"] == 3
    assert usage["output_tokens"] == sum(tts["branch_tokens"]) and 40 <= usage["output_tokens"] <= 70
    assert engine.num_unfinished_requests() == 0


def test_no_branch_finished_raises_with_the_deadline_elapsed_and_tokens(engine_for) -> None:  # type: ignore[no-untyped-def]
    engine_for(ScriptedEngine([SLOW, SLOW], step_s=0.01))
    llm = LatencyOptimalTTSLLM(branches=2, seed=0, deadline_s=0.2, on_deadline="raise")
    with pytest.raises(DeadlineExceededError, match=r"no branch finished within deadline_s=0\.2 \(elapsed 0\.2\d*") as info:
        llm.invoke("q")
    error = info.value
    assert error.deadline_s == 0.2 and 0.2 <= error.elapsed_s < 0.4
    assert 20 <= error.tokens <= 50  # two branches at one token per 10 ms for 0.2 s


def test_no_branch_finished_returns_the_best_partial_by_default(engine_for) -> None:  # type: ignore[no-untyped-def]
    engine_for(ScriptedEngine([SLOW, SLOW], step_s=0.01))
    message = LatencyOptimalTTSLLM(branches=2, seed=0, deadline_s=0.2).invoke("q")
    assert message.response_metadata["finish_reason"] == "deadline"
    assert message.response_metadata["tts"]["partial"] is True and message.content.startswith("xxx")


def test_deadline_below_the_engine_step_is_refused(engine_for) -> None:  # type: ignore[no-untyped-def]
    engine_for(ScriptedEngine([FAST], min_step_s=0.05))
    with pytest.raises(LattsValueError, match=r"deadline_s must be at least this engine's fastest decode step "
                                              r"\(0\.0500 s.*got 0\.01\. Use deadline_s >= 0\.050"):
        LatencyOptimalTTSLLM(branches=1, deadline_s=0.01).invoke("q")


def test_max_tokens_is_clipped_to_the_context_left(engine_for) -> None:  # type: ignore[no-untyped-def]
    engine = engine_for(ScriptedEngine([FAST, FAST], max_model_len=10))
    LatencyOptimalTTSLLM(branches=2, seed=0, max_tokens=512).invoke("q")
    # A 3-token prompt in a 10-token context leaves 7 tokens to generate.
    assert [r.max_tokens for r in engine.requests] == [7, 7]


def test_max_tokens_unset_gives_each_branch_the_context_left(engine_for) -> None:  # type: ignore[no-untyped-def]
    """The default (None) is what `vllm serve` does for a request without max_tokens: a
    reasoning model is never cut short by a package default."""
    engine = engine_for(ScriptedEngine([FAST, FAST], max_model_len=40))
    LatencyOptimalTTSLLM(branches=2, seed=0).invoke("q")
    assert LatencyOptimalTTSLLM().max_tokens is None
    assert [r.max_tokens for r in engine.requests] == [37, 37]
    engine.requests.clear()
    LatencyOptimalTTSLLM(branches=2, seed=0).invoke("q", max_tokens=5)
    assert [r.max_tokens for r in engine.requests] == [5, 5]


def test_prompt_filling_the_context_is_refused(engine_for) -> None:  # type: ignore[no-untyped-def]
    engine_for(ScriptedEngine([FAST], max_model_len=3))
    with pytest.raises(LattsValueError, match=r"messages must fit the model's context of 3 tokens"):
        LatencyOptimalTTSLLM(branches=1).invoke("q")


def test_stop_combines_with_other_per_call_options(engine_for) -> None:  # type: ignore[no-untyped-def]
    engine = engine_for(ScriptedEngine([FAST] * 3))
    llm = LatencyOptimalTTSLLM(branches=8, seed=0, stop=["\n\n"])
    llm.invoke("q", stop=["="], branches=3, temperature=0.5, early_stop=False)
    assert len(engine.requests) == 3
    assert all(r.stop == ("=",) and r.temperature == 0.5 for r in engine.requests)
    engine.requests.clear()
    llm.invoke("q", branches=2, early_stop=False)  # no per-call stop: the constructor's stays
    assert [r.stop for r in engine.requests] == [("\n\n",), ("\n\n",)]


def test_a_custom_extractor_is_really_used(engine_for) -> None:  # type: ignore[no-untyped-def]
    engine_for(ScriptedEngine([["#### ", "5"], ["#### ", "6"]]))
    # The default extractor would vote 5 and 6; this one reads the text's length.
    message = LatencyOptimalTTSLLM(branches=2, seed=0, early_stop=False,
                                   answer_extractor=lambda text: f"len{len(text)}").invoke("q")
    assert message.response_metadata["tts"]["votes"] == {"len6": 2}


def test_branches_cut_by_max_tokens_vote_only_with_an_explicit_answer(engine_for) -> None:  # type: ignore[no-untyped-def]
    cut_mid_step = ["48 + 17 = 65\n", "65 - 2"]  # would vote "2" by its trailing number
    cut_after_answer = ["#### 63\n", "more"]  # states its final answer before the cut
    complete = ["#### ", "63"]
    engine_for(ScriptedEngine([cut_mid_step, cut_after_answer, complete],
                              finish_reasons=["length", "length", "stop"]))
    tts = LatencyOptimalTTSLLM(branches=3, seed=0, early_stop=False).invoke("q").response_metadata["tts"]
    assert tts["branch_answers"] == [None, "63", "63"]
    assert tts["votes"] == {"63": 2} and tts["branch_finish_reasons"] == ["length", "length", "stop"]


def test_exact_tts_metadata_of_a_complete_call(engine_for) -> None:  # type: ignore[no-untyped-def]
    engine_for(ScriptedEngine([["#### ", "4"], ["#### ", "5"], ["#### ", "5"]]))
    message = LatencyOptimalTTSLLM(branches=3, seed=0, early_stop=False).invoke("q")
    tts = dict(message.response_metadata["tts"])
    for timing in ("decided_at_s", "latency_s", "engine_start_s"):
        assert isinstance(tts.pop(timing), float)
    assert tts == {
        "branches_launched": 3, "branches_finished": 3, "branches_aborted": 0,
        "votes": {"5": 2, "4": 1}, "answer": "5", "selected_branch": 1, "partial": False,
        "stopped_early": False, "deadline_s": None, "deadline_hit": False, "speculative": None, "plan": None,
        "early_stop_saved_tokens": 0, "early_stop_saved_s": 0.0,
        "branch_answers": ["4", "5", "5"], "branch_tokens": [2, 2, 2],
        "branch_finish_reasons": ["stop", "stop", "stop"],
        "strategy": "majority", "weights": {"5": 2.0, "4": 1.0}, "branch_scores": [None, None, None],
        "score_errors": 0, "branches_pruned": 0, "branches_respawned": 0, "budget_hit": False,
        "verifier": None, "greedy_member": False, "token_budget": None, "budget": None, "branch_errors": [], "servers": None,
        "branch_confidences": None, "no_branch_finished": False, "kept_alone": False, "quorum": None, "quorum_reached": False,
    }
    assert message.content == "#### 5"
    assert message.usage_metadata == {"input_tokens": 3, "output_tokens": 6, "total_tokens": 9}


def test_an_engine_error_is_raised_once_and_nothing_is_left_unretrieved(engine_for) -> None:  # type: ignore[no-untyped-def]
    engine_for(ScriptedEngine([SLOW] * 4, fail_all=True))
    unretrieved: list[dict[str, Any]] = []

    async def call() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: unretrieved.append(context))
        with pytest.raises(RuntimeError, match="engine exploded"):
            await LatencyOptimalTTSLLM(branches=4, seed=0).ainvoke("q")
        await asyncio.sleep(0)

    asyncio.run(call())
    import gc

    gc.collect()  # "exception was never retrieved" is reported when a task is collected
    assert unretrieved == []


class _Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        self.events.append((name, data))


def test_progress_events_reach_sync_callbacks(engine_for) -> None:  # type: ignore[no-untyped-def]
    engine_for(ScriptedEngine([["#### ", "5"], ["#### ", "5", ""], ["#### ", "4", "", ""]]))
    recorder = _Recorder()
    LatencyOptimalTTSLLM(branches=3, seed=0, early_stop=False).invoke("q", config={"callbacks": [recorder]})
    assert [name for name, _ in recorder.events] == ["latts_progress"] * 3
    # One event per branch as it ends: finished counts rise, running counts fall.
    assert [(d["finished"], d["running"]) for _, d in recorder.events] == [(1, 2), (2, 1), (3, 0)]
    assert recorder.events[-1][1]["votes"] == {"5": 2, "4": 1} and recorder.events[-1][1]["leader"] == "5"


async def test_progress_events_appear_in_astream_events(engine_for) -> None:  # type: ignore[no-untyped-def]
    engine_for(ScriptedEngine([["#### ", "5"], ["#### ", "5", ""]]))
    llm = LatencyOptimalTTSLLM(branches=2, seed=0, early_stop=False)
    events = [e async for e in llm.astream_events("q", version="v2")]
    progress = [e["data"] for e in events if e["event"] == "on_custom_event" and e["name"] == "latts_progress"]
    assert [(p["finished"], p["running"], p["leader"]) for p in progress] == [(1, 1, "5"), (2, 0, "5")]
    end = next(e for e in events if e["event"] == "on_chat_model_end")
    assert end["data"]["output"].content == "#### 5"  # the stream still yields the voted answer


def test_a_per_call_engine_setting_warns_that_it_starts_another_engine(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    engine = ScriptedEngine([FAST])
    monkeypatch.setattr(chat_models_module, "get_engine", lambda config: engine)
    monkeypatch.setattr(chat_models_module, "engine_exists", lambda config: False)
    llm = LatencyOptimalTTSLLM(branches=1, seed=0)
    llm.invoke("q", branches=1)  # a sampling setting: same engine, no warning
    assert "separate vLLM engine" not in caplog.text
    llm.invoke("q", max_num_seqs=3)
    assert "per-call setting(s) max_num_seqs need a separate vLLM engine" in caplog.text


# -- branches="auto": the planner ------------------------------------------------------------
def _scripts(n: int, answer: str = "7", length: int = 6) -> list[list[str]]:
    return [["x"] * (length - 2) + ["#### ", answer] for _ in range(n)]


def test_auto_branches_follow_the_cached_profile_and_the_deadline(engine_for) -> None:  # type: ignore[no-untyped-def]
    from langchain_latts.planner.engine_config import profile_identity
    from langchain_latts.planner.profile import save_profile
    from langchain_latts.settings import TTSSettings
    from tests.test_planner import profile as hand_built

    engine_for(ScriptedEngine(_scripts(16), step_s=0.001))
    saved = hand_built().model_copy(update={"identity": profile_identity(TTSSettings())})
    save_profile(saved)
    llm = LatencyOptimalTTSLLM(seed=0, max_branches=16)
    relaxed = llm.invoke("q").response_metadata["tts"]
    assert relaxed["plan"]["profile"].startswith(f"latts profile {saved.profile_id}")
    assert relaxed["branches_launched"] == relaxed["plan"]["branches"] > 1
    assert relaxed["plan"]["limited_by"] == "plateau"
    tight = llm.invoke("q", deadline_s=0.05).response_metadata["tts"]  # one branch is predicted at ~1.4 s
    assert tight["plan"]["branches"] == tight["branches_launched"] == 1
    assert tight["plan"]["limited_by"] == "nothing fits"


def test_a_greedy_plan_decodes_one_branch_at_temperature_zero(engine_for) -> None:  # type: ignore[no-untyped-def]
    from langchain_latts.planner.engine_config import profile_identity
    from langchain_latts.planner.profile import save_profile
    from langchain_latts.settings import TTSSettings
    from tests.test_planner import profile as hand_built

    engine = engine_for(ScriptedEngine(_scripts(16), step_s=0.001))
    saved = hand_built()
    accuracy = saved.accuracy.model_copy(update={"greedy_accuracy": 0.99})  # above any vote of Beta(2, 1)
    save_profile(saved.model_copy(update={"identity": profile_identity(TTSSettings()), "accuracy": accuracy}))
    tts = LatencyOptimalTTSLLM(seed=0, max_branches=16, temperature=0.7).invoke("q").response_metadata["tts"]
    assert tts["plan"]["greedy"] is True and tts["plan"]["limited_by"] == "greedy"
    assert tts["branches_launched"] == 1 and [r.temperature for r in engine.requests] == [0.0]
    assert tts["plan"]["sampled"][0] > 1, "the vote it was weighed against is on record"
    engine.requests.clear()
    voted = LatencyOptimalTTSLLM(seed=0, max_branches=16, temperature=0.7, verifier="arithmetic_steps")
    tts = voted.invoke("q").response_metadata["tts"]  # a verifier needs samples to choose among
    assert tts["plan"]["greedy"] is False and {r.temperature for r in engine.requests} == {0.7}


def test_a_greedy_member_plan_decodes_branch_zero_at_temperature_zero(engine_for) -> None:  # type: ignore[no-untyped-def]
    from langchain_latts.planner.engine_config import profile_identity
    from langchain_latts.planner.profile import save_profile
    from langchain_latts.settings import TTSSettings
    from tests.test_planner import profile as hand_built

    engine = engine_for(ScriptedEngine(_scripts(16), step_s=0.001))
    saved = hand_built()
    model = saved.accuracy
    member = [0.5, *(model.vote_accuracy(b) + 0.03 for b in range(2, 17))]  # a member helps at every size
    save_profile(saved.model_copy(update={"identity": profile_identity(TTSSettings()),
                                          "accuracy": model.model_copy(update={"greedy_member": member})}))
    tts = LatencyOptimalTTSLLM(seed=0, max_branches=16, temperature=0.7).invoke("q").response_metadata["tts"]
    assert tts["plan"]["greedy_member"] is True and tts["plan"]["greedy"] is False
    temperatures = [r.temperature for r in engine.requests]
    assert len(temperatures) == tts["branches_launched"] > 1
    assert temperatures[0] == 0.0 and set(temperatures[1:]) == {0.7}


def test_a_pinned_greedy_member_decodes_branch_zero_greedily_and_wins_ties(engine_for) -> None:  # type: ignore[no-untyped-def]
    engine = engine_for(ScriptedEngine([["#### ", "4"], ["#### ", "5"], ["#### ", "6"]]))
    tts = LatencyOptimalTTSLLM(branches=3, seed=0, temperature=0.7, greedy_member=True).invoke(
        "q").response_metadata["tts"]
    assert [r.temperature for r in engine.requests] == [0.0, 0.7, 0.7]
    assert tts["greedy_member"] is True and tts["votes"] == {"4": 1, "5": 1, "6": 1} and tts["answer"] == "4"
    engine.requests.clear()
    off = LatencyOptimalTTSLLM(branches=3, seed=0, temperature=0.7, greedy_member=False).invoke("q")
    assert [r.temperature for r in engine.requests] == [0.7] * 3
    assert off.response_metadata["tts"]["greedy_member"] is False


def test_auto_branches_without_a_profile_measure_one_at_start(engine_for) -> None:  # type: ignore[no-untyped-def]
    engine = engine_for(ScriptedEngine(_scripts(40), step_s=0.001))
    tts = LatencyOptimalTTSLLM(seed=0, max_branches=8).invoke("q").response_metadata["tts"]
    assert tts["plan"]["profile"] == "start-up"
    assert 1 <= tts["branches_launched"] == tts["plan"]["branches"] <= 8
    assert any(r.ignore_eos for r in engine.requests)  # the step timing ran on this engine
    pinned = LatencyOptimalTTSLLM(seed=0, branches=3).invoke("q").response_metadata["tts"]
    assert pinned["plan"] is None and pinned["branches_launched"] == 3


def test_a_start_up_profile_does_not_count_against_the_first_deadline(engine_for) -> None:  # type: ignore[no-untyped-def]
    # Measuring the start-up profile takes longer than this deadline; like the engine start
    # it happens before the deadline clock starts (and is reported in engine_start_s).
    engine_for(ScriptedEngine(_scripts(40), step_s=0.002))
    tts = LatencyOptimalTTSLLM(seed=0, max_branches=4, deadline_s=0.05).invoke("q").response_metadata["tts"]
    assert tts["plan"]["profile"] == "start-up"
    assert tts["answer"] == "7" and not tts["partial"]
    assert tts["engine_start_s"] > 0.05


def test_a_verifier_scores_and_selects_and_its_metadata_is_reported(engine_for) -> None:  # type: ignore[no-untyped-def]
    slipped = ["48 + 17 = 66\n", "66 - 23 = 43\n", "#### 43"]
    right = ["48 + 17 = 65\n", "65 - 23 = 42\n", "#### 42"]
    engine_for(ScriptedEngine([slipped, slipped, right]))
    llm = LatencyOptimalTTSLLM(branches=3, seed=0, early_stop=False, verifier="arithmetic_steps")
    message = llm.invoke("Compute 48 + 17 - 23.")
    tts = message.response_metadata["tts"]
    assert tts["strategy"] == "weighted_majority" and tts["verifier"] == "arithmetic_steps"
    assert tts["votes"] == {"43": 2, "42": 1} and tts["answer"] == "42" and tts["selected_branch"] == 2
    assert tts["branch_scores"] == [0.0, 0.0, 1.0] and message.content.endswith("#### 42")
    assert llm.invoke("Compute 48 + 17 - 23.", strategy="majority").response_metadata["tts"]["answer"] == "43"
    assert llm._identifying_params["strategy"] == "weighted_majority"


def test_pruned_and_respawned_branches_are_counted(engine_for) -> None:  # type: ignore[no-untyped-def]
    wrong = ["48 + 17 = 66\n"] + ["x"] * 50
    right = ["48 + 17 = 65\n", "65 - 23 = 42\n", "#### 42"]
    engine_for(ScriptedEngine([wrong, right, right]))
    tts = LatencyOptimalTTSLLM(branches=2, seed=0, early_stop=False, verifier="arithmetic_steps", prune=True,
                               strategy="best_of_n").invoke("Compute 48 + 17 - 23.").response_metadata["tts"]
    assert tts["branches_pruned"] == 1 and tts["branches_respawned"] == 1 and tts["branches_launched"] == 3
    assert tts["branch_finish_reasons"] == ["pruned", "stop", "stop"] and tts["answer"] == "42"


def test_a_replacement_prompt_carries_the_verified_steps(engine_for) -> None:  # type: ignore[no-untyped-def]
    engine = engine_for(ScriptedEngine([["48 + 17 = 65\n", "65 - 23 = 41\n"] + ["x"] * 50,
                                        ["65 - 23 = 42\n", "#### 42"]]))
    llm = LatencyOptimalTTSLLM(branches=1, seed=0, verifier="arithmetic_steps", prune=True, max_tokens=100)
    message = llm.invoke("Compute 48 + 17 - 23.")
    first, replacement = engine.requests
    assert replacement.prompt_token_ids == (*first.prompt_token_ids, *engine.tokenize("48 + 17 = 65\n"))
    assert replacement.max_tokens == 100 - len("48 + 17 = 65\n") and replacement.seed != first.seed
    assert message.content == "48 + 17 = 65\n65 - 23 = 42\n#### 42"


def test_confidence_strategies_ask_for_log_probs_and_report_each_branchs_confidence(engine_for: Any) -> None:
    four, five = ["#", "#", "#", " ", "4"], ["#", "#", "#", " ", "5"]
    engine = engine_for(ScriptedEngine([four, four, four, five, five], confidence=[1.0, 1.0, 1.0, 6.0, 6.0]))
    llm = LatencyOptimalTTSLLM(branches=5, seed=0, early_stop=False)
    assert llm.invoke("q").response_metadata["tts"]["answer"] == "4"
    assert {r.logprobs for r in engine.requests} == {None}, "majority asks for no log-probs"
    engine.requests.clear()
    message = llm.invoke("q", strategy="confidence_weighted")
    tts = message.response_metadata["tts"]
    assert tts["answer"] == "5" and tts["strategy"] == "confidence_weighted"
    # the default measure: each branch's least likely sampled token (the fake samples at -1/confidence)
    assert tts["branch_confidences"] == [-1.0, -1.0, -1.0, -0.1667, -0.1667]
    assert {r.logprobs for r in engine.requests} == {0}, "the sampled token's log-prob only"
    engine.requests.clear()
    deepconf = llm.invoke("q", strategy="confidence_weighted", confidence_measure="mean").response_metadata["tts"]
    assert deepconf["branch_confidences"] == [1.0, 1.0, 1.0, 6.0, 6.0] and deepconf["answer"] == "5"
    assert {r.logprobs for r in engine.requests} == {5}, "DeepConf's measures need the top 5"
    assert llm.invoke("q", strategy="confidence_filtered", confidence_keep=0.4).response_metadata["tts"]["answer"] == "5"


@pytest.fixture
def uncalibrated(monkeypatch: Any) -> None:
    """No cut-off calibration anywhere: none cached, and the engine's start-up profile has
    none (a model the start-up calibration cannot grade), so the in-call warm-up decides."""
    from types import SimpleNamespace

    from langchain_latts import call as call_module

    startup = SimpleNamespace(confidence=None, extractor=None, output_length=lambda q: 512)

    async def engine_profile(engine: Any, settings: Any, max_num_seqs: int) -> Any:
        return SimpleNamespace(current=lambda max_tokens=None: startup)

    async def price_confidence(state: Any, engine: Any, settings: Any) -> None:
        return None

    monkeypatch.setattr(call_module, "cached_profile", lambda settings: None)
    monkeypatch.setattr(call_module, "engine_profile", engine_profile)
    monkeypatch.setattr(call_module, "price_confidence", price_confidence)


@pytest.mark.usefixtures("uncalibrated")
@pytest.mark.parametrize(("measure", "k"), [("lowest_logprob", 0), ("lowest_group", 5)])
def test_confidence_prune_cuts_running_branches_below_the_warmup_threshold(engine_for: Any, measure: str,
                                                                           k: int) -> None:
    confident, shaky = ["x"] * 18 + ["#### ", "5"], ["y"] * 300
    engine = engine_for(ScriptedEngine([confident, confident] + [shaky] * 6, step_s=0.002,
                                       confidence=[5.0, 5.0] + [1.0] * 6))
    llm = LatencyOptimalTTSLLM(branches=8, seed=0, prune="confidence", max_respawns=0, confidence_measure=measure)
    tts = llm.invoke("q").response_metadata["tts"]
    assert tts["answer"] == "5" and tts["branches_finished"] == 2 and tts["branches_pruned"] == 6
    assert max(tts["branch_tokens"][2:]) < 100, "cut soon after the warm-up, not at 300 tokens"
    assert tts["branch_finish_reasons"][2:] == ["pruned"] * 6
    assert {r.logprobs for r in engine.requests} == {k}


@pytest.mark.usefixtures("uncalibrated")
def test_nothing_is_cut_before_the_warmup_branches_finish(engine_for: Any) -> None:
    shaky = ["y"] * 30 + ["#### ", "7"]
    engine_for(ScriptedEngine([shaky] * 4, step_s=0.001, confidence=[1.0, 2.0, 3.0, 4.0]))
    tts = LatencyOptimalTTSLLM(branches=4, seed=0, prune="confidence", early_stop=False).invoke(
        "q").response_metadata["tts"]
    assert tts["branches_pruned"] == 0 and tts["answer"] == "7"


def _steady(pieces: list[str], logprob: float = -0.1) -> list[float]:
    return [logprob] * len(pieces)


def test_a_calibrated_cut_off_cuts_at_the_weak_token_and_the_replacement_resamples_from_before_it(
        engine_for: Any) -> None:
    good, slip, rest = ["a", "b", "c", "#### ", "5"], ["a", "X", "y", "y", "y", "y"], ["c", "#### ", "5"]
    engine = engine_for(ScriptedEngine([good, good, slip, rest], step_s=0.002,
                                       token_logprobs=[_steady(good), _steady(good), [-0.1, -3.0, -0.1, -0.1, -0.1, -0.1],
                                                       _steady(rest)]))
    llm = LatencyOptimalTTSLLM(branches=3, seed=0, prune="confidence", confidence_threshold=-1.0, early_stop=False)
    tts = llm.invoke("q").response_metadata["tts"]
    assert tts["branch_finish_reasons"] == ["stop", "stop", "pruned", "stop"]
    assert tts["branch_tokens"][2] == 2, "cut at the token below the threshold, before any branch finished"
    first, replacement = engine.requests[0], engine.requests[3]
    assert replacement.prompt_token_ids == (*first.prompt_token_ids, *engine.tokenize("a"))
    assert tts["answer"] == "5" and tts["votes"] == {"5": 3} and tts["branches_respawned"] == 1


def test_the_cut_off_leaves_two_branches_uncut_when_every_branch_stumbles(engine_for: Any) -> None:
    slip = ["a", "X", "#### ", "7"]
    engine_for(ScriptedEngine([slip] * 4, step_s=0.002, token_logprobs=[[-0.1, -3.0, -0.1, -0.1]] * 4))
    tts = LatencyOptimalTTSLLM(branches=4, seed=0, prune="confidence", confidence_threshold=-1.0, max_respawns=0,
                               early_stop=False).invoke("q").response_metadata["tts"]
    assert tts["branches_pruned"] == 2 and tts["branches_finished"] == 2 and tts["answer"] == "7"


def test_no_replacement_starts_that_cannot_finish_before_the_deadline(engine_for: Any) -> None:
    long_slip = ["a", "X"] + ["y"] * 20 + ["#### ", "5"]
    lps = [-0.1, -3.0] + [-0.1] * 22
    good = ["a"] * 20 + ["#### ", "5"]
    scripts = [good, good, long_slip] + [good] * 2
    options = {"branches": 3, "seed": 0, "prune": "confidence", "confidence_threshold": -1.0, "early_stop": False}
    # without a profile a replacement is expected to write max_tokens at the cut branch's pace
    engine_for(ScriptedEngine(scripts, step_s=0.01, token_logprobs=[_steady(good), _steady(good), lps] + [_steady(good)] * 2))
    tight = LatencyOptimalTTSLLM(max_tokens=500, deadline_s=1.0, **options).invoke("q").response_metadata["tts"]
    assert tight["branches_pruned"] == 1 and tight["branches_respawned"] == 0
    engine_for(ScriptedEngine(scripts, step_s=0.01, token_logprobs=[_steady(good), _steady(good), lps] + [_steady(good)] * 2))
    roomy = LatencyOptimalTTSLLM(max_tokens=500, **options).invoke("q").response_metadata["tts"]
    assert roomy["branches_respawned"] == 1


def test_the_cut_off_threshold_comes_from_the_profiles_calibration(engine_for: Any, monkeypatch: Any) -> None:
    from types import SimpleNamespace

    from langchain_latts import call as call_module
    from langchain_latts.planner.profile import ConfidenceCalibration

    calibration = ConfidenceCalibration(lowest_logprob=[-4.0, -3.5, -0.5, -0.2], lowest_group=[1.0, 2.0, 3.0, 4.0],
                                        right_lowest_logprob=[-0.5, -0.3, -0.2, -0.1], right_lowest_group=[3.0, 4.0])
    assert calibration.threshold("lowest_logprob") == -0.5 and calibration.threshold("tail") == 3.0
    monkeypatch.setattr(call_module, "cached_profile",
                        lambda settings: SimpleNamespace(confidence=calibration, output_length=lambda q: 4,
                                                         extractor=None))
    good, slip = ["a", "b", "#### ", "5"], ["a", "X", "#### ", "6"]
    engine_for(ScriptedEngine([good, good, slip], step_s=0.002,
                              token_logprobs=[_steady(good), _steady(good), [-0.1, -1.0, -0.1, -0.1]]))
    tts = LatencyOptimalTTSLLM(branches=3, seed=0, prune="confidence", max_respawns=0,
                               early_stop=False).invoke("q").response_metadata["tts"]
    assert tts["branch_finish_reasons"] == ["stop", "stop", "pruned"] and tts["branch_tokens"][2] == 2


def test_cut_branches_no_longer_hold_the_vote_open_so_it_stops_early(engine_for: Any) -> None:
    good, slip, slow = ["a", "#### ", "5"], ["a", "X"] + ["y"] * 300, ["a"] * 300
    engine_for(ScriptedEngine([good, good, slip, slip, slow], step_s=0.002,
                              token_logprobs=[_steady(good)] * 2 + [[-0.1, -3.0] + [-0.1] * 300] * 2 + [_steady(slow)]))
    tts = LatencyOptimalTTSLLM(branches=5, seed=0, prune="confidence", confidence_threshold=-1.0,
                               max_respawns=0).invoke("q").response_metadata["tts"]
    # 2 votes for 5 against one branch still running: decided, although 3 branches were launched to run long
    assert tts["stopped_early"] and tts["answer"] == "5" and tts["branches_pruned"] == 2
    assert sum(tts["branch_tokens"]) < 100


def test_cut_branches_and_their_replacements_are_charged_to_the_token_budget(engine_for: Any) -> None:
    good, slip, long = ["a", "a", "#### ", "5"], ["a", "X"] + ["y"] * 30, ["a"] * 40
    engine_for(ScriptedEngine([good, good, slip, long], step_s=0.002,
                              token_logprobs=[_steady(good)] * 2 + [[-0.1, -3.0] + [-0.1] * 30, _steady(long)]))
    message = LatencyOptimalTTSLLM(branches=3, seed=0, prune="confidence", confidence_threshold=-1.0, early_stop=False,
                                   token_budget=20, max_tokens=6).invoke("q")
    tts = message.response_metadata["tts"]
    assert tts["branch_finish_reasons"] == ["stop", "stop", "pruned", "budget"], "the replacement ran into the budget"
    assert tts["budget_hit"] and tts["answer"] == "5"
    assert 20 <= message.usage_metadata["output_tokens"] <= 22  # type: ignore[index]


def test_the_planner_plans_and_a_cut_branchs_slot_goes_to_a_replacement(engine_for: Any) -> None:
    slip = ["x", "X", "y", "y", "#### ", "6"]
    scripts = [slip] + _scripts(40)
    engine = engine_for(ScriptedEngine(scripts, step_s=0.001,
                                       token_logprobs=[[-0.1, -3.0, -0.1, -0.1, -0.1, -0.1]] + [[-0.1] * 6] * 40))
    tts = LatencyOptimalTTSLLM(seed=0, max_branches=4, prune="confidence", confidence_threshold=-1.0,
                               early_stop=False).invoke("q").response_metadata["tts"]
    launched = tts["plan"]["branches"]
    planned = [r for r in engine.requests if not r.ignore_eos][:launched]
    assert tts["plan"]["profile"] == "start-up" and launched >= 3
    assert tts["branch_finish_reasons"][0] == "pruned" and tts["branches_respawned"] == 1
    assert tts["branches_launched"] == launched + 1 and tts["answer"] == "7" and len(planned) == launched


def test_a_branch_that_stated_its_answer_stops_at_the_next_boundary(engine_for: Any) -> None:
    rambling = ["The answer", " is", " 21", " cows", ".", " This", " is", " a", " game", " of", " 5", " dice", "."] + \
        [" more"] * 50
    engine = engine_for(ScriptedEngine([rambling, rambling], step_s=0.002))
    llm = LatencyOptimalTTSLLM(branches=2, seed=0, early_stop=False, answer_extractor="stated", stop_at_answer=True)
    tts = llm.invoke("q").response_metadata["tts"]
    assert tts["branch_finish_reasons"] == ["answered", "answered"]
    assert tts["branch_tokens"] == [6, 6], "it stops once '21 cows.' is followed by a space, not 60 tokens later"
    assert tts["votes"] == {"21": 2} and len(engine.aborted) == 2
    plain = LatencyOptimalTTSLLM(branches=2, seed=0, early_stop=False, answer_extractor="stated").invoke("q")
    assert plain.response_metadata["tts"]["branch_tokens"] == [len(rambling)] * 2


def test_stopping_at_the_answer_never_cuts_a_step_by_step_solution_at_its_first_step(engine_for: Any) -> None:
    steps = ["12 + 35 = 47", "\n", "47 - 7 = 40", "\n", "#### ", "40", "\n", "extra"]
    engine_for(ScriptedEngine([steps], step_s=0.002))
    tts = LatencyOptimalTTSLLM(branches=1, seed=0, stop_at_answer=True).invoke("q").response_metadata["tts"]
    # auto waits for an explicit final answer (####), then stops at the line break after it.
    assert tts["branch_finish_reasons"] == ["answered"] and tts["branch_tokens"] == [7] and tts["answer"] == "40"


def test_pinned_branches_calibrate_the_cut_off_like_planned_calls(engine_for: Any, monkeypatch: Any) -> None:
    """No threshold given, none cached: a pinned prune='confidence' call asks the engine's
    start-up profile for its calibration (once per engine), as branches='auto' calls do."""
    from types import SimpleNamespace

    from langchain_latts import call as call_module
    from langchain_latts.planner.profile import ConfidenceCalibration

    calibration = ConfidenceCalibration(lowest_logprob=[-4.0, -3.5, -0.5, -0.2], lowest_group=[1.0, 2.0, 3.0, 4.0],
                                        right_lowest_logprob=[-0.5, -0.3, -0.2, -0.1], right_lowest_group=[3.0, 4.0])
    profiled = SimpleNamespace(confidence=calibration, output_length=lambda q: 4, extractor=None)
    asked: list[str] = []

    async def engine_profile(engine: Any, settings: Any, max_num_seqs: int) -> Any:
        asked.append("profile")
        return SimpleNamespace(current=lambda max_tokens=None: profiled)

    async def price_confidence(state: Any, engine: Any, settings: Any) -> None:
        asked.append("calibrate")

    monkeypatch.setattr(call_module, "cached_profile", lambda settings: None)
    monkeypatch.setattr(call_module, "engine_profile", engine_profile)
    monkeypatch.setattr(call_module, "price_confidence", price_confidence)
    good, slip = ["a", "b", "#### ", "5"], ["a", "X", "#### ", "6"]
    engine_for(ScriptedEngine([good, good, slip], step_s=0.002,
                              token_logprobs=[_steady(good), _steady(good), [-0.1, -1.0, -0.1, -0.1]]))
    tts = LatencyOptimalTTSLLM(branches=3, seed=0, prune="confidence", max_respawns=0,
                               early_stop=False).invoke("q").response_metadata["tts"]
    assert asked == ["profile", "calibrate"]
    assert tts["branch_finish_reasons"] == ["stop", "stop", "pruned"] and "plan" not in tts or tts["plan"] is None


def test_a_pinned_quorum_decides_on_the_first_answers(engine_for: Any) -> None:
    fast, slow = ["#### ", "5"], ["x"] * 200 + ["#### ", "6"]
    engine_for(ScriptedEngine([fast, slow, fast, slow, fast], step_s=0.002))
    tts = LatencyOptimalTTSLLM(branches=5, seed=0, early_stop=False, quorum=3).invoke("q").response_metadata["tts"]
    assert tts["quorum"] == 3 and tts["quorum_reached"] and tts["answer"] == "5"
    assert tts["branches_finished"] == 3 and tts["branch_finish_reasons"] == ["stop", "abort", "stop", "abort", "stop"]
    # A quorum of at least the branches decides nothing.
    engine_for(ScriptedEngine([fast, fast], step_s=0.002))
    whole = LatencyOptimalTTSLLM(branches=2, seed=0, quorum=5).invoke("q").response_metadata["tts"]
    assert whole["quorum"] is None and not whole["quorum_reached"]
