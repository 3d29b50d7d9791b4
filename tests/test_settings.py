"""Bad settings give a clear error naming the parameter, the value and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

from langchain_latts import LatencyOptimalTTSLLM, LattsValueError
from langchain_latts.models import DEFAULT_DRAFT, DEFAULT_TARGET


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"branches": 0}, r"branches must be an integer >= 1 or .auto., got 0\. Use branches=.auto."),
        ({"num_speculative_tokens": -1}, r"num_speculative_tokens must be an integer >= 0 or 'auto', got -1\. Use 0 to turn"),
        ({"speculative_method": "medusa"}, r"speculative_method must be one of \['draft_model', 'ngram', "
                                           r"'eagle', 'eagle3'\] or None, got 'medusa'"),
        ({"model": "/no/such/model"}, r"model must be an existing model directory .*got '/no/such/model'\. Give"),
        ({"draft_model": "./no-draft"}, r"draft_model must be an existing model directory .*got './no-draft'"),
        ({"temperature": float("nan")}, r"temperature must be a finite number >= 0, got nan"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\], got 0\.0"),
        ({"max_tokens": 0}, r"max_tokens must be >= 1, got 0"),
        ({"answer_extractor": "regex"}, r"answer_extractor must be one of .*got 'regex'"),
        ({"speculative_method": "eagle3"}, r"draft_model must name the eagle3 head .*got None"),
        ({"num_speculative_tokens": [(2, 4, 4)]}, r"num_speculative_tokens must start its first range at batch size 1"),
        ({"num_speculative_tokens": [(1, 4, 4), (3, 8, 2)]}, r"num_speculative_tokens must hold sorted, non-overl"),
        ({"num_speculative_tokens": [(1, 256, 0)]}, r"num_speculative_tokens must speculate \(k > 0\)"),
        ({"model": str(DEFAULT_TARGET), "speculative_method": "draft_model"},
         r"draft_model must be set when speculative_method='draft_model' and model is set"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(LattsValueError, match=message):
        LatencyOptimalTTSLLM(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"branches": 0}, r"branches must be an integer >= 1 or .auto., got 0"),
        ({"speculative_method": "medusa"}, r"speculative_method must be one of"),
        ({"n": 8}, r"call option must be one of the settings|call option is not a setting of "
                   r"LatencyOptimalTTSLLM, got 'n'\. Per-call options are: model, "),
    ],
)
def test_bad_per_call_options_fail_before_any_engine_starts(kwargs: dict, message: str) -> None:
    llm = LatencyOptimalTTSLLM()
    with pytest.raises(LattsValueError, match=message):
        llm.invoke("Compute 1 + 2.", **kwargs)


def test_empty_messages_fail_before_any_engine_starts() -> None:
    with pytest.raises(LattsValueError, match="messages must hold at least one message"):
        LatencyOptimalTTSLLM().invoke([])


def test_speculation_resolution() -> None:
    assert LatencyOptimalTTSLLM().resolved_speculative_method is None
    # The built-in target with draft_model speculation takes the shipped draft.
    config = LatencyOptimalTTSLLM(speculative_method="draft_model").engine_config()
    assert config.speculative is not None and config.speculative.model == str(DEFAULT_DRAFT)
    assert config.speculative.to_vllm() == {
        "method": "draft_model", "num_speculative_tokens": 4, "model": str(DEFAULT_DRAFT)}
    # A draft implies the draft_model method; 0 speculative tokens turn it off.
    assert LatencyOptimalTTSLLM(draft_model=str(DEFAULT_DRAFT)).resolved_speculative_method == "draft_model"
    assert LatencyOptimalTTSLLM(draft_model=str(DEFAULT_DRAFT), num_speculative_tokens=0).engine_config().speculative is None
    ngram = LatencyOptimalTTSLLM(speculative_method="ngram", num_speculative_tokens=3).engine_config().speculative
    assert ngram is not None and ngram.to_vllm() == {
        "method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 2, "prompt_lookup_max": 5}


def test_equal_engine_settings_share_an_engine_config() -> None:
    a = LatencyOptimalTTSLLM(branches=2, temperature=0.5)
    b = LatencyOptimalTTSLLM(branches=16, seed=3, engine_kwargs={})
    # Branches and sampling are per request: both use one engine.
    assert a.engine_config() == b.engine_config()
    assert hash(a.engine_config()) == hash(b.engine_config())
    assert LatencyOptimalTTSLLM(engine_kwargs={"block_size": 16}).engine_config() != a.engine_config()


def test_identifying_params_cover_output_settings_and_ls_params() -> None:
    llm = LatencyOptimalTTSLLM(branches=4, seed=1, stop=["\n\n"])
    params = llm._identifying_params
    for key in ("model", "draft_model", "speculative_method", "num_speculative_tokens", "branches",
                "temperature", "top_p", "max_tokens", "stop", "seed", "answer_extractor", "early_stop"):
        assert key in params
    ls = llm._get_ls_params()
    assert ls["ls_provider"] == "vllm" and ls["ls_model_name"] == "latts-tiny-arith"
    assert ls["ls_stop"] == ["\n\n"] and ls["ls_temperature"] == 0.8
    assert llm._get_ls_params(model="other")["ls_model_name"] == "other"


def test_every_setting_is_in_the_cache_key_or_excluded_on_purpose() -> None:
    # The key is derived from the fields: a new setting is in it unless NOT_IDENTIFYING names
    # it (with the reason in its comment), and every value is plain JSON (a stable cache key).
    import json

    from langchain_latts.settings import TTSSettings

    params = LatencyOptimalTTSLLM(verifier=lambda question, text: 1.0, quorum="auto")._identifying_params
    assert set(TTSSettings.model_fields) - set(params) == set(LatencyOptimalTTSLLM.NOT_IDENTIFYING)
    assert params["quorum"] == "auto" and isinstance(params["verifier"], str)
    json.dumps(params)  # no callables, paths or secrets
    assert LatencyOptimalTTSLLM(seed=3)._identifying_params == LatencyOptimalTTSLLM(seed=3)._identifying_params


def test_greedy_runs_one_branch() -> None:
    # Greedy branches would be identical: one runs, whatever `branches` says.
    assert LatencyOptimalTTSLLM(temperature=0, branches=8).effective_branches == 1
    assert LatencyOptimalTTSLLM(temperature=0.7, branches=8).effective_branches == 8


def test_constructor_starts_nothing() -> None:
    from langchain_latts.engines.registry import registered

    before = registered.engines()
    LatencyOptimalTTSLLM(branches=3)
    assert registered.engines() == before


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf")])
def test_bad_deadlines(value: float) -> None:
    pattern = r"deadline_s must be a finite number of seconds > 0 \(or None for no deadline\), got .*\. Use e\.g\."
    with pytest.raises(LattsValueError, match=pattern):
        LatencyOptimalTTSLLM(deadline_s=value)
    with pytest.raises(LattsValueError, match=pattern):  # per call too, before any engine starts
        LatencyOptimalTTSLLM().invoke("Compute 1 + 2 + 3.", deadline_s=value)


def test_on_deadline_choices() -> None:
    assert LatencyOptimalTTSLLM(on_deadline="raise").on_deadline == "raise"
    with pytest.raises(ValueError, match="on_deadline"):
        LatencyOptimalTTSLLM(on_deadline="ignore")


def test_unset_sampling_settings_take_the_models_generation_config(tmp_path: Path) -> None:
    import json

    from langchain_latts.settings import generation_defaults

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "generation_config.json").write_text(json.dumps(
        {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0, "do_sample": True}))
    assert generation_defaults(str(tmp_path)) == {"temperature": 0.6, "top_p": 0.95, "top_k": 20}
    llm = LatencyOptimalTTSLLM(model=str(tmp_path))
    assert (llm.temperature, llm.top_p, llm.top_k, llm.min_p) == (0.6, 0.95, 20, None)
    given = LatencyOptimalTTSLLM(model=str(tmp_path), temperature=1.0, top_k=5)  # what the user sets wins
    assert (given.temperature, given.top_p, given.top_k) == (1.0, 0.95, 5)
    assert given._settings_for_call(None, {"seed": 1}).top_k == 5
    (tmp_path / "generation_config.json").write_text(json.dumps({"do_sample": False, "temperature": 0.7}))
    assert LatencyOptimalTTSLLM(model=str(tmp_path)).temperature == 0.0, "do_sample false: greedy"
    # The built-in pair keeps the package's defaults; a model without a config file too.
    assert LatencyOptimalTTSLLM().temperature == 0.8 and LatencyOptimalTTSLLM().top_k is None
    assert generation_defaults("/no/such/model") == {}


def test_top_k_and_min_p_reach_the_request_and_the_fleet_body() -> None:
    from langchain_latts.engines.base import BranchRequest
    from langchain_latts.engines.fleet_protocol import completion_body

    body = completion_body("m", BranchRequest(prompt_token_ids=(1,), max_tokens=4, top_k=20, min_p=0.05), [],
                           request_id="r")
    assert body["top_k"] == 20 and body["min_p"] == 0.05
    plain = completion_body("m", BranchRequest(prompt_token_ids=(1,), max_tokens=4), [], request_id="r")
    assert "top_k" not in plain and "min_p" not in plain


#: Every setting checked by a range alone (pydantic ``Field`` bounds), a value out of range
#: and the whole message the error contract promises for it.
RANGE_ERRORS: dict[str, tuple[object, str]] = {
    "max_branches": (0, "max_branches must be >= 1, got 0. Use e.g. max_branches=16."),
    "temperature": (-0.1, "temperature must be a finite number >= 0, got -0.1. Use e.g. 0.8."),
    "top_p": (1.5, "top_p must be in (0, 1], got 1.5. Use 1.0 for no nucleus cut."),
    "min_p": (1.0, "min_p must be in [0, 1), or None for no cut, got 1.0. Use e.g. min_p=0.05, or None."),
    "max_tokens": (0, "max_tokens must be >= 1, got 0. Use e.g. 512, or None for the context left after the prompt."),
    "early_stop_threshold": (0.5, "early_stop_threshold must be in (0.5, 1), got 0.5. Use e.g. 0.95 (higher "
                                  "stops later and is safer)."),
    "prune_threshold": (0.0, "prune_threshold must be in (0, 1], got 0.0. Scores lie in [0, 1]; e.g. "
                             "prune_threshold=0.5 aborts a branch with a wrong step."),
    "confidence_keep": (2.0, "confidence_keep must be in (0, 1], got 2.0. e.g. confidence_keep=0.25 keeps the "
                             "most confident quarter of the branches."),
    "max_respawns": (-1, "max_respawns must be >= 0 or None, got -1. None means no limit."),
    "token_budget": (0, "token_budget must be >= 1 or None, got 0. None means no limit."),
    "deadline_s": (float("inf"), "deadline_s must be a finite number of seconds > 0 (or None for no deadline), "
                                 "got inf. Use e.g. deadline_s=2.0, or deadline_s=None."),
    "max_model_len": (0, "max_model_len must be >= 1 (or None for vLLM's default), got 0. Use e.g. "
                         "max_model_len=4096, or None."),
    "max_num_seqs": (-3, "max_num_seqs must be >= 1 (or None for vLLM's default), got -3. Use e.g. "
                         "max_num_seqs=64, or None."),
    "kv_cache_gib": (float("nan"), "kv_cache_gib must be a finite number of GiB > 0 (or None), got nan. Use e.g. "
                                   "kv_cache_gib=1.0, or None for the platform's default."),
    "gpu_memory_utilization": (1.01, "gpu_memory_utilization must be in (0, 1] (or None), got 1.01. Use e.g. "
                                     "gpu_memory_utilization=0.45 to fit two engines on one GPU."),
}


@pytest.mark.parametrize("name", sorted(RANGE_ERRORS))
def test_range_settings_keep_the_error_contract(name: str) -> None:
    """Plain ranges are pydantic ``Field`` bounds; the message is the contract's, whole,
    at construction and per call alike."""
    value, message = RANGE_ERRORS[name]
    with pytest.raises(LattsValueError) as built:
        LatencyOptimalTTSLLM(**{name: value})
    assert str(built.value) == message
    with pytest.raises(LattsValueError) as called:
        LatencyOptimalTTSLLM().invoke("Compute 1 + 2.", **{name: value})
    assert str(called.value) == message


def test_every_range_setting_has_its_message_pinned() -> None:
    """A new range-only setting must be added to RANGE_ERRORS (its message is the contract)."""
    from langchain_latts.settings import TTSSettings

    ranged = {name for name, field in TTSSettings.model_fields.items()
              if isinstance(field.json_schema_extra, dict) and "must" in field.json_schema_extra}
    assert ranged == set(RANGE_ERRORS)


def test_none_passes_an_optional_range() -> None:
    llm = LatencyOptimalTTSLLM(deadline_s=None, kv_cache_gib=None, min_p=None, token_budget=None)
    assert (llm.deadline_s, llm.kv_cache_gib, llm.min_p, llm.token_budget) == (None, None, None, None)


def test_the_engine_reads_only_engine_settings() -> None:
    """ENGINE_OPTIONS (the one list of settings that choose the engine) covers every setting
    ``engine_config`` reads, apart from the two ``num_speculative_tokens="auto"`` prices
    with, which a call takes from the model (next test)."""
    from langchain_latts.planner.engine_config import engine_config
    from langchain_latts.settings import ENGINE_OPTIONS, TTSSettings

    read: set[str] = set()
    counting = [False]  # validation reads every setting it checks: only engine_config's reads count

    class Recording(TTSSettings):
        def __getattribute__(self, name: str) -> object:
            if counting[0] and name in TTSSettings.model_fields:
                read.add(name)
            return super().__getattribute__(name)

    for values in ({}, {"num_speculative_tokens": 3, "speculative_method": "ngram"},
                   {"model": str(DEFAULT_TARGET), "draft_model": str(DEFAULT_DRAFT), "num_speculative_tokens": 2},
                   {"reasoning_parser": "qwen3", "engine_kwargs": {"seed": 1}},
                   {"endpoints": ["http://127.0.0.1:8001/v1"], "model": "served"}):
        settings = Recording(**values)
        counting[0] = True
        engine_config(settings)
        counting[0] = False
    assert read - set(ENGINE_OPTIONS) <= {"max_tokens", "max_branches"}
    assert set(ENGINE_OPTIONS) <= read


def test_per_call_planning_settings_keep_the_models_engine() -> None:
    """A per-call max_tokens or max_branches never moves the call to another engine (they
    feed ``num_speculative_tokens="auto"``, which is the model's choice, not the call's)."""
    llm = LatencyOptimalTTSLLM()
    call = llm._prepare([HumanMessage("Compute 1 + 2.")], None, {"max_tokens": 7, "max_branches": 2})
    assert call.engine is llm.engine
    assert call.settings.max_tokens == 7
    moved = llm._prepare([HumanMessage("Compute 1 + 2.")], None, {"dtype": "float32"})
    assert moved.engine.config.dtype == "float32" and moved.engine is not llm.engine


def test_output_budget_is_max_tokens_within_the_room() -> None:
    from langchain_latts.settings import TTSSettings

    assert TTSSettings().output_budget(700) == 700  # unset: all the room the prompt leaves
    assert TTSSettings(max_tokens=64).output_budget(700) == 64
    assert TTSSettings(max_tokens=64).output_budget(20) == 20


def test_the_cli_reports_a_bad_setting_in_one_line(tmp_path: Path) -> None:
    """`latts` turns a LattsValueError into one line on stderr and exit code 2 (no traceback)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "from langchain_latts.cli import main; main()", "profile",
                           "--settings", '{"max_tokens": 0}'], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == ("latts: max_tokens must be >= 1, got 0. Use e.g. 512, or None for the context "
                                   "left after the prompt.")
