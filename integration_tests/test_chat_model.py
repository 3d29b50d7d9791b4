"""LatencyOptimalTTSLLM on the real vLLM engine with the shipped tiny model."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate

from langchain_latts import LatencyOptimalTTSLLM, LattsValueError
from langchain_latts.parsers import VotedAnswerParser
from langchain_latts.tasks.arithmetic import generate_problems

from .conftest import BASE

EASY = "Compute 3 + 4 - 2."  # = 5, a level-1 problem


def test_branches_run_in_parallel_in_one_engine(llm: LatencyOptimalTTSLLM, in_flight) -> None:  # type: ignore[no-untyped-def]
    engine = llm.engine
    with in_flight(engine.num_unfinished_requests) as sampler:
        message = llm.invoke(EASY, branches=8, early_stop=False)
    # All 8 branches were in the engine at the same time (one request each) ...
    assert max(sampler.samples) == 8
    tts = message.response_metadata["tts"]
    assert tts["branches_launched"] == 8 and tts["branches_finished"] == 8
    # ... and nothing is left behind.
    assert engine.num_unfinished_requests() == 0


def test_answer_votes_and_metadata(llm: LatencyOptimalTTSLLM) -> None:
    message = llm.invoke(EASY, early_stop=False)
    meta = message.response_metadata
    tts = meta["tts"]
    assert meta["model_name"] == "latts-tiny-arith" and meta["model_provider"] == "vllm"
    assert meta["finish_reason"] == "stop"
    assert tts["answer"] == "5"  # an easy problem: the vote gets it right
    # All 8 ran to the end; every branch with an answer voted, and the counts add up.
    assert tts["branches_launched"] == tts["branches_finished"] == 8 and tts["branches_aborted"] == 0
    assert sum(tts["votes"].values()) == sum(a is not None for a in tts["branch_answers"])
    assert tts["votes"] == {a: tts["branch_answers"].count(a) for a in tts["votes"]}
    assert 0 < tts["decided_at_s"] <= tts["latency_s"] and tts["engine_start_s"] < 0.1
    # The returned text is the first branch that carries the winning answer.
    assert tts["selected_branch"] == tts["branch_answers"].index("5")
    assert message.content.strip().endswith("#### 5")
    usage = message.usage_metadata
    # One token per character: <|bos|><|user|> + the 18 characters + <|end|><|assistant|>.
    assert usage is not None and usage["input_tokens"] == 2 + len(EASY) + 2
    assert usage["output_tokens"] == sum(tts["branch_tokens"])  # all branches counted
    assert all(n > 0 for n in tts["branch_tokens"])
    assert tts["speculative"] is None  # no speculation by default


def test_sync_async_and_stream_give_the_same_seeded_answer(llm: LatencyOptimalTTSLLM) -> None:
    first = llm.invoke(EASY, early_stop=False)
    second = asyncio.run(llm.ainvoke(EASY, early_stop=False))
    chunks = list(llm.stream(EASY, early_stop=False))
    assert first.content == second.content
    streamed = chunks[0]
    for chunk in chunks[1:]:
        streamed = streamed + chunk
    assert streamed.content == first.content
    assert streamed.usage_metadata == first.usage_metadata
    assert chunks[-1].chunk_position == "last" and streamed.response_metadata["model_name"] == "latts-tiny-arith"


async def test_astream_and_abatch(llm: LatencyOptimalTTSLLM) -> None:
    chunks = [c async for c in llm.astream(EASY)]
    assert chunks[-1].usage_metadata is not None and "".join(str(c.content) for c in chunks).strip()
    problems = generate_problems(4, seed=99, levels=[1])
    messages = await llm.abatch([p.question for p in problems])
    assert len(messages) == 4
    assert all(m.response_metadata["tts"]["branches_launched"] == 8 for m in messages)


def test_works_inside_a_running_event_loop(llm: LatencyOptimalTTSLLM) -> None:
    # A notebook cell calls the sync API while an event loop is running.
    async def notebook_cell() -> str:
        return str(llm.invoke(EASY).content)

    assert asyncio.run(notebook_cell()).strip().endswith("#### 5")


def test_batch_each_call_votes_over_its_own_branches(llm: LatencyOptimalTTSLLM) -> None:
    problems = generate_problems(6, seed=7, levels=[1])
    messages = llm.batch([p.question for p in problems])
    answers = [m.response_metadata["tts"]["answer"] for m in messages]
    correct = sum(a == str(p.answer) for a, p in zip(answers, problems))
    assert correct >= 5  # level-1 problems; each message answers its own question


def test_chain_with_prompt_and_parser(llm: LatencyOptimalTTSLLM) -> None:
    # The tiny model was trained on user turns only: no system message here.
    chain = ChatPromptTemplate.from_messages([("human", "Compute {x}.")]) | llm | VotedAnswerParser()
    result = chain.invoke({"x": "3 + 4 - 2"})
    assert result.answer == "5" and result.votes["5"] >= 1 and result.latency_s > 0


def test_consecutive_same_role_messages_are_merged(llm: LatencyOptimalTTSLLM) -> None:
    from langchain_latts._messages import to_chat_messages

    messages = [SystemMessage("a"), SystemMessage("b"), HumanMessage("Compute 3 + 4"), HumanMessage("- 2.")]
    chat = to_chat_messages(messages)
    assert [m["role"] for m in chat] == ["system", "user"]
    assert chat[0]["content"] == "a\nb" and chat[1]["content"] == "Compute 3 + 4\n- 2."
    # The engine renders the merged conversation: the same prompt tokens as writing it merged.
    assert llm.engine.render_prompt(chat) == llm.engine.render_prompt(
        [{"role": "system", "content": "a\nb"}, {"role": "user", "content": "Compute 3 + 4\n- 2."}])
    assert llm.invoke(messages).response_metadata["tts"]["branches_launched"] == 8


def test_stop_sequences_per_call_and_in_constructor(llm: LatencyOptimalTTSLLM) -> None:
    message = llm.invoke(EASY, stop=["="], early_stop=False)
    assert "=" not in message.content  # the stop string ends every branch
    constructed = LatencyOptimalTTSLLM(branches=2, stop=["="], **BASE)
    assert "=" not in constructed.invoke(EASY).content
    # A call without stop keeps the constructor's stop (not wiped).
    assert constructed._settings_for_call(None, {}).stop == ["="]


def test_greedy_runs_a_single_branch(llm: LatencyOptimalTTSLLM) -> None:
    message = llm.invoke(EASY, temperature=0.0)
    assert message.response_metadata["tts"]["branches_launched"] == 1


def test_prompt_longer_than_the_context_is_a_clear_error(llm: LatencyOptimalTTSLLM) -> None:
    with pytest.raises(LattsValueError, match=r"messages must fit the model's context of \d+ tokens"):
        llm.invoke("1 + " * 2000)


def test_extractor_callable(llm: LatencyOptimalTTSLLM) -> None:
    # Reads the first operand of the first step ("3 + 4 = 7" -> "3"), never the answer 5:
    # the votes can only come from this extractor.
    message = llm.invoke(EASY, early_stop=False, answer_extractor=lambda text: text.split(" ")[0] or None)
    tts = message.response_metadata["tts"]
    assert tts["votes"].get("3", 0) >= 6 and "5" not in tts["votes"]


def test_text_the_tokenizer_cannot_encode_is_refused(llm: LatencyOptimalTTSLLM) -> None:
    with pytest.raises(LattsValueError, match="messages contain characters this model's tokenizer cannot encode, "
                                              "got '\u2212\U0001f642'"):
        llm.invoke("Compute 12 + 35 \u2212 7 \U0001f642.")


def test_the_built_in_model_answers_in_json_when_asked(llm: LatencyOptimalTTSLLM) -> None:
    import json

    message = llm.invoke([SystemMessage('Respond in JSON with key "total".'), HumanMessage("What is 12+35-7?")],
                         early_stop=False)
    assert json.loads(str(message.content).strip().splitlines()[-1]) == {"total": 40}
    assert message.response_metadata["tts"]["answer"] == "40"
