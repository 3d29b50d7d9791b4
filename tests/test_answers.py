"""Answer extraction and normalisation on hand-built branch texts."""

from __future__ import annotations

import pytest

from langchain_latts.errors import LattsValueError
from langchain_latts.tts.answers import (
    extract_auto,
    extract_boxed,
    extract_hash,
    extract_last_number,
    extractor_name,
    normalize_answer,
    resolve_extractor,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("42", "42"),
        (" 42. ", "42"),  # trailing period of a sentence
        ("$42$", "42"),
        ("42.0", "42"),  # same number, same vote
        ("1,000.50", "1000.5"),
        ("-0", "0"),
        ("\\frac{1}{2}", "\\frac{1}{2}"),  # non-numbers are kept as written
        ("x  =  3", "x = 3"),  # inner whitespace collapsed
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_boxed_takes_the_last_and_handles_nesting() -> None:
    text = "first \\boxed{1} then \\boxed{\\frac{1}{2}}"
    assert extract_boxed(text) == "\\frac{1}{2}"
    assert extract_boxed("no box here") is None
    assert extract_boxed("\\boxed{}") is None  # empty box is no answer
    assert extract_boxed("\\boxed{unclosed") is None


def test_hash_takes_the_last_marker() -> None:
    assert extract_hash("1 + 2 = 3\n#### 3") == "3"
    assert extract_hash("#### 1\n#### 2\n") == "2"
    assert extract_hash("#### 1,234") == "1234"
    assert extract_hash("no marker") is None


def test_last_number() -> None:
    assert extract_last_number("3 apples and 1,024 pears cost 2.50") == "2.5"
    assert extract_last_number("negative -7") == "-7"
    assert extract_last_number("none") is None


def test_auto_prefers_boxed_then_hash_then_number() -> None:
    assert extract_auto("#### 5 but \\boxed{6}") == "6"
    assert extract_auto("7 things\n#### 5") == "5"
    assert extract_auto("it is 9") == "9"
    assert extract_auto("no answer") is None


def test_resolve_extractor() -> None:
    assert resolve_extractor("hash") is extract_hash

    def mine(text: str) -> str | None:
        return text[:1] or None

    assert resolve_extractor(mine) is mine
    assert extractor_name(mine).endswith("mine")
    with pytest.raises(LattsValueError, match=r"answer_extractor must be one of .*got 'regex'"):
        resolve_extractor("regex")
