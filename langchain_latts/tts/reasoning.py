"""Reasoning models: a branch's reasoning (``<think>...</think>``) apart from its answer.

Reasoning models (Qwen3, DeepSeek-R1 distills, gpt-oss) write their reasoning first and
their answer after it. Only the answer may be extracted, parsed for tool calls and voted
on: numbers in the reasoning are not the model's answer. vLLM ships a parser per model
family (``vllm.reasoning.ReasoningParserManager``: ``qwen3``, ``deepseek_r1``, ...), and
the ``reasoning_parser`` setting names one; :func:`reasoning_splitter` wraps it as a plain
``text -> (reasoning, answer)`` function, built once per engine tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from langchain_latts.errors import LattsValueError

__all__ = ["ReasoningSplitter", "reasoning_splitter", "split_answer"]

#: ``text -> (reasoning or None, answer)``.
ReasoningSplitter = Callable[[str], tuple[str | None, str]]


def reasoning_splitter(name: str, tokenizer: Any) -> ReasoningSplitter:
    """The splitter of vLLM's reasoning parser ``name`` for ``tokenizer`` (a
    LattsValueError naming ``reasoning_parser`` when vLLM has no such parser or it does
    not fit the tokenizer)."""
    return _splitter(name, _Keyed(tokenizer))


class _Keyed:
    """A tokenizer hashed by identity (tokenizers are not hashable; one splitter each)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __hash__(self) -> int:
        return id(self.tokenizer)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Keyed) and other.tokenizer is self.tokenizer


@lru_cache(maxsize=16)
def _splitter(name: str, keyed: _Keyed) -> ReasoningSplitter:
    from vllm.reasoning import ReasoningParserManager

    known = ReasoningParserManager.list_registered()
    if name not in known:
        raise LattsValueError.bad("reasoning_parser", name, f"must be one of vLLM's reasoning parsers: {known}",
                                  "e.g. reasoning_parser='qwen3' for Qwen3, 'deepseek_r1' for DeepSeek-R1 distills, "
                                  "or None for a model that does not reason first.")
    try:
        parser = ReasoningParserManager.get_reasoning_parser(name)(keyed.tokenizer)
    except Exception as e:  # noqa: BLE001 - vLLM's parsers raise RuntimeError, ValueError, ...
        raise LattsValueError.bad("reasoning_parser", name, f"does not fit this model's tokenizer ({e})",
                                  "Use the parser of the model's family, or None for a model that does not "
                                  "reason first.") from e

    def split(text: str) -> tuple[str | None, str]:
        reasoning, answer = parser.extract_reasoning(text, None)
        return (reasoning or None), (answer or "")

    return split


def split_answer(text: str, splitter: ReasoningSplitter | None) -> tuple[str | None, str]:
    """``(reasoning, answer)`` of a branch's text; without a splitter the text is the answer."""
    if splitter is None:
        return None, text
    return splitter(text)
