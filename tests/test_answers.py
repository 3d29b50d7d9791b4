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


# -- normalization, on answers SmolLM2-135M-Instruct wrote (recorded from its branches) -------------
@pytest.mark.parametrize(
    ("written", "vote"),
    [
        ("40,", "40"),  # "... is 40, which ..." : the comma ends a clause, not the number
        ("52.", "52"),  # end of a sentence
        ("**21**", "21"),  # Markdown bold
        ("`7`", "7"),  # inline code
        ("$15", "15"),  # a currency sign
        ("21 cows", "21"),  # a unit or noun after the number
        ("+8", "8"),  # a leading plus
        ("12.0", "12"),  # a trailing .0
        ("1,200", "1200"),  # thousands separators
        ("\\(6\\)", "6"),  # LaTeX inline math
        ("Yes", "yes"),  # text: case
        ("  the   cat ", "the cat"),  # text: whitespace
        ("2k", "2k"),  # algebra keeps its letters: no space, no unit
        ("\\Pi", "\\Pi"),  # LaTeX keeps its case
    ],
)
def test_normalization_of_real_outputs(written: str, vote: str) -> None:
    assert normalize_answer(written) == vote


def test_last_number_does_not_take_a_trailing_comma_for_a_thousands_separator() -> None:
    assert extract_last_number("So the farmer has 40, and then he sells them.") == "40"
    assert extract_last_number("The total is 1,024.") == "1024"


def test_the_first_stated_answer_ignores_the_rambling_after_it() -> None:
    from langchain_latts.tts.answers import extract_stated

    rambling = "The farmer has 12 + 9 = 21 cows.\n\nThis is the result of a game of probability involving 5 dice."
    assert extract_stated(rambling) == "21" and extract_last_number(rambling) == "5"
    assert extract_stated("The answer is **40**, since 8 x 5 = 40.") == "40"
    assert extract_stated("5") == "5", "a lone number is the answer"
    assert extract_stated("I have 3 apples and 4 pears.") is None, "several numbers, none announced"


def test_the_answer_tag_of_reasoning_gym() -> None:
    from langchain_latts.tts.answers import extract_answer_tag

    assert extract_answer_tag("thinking 3 + 4 ... <answer> 7 </answer> and 9") == "7"
    assert extract_auto("work: 3 + 4 = 7 <answer>7</answer> then 9") == "7"
    assert extract_answer_tag("no tag 7") is None


def test_auto_takes_the_extractor_that_graded_the_calibration_answers_best() -> None:
    from langchain_latts.planner.profiler import CalibrationPrompt, choose_extractor, extractor_scores

    # A model that states its answer, then rambles on with other numbers.
    runs = [{"text": "12 + 9 = 21 cows. Then 3 more games of 5."}, {"text": "The answer is 21. Also 7."}]
    scores = extractor_scores([(runs, CalibrationPrompt(messages=(("user", "12 + 9?"),), answer="21"))])
    assert scores["stated"] == 1.0 and scores["last_number"] == 0.0 and scores["auto"] == 0.0
    assert choose_extractor(scores) == "stated"
    assert choose_extractor({"auto": 0.80, "stated": 0.805}) is None, "within a point: the default chain"
    assert choose_extractor({}) is None
