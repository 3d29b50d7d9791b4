"""The conversation formats the built-in model speaks, for training and evaluation.

Four formats, all for one arithmetic :class:`~langchain_latts.tasks.arithmetic.Problem`:

``plain``
    ``user: <question>`` -> steps, then ``#### x``.
``system``
    a system message that does not ask for JSON (``Think step by step.``) -> the same.
``json``
    a system message asking for JSON -- ``Respond in JSON.`` or, with a key of the
    caller's choice, ``Respond in JSON with key "total".`` (the instruction a
    structured-output call adds) -> steps, then ``{"total": x}`` instead of ``#### x``.
``tool``
    the calculator tool is offered (:data:`CALCULATOR_TOOL`) -> the assistant calls it
    with the whole expression, ``<tool_call>{"name": "calculator", "arguments":
    {"expression": "12 + 35 - 7"}}</tool_call>``; given the tool's result as a tool
    message, it answers ``#### 40``.

The chat template of the shipped tokenizer (:mod:`langchain_latts.models.tokenizer`)
renders system messages, offered tools, assistant tool calls and tool results.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Any, Literal

from langchain_latts.tasks.arithmetic import Problem, calculator

__all__ = [
    "CALCULATOR_TOOL",
    "FORMATS",
    "JSON_INSTRUCTION",
    "Conversation",
    "Format",
    "make_conversation",
    "parse_tool_calls",
]

Format = Literal["plain", "system", "json", "tool"]
FORMATS: tuple[Format, ...] = ("plain", "system", "json", "tool")

#: The calculator tool as offered to the model (OpenAI tool format).
CALCULATOR_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate integers joined by + and -, e.g. '12 + 35 - 7'.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}

#: The system message asking for a JSON answer under ``key`` (what structured output adds).
JSON_INSTRUCTION = 'Respond in JSON with key "{key}".'
_JSON_SYSTEMS = ("Respond in JSON.", "Answer in JSON.", "Reply with a JSON object.", "Return JSON.")
_OTHER_SYSTEMS = ("Think step by step.", "You are a careful calculator.", "Show your work.",
                  "Solve the problem.", "You are a helpful assistant.")
_KEYS = ("answer", "result", "value", "total", "sum", "x", "n", "output", "res", "final_answer")

TOOL_CALL_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)


@dataclass(frozen=True)
class Conversation:
    """Chat-template messages (assistant turns included) and the tools offered."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    fmt: Format
    #: The JSON key asked for (``json`` format only).
    json_key: str | None = None

    def prompt(self, turn: int = 0) -> list[dict[str, Any]]:
        """The messages before assistant turn ``turn`` (what a generation is given)."""
        seen = -1
        for i, message in enumerate(self.messages):
            if message["role"] == "assistant":
                seen += 1
                if seen == turn:
                    return self.messages[:i]
        raise IndexError(f"turn must be < the {seen + 1} assistant turns, got {turn}.")


def _random_key(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return rng.choice(_KEYS)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return "".join(rng.choice(letters) for _ in range(rng.randint(1, 10)))


def tool_call_message(expression: str, call_id: str = "call_0") -> dict[str, Any]:
    """The assistant message that calls the calculator on ``expression``."""
    return {"role": "assistant", "content": "", "tool_calls": [{
        "id": call_id, "type": "function",
        "function": {"name": "calculator", "arguments": json.dumps({"expression": expression})},
    }]}


def make_conversation(problem: Problem, fmt: Format, rng: random.Random, *, slip_rate: float = 0.0) -> Conversation:
    """A whole conversation about ``problem`` in ``fmt`` (seeded by ``rng``)."""
    user = {"role": "user", "content": problem.question}
    if fmt == "plain":
        return Conversation([user, _answer(problem, rng, slip_rate)], None, fmt)
    if fmt == "system":
        system = {"role": "system", "content": rng.choice(_OTHER_SYSTEMS)}
        return Conversation([system, user, _answer(problem, rng, slip_rate)], None, fmt)
    if fmt == "json":
        if rng.random() < 0.4:
            key, instruction = "answer", rng.choice(_JSON_SYSTEMS)
        else:
            key = _random_key(rng)
            instruction = JSON_INSTRUCTION.format(key=key)
        system = {"role": "system", "content": instruction}
        answer = {"role": "assistant",
                  "content": problem.solution(slip_rate=slip_rate, rng=rng, json_key=key)}
        return Conversation([system, user, answer], None, fmt, json_key=key)
    if fmt == "tool":
        expression = problem.expression
        result = calculator(expression)
        messages = [user, tool_call_message(expression),
                    {"role": "tool", "tool_call_id": "call_0", "content": result},
                    {"role": "assistant", "content": f"#### {result}"}]
        return Conversation(messages, [CALCULATOR_TOOL], fmt)
    raise ValueError(f"fmt must be one of {list(FORMATS)}, got {fmt!r}.")


def _answer(problem: Problem, rng: random.Random, slip_rate: float) -> dict[str, Any]:
    return {"role": "assistant", "content": problem.solution(slip_rate=slip_rate, rng=rng)}


def parse_tool_calls(text: str) -> list[dict[str, Any]] | None:
    """The calls in ``text`` (``[{"name": ..., "arguments": {...}}]``), or None when it
    holds no ``<tool_call>`` block or one that is not a JSON object with a string
    ``name`` and an object ``arguments``."""
    blocks = TOOL_CALL_RE.findall(text)
    if not blocks:
        return None
    calls = []
    for block in blocks:
        try:
            call = json.loads(block)
        except json.JSONDecodeError:
            return None
        if not (isinstance(call, dict) and isinstance(call.get("name"), str)
                and isinstance(call.get("arguments"), dict)):
            return None
        calls.append({"name": call["name"], "arguments": call["arguments"]})
    return calls
