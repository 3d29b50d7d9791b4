"""Majority vote, the tie-break rule and the early-stop rule."""

from __future__ import annotations

from langchain_latts.tts.voting import majority_vote, vote_is_decided


def test_majority_wins() -> None:
    vote = majority_vote(["3", "4", "3", None, "3"])
    assert vote.answer == "3"
    assert vote.counts == {"3": 3, "4": 1}  # None does not vote
    assert vote.winner_index == 0


def test_tie_goes_to_the_lowest_branch_index() -> None:
    # "7" and "5" have two votes each; "5" appears first (branch 1) so it wins,
    # whatever order the branches finished in.
    vote = majority_vote([None, "5", "7", "7", "5"])
    assert vote.answer == "5"
    assert vote.winner_index == 1
    assert list(vote.counts) == ["5", "7"]


def test_no_answers() -> None:
    vote = majority_vote([None, None])
    assert vote.answer is None and vote.counts == {} and vote.winner_index is None


def test_decided_only_when_remaining_votes_cannot_catch_up() -> None:
    # 3 vs 1 with 1 left: the runner-up reaches at most 2 < 3 -> decided.
    assert vote_is_decided({"a": 3, "b": 1}, remaining=1)
    # 3 vs 1 with 2 left: the runner-up could tie at 3 -> not decided.
    assert not vote_is_decided({"a": 3, "b": 1}, remaining=2)
    # A single answer with 2 votes and 1 left: a new answer reaches at most 1.
    assert vote_is_decided({"a": 2}, remaining=1)
    assert not vote_is_decided({"a": 1}, remaining=1)
    assert not vote_is_decided({}, remaining=0)
    # Nothing left: any strict leader is decided.
    assert vote_is_decided({"a": 2, "b": 1}, remaining=0)
