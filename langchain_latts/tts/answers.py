"""Answer extractors: the final answer of one branch's text, normalised for voting.

Built-ins (by name, :data:`EXTRACTORS`): ``boxed`` (the last ``\\boxed{...}``), ``hash``
(the last ``#### x`` line), ``answer_tag`` (reasoning-gym's ``<answer>x</answer>``),
``stated`` (the first number after ``=``/``is``/``answer``: for models that answer, then
ramble), ``last_number`` and ``auto`` (boxed, hash, answer tag, else the last number -- or,
when ``latts profile`` graded calibration answers, the extractor that scored best on them). Any ``Callable[[str], str | None]`` works too. Branches whose text
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
    "answer_detector",
    "ExtractorName",
    "explicit_answer",
    "extract_answer_tag",
    "extract_auto",
    "extract_boxed",
    "extract_hash",
    "extract_last_number",
    "extract_stated",
    "normalize_answer",
    "resolve_extractor",
]

AnswerExtractor = Callable[[str], str | None]
ExtractorName = Literal["auto", "answer_tag", "stated", "boxed", "hash", "last_number"]

_HASH_RE = re.compile(r"####\s*([^\n]+)")
_ANSWER_TAG_RE = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL | re.IGNORECASE)
# "= 21", "is 21", "equals $21", "answer: **21**", "Answer is 21".
_STATED_RE = re.compile(r"(?:=|\bis\b|\bequals\b|\banswer\b\s*(?:is\b|:)?)\s*[*_`$]*\s*([-+]?(?:\d{1,3}(?:,\d{3})+|\d+)"
                        r"(?:\.\d+)?)(?![\d,]*\d)", re.IGNORECASE)
# A number as written: a sign, thousands separators only in groups of three (so "40," is 40
# and a comma), decimals.
_NUMBER_RE = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\d,]*\d)|[-+]?\.\d+")
_PLAIN_NUMBER_RE = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")
# Markup an answer may be wrapped in: Markdown bold/italics/code, LaTeX inline math, quotes.
_WRAPPERS = (("**", "**"), ("__", "__"), ("`", "`"), ("*", "*"), ("_", "_"), ("$", "$"), ("\\(", "\\)"),
             ("\\[", "\\]"), ('"', '"'), ("'", "'"))
# A number followed by a unit or a noun ("21 cows", "5 km", "30%"), or preceded by a currency sign.
# (A word must follow a space: "2k" or "3x" is algebra, not a unit.) A number in parentheses too.
_NUMBER_WITH_UNIT_RE = re.compile(r"\(?(?:[$€£¥]\s*)?([-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)"
                                  r"(?:\s*%|\s*°|\s+[^\W\d_][\w.'/-]*(?:\s+[^\W\d_][\w.'/-]*){0,2})?\)?")
_TRAILING_PUNCTUATION = ".,;:!?"


def _unwrap(text: str) -> str:
    """``text`` without the markup around it (repeatedly: ``**$42$**`` -> ``42``)."""
    changed = True
    while changed and text:
        changed = False
        text = text.strip().rstrip(_TRAILING_PUNCTUATION).strip() if not text.endswith("..") else text.strip()
        for left, right in _WRAPPERS:
            if len(text) > len(left) + len(right) - 1 and text.startswith(left) and text.endswith(right) \
                    and len(text) >= len(left) + len(right):
                text = text[len(left):len(text) - len(right)]
                changed = True
                break
    return text


def normalize_answer(answer: str) -> str:
    """A canonical form so equal answers vote together.

    Strips surrounding whitespace, markup (``**42**``, ```42```, ``$42$``, ``\\(42\\)``,
    quotes) and trailing punctuation (``"40,"``, ``"40."``); a number loses a leading ``+``,
    thousands separators, trailing zeros (``"1,000.50"`` -> ``"1000.5"``, ``"42.0"`` ->
    ``"42"``) and a unit or noun after it or a currency sign before it (``"21 cows"``,
    ``"$5"``, ``"30%"`` -> ``"21"``, ``"5"``, ``"30"``). Other text is compared without case
    and with inner whitespace collapsed (``"Yes"`` = ``"yes "``), except LaTeX (a
    backslash inside), whose case matters (``\\Pi`` is not ``\\pi``).
    """
    text = " ".join(_unwrap(answer).split())
    unit = _NUMBER_WITH_UNIT_RE.fullmatch(text)
    if unit is not None:
        text = unit.group(1)
    if _PLAIN_NUMBER_RE.fullmatch(text):
        try:
            value = Decimal(text.replace(",", ""))
        except InvalidOperation:
            return text
        normalized = format(value.normalize(), "f")
        return "0" if normalized in ("-0", "0") else normalized
    return text if "\\" in text else text.casefold()


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


def extract_answer_tag(text: str) -> str | None:
    """The contents of the first ``<answer>...</answer>`` (reasoning-gym's convention)."""
    match = _ANSWER_TAG_RE.search(text)
    if match is None:
        return None
    answer = normalize_answer(match.group(1))
    return answer or None


def extract_stated(text: str) -> str | None:
    """The first answer the text *states*: the first number after ``=``, ``is``, ``equals``
    or ``answer`` (``"12 + 9 = 21 cows. This is ..."`` -> ``21``), else the text's only
    number; None when it states none (several numbers, none of them announced). For models
    that answer first and ramble after; step-by-step solutions want ``last_number``."""
    match = _STATED_RE.search(text)
    if match is not None:
        return normalize_answer(match.group(1))
    numbers = _NUMBER_RE.findall(text)
    return normalize_answer(numbers[0]) if len(numbers) == 1 else None


def explicit_answer(text: str) -> str | None:
    """An answer the text states as final (``\\boxed{}``, ``#### x`` or ``<answer>x</answer>``),
    else None. A branch cut short votes only when it has one (a trailing number of a cut
    text is no answer)."""
    return extract_boxed(text) or extract_hash(text) or extract_answer_tag(text)


def extract_last_number(text: str) -> str | None:
    """The last number in the text (``-3``, ``1,024``, ``2.5``)."""
    matches = _NUMBER_RE.findall(text)
    return normalize_answer(matches[-1]) if matches else None


def extract_auto(text: str) -> str | None:
    """``boxed``, else ``hash``, else ``answer_tag``, else ``last_number``."""
    for extractor in (extract_boxed, extract_hash, extract_answer_tag, extract_last_number):
        answer = extractor(text)
        if answer is not None:
            return answer
    return None


EXTRACTORS: dict[str, AnswerExtractor] = {
    "auto": extract_auto,
    "answer_tag": extract_answer_tag,
    "stated": extract_stated,
    "boxed": extract_boxed,
    "hash": extract_hash,
    "last_number": extract_last_number,
}


def answer_detector(extractor: str | AnswerExtractor) -> AnswerExtractor:
    """What tells ``stop_at_answer`` that a branch has stated its final answer, for an
    extractor: an explicit one (``boxed``, ``hash``, ``answer_tag``, ``stated``, a callable)
    is its own detector; ``auto`` looks for an explicit final answer (box, ``####`` or answer
    tag); ``last_number`` for a stated one (any number would end a step-by-step solution at
    its first step)."""
    if callable(extractor):
        return extractor
    return {"auto": explicit_answer, "last_number": extract_stated}.get(extractor) or resolve_extractor(extractor)


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
