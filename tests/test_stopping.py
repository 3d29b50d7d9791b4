"""Early-stop rules on hand-built vote counts."""

from __future__ import annotations

import pytest

from langchain_latts.tts.stopping import leader_posterior, should_stop


@pytest.mark.parametrize(
    ("v1", "v2", "expected"),
    [
        (0, 0, 0.5),  # no evidence: a coin flip
        (3, 0, 15 / 16),  # P(Bin(4, 1/2) <= 3) = 1 - 1/16
        (4, 0, 31 / 32),
        (5, 1, 1 - 8 / 128),  # P(Bin(7, 1/2) <= 5) = 1 - (C(7,6) + C(7,7)) / 2^7
        (6, 1, 1 - 9 / 256),  # 1 - (C(8,7) + C(8,8)) / 2^8
        (2, 2, 0.5),  # a tie stays a coin flip
    ],
)
def test_leader_posterior(v1: int, v2: int, expected: float) -> None:
    assert leader_posterior(v1, v2) == pytest.approx(expected)


def test_exact_rule_stops_only_when_the_vote_cannot_change() -> None:
    # 4 votes to 1 with 2 branches left: the runner-up can reach 3 < 4 -> decided.
    assert should_stop({"7": 4, "8": 1}, remaining=2, rule="exact")
    # 4 to 1 with 3 left: the runner-up could reach 4 = a tie -> not decided.
    assert not should_stop({"7": 4, "8": 1}, remaining=3, rule="exact")
    assert should_stop({"7": 4, "8": 1}, remaining=2, rule=True)  # True means exact


def test_adaptive_rule_stops_earlier_on_a_clear_leader() -> None:
    # Four unanimous votes with 12 branches left: the exact rule must wait, adaptive stops.
    assert not should_stop({"7": 4}, remaining=12, rule="exact")
    assert should_stop({"7": 4}, remaining=12, rule="adaptive")
    # Three unanimous votes are not enough at 0.95 (15/16 = 0.9375), at 0.9 they are.
    assert not should_stop({"7": 3}, remaining=12, rule="adaptive")
    assert should_stop({"7": 3}, remaining=12, rule="adaptive", threshold=0.9)
    # A close race never stops adaptively.
    assert not should_stop({"7": 5, "8": 4}, remaining=6, rule="adaptive")


def test_nothing_stops_without_votes_or_when_off() -> None:
    assert not should_stop({}, remaining=8, rule="adaptive")
    assert not should_stop({"7": 8}, remaining=8, rule=False)
    assert not should_stop({"7": 8}, remaining=0, rule="exact")  # nothing left to stop
