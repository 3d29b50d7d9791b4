"""The conversation formats of the built-in model, rendered by the shipped chat template."""

from __future__ import annotations

import random

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from langchain_latts._messages import to_chat_messages
from langchain_latts.models.tokenizer import build_tokenizer
from langchain_latts.tasks.arithmetic import Problem
from langchain_latts.tasks.formats import CALCULATOR_TOOL, FORMATS, make_conversation, parse_tool_calls

PROBLEM = Problem(first=12, terms=(("+", 35), ("-", 7)), text="What is 12+35-7?")  # = 40
TOKENIZER = build_tokenizer()


def _render(messages: list[dict], tools: list[dict] | None = None, **kwargs: object) -> str:
    return TOKENIZER.apply_chat_template(messages, tools=tools, tokenize=False, **kwargs)


def test_plain_and_json_formats_end_in_their_answer_line() -> None:
    plain = make_conversation(PROBLEM, "plain", random.Random(0))
    assert _render(plain.messages) == (
        "<|bos|><|user|>What is 12+35-7?<|end|><|assistant|>12 + 35 = 47\n47 - 7 = 40\n#### 40<|end|>")
    json_conv = make_conversation(PROBLEM, "json", random.Random(0))
    assert json_conv.messages[0]["role"] == "system" and "JSON" in json_conv.messages[0]["content"]
    assert json_conv.messages[-1]["content"].endswith(f'{{"{json_conv.json_key}": 40}}')


def test_tool_conversation_renders_tools_call_and_result() -> None:
    conv = make_conversation(PROBLEM, "tool", random.Random(0))
    assert _render(conv.messages, conv.tools) == (
        "<|bos|><|system|>Tools: calculator(expression)<|end|>"
        "<|user|>What is 12+35-7?<|end|>"
        '<|assistant|><tool_call>{"name": "calculator", "arguments": {"expression": "12 + 35 - 7"}}</tool_call><|end|>'
        "<|tool|>40<|end|>"
        "<|assistant|>#### 40<|end|>")
    # The prompt of the second assistant turn ends right after the tool result.
    assert _render(conv.prompt(1), conv.tools, add_generation_prompt=True).endswith("<|tool|>40<|end|><|assistant|>")


def test_langchain_tool_messages_render_like_the_training_format() -> None:
    # What an agent sends back: the AIMessage with its tool call, then the ToolMessage.
    messages = to_chat_messages([
        SystemMessage("Think step by step."),
        HumanMessage("What is 12+35-7?"),
        AIMessage("", tool_calls=[{"name": "calculator", "args": {"expression": "12 + 35 - 7"}, "id": "c1"}]),
        ToolMessage("40", tool_call_id="c1"),
    ])
    text = _render(messages, [CALCULATOR_TOOL], add_generation_prompt=True)
    assert '<|assistant|><tool_call>{"name": "calculator", "arguments": {"expression": "12 + 35 - 7"}}</tool_call>' in text
    assert text.endswith("<|tool|>40<|end|><|assistant|>")


def test_every_format_is_made_and_unknown_ones_are_refused() -> None:
    rng = random.Random(1)
    for fmt in FORMATS:
        conv = make_conversation(PROBLEM, fmt, rng, slip_rate=0.5)
        assert conv.messages[-1]["role"] == "assistant" and conv.fmt == fmt
    with pytest.raises(ValueError, match=r"fmt must be one of \['plain', 'system', 'json', 'tool'\], got 'xml'"):
        make_conversation(PROBLEM, "xml", rng)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('<tool_call>{"name": "calculator", "arguments": {"expression": "1 + 2"}}</tool_call>',
         [{"name": "calculator", "arguments": {"expression": "1 + 2"}}]),
        ("#### 3", None),  # no call
        ('<tool_call>{"name": "calculator", "arguments": {"expression": "1 + 2"}</tool_call>', None),  # bad JSON
        ('<tool_call>{"name": 3, "arguments": {}}</tool_call>', None),  # name not a string
        ('<tool_call>{"name": "calculator", "arguments": "1 + 2"}</tool_call>', None),  # arguments not an object
    ],
)
def test_parse_tool_calls(text: str, expected: list | None) -> None:
    assert parse_tool_calls(text) == expected
