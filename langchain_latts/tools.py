"""Tool calling: tools in, each branch's text read as tool calls or an answer, the vote over both.

``bind_tools`` turns LangChain tools, pydantic models, functions and OpenAI-format dicts
into OpenAI tool specs (:func:`tool_specs`) that the model's chat template renders. Each
branch's text is read by one of two ways (setting ``tool_calling``):

``"parser"`` (default)
    vLLM's own tool-call parser -- the one ``vllm serve --tool-call-parser <name>`` uses
    (``tool_parser="hermes"`` for Qwen and the built-in model, ``llama3_json``,
    ``mistral``, ...) -- reads the calls out of free text: for instruction-tuned models.
``"constrained"``
    every branch decodes under a grammar (vLLM structured outputs): one
    ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` whose arguments match
    that tool's JSON schema, or, under ``tool_choice="auto"``, plain text instead
    (:func:`call_grammar`): for any model.

**The vote.** A branch votes with ``call:<canonical JSON of its calls>`` (tool names and
arguments with sorted keys and normalised numbers) or, when it answered in text, with the
answer its extractor reads; a call naming a tool that was not offered, or whose arguments
are not a JSON object, does not vote. Calls and answers compete in one vote: the most
votes win (ties to the lowest branch), so "call a tool" beats "answer" exactly when more
branches agree on the same call than on any one answer. ``tool_choice="any"``/``"required"``
or a tool's name: only calls vote (with the grammar, branches can only call);
``"none"``: the tools are not shown and only answers vote.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal, cast

from langchain_core.utils.function_calling import convert_to_openai_tool

from langchain_latts.errors import LattsValueError
from langchain_latts.structured import canonical_json

__all__ = [
    "CALL_PREFIX",
    "ToolCalling",
    "call_grammar",
    "call_vote_key",
    "calls_from_key",
    "constrained_calls",
    "parser_calls",
    "resolve_tool_choice",
    "tool_extractor",
    "tool_specs",
]

ToolCalling = Literal["parser", "constrained"]
#: Vote keys of tool calls start with this.
CALL_PREFIX = "call:"
_BLOCK_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)


def tool_specs(tools: Sequence[Any]) -> list[dict[str, Any]]:
    """OpenAI-format specs of LangChain tools, pydantic models, functions or dicts."""
    specs = []
    for i, tool in enumerate(tools):
        try:
            spec = convert_to_openai_tool(tool)
        except Exception as e:  # noqa: BLE001 -- langchain raises many types for what it cannot convert
            raise LattsValueError.bad(
                f"tools[{i}]", tool, f"cannot be turned into a tool schema ({type(e).__name__}: {e})",
                "Pass a LangChain tool, a pydantic model, a typed function or an OpenAI tool dict whose "
                "arguments are JSON types.",
            ) from None
        specs.append(spec)
    return specs


def resolve_tool_choice(tool_choice: Any, names: Sequence[str]) -> str:
    """``"auto"``, ``"required"``, ``"none"`` or the one tool's name that must be called."""
    if tool_choice in (None, "auto"):
        return "auto"
    if tool_choice in ("any", "required", True):
        return "required"
    if tool_choice == "none":
        return "none"
    name = tool_choice
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
    if isinstance(name, str) and name in names:
        return name
    raise LattsValueError.bad(
        "tool_choice", tool_choice, f"must be 'auto', 'any', 'required', 'none' or one of the tools ({', '.join(names)})",
        "Name a tool that was passed to bind_tools.",
    )


def call_grammar(specs: Sequence[dict[str, Any]], choice: str) -> str:
    """The EBNF grammar of a branch under ``tool_calling="constrained"``: one tool-call
    block whose arguments match the tool's schema (or plain text under ``auto``)."""
    import xgrammar

    offered = [s for s in specs if choice in ("auto", "required") or s["function"]["name"] == choice]
    schema = {"anyOf": [{"type": "object", "properties": {
        "name": {"const": s["function"]["name"]},
        "arguments": s["function"].get("parameters") or {"type": "object"}},
        "required": ["name", "arguments"]} for s in offered]}
    try:
        compiled = xgrammar.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False)
    except Exception as e:  # noqa: BLE001 -- xgrammar raises several types for a bad schema
        raise LattsValueError.bad(
            "tools", [s["function"]["name"] for s in offered],
            f"must have argument schemas vLLM's structured outputs can compile ({e})",
            "Use JSON types for tool arguments (string, integer, number, boolean, array, object, enum).",
        ) from None
    body = re.sub(r"^root ::=", "latts_call ::=", str(compiled), count=1, flags=re.M)
    root = 'root ::= ("<tool_call>" latts_call "</tool_call>")'
    if choice == "auto":
        root += " | (latts_text)\nlatts_text ::= [^<] [^\\0]*"
    return f"{root}\n{body}"


