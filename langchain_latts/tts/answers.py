"""Answer extractors: the final answer of one branch's text, normalised for voting.

Built-ins (by name, :data:`EXTRACTORS`): ``boxed`` (the last ``\\boxed{...}``), ``hash``
(the last ``#### x`` line), ``last_number`` and ``auto`` (the first of those three that
finds something). Any ``Callable[[str], str | None]`` works too. Branches whose text
has no extractable answer return None and do not vote.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Literal

from langchain_latts.errors import LattsValueError

__all__ = [
    "EXTRACTORS",
    "AnswerExtractor",
    "ExtractorName",
    "explicit_answer",
    "extract_auto",
    "extract_boxed",
    "extract_hash",
    "extract_last_number",
    "normalize_answer",
    "resolve_extractor",
]

AnswerExtractor = Callable[[str], str | None]
ExtractorName = Literal["auto", "boxed", "hash", "last_number"]

_HASH_RE = re.compile(r"####\s*([^\n]+)")
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_PLAIN_NUMBER_RE = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def normalize_answer(answer: str) -> str:
    """A canonical form so equal answers vote together.

    Strips whitespace, surrounding ``$`` and a trailing period; numbers lose thousands
    separators and trailing zeros (``"1,000.50"`` -> ``"1000.5"``, ``"42.0"`` -> ``"42"``).
    Other text is kept as written (with inner whitespace collapsed).
    """
    text = " ".join(answer.strip().strip("$").strip().split())
    text = text.rstrip(".").strip() if not text.endswith("..") else text
    if _PLAIN_NUMBER_RE.fullmatch(text):
        try:
            value = Decimal(text.replace(",", ""))
        except InvalidOperation:
            return text
        normalized = format(value.normalize(), "f")
        return "0" if normalized in ("-0", "0") else normalized
    return text


def extract_boxed(text: str) -> str | None:
    """The contents of the last ``\\boxed{...}`` (nested braces allowed)."""
    start = text.rfind("\\boxed")
    while start != -1:
        brace = text.find("{", start)
        if brace != -1 and text[start + len("\\boxed") : brace].strip() == "":
            depth = 0
            for i in range(brace, len(text)):
                if text[i] == "{":
                    depth += 1
                elif text[i] == "}":
                    depth -= 1
                    if depth == 0:
                        content = text[brace + 1 : i]
                        return normalize_answer(content) if content.strip() else None
        start = text.rfind("\\boxed", 0, start)
    return None


def extract_hash(text: str) -> str | None:
    """What follows the last ``####`` marker (GSM8K style), up to the end of its line."""
    matches = _HASH_RE.findall(text)
    if not matches:
        return None
    answer = normalize_answer(matches[-1])
    return answer or None


def explicit_answer(text: str) -> str | None:
    """An answer the text states as final (``\\boxed{}`` or ``#### x``), else None. A branch
    cut short votes only when it has one (a trailing number of a cut text is no answer)."""
    return extract_boxed(text) or extract_hash(text)


def extract_last_number(text: str) -> str | None:
    """The last number in the text (``-3``, ``1,024``, ``2.5``)."""
    matches = _NUMBER_RE.findall(text)
    return normalize_answer(matches[-1]) if matches else None


def extract_auto(text: str) -> str | None:
    """``boxed``, else ``hash``, else ``last_number``."""
    for extractor in (extract_boxed, extract_hash, extract_last_number):
        answer = extractor(text)
        if answer is not None:
            return answer
    return None


EXTRACTORS: dict[str, AnswerExtractor] = {
    "auto": extract_auto,
    "boxed": extract_boxed,
    "hash": extract_hash,
    "last_number": extract_last_number,
}


def resolve_extractor(extractor: str | AnswerExtractor) -> AnswerExtractor:
    """The extractor function for a built-in name or a callable."""
    if callable(extractor):
        return extractor
    if extractor in EXTRACTORS:
        return EXTRACTORS[extractor]
    raise LattsValueError.bad(
        "answer_extractor", extractor, f"must be one of {sorted(EXTRACTORS)} or a callable",
        "Pass a built-in name or a function str -> str | None.",
    )


def extractor_name(extractor: str | AnswerExtractor) -> str:
    """A stable name for tracing and cache keys (a callable's qualified name)."""
    if isinstance(extractor, str):
        return extractor
    return f"{getattr(extractor, '__module__', '?')}.{getattr(extractor, '__qualname__', repr(extractor))}"
