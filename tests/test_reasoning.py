"""Reasoning models: vLLM's reasoning parsers split a branch's reasoning from its answer,
and only the answer is extracted, voted on and returned (the reasoning rides along as a
LangChain ``reasoning`` content block)."""

from __future__ import annotations

from typing import Any

import pytest
from transformers import AutoTokenizer

from langchain_latts import LatencyOptimalTTSLLM, LattsValueError
from langchain_latts.models import DEFAULT_TARGET
from langchain_latts.planner.engine_config import engine_config
from langchain_latts.tts.reasoning import reasoning_splitter, split_answer

from .fakes import ScriptedEngine


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(DEFAULT_TARGET)


def test_vllm_s_qwen3_parser_splits_reasoning_from_the_answer(tokenizer: Any) -> None:
    split = reasoning_splitter("qwen3", tokenizer)
    assert split("<think>7 + 1 is 8, no: 9</think>\n\nThe answer is 9.") == ("7 + 1 is 8, no: 9", "\n\nThe answer is 9.")
    assert split_answer("#### 5", None) == (None, "#### 5"), "without a parser the whole text is the answer"
    assert reasoning_splitter("qwen3", tokenizer) is split, "one splitter per parser and tokenizer"


def test_an_unknown_or_unfitting_parser_is_refused_by_name(tokenizer: Any) -> None:
    with pytest.raises(LattsValueError, match=r"reasoning_parser must be one of vLLM's reasoning parsers: .*qwen3"):
        reasoning_splitter("qwen9", tokenizer)
    # DeepSeek-R1's parser needs <think> tokens in the vocabulary, which the built-in model has not.
    with pytest.raises(LattsValueError, match=r"reasoning_parser does not fit this model's tokenizer"):
        reasoning_splitter("deepseek_r1", tokenizer)


def test_only_the_answer_votes_and_the_reasoning_becomes_a_content_block(engine_for: Any, tokenizer: Any) -> None:
    # The numbers in the reasoning (7, 3) would win a last_number vote; the answers say 5.
    script = ["<think>", "7 ", "or ", "3", "</think>", "#### ", "5"]
    engine = engine_for(ScriptedEngine([script] * 3, step_s=0.001))
    engine._tokenizer = tokenizer
    llm = LatencyOptimalTTSLLM(branches=3, seed=0, reasoning_parser="qwen3", answer_extractor="last_number",
                               chat_template_kwargs={"enable_thinking": True})
    message = llm.invoke("q")
    assert message.response_metadata["tts"]["answer"] == "5"
    assert message.content == "#### 5"
    assert message.additional_kwargs["reasoning_content"] == "7 or 3"
    assert {"type": "reasoning", "reasoning": "7 or 3"} in [
        {k: b[k] for k in ("type", "reasoning") if k in b} for b in message.content_blocks]
    assert engine.template_kwargs == {"enable_thinking": True}, "the chat template's options reach the prompt"
    chunks = list(llm.stream("q"))
    assert sum(chunks[1:], chunks[0]).additional_kwargs["reasoning_content"] == "7 or 3"


def test_stop_at_answer_never_cuts_inside_the_reasoning(engine_for: Any, tokenizer: Any) -> None:
    # "The answer is 4." inside the reasoning is not the answer; the one after it is.
    script = ["<think>", "The ", "answer ", "is ", "4. ", "Hmm ", "</think>", "The ", "answer ", "is ", "6. ", "x ",
              "y ", "z"]
    engine = engine_for(ScriptedEngine([script], step_s=0.001))
    engine._tokenizer = tokenizer
    llm = LatencyOptimalTTSLLM(branches=1, seed=0, reasoning_parser="qwen3", answer_extractor="stated",
                               stop_at_answer=True)
    tts = llm.invoke("q").response_metadata["tts"]
    assert tts["answer"] == "6"
    assert tts["branch_tokens"] == [11], "cut after the answer's sentence, not after the reasoning's"


def test_the_engine_applies_grammars_after_the_reasoning_as_vllm_does() -> None:
    from langchain_latts.engines.vllm_local import engine_args
    from langchain_latts.settings import TTSSettings

    config = engine_config(TTSSettings(reasoning_parser="qwen3", num_speculative_tokens=0))
    assert engine_args(config, cpu=True)["reasoning_parser"] == "qwen3"
    fleet = engine_config(TTSSettings(reasoning_parser="qwen3", endpoints=["http://127.0.0.1:9/v1"]))
    assert "reasoning_parser" not in fleet.extra_json, "servers parse as they were started; the client splits"
    assert "reasoning_parser" not in engine_args(engine_config(TTSSettings(num_speculative_tokens=0)), cpu=True)


def test_the_model_profile_says_what_it_supports() -> None:
    plain = LatencyOptimalTTSLLM().profile
    assert plain is not None and plain["tool_calling"] and plain["structured_output"]
    assert plain["reasoning_output"] is False and plain["image_inputs"] is False
    assert plain["max_input_tokens"] == 1024, "the built-in model's config.json: max_position_embeddings"
    thinking = LatencyOptimalTTSLLM(reasoning_parser="qwen3", max_model_len=4096, max_tokens=2048).profile
    assert thinking is not None and thinking["reasoning_output"] is True
    assert thinking["max_input_tokens"] == 4096 and thinking["max_output_tokens"] == 2048
