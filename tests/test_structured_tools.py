"""Structured output and tool calling, pure parts: schemas, grammars, parsing (vLLM's own hermes
parser on canned model text included) and the vote over parsed results; bad input."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel
from typing_extensions import TypedDict

from langchain_latts import LatencyOptimalTTSLLM, LattsValueError
from langchain_latts.engines.base import BranchRequest
from langchain_latts.structured import (
    answer_grammar,
    canonical_json,
    json_instruction,
    json_schema_of,
    last_json_object,
    object_extractor,
)
from langchain_latts.tools import (
    call_grammar,
    call_vote_key,
    calls_from_key,
    constrained_calls,
    parser_calls,
    resolve_tool_choice,
    tool_extractor,
    tool_specs,
)
from langchain_latts.tts.answers import extract_hash
from langchain_latts.tts.branches import run_branches

from .fakes import ScriptedEngine


class Total(BaseModel):
    total: int


class Pair(TypedDict):
    a: int
    b: str


@tool
def calculator(expression: str) -> str:
    """Evaluate integers joined by + and -."""
    return expression


def adder(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


SPECS = tool_specs([calculator, adder])
NAMES = ["calculator", "adder"]


def test_schemas_of_every_kind_and_the_instruction() -> None:
    assert json_schema_of(Total)["properties"]["total"]["type"] == "integer"
    assert set(json_schema_of(Pair)["properties"]) == {"a", "b"}
    raw = {"type": "object", "properties": {"x": {"type": "number"}}}
    assert json_schema_of(raw) is raw
    assert json_instruction(json_schema_of(Total)) == 'Respond in JSON with key "total".'  # the built-in format
    assert json_instruction(json_schema_of(Pair)).startswith("Respond in JSON matching this schema: {")


def test_the_grammar_allows_bounded_reasoning_then_the_object_without_free_whitespace() -> None:
    import xgrammar

    grammar = answer_grammar(json_schema_of(Total), 40)
    assert grammar.startswith("root ::= latts_reasoning latts_object") and "{0,38}" in grammar
    xgrammar.Grammar.from_ebnf(grammar)  # vLLM's backend library parses it
    assert 'latts_reasoning ::= ""' in answer_grammar(json_schema_of(Total), 0)


def test_a_schema_that_cannot_compile_is_a_named_error() -> None:
    with pytest.raises(LattsValueError, match=r"^schema must be a JSON schema vLLM's structured outputs can compile"):
        answer_grammar({"type": "object", "properties": {"x": {"type": "no-such-type"}}})
    with pytest.raises(LattsValueError, match=r"^schema must be a JSON schema vLLM's structured outputs can compile"):
        LatencyOptimalTTSLLM().with_structured_output({"type": "object", "properties": {"x": {"type": 7}}})


def test_objects_are_read_from_the_last_line_and_voted_canonically() -> None:
    assert last_json_object('48 + 17 = 65\n{"total": 65}') == {"total": 65}
    assert last_json_object('steps {"x": 1}\nno object here') == {"x": 1}
    assert last_json_object('{"total": 6') is None  # cut short
    assert canonical_json({"b": 1.0, "a": [2.50, "x"]}) == '{"a":[2.5,"x"],"b":1}'
    vote = object_extractor(json_schema_of(Total))
    assert vote('1 + 2 = 3\n{"total": 3.0}') == vote('{"total": 3}') == '{"total":3}'
    assert vote('{"sum": 3}') is None  # a required key is missing: no vote


def test_tool_specs_from_tools_functions_models_and_dicts() -> None:
    assert [s["function"]["name"] for s in SPECS] == NAMES
    assert SPECS[1]["function"]["parameters"]["properties"] == {"a": {"type": "integer"}, "b": {"type": "integer"}}
    as_dict = tool_specs([SPECS[0]])
    assert as_dict[0]["function"]["name"] == "calculator"
    assert tool_specs([Total])[0]["function"]["name"] == "Total"


def test_a_tool_with_an_unsupported_argument_type_is_a_named_error() -> None:
    class Opaque:
        pass

    def takes_opaque(thing: Opaque) -> str:
        """Uses a thing."""
        return ""

    with pytest.raises(LattsValueError, match=r"^tools\[0\] cannot be turned into a tool schema"):
        tool_specs([takes_opaque])
    bad = {"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                                                                        "properties": {"x": {"type": "blob"}}}}}
    with pytest.raises(LattsValueError, match=r"^tools must have argument schemas vLLM's structured outputs"):
        call_grammar(tool_specs([bad]), "required")


@pytest.mark.parametrize(("choice", "expected"), [(None, "auto"), ("auto", "auto"), ("any", "required"),
                                                  ("required", "required"), ("none", "none"), ("adder", "adder"),
                                                  ({"type": "function", "function": {"name": "adder"}}, "adder")])
def test_tool_choice_forms(choice: Any, expected: str) -> None:
    assert resolve_tool_choice(choice, NAMES) == expected


def test_tool_choice_naming_an_unknown_tool_is_a_named_error() -> None:
    with pytest.raises(LattsValueError, match=r"^tool_choice must be .* one of the tools \(calculator, adder\), "
                                              r"got 'multiply'"):
        resolve_tool_choice("multiply", NAMES)
    with pytest.raises(LattsValueError, match=r"^tool_choice must be"):
        LatencyOptimalTTSLLM().bind_tools([calculator], tool_choice="multiply")


CANNED = '<tool_call>{"name": "calculator", "arguments": {"expression": "12 + 35 - 7"}}</tool_call>'


def test_vllms_hermes_parser_reads_canned_model_text() -> None:
    read = parser_calls("hermes", SPECS)
    assert read(CANNED) == [{"name": "calculator", "arguments": {"expression": "12 + 35 - 7"}}]
    assert read("12 + 35 = 47\n#### 47") is None
    assert read('<tool_call>{"name": "calcul') is None  # malformed: no call, and nothing printed


def test_an_unknown_parser_is_a_named_error() -> None:
    with pytest.raises(LattsValueError, match=r"^tool_parser is not one of vLLM's tool-call parsers, got 'nope'.*"
                                              r"hermes"):
        parser_calls("nope", SPECS)


def test_call_votes_are_canonical_and_unknown_tools_do_not_vote() -> None:
    a = call_vote_key([{"name": "adder", "arguments": {"b": 2, "a": 1.0}}], NAMES)
    b = call_vote_key([{"name": "adder", "arguments": {"a": 1, "b": 2}}], NAMES)
    assert a == b == 'call:[{"arguments":{"a":1,"b":2},"name":"adder"}]'
    assert call_vote_key([{"name": "multiply", "arguments": {}}], NAMES) is None  # matches no tool
    assert call_vote_key([{"name": "adder", "arguments": "a=1"}], NAMES) is None
    calls = calls_from_key(a)  # type: ignore[arg-type]
    assert calls[0]["name"] == "adder" and calls[0]["args"] == {"a": 1, "b": 2} and calls[0]["id"].startswith("call_")


def test_the_branch_vote_under_each_tool_choice() -> None:
    auto = tool_extractor(constrained_calls, NAMES, "auto", extract_hash)
    assert auto(CANNED).startswith("call:") and auto("#### 40") == "40"
    assert auto('<tool_call>{"name": "multiply", "arguments": {}}</tool_call>') is None
    required = tool_extractor(constrained_calls, NAMES, "required", extract_hash)
    assert required("#### 40") is None and required(CANNED).startswith("call:")
    named = tool_extractor(constrained_calls, NAMES, "adder", extract_hash)
    assert named(CANNED) is None  # a call, but not to the named tool
    none = tool_extractor(constrained_calls, NAMES, "none", extract_hash)
    assert none(CANNED) is None and none("#### 40") == "40"


def test_the_constrained_grammar_names_only_the_allowed_tools() -> None:
    import xgrammar

    forced = call_grammar(SPECS, "adder")
    assert '"adder"' in forced.replace('\\"', '"') and "calculator" not in forced
    assert "latts_text" in call_grammar(SPECS, "auto") and "latts_text" not in call_grammar(SPECS, "required")
    xgrammar.Grammar.from_ebnf(call_grammar(SPECS, "auto"))


async def test_calls_and_answers_compete_in_one_vote() -> None:
    adder_call = '<tool_call>{"name": "adder", "arguments": {"a": 1, "b": 2}}</tool_call>'
    engine = ScriptedEngine([[CANNED], [adder_call], [adder_call.replace(" ", "")], ["#### ", "3"]])
    requests = [BranchRequest(prompt_token_ids=(1,), max_tokens=8, seed=i) for i in range(4)]
    run = await run_branches(engine, requests, call_id="c", started=time.monotonic(), early_stop=False,
                             extractor=tool_extractor(constrained_calls, NAMES, "auto", extract_hash))
    assert run.answer == 'call:[{"arguments":{"a":1,"b":2},"name":"adder"}]'  # 2 votes beat 1 and 1
    assert run.vote.counts[run.answer] == 2


def test_the_winning_call_becomes_tool_calls_and_output_matching_no_tool_does_not_vote(engine_for) -> None:  # type: ignore[no-untyped-def]
    junk = '<tool_call>{"name": "calcul'
    engine_for(ScriptedEngine([[junk], [CANNED], [CANNED]]))
    message = LatencyOptimalTTSLLM(branches=3, seed=0, early_stop=False).bind_tools([calculator]).invoke("q")
    assert isinstance(message, AIMessage) and message.content == ""
    assert message.tool_calls[0]["name"] == "calculator"
    assert message.tool_calls[0]["args"] == {"expression": "12 + 35 - 7"}
    tts = message.response_metadata["tts"]
    assert tts["branch_answers"][0] is None and message.response_metadata["finish_reason"] == "tool_calls"


def test_structured_output_returns_the_voted_object_parsed(engine_for) -> None:  # type: ignore[no-untyped-def]
    engine = engine_for(ScriptedEngine([['1 + 2 = 3\n{"total": 3}'], ['{"total": 4}'], ['{"total": 3.0}'],
                                        ["no object"]]))
    llm = LatencyOptimalTTSLLM(branches=4, seed=0, early_stop=False)
    assert llm.with_structured_output(Total).invoke("Compute 1 + 2.") == Total(total=3)
    assert engine.requests[0].grammar is not None and "latts_object" in engine.requests[0].grammar
    raw = llm.with_structured_output(Pair, include_raw=True).invoke("q")
    assert raw["parsed"] is None and raw["parsing_error"] is not None  # no branch has both keys
    assert raw["raw"].response_metadata["tts"]["branch_answers"] == [None, None, None, None]
    assert llm.with_structured_output(None, method="json_mode").invoke("q") == {"total": 3}


def test_a_tool_history_is_rendered_with_its_calls(engine_for) -> None:  # type: ignore[no-untyped-def]
    seen: list[Any] = []
    engine = engine_for(ScriptedEngine([["#### ", "40"]]))
    engine.render_prompt = lambda messages, tools=None, template_kwargs=None: seen.append((messages, tools)) or [1, 2, 3]  # type: ignore[method-assign]
    call = {"name": "calculator", "args": {"expression": "12 + 35 - 7"}, "id": "call_1"}
    history = [HumanMessage("Compute 12 + 35 - 7."),
               AIMessage(content=[{"type": "tool_use", "id": "call_1", "name": "calculator", "input": {}}],
                         tool_calls=[call]),
               ToolMessage("40", tool_call_id="call_1")]
    LatencyOptimalTTSLLM(branches=1, seed=0).bind_tools([calculator]).invoke(history)
    messages, tools = seen[0]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert json.loads(messages[1]["tool_calls"][0]["function"]["arguments"]) == {"expression": "12 + 35 - 7"}
    assert messages[2]["tool_call_id"] == "call_1" and tools[0]["function"]["name"] == "calculator"


def test_function_calling_structured_output_is_the_voted_tool_call_parsed(engine_for) -> None:  # type: ignore[no-untyped-def]
    call = '<tool_call>{"name": "Total", "arguments": {"total": 3}}</tool_call>'
    other = '<tool_call>{"name": "Total", "arguments": {"total": 4}}</tool_call>'
    engine = engine_for(ScriptedEngine([[call], [other], [call]]))
    llm = LatencyOptimalTTSLLM(branches=3, seed=0, early_stop=False)
    assert llm.with_structured_output(Total, method="function_calling").invoke("Compute 1 + 2.") == Total(total=3)
    raw = llm.with_structured_output(Total, method="function_calling", include_raw=True).invoke("q")
    assert raw["parsed"] == Total(total=3) and raw["raw"].tool_calls[0]["args"] == {"total": 3}
    # Under the call grammar, tool_choice names the schema's tool: the grammar forces a call to it.
    constrained = LatencyOptimalTTSLLM(branches=3, seed=0, early_stop=False, tool_calling="constrained")
    assert constrained.with_structured_output(Total, method="function_calling").invoke("q") == Total(total=3)
    grammar = engine.requests[-1].grammar
    assert grammar is not None and "Total" in grammar


def test_tool_choice_none_shows_no_tools_and_answers_in_text(engine_for) -> None:  # type: ignore[no-untyped-def]
    seen: list[Any] = []
    engine = engine_for(ScriptedEngine([[CANNED], ["#### ", "40"], ["#### ", "40"]]))
    engine.render_prompt = lambda messages, tools=None, template_kwargs=None: seen.append(tools) or [1, 2, 3]  # type: ignore[method-assign]
    message = LatencyOptimalTTSLLM(branches=3, seed=0, early_stop=False).bind_tools(
        [calculator], tool_choice="none").invoke("Compute 12 + 35 - 7.")
    assert seen == [None], "the template is not shown the tools"
    assert engine.requests[0].grammar is None, "no call grammar"
    assert message.tool_calls == [] and message.response_metadata["tts"]["answer"] == "40"