def constrained_calls(text: str) -> list[dict[str, Any]] | None:
    """The calls of a ``<tool_call>`` JSON block (None: no well-formed block)."""
    calls = []
    for block in _BLOCK_RE.findall(text):
        try:
            call = json.loads(block)
        except json.JSONDecodeError:
            return None
        if not isinstance(call, dict):
            return None
        calls.append({"name": call.get("name"), "arguments": call.get("arguments")})
    return calls or None


def parser_calls(parser_name: str, specs: Sequence[dict[str, Any]]) -> Callable[[str], list[dict[str, Any]] | None]:
    """A reader of calls from text with vLLM's tool parser ``parser_name`` (what
    ``vllm serve --tool-call-parser`` uses). Unknown names are a LattsValueError."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.tool_parsers import ToolParserManager

    # A malformed call is an expected, non-voting branch here; vLLM's parsers log a traceback for it.
    logging.getLogger("vllm.tool_parsers").setLevel(logging.CRITICAL)
    try:
        parser_class = ToolParserManager.get_tool_parser(parser_name)
    except KeyError:
        raise LattsValueError.bad(
            "tool_parser", parser_name, "is not one of vLLM's tool-call parsers",
            f"Use the parser `vllm serve --tool-call-parser` takes for this model, e.g. 'hermes' "
            f"(known: {', '.join(ToolParserManager.list_registered())}).",
        ) from None
    request = ChatCompletionRequest.model_validate(
        {"model": "latts", "messages": [{"role": "user", "content": ""}], "tools": list(specs)})

    def read(text: str) -> list[dict[str, Any]] | None:
        # vLLM's parsers keep streaming state: one instance per text.
        info = parser_class(cast(Any, _NoTokenizer()), cast(Any, request.tools)).extract_tool_calls(text, request)
        if not info.tools_called:
            return None
        calls = []
        for call in info.tool_calls:
            try:
                arguments = json.loads(call.function.arguments)
            except (TypeError, json.JSONDecodeError):
                arguments = None
            calls.append({"name": call.function.name, "arguments": arguments})
        return calls

    return read


class _NoTokenizer:
    """Parsers reading finished text need no tokenizer (they keep one for streaming)."""

    def get_vocab(self) -> dict[str, int]:
        return {}


def call_vote_key(calls: list[dict[str, Any]] | None, names: Sequence[str]) -> str | None:
    """The vote of a branch's calls (None: no call, an unknown tool, or bad arguments)."""
    if not calls:
        return None
    for call in calls:
        if call["name"] not in names or not isinstance(call["arguments"], dict):
            return None
    return CALL_PREFIX + canonical_json([{"name": c["name"], "arguments": c["arguments"]} for c in calls])


def calls_from_key(key: str) -> list[dict[str, Any]]:
    """LangChain ``tool_calls`` (with fresh ids) from a winning vote key."""
    calls = json.loads(key[len(CALL_PREFIX):])
    return [{"name": c["name"], "args": c["arguments"], "id": f"call_{uuid.uuid4().hex[:24]}", "type": "tool_call"}
            for c in calls]


def tool_extractor(read_calls: Callable[[str], list[dict[str, Any]] | None], names: Sequence[str], choice: str,
                   answer: Callable[[str], str | None]) -> Callable[[str], str | None]:
    """A branch's vote: its calls' key, or its text answer (only calls under a forced choice)."""

    def extract(text: str) -> str | None:
        if choice == "none":
            return answer(text)
        calls = read_calls(text)
        if calls is not None:
            key = call_vote_key(calls, names)
            if key is not None and choice not in ("auto", "required", "none"):
                return key if all(c["name"] == choice for c in calls) else None
            return key
        return answer(text) if choice == "auto" else None

    return extract
