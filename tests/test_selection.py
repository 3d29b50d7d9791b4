"""Selection strategies and score aggregation (pure)."""

from __future__ import annotations

import pytest

from langchain_latts.tts.selection import aggregate, select, weighted_vote_is_decided
from langchain_latts.tts.voting import majority_vote


def test_aggregations_of_step_scores() -> None:
    steps = [1.0, 0.5, 0.8]
    assert aggregate(steps, "min") == 0.5
    assert aggregate(steps, "last") == 0.8
    assert aggregate(steps, "prod") == pytest.approx(0.4)
    assert aggregate(steps, "mean") == pytest.approx(2.3 / 3)
    assert aggregate(0.7) == 0.7 and aggregate([], "min") == 0.0


def test_majority_ignores_scores_and_matches_the_plain_vote() -> None:
    answers = ["3", "4", "4", None, "3", "4"]
    chosen = select(answers, [1.0, 0.0, 0.0, 1.0, 1.0, 0.0], "majority")
    plain = majority_vote(answers)
    assert (chosen.answer, chosen.winner_index) == (plain.answer, plain.winner_index) == ("4", 1)


def test_weighted_majority_lets_verified_minorities_win() -> None:
    answers = ["3", "4", "4", "4", "3"]
    chosen = select(answers, [1.0, 0.2, 0.3, 0.1, 0.9], "weighted_majority")
    assert chosen.answer == "3" and chosen.winner_index == 0
    assert chosen.weights == pytest.approx({"3": 1.9, "4": 0.6})


def test_best_of_n_takes_the_single_best_branch_and_failed_scores_are_lowest() -> None:
    answers = ["3", "4", "5"]
    chosen = select(answers, [0.5, None, 0.9], "best_of_n")
    assert (chosen.answer, chosen.winner_index) == ("5", 2)
    assert select(answers, [None, None, None], "best_of_n").answer == "3"  # all failed: tie to the first
    assert select([None, None], [1.0, 1.0], "best_of_n").answer is None


def test_weighted_early_stop_rule() -> None:
    assert weighted_vote_is_decided({"3": 3.5, "4": 0.4}, 2, "weighted_majority")
    assert not weighted_vote_is_decided({"3": 2.5, "4": 0.4}, 3, "weighted_majority")
    assert weighted_vote_is_decided({"3": 1.0, "4": 0.4}, 5, "best_of_n")
    assert not weighted_vote_is_decided({"3": 0.9}, 5, "best_of_n")


def test_confidence_weighted_weighs_answers_by_confidence_times_any_verifier_score() -> None:
    answers = ["4", "4", "4", "5", "5"]
    confidences = [1.0, 1.0, 1.0, 5.0, 5.0]
    plain = select(answers, [None] * 5, "confidence_weighted", confidences=confidences)
    assert plain.answer == "5" and plain.weights == {"5": 10.0, "4": 3.0} and plain.winner_index == 3
    verified = select(answers, [1.0, 1.0, 1.0, 0.1, 0.1], "confidence_weighted", confidences=confidences)
    assert verified.answer == "4" and verified.weights == {"4": 3.0, "5": 1.0}
    assert select(answers, [None] * 5, "confidence_weighted", confidences=[None] * 5).weights == {"4": 0.0, "5": 0.0}


def test_confidence_filtered_votes_among_the_most_confident_share() -> None:
    answers = ["4", "4", "4", "5", "5", None]
    confidences = [1.0, 2.0, 1.5, 5.0, 4.0, 9.0]  # the unanswered branch never votes, however sure
    assert select(answers, [None] * 6, "confidence_filtered", confidences=confidences, keep=0.4).answer == "5"
    kept = select(answers, [None] * 6, "confidence_filtered", confidences=confidences, keep=1.0)
    assert kept.answer == "4" and kept.weights == {"4": 3.0, "5": 2.0}


def test_confidence_strategies_never_decide_early() -> None:
    assert not weighted_vote_is_decided({"4": 100.0}, 1, "confidence_weighted")
    assert not weighted_vote_is_decided({"4": 100.0}, 1, "confidence_filtered")
