"""DeepConf's confidence measures on hand-built log-prob sequences (tts/confidence.py)."""

from __future__ import annotations

import math

import pytest

from langchain_latts.tts.confidence import (
    GroupConfidence,
    RunningConfidence,
    bottom_share_confidence,
    branch_confidence,
    confidence_weight,
    cut_measure,
    group_confidences,
    lowest_group_confidence,
    lowest_logprob,
    mean_confidence,
    most_confident,
    tail_confidence,
    token_confidence,
    warmup_threshold,
)


def test_token_confidence_is_the_negative_mean_log_prob_of_the_top_k() -> None:
    sure = [math.log(0.97), math.log(0.01), math.log(0.01), math.log(0.01)]
    unsure = [math.log(0.3), math.log(0.3), math.log(0.2), math.log(0.2)]
    assert token_confidence(sure, k=4) == pytest.approx(-(math.log(0.97) + 3 * math.log(0.01)) / 4)
    assert token_confidence(sure, k=4) > token_confidence(unsure, k=4), "a peaked distribution is more confident"
    # only the top k count, in any order; fewer candidates average what there is
    assert token_confidence([-5.0, -0.1, -3.0], k=2) == pytest.approx((0.1 + 3.0) / 2)
    assert token_confidence([-0.5], k=5) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least one"):
        token_confidence([], k=5)
    with pytest.raises(ValueError, match="k must be"):
        token_confidence([-1.0], k=0)


def test_mean_and_tail_confidence() -> None:
    confidences = [1.0, 2.0, 3.0, 6.0]
    assert mean_confidence(confidences) == 3.0
    assert tail_confidence(confidences, tail=2) == 4.5
    assert tail_confidence(confidences, tail=10) == 3.0
    with pytest.raises(ValueError, match="at least one token"):
        mean_confidence([])


def test_group_confidences_slide_a_window_and_a_short_branch_is_one_group() -> None:
    confidences = [4.0, 4.0, 1.0, 1.0, 4.0]
    assert group_confidences(confidences, window=2) == [4.0, 2.5, 1.0, 2.5]
    assert lowest_group_confidence(confidences, window=2) == 1.0
    assert group_confidences(confidences, window=9) == [2.8]
    assert bottom_share_confidence(confidences, window=2, share=0.5) == pytest.approx((1.0 + 2.5) / 2)
    assert bottom_share_confidence(confidences, window=2, share=0.1) == 1.0, "at least one group"


def test_branch_confidence_by_measure() -> None:
    confidences = [4.0, 4.0, 1.0, 1.0, 4.0]
    assert branch_confidence(confidences, "mean", window=2, tail=2) == 2.8
    assert branch_confidence(confidences, "tail", window=2, tail=2) == 2.5
    assert branch_confidence(confidences, "lowest_group", window=2, tail=2) == 1.0
    assert branch_confidence(confidences, "bottom_share", window=2, tail=2) == 1.0


def test_the_running_group_confidence_matches_the_offline_groups() -> None:
    confidences = [4.0, 4.0, 1.0, 1.0, 4.0, 0.5, 3.0]
    running = GroupConfidence(window=3)
    seen = [running.push(c) for c in confidences]
    assert seen[:2] == [None, None]
    assert seen[2:] == pytest.approx(group_confidences(confidences, window=3))
    assert running.lowest == pytest.approx(lowest_group_confidence(confidences, window=3))


@pytest.mark.parametrize(("keep", "passing"), [(0.1, 1), (0.5, 5), (0.9, 9), (1.0, 10), (0.01, 1)])
def test_the_warmup_threshold_lets_the_most_confident_share_pass(keep: float, passing: int) -> None:
    lowest = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6, 5.0, 3.5, 8.0, 7.0]
    threshold = warmup_threshold(lowest, keep)
    assert sum(value >= threshold for value in lowest) == passing
    with pytest.raises(ValueError, match="keep must be"):
        warmup_threshold(lowest, 0.0)


def test_most_confident_keeps_a_share_and_never_an_unknown_one() -> None:
    assert most_confident([1.0, 5.0, 3.0, None, 4.0], keep=0.5) == [False, True, False, False, True]
    assert most_confident([2.0, 2.0, 1.0], keep=0.3) == [True, False, False], "ties keep the lower index"
    assert most_confident([None, None], keep=0.5) == [False, False]


def test_lowest_logprob_is_the_least_likely_sampled_token_and_weighs_as_its_probability() -> None:
    sampled = [math.log(0.9), math.log(0.05), math.log(0.8)]
    assert lowest_logprob(sampled) == pytest.approx(math.log(0.05))
    assert branch_confidence([9.0, 9.0, 9.0], "lowest_logprob", window=2, tail=2, logprobs=sampled) == \
        pytest.approx(math.log(0.05)), "the top-k confidences play no part"
    assert confidence_weight(math.log(0.05), "lowest_logprob") == pytest.approx(0.05)
    assert confidence_weight(2.5, "lowest_group") == 2.5
    with pytest.raises(ValueError, match="at least one"):
        lowest_logprob([])


def test_the_running_confidence_tracks_the_measure_the_cut_off_learns_on() -> None:
    confidences, sampled = [3.0, 1.0, 2.0, 4.0], [-0.1, -2.0, -0.3, -0.2]
    by_logprob = RunningConfidence("lowest_logprob", window=2)
    assert [by_logprob.push(c, lp) for c, lp in zip(confidences, sampled)] == sampled
    assert cut_measure("lowest_logprob") == "lowest_logprob"
    by_group = RunningConfidence("mean", window=2)
    values = [by_group.push(c, lp) for c, lp in zip(confidences, sampled)]
    assert values == [None, 2.0, 1.5, 3.0]
    assert cut_measure("mean") == "lowest_group"
    assert min(v for v in values if v is not None) == lowest_group_confidence(confidences, 2)


def test_separation_compares_right_and_wrong_samples_of_the_same_question_only() -> None:
    from langchain_latts.bench.confidence import separation

    # within each question the right sample is more confident: perfect separation, although
    # question 2's wrong sample is more confident than question 1's right one
    assert separation([[(-0.5, True), (-2.0, False)], [(-0.01, True), (-0.1, False)]]) == 1.0
    assert separation([[(-1.0, True), (-1.0, False)]]) == 0.5, "a tie counts half"
    assert separation([[(-1.0, True), (-0.1, False), (-2.0, False)]]) == 0.5
    assert separation([[(-1.0, True)], [(-1.0, False)]]) is None, "no question with both"
