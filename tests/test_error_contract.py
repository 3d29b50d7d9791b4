"""One error contract: every invalid setting, by type or by value, in the constructor, per
call and through ``bind``, raises a LattsValueError naming the parameter, the value and a fix.
Nothing here starts an engine: settings are validated before any engine is looked up."""

from __future__ import annotations

import pytest

from langchain_latts import LatencyOptimalTTSLLM, LattsValueError
from langchain_latts.settings import CALL_OPTIONS

#: One bad value by type and one by value (where the type allows a bad value) per setting.
BAD: dict[str, list[object]] = {
    "model": [3, "/no/such/model"],
    "draft_model": [["a"], "./no-such-draft"],
    "speculative_method": [1, "medusa"],
    "num_speculative_tokens": ["four", -1],
    "branches": ["x", 0],
    "max_branches": ["many", 0],
    "latency_profile": [3, "/no/such/profile.json"],
    "temperature": ["hot", -0.5],
    "top_p": ["all", 1.5],
    "top_k": ["many", 0],
    "min_p": ["low", 1.0],
    "max_tokens": ["many", 0],
    "stop": [3, [1, 2]],
    "seed": ["s", 1.5],
    "answer_extractor": [3, "regex"],
    "chat_template_kwargs": ["enable_thinking", 3],
    "reasoning_parser": [3, {}],
    "stop_at_answer": ["maybe", {}],
    "greedy_member": ["sometimes", 2],
    "early_stop": ["maybe", "sometimes"],
    "early_stop_threshold": ["high", 0.3],
    "quorum": ["half", 0],
    "deadline_s": ["soon", float("nan")],
    "deadline_includes_start": ["maybe", {}],
    "on_deadline": [0, "ignore"],
    "max_model_len": ["long", 0],
    "max_num_seqs": ["many", -2],
    "kv_cache_gib": ["big", 0.0],
    "gpu_memory_utilization": ["half", 1.5],
    "enforce_eager": ["sometimes", 2],
    "dtype": [16, "float7"],
    "engine_kwargs": ["tp=2", {"x": object()}],
    "verifier": [3, "oracle"],
    "strategy": [1, "best"],
    "step_aggregation": [2, "median"],
    "prune": ["maybe", {}],
    "prune_threshold": ["low", 0.0],
    "step_delimiter": [5, ""],
    "max_respawns": ["many", -1],
    "token_budget": ["lots", 0],
    "tool_calling": [1, "freeform"],
    "tool_parser": [3, " "],
    "endpoints": ["http://127.0.0.1:8001/v1", ["127.0.0.1:8001"]],
    "api_key": [3],
    "confidence_measure": [1, "median"],
    "confidence_keep": ["half", 0.0],
    "confidence_threshold": ["low", -2.0],  # -2.0: only read by prune='confidence'
}
CASES = [(name, value) for name, values in BAD.items() for value in values]


def test_the_table_covers_every_setting() -> None:
    assert set(BAD) == set(CALL_OPTIONS)


def _check(error: LattsValueError, name: str, value: object) -> None:
    message = str(error)
    assert message.startswith(name) or name in message.split(" must ")[0], message
    assert repr(value)[:20] in message or str(value)[:20] in message, message  # the value received
    assert message.split(", got ", 1)[1].count(". ") >= 1, message  # followed by a fix


@pytest.mark.parametrize(("name", "value"), CASES)
def test_constructor(name: str, value: object) -> None:
    with pytest.raises(LattsValueError) as info:
        LatencyOptimalTTSLLM(**{name: value})
    _check(info.value, name, value)


@pytest.mark.parametrize(("name", "value"), CASES)
def test_per_call(name: str, value: object) -> None:
    with pytest.raises(LattsValueError) as info:
        LatencyOptimalTTSLLM().invoke("Compute 1 + 2.", **{name: value})
    _check(info.value, name, value)


@pytest.mark.parametrize(("name", "value"), CASES)
def test_bind(name: str, value: object) -> None:
    with pytest.raises(LattsValueError) as info:
        LatencyOptimalTTSLLM().bind(**{name: value}).invoke("Compute 1 + 2.")
    _check(info.value, name, value)


def test_unknown_call_option_lists_the_valid_ones() -> None:
    with pytest.raises(LattsValueError, match=r"call option is not a setting of LatencyOptimalTTSLLM, got 'n'\. "
                                              r"Per-call options are: model, "):
        LatencyOptimalTTSLLM().invoke("Compute 1 + 2.", n=8)


@pytest.mark.parametrize(("settings", "name"), [({"strategy": "best_of_n"}, "strategy"),
                                                ({"strategy": "weighted_majority"}, "strategy"),
                                                ({"prune": True}, "prune")])
def test_scoring_without_a_verifier_says_to_set_one(settings: dict[str, object], name: str) -> None:
    with pytest.raises(LattsValueError, match=rf"^{name} .*needs a verifier.*Set verifier="):
        LatencyOptimalTTSLLM(**settings)


@pytest.mark.parametrize(("name", "value"), [("draft_model", "./x"), ("num_speculative_tokens", 4),
                                             ("speculative_method", "ngram"), ("kv_cache_gib", 2.0),
                                             ("max_num_seqs", 64), ("engine_kwargs", {"tensor_parallel_size": 2})])
def test_settings_the_servers_own_are_refused_with_endpoints_and_the_flag_is_named(name: str, value: object) -> None:
    if name == "draft_model":
        value = str(__import__("langchain_latts.models", fromlist=["DEFAULT_DRAFT"]).DEFAULT_DRAFT)
    with pytest.raises(LattsValueError, match=rf"^{name} is configured on the servers when endpoints are set, got "
                                              r".*api_server \.\.\. --"):
        LatencyOptimalTTSLLM(endpoints=["http://127.0.0.1:8001/v1"], **{name: value})


@pytest.mark.parametrize(("measure", "value"), [("lowest_logprob", 0.5), ("lowest_logprob", float("nan")),
                                                ("lowest_group", -1.0), ("mean", float("inf"))])
def test_a_confidence_threshold_must_be_in_the_measures_units(measure: str, value: float) -> None:
    with pytest.raises(LattsValueError, match=rf"^confidence_threshold must be (a log-prob|a token confidence).*"
                                              rf"confidence_measure='{measure}', got {value!r}\. e\.g\. "):
        LatencyOptimalTTSLLM(prune="confidence", confidence_measure=measure, confidence_threshold=value)


def test_a_fleet_refuses_a_machine_profile() -> None:
    with pytest.raises(LattsValueError, match="latency_profile .*not of a fleet"):
        LatencyOptimalTTSLLM(endpoints=["http://127.0.0.1:8001/v1"], latency_profile=__file__)
