"""Message shaping in, and ChatResult / stream chunks out."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage

from langchain_latts._messages import build_chat_result, result_to_chunks, select_branch, to_chat_messages
from langchain_latts.engines.base import SpecDecodeStats
from langchain_latts.errors import LattsValueError
from langchain_latts.tts.branches import Branch, BranchRun
from langchain_latts.tts.voting import majority_vote


def test_runs_of_one_role_are_merged() -> None:
    shaped = to_chat_messages(
        [SystemMessage("a"), SystemMessage("b"), HumanMessage("q1"), HumanMessage("q2"), AIMessage("r")]
    )
    assert [m["role"] for m in shaped] == ["system", "user", "assistant"]
    assert shaped[0]["content"] == "a\nb"
    assert shaped[1]["content"] == "q1\nq2"


def test_text_blocks_are_accepted() -> None:
    shaped = to_chat_messages([HumanMessage(content=[{"type": "text", "text": "hi"}])])
    assert shaped == [{"role": "user", "content": "hi"}]


def test_empty_message_list_is_a_clear_error() -> None:
    with pytest.raises(LattsValueError, match=r"messages must hold at least one message, got \[\]"):
        to_chat_messages([])


def test_non_text_blocks_are_a_clear_error() -> None:
    image = HumanMessage(content=[{"type": "image_url", "image_url": {"url": "http://x/y.png"}}])
    with pytest.raises(LattsValueError, match=r"messages\[1\]\.content block type is not supported: this model reads text only, got 'image_url'"):
        to_chat_messages([HumanMessage("look"), image])


def _run(answers: list[str | None], finished: list[bool], tokens: list[int]) -> BranchRun:
    branches = [
        Branch(index=i, request_id=f"r-{i}", text=f"text {i}", num_tokens=t, finished=f,
               finish_reason="stop" if f else None, answer=a if f else None,
               spec=SpecDecodeStats(2, 8, 6) if f else None)
        for i, (a, f, t) in enumerate(zip(answers, finished, tokens))
    ]
    vote = majority_vote([b.answer for b in branches])
    spec = None
    for b in branches:
        if b.spec:
            spec = b.spec if spec is None else spec + b.spec
    return BranchRun(branches=branches, vote=vote, decided_at_s=1.0, spec=spec)


def test_result_returns_the_first_branch_with_the_winning_answer() -> None:
    run = _run(["4", "5", "5"], [True, True, True], [10, 11, 12])
    result = build_chat_result(run, prompt_tokens=7, model_name="m", latency_s=1.2,
                               speculative={"method": "draft_model", "num_speculative_tokens": 4}, deadline_s=None)
    message = result.generations[0].message
    assert message.content == "text 1"
    # Prompt counted once, output summed over all three branches.
    assert message.usage_metadata == {"input_tokens": 7, "output_tokens": 33, "total_tokens": 40}
    meta = message.response_metadata
    assert meta["model_name"] == "m" and meta["model_provider"] == "vllm" and meta["finish_reason"] == "stop"
    tts = meta["tts"]
    assert tts["votes"] == {"5": 2, "4": 1} and tts["answer"] == "5" and tts["selected_branch"] == 1
    assert tts["branches_launched"] == 3 and tts["branches_finished"] == 3 and tts["branches_aborted"] == 0
    # Three branches of 2 drafts / 8 proposed / 6 accepted: rate 18/24, length 1 + 18/6.
    assert tts["speculative"]["acceptance_rate"] == pytest.approx(0.75)
    assert tts["speculative"]["mean_acceptance_length"] == pytest.approx(4.0)


def test_without_any_finished_branch_the_most_advanced_partial_is_returned() -> None:
    run = _run([None, None, None], [False, False, False], [3, 9, 9])
    assert select_branch(run) == (1, True)  # most tokens, lowest index on a tie
    result = build_chat_result(run, prompt_tokens=1, model_name="m", latency_s=0.5, speculative=None,
                               deadline_s=0.5)
    meta = result.generations[0].message.response_metadata
    assert meta["finish_reason"] == "deadline" and meta["tts"]["partial"] is True
    assert meta["tts"]["branches_aborted"] == 3


def test_no_answer_returns_the_first_finished_branch() -> None:
    run = _run([None, None], [False, True], [5, 4])
    assert select_branch(run) == (1, False)


def test_chunks_sum_to_the_invoke_message() -> None:
    run = _run(["4"], [True], [3])
    result = build_chat_result(run, prompt_tokens=2, model_name="m", latency_s=0.1, speculative=None,
                               deadline_s=None)
    chunks = [c.message for c in result_to_chunks(result)]
    assert chunks[-1].chunk_position == "last"
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert isinstance(total, AIMessageChunk)
    message = result.generations[0].message
    assert total.content == message.content
    assert total.usage_metadata == message.usage_metadata  # not doubled
    assert total.response_metadata["model_name"] == "m"  # not concatenated


def test_characters_the_tokenizer_cannot_encode_are_named() -> None:
    from langchain_latts.engines._prompt import render_chat, unencodable_characters
    from langchain_latts.models.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    # U+2212 (a typographic minus) and an emoji are outside the built-in model's ASCII.
    assert unencodable_characters(tokenizer, "Compute 12 + 35 \u2212 7 \U0001f642.") == ["\u2212", "\U0001f642"]
    with pytest.raises(LattsValueError, match="messages contain characters this model's tokenizer cannot encode, "
                                              "got '\u2212\U0001f642'. The built-in model reads printable ASCII"):
        render_chat(tokenizer, [{"role": "user", "content": "Compute 12 + 35 \u2212 7 \U0001f642."}])
    ids = render_chat(tokenizer, [{"role": "user", "content": "Compute 12 + 35 - 7."}])
    assert tokenizer.decode(ids) == "<|bos|><|user|>Compute 12 + 35 - 7.<|end|><|assistant|>"


def test_tokenizers_without_an_unknown_token_encode_everything() -> None:
    from langchain_latts.engines._prompt import unencodable_characters

    class ByteLevel:  # what a real model's byte-level BPE looks like to the check
        unk_token_id = None

        def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
            return list(text.encode())

    assert unencodable_characters(ByteLevel(), "\u2212 \U0001f642") == []
