"""Structured output: a schema in, every branch constrained to it, the vote over parsed objects.

A schema (pydantic model, TypedDict, JSON schema or OpenAI tool dict) becomes

* a JSON schema (:func:`json_schema_of`, langchain-core's converter);
* an instruction for the model (:func:`json_instruction`): the built-in model learned
  ``Respond in JSON with key "total".`` for one-key objects;
* a grammar every branch decodes under (:func:`answer_grammar`, vLLM structured outputs
  with xgrammar): a bounded stretch of free reasoning ending in a newline, then one JSON
  object that matches the schema, with no free whitespace inside it (JSON allows any whitespace, and a model that never saw it
  would fill ``max_tokens`` with it). Reasoning lines first keep step-by-step models
  accurate; a model that answers in JSON at once simply writes no line.

Each finished branch votes with the canonical JSON of its object (:func:`canonical_json`:
sorted keys, ``1.0`` and ``1`` alike); a branch whose text holds no object matching the
schema does not vote.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from operator import itemgetter
from typing import Any, Literal

from langchain_core.exceptions import OutputParserException
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_json_schema
from pydantic import BaseModel, ValidationError
from pydantic.v1 import BaseModel as BaseModelV1
from pydantic.v1 import ValidationError as ValidationErrorV1

from langchain_latts.errors import LattsValueError

__all__ = [
    "StructuredMethod",
    "answer_grammar",
    "canonical_json",
    "json_instruction",
    "json_schema_of",
    "last_json_object",
    "object_extractor",
    "parse_structured",
    "response_schema",
    "with_raw",
]

StructuredMethod = Literal["json_schema", "json_mode", "function_calling"]
#: The schema of ``json_mode``: any JSON object.
ANY_OBJECT: dict[str, Any] = {"type": "object"}
#: Most characters of reasoning before the object (a model that never writes the object
#: would otherwise reason until ``max_tokens`` and return nothing).
MAX_REASONING_CHARS = 1024


def json_schema_of(schema: Any) -> dict[str, Any]:
    """The JSON schema of a pydantic model, TypedDict, JSON schema or OpenAI tool dict."""
    if isinstance(schema, dict) and schema.get("type") == "object" and "title" not in schema:
        return schema  # a plain JSON schema (convert_to_json_schema insists on a title)
    try:
        return convert_to_json_schema(schema)
    except (ValueError, TypeError) as e:
        raise LattsValueError.bad(
            "schema", schema, f"must be a pydantic model, a TypedDict or a JSON schema ({e})",
            "e.g. with_structured_output(Answer) with class Answer(BaseModel): total: int.",
        ) from None


def json_instruction(schema: dict[str, Any]) -> str:
    """What the model is told: ``Respond in JSON with key "k".`` for a one-key object (the
    built-in model's format), else the schema itself."""
    properties = schema.get("properties") or {}
    if len(properties) == 1:
        return f'Respond in JSON with key "{next(iter(properties))}".'
    if not properties:
        return "Respond in JSON."
    return f"Respond in JSON matching this schema: {json.dumps(schema, separators=(',', ':'))}"


def answer_grammar(schema: dict[str, Any], max_reasoning_chars: int = MAX_REASONING_CHARS) -> str:
    """The EBNF grammar of a branch: up to ``max_reasoning_chars`` of reasoning ending in a
    newline, then one object matching ``schema``. Callers pass half the branch's
    ``max_tokens`` (a token is at least one character), so the object always has room.

    A schema xgrammar cannot compile is a :class:`LattsValueError` naming ``schema``.
    """
    import xgrammar  # vLLM's structured-output backend, installed with vLLM

    try:
        compiled = xgrammar.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False)
    except Exception as e:  # noqa: BLE001 -- xgrammar raises RuntimeError/ValueError/TypeError for bad schemas
        raise LattsValueError.bad(
            "schema", schema, f"must be a JSON schema vLLM's structured outputs can compile ({e})",
            "Use plain types (object, string, integer, number, boolean, array, enum) and drop custom formats.",
        ) from None
    body = re.sub(r"^root ::=", "latts_object ::=", str(compiled), count=1, flags=re.M)
    chars = max(0, min(max_reasoning_chars, MAX_REASONING_CHARS) - 2)
    reasoning = f'latts_reasoning ::= ([^{{\\n] [^\\0]{{0,{chars}}} "\\n")?\n' if chars else 'latts_reasoning ::= ""\n'
    return f"root ::= latts_reasoning latts_object\n{reasoning}{body}"


def last_json_object(text: str) -> dict[str, Any] | None:
    """The JSON object on the last line of ``text`` that holds one (None: there is none)."""
    for line in reversed(text.strip().splitlines()):
        start = line.find("{")
        if start < 0:
            continue
        try:
            value = json.loads(line[start:])
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def canonical_json(value: Any) -> str:
    """A vote key for a parsed object: sorted keys, no spaces, numbers normalised."""

    def normal(x: Any) -> Any:
        if isinstance(x, dict):
            return {str(k): normal(v) for k, v in x.items()}
        if isinstance(x, list):
            return [normal(v) for v in x]
        if isinstance(x, float) and x.is_integer():
            return int(x)
        if isinstance(x, float):
            return float(Decimal(repr(x)).normalize())
        return x

    return json.dumps(normal(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def object_extractor(schema: dict[str, Any]) -> Any:
    """An answer extractor voting with the canonical JSON of the branch's object when it
    has the schema's required keys (None: the branch does not vote)."""
    required = list(schema.get("required") or [])

    def extract(text: str) -> str | None:
        value = last_json_object(text)
        if value is None or any(key not in value for key in required):
            return None
        return canonical_json(value)

    return extract


def response_schema(response_format: Any) -> dict[str, Any] | None:
    """The JSON schema of a ``response_format`` call option (None: free text)."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict) or not isinstance(response_format.get("schema"), dict):
        raise LattsValueError.bad("response_format", response_format,
                                  "must be {'method': ..., 'schema': <JSON schema>}",
                                  "Use llm.with_structured_output(schema) rather than passing it yourself.")
    return response_format["schema"]


def parse_structured(message: BaseMessage, *, schema: Any = None) -> Any:
    """The voted object of a structured-output message: a pydantic instance for a pydantic
    ``schema``, else the JSON object (OutputParserException when no branch produced one)."""
    answer = (message.response_metadata.get("tts") or {}).get("answer")
    value = json.loads(answer) if answer else last_json_object(str(message.content))
    if value is None or (not answer and "tts" in message.response_metadata):
        raise OutputParserException(
            "no branch produced a complete JSON object of the schema (cut by max_tokens or the deadline?); the "
            f"selected branch ends {str(message.content)[-200:]!r}", llm_output=str(message.content))
    if isinstance(schema, type) and issubclass(schema, (BaseModel, BaseModelV1)):
        try:
            return schema.model_validate(value) if issubclass(schema, BaseModel) else schema.parse_obj(value)
        except (ValidationError, ValidationErrorV1) as e:
            raise OutputParserException(f"the JSON object does not match {schema.__name__}: {e}",
                                        llm_output=str(message.content)) from e
    return value


def with_raw(llm: Runnable[Any, Any], parser: Runnable[Any, Any]) -> Runnable[Any, Any]:
    """``{"raw": message, "parsed": ..., "parsing_error": ...}`` (LangChain's include_raw shape)."""
    parse_raw = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
    no_parse = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=llm) | parse_raw.with_fallbacks([no_parse], exception_key="parsing_error")
