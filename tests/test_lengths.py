"""The per-question output-length model (pure): features, fit, held-out error, fallback."""

from __future__ import annotations

import math

import pytest

from langchain_latts.planner.lengths import (
    LengthEstimate,
    fit_length_model,
    marginal_length_model,
    prompt_features,
)


def test_prompt_features_count_characters_numbers_digits_and_operators() -> None:
    # "Compute 48 + 17 - 123." : 22 characters, 3 numbers, 7 digits, 2 operator signs.
    assert prompt_features("Compute 48 + 17 - 123.") == [1.0, 22.0, 3.0, 7.0, 2.0]
    assert prompt_features("") == [1.0, 0.0, 0.0, 0.0, 0.0]


def _chains(n: int) -> list[str]:
    """Questions of 1 to 5 operations on two-digit numbers, in two phrasings."""
    texts = []
    for i in range(n):
        ops = 1 + i % 5
        expression = " + ".join(str(10 + (7 * i + 3 * k) % 90) for k in range(ops + 1))
        texts.append(f"Compute {expression}." if i % 2 else f"What is {expression}?")
    return texts


def test_the_fit_recovers_a_length_law_and_knows_how_well() -> None:
    # A model that writes 13 tokens per operation plus 10, and whose branches differ by +-1 token.
    texts = _chains(40)
    lengths = [[13 * t.count("+") + 10 + d for d in (-1, 0, 1)] for t in texts]
    model = fit_length_model(texts, lengths)
    assert model.predict("Compute 12 + 34 + 56 + 78.") == pytest.approx(13 * 3 + 10, abs=1.0)
    assert model.sigma_question < 0.03, "the law is exact: held-out questions are predicted"
    # Each question's 3 samples are ln(m-1), ln m, ln(m+1): a spread of about 1/m around the median.
    assert 0.01 < model.sigma_branch < 0.1
    assert model.heldout_mdape is not None and model.heldout_mdape < 0.03
    assert (model.questions, model.samples) == (40, 3)


def test_a_length_the_text_does_not_explain_shows_up_as_question_spread() -> None:
    texts = _chains(40)
    lengths = [[30 if i % 2 else 90] for i in range(40)]  # half short, half long, whatever the question
    model = fit_length_model(texts, lengths)
    assert model.sigma_question > 0.4 and model.sigma_branch == 0.0  # one sample each: no branch spread seen


def test_the_fallback_is_the_profile_distribution() -> None:
    model = marginal_length_model([40, 50, 60, 200])
    estimate = model.estimate("anything at all")
    assert estimate.median == 55.0  # the distribution's median, whatever the question
    logs = [math.log(n) for n in (40, 50, 60, 200)]
    mean = sum(logs) / 4
    assert estimate.sigma_question == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in logs) / 4))
    assert estimate.sigma_branch == 0.0
    assert model.estimate("x", max_tokens=32).median == 32.0, "capped at max_tokens"


def test_an_estimate_has_quantiles_from_both_spreads() -> None:
    estimate = LengthEstimate(100.0, 0.3, 0.4)
    assert estimate.sigma == pytest.approx(0.5)
    assert estimate.quantile(0.0) == 100.0
    assert estimate.quantile(1.0) == pytest.approx(100 * math.exp(0.5))


def test_too_few_questions_are_refused() -> None:
    with pytest.raises(ValueError, match="needs >= 7 questions"):
        fit_length_model(["a", "b"], [[1], [2]])
    with pytest.raises(ValueError, match="at least one length"):
        marginal_length_model([])


def test_order_statistic_z_matches_simulated_normal_order_statistics() -> None:
    import random
    import statistics as st

    from langchain_latts.planner.lengths import order_statistic_z

    assert order_statistic_z(4, 7) == pytest.approx(0.0, abs=1e-12)  # the median of an odd sample
    assert order_statistic_z(1, 8) == pytest.approx(-order_statistic_z(8, 8))
    zs = [order_statistic_z(m, 8) for m in range(1, 9)]
    assert zs == sorted(zs)
    rng = random.Random(0)
    draws = [sorted(rng.gauss(0, 1) for _ in range(8)) for _ in range(20000)]
    for m in (1, 3, 6, 8):
        assert order_statistic_z(m, 8) == pytest.approx(st.fmean(d[m - 1] for d in draws), abs=0.03)
    with pytest.raises(ValueError, match="1 <= m <= b"):
        order_statistic_z(9, 8)


def test_the_mth_of_b_branches_moves_with_the_branch_spread_only() -> None:
    from langchain_latts.planner.lengths import LengthEstimate

    shared = LengthEstimate(median=100.0, sigma_question=0.5, sigma_branch=0.0)
    assert shared.mth_of(1, 8) == shared.mth_of(8, 8) == 100.0  # branches of one question agree
    spread = LengthEstimate(median=100.0, sigma_question=0.0, sigma_branch=0.6)
    assert spread.mth_of(6, 8) < spread.mth_of(8, 8) and spread.mth_of(8, 8) == pytest.approx(
        100.0 * math.exp(0.6 * 1.4236), rel=0.01)
