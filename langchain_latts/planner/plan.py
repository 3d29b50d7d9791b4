"""The planner: branches per call and speculation per engine, from a profile (pure).

Per call (:func:`plan_call`), for ``B = 1 .. max_branches``:

1. the question's output length is predicted from its text
   (:mod:`~langchain_latts.planner.lengths`: a median and how wrong it may be);
2. the chance that each of the ``B`` branches finishes before the deadline, on the engine
   as loaded now (other calls' running and reserved sequences count), gives the expected
   accuracy of the plan -- the vote of the branches that finish, nothing when none does
   (:mod:`~langchain_latts.planner.risk`); without a deadline it is the vote of ``B``;
3. ``B`` must fit the token budget at the 90th percentile of the predicted length.

4. **greedy decoding is a plan too**: one branch at temperature 0, whose accuracy the
   calibration measured (``AccuracyModel.greedy_accuracy``), with one branch's chance of
   finishing. Where models' errors are sampled slips, one greedy answer beats a vote;
5. **and a vote with a greedy member**: branch 0 decodes at temperature 0 in the same batch
   (no extra cost) and wins ties, when the calibration counted that vote of ``B`` more
   accurate than a sampled one (``AccuracyModel.greedy_member``, :meth:`best_vote`).

The plan is the **smallest** ``B`` whose expected accuracy is within ``tolerance`` (half a
point) of the best: no branch is spent on a plateau, and a plan that would only just make
the deadline loses to a smaller one that surely does (a near miss returns nothing). Greedy is chosen
when its expected accuracy is within ``tolerance`` of that plan's (it costs one branch), or within
:data:`GAIN_Z` standard errors of the calibration's measured gain of that vote over greedy
(``AccuracyModel.vote_gain_se``, or ``member_gain_se`` for a vote with a greedy member): a vote
is planned over greedy only where the calibration measured it to be better with ~95%
confidence. Among
the plans whose chance of finishing *no* branch is at most one branch's plus
:data:`NONE_SLACK`: a caller with a deadline would rather have a less ambitious answer on
time than a better one that may not come.

Per engine (:func:`derive_schedule`, :func:`choose_speculation`), since in vLLM the
speculative length is an engine setting:

* the **dynamic schedule** uses, at every batch size, the ``k`` with the most tokens per
  second per sequence, ``tau(k) / t_step(b, k)``; where that is ``k = 0``, the drafter
  still runs once per step (vLLM keeps its KV cache in sync), which the profile measures
  as the ``k=0+draft`` curve;
* :func:`choose_speculation` picks, among the settings allowed (off, each fixed ``k``,
  the dynamic schedule), the one with the least predicted latency summed over the branch
  counts 1, 2, 4, ... ``max_branches``: faster at every count means more branches fit any
  deadline, so the choice does not depend on the call's deadline (an engine serves calls
  with many deadlines).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from langchain_latts.planner.accuracy import AccuracyModel, quorum_size
from langchain_latts.planner.latency import (
    NO_SPECULATION,
    SpeculationSetting,
    first_token_seconds,
    mth_finish_seconds,
    predict_latency,
    seconds_per_token,
)
from langchain_latts.planner.lengths import Z90, LengthEstimate, marginal_length_model
from langchain_latts.planner.profile import Profile
from langchain_latts.planner.risk import Outcome, expected_outcome

__all__ = ["DEFAULT_QUANTILE", "DEFAULT_TOLERANCE", "Plan", "choose_speculation", "derive_schedule", "plan_call"]

#: Output-length quantile the engine's speculation is compared at.
DEFAULT_QUANTILE = 0.9
#: Accuracy (absolute) a plan may give up to use fewer branches.
DEFAULT_TOLERANCE = 0.005
#: One branch that more likely misses the deadline than not: "nothing fits".
NOTHING_FITS = 0.5
#: How much more likely than one branch to finish nothing a plan may be (absolute).
NONE_SLACK = 0.02
#: Expected accuracy below the best so far at which the search over B stops (3 in a row).
GIVE_UP = 0.02


@dataclass(frozen=True)
class Plan:
    """What the planner chose for one call, and why (goes to ``response_metadata["tts"]["plan"]``)."""

    branches: int
    speculation: str
    #: Latency predicted for the branches at the question's predicted median length.
    predicted_latency_s: float
    #: Expected accuracy, counting the chance that branches miss the deadline.
    expected_accuracy: float
    #: The question's predicted median output length, in tokens.
    output_length: int
    profile_id: str
    #: ``"plateau"`` (more branches would not pay), ``"deadline"`` (more would risk the
    #: deadline more than they add), ``"budget"``, ``"max_branches"``, ``"nothing fits"``
    #: (even one branch more likely misses the deadline than not) or ``"greedy"`` (one
    #: greedy answer is expected to be as good as the best vote).
    limited_by: str
    #: Sequences other calls ran or had reserved when the plan was made.
    load: int = 0
    #: Probability that every branch finishes by the deadline.
    p_complete: float = 1.0
    #: Probability that no branch finishes by the deadline.
    p_none: float = 0.0
    #: What the latency model predicted for these branches: seconds until all have their
    #: first token, and seconds per token after it (calls measure both: calibration.py).
    first_token_s: float = 0.0
    seconds_per_token: float = 0.0
    #: Other planned calls sharing the engine (each assumed to run as many branches).
    peers: int = 0
    #: One branch decoded greedily (temperature 0) instead of a sampled vote.
    greedy: bool = False
    #: The best sampled plan's branches and expected accuracy, when greedy was chosen over it.
    sampled: tuple[int, float] | None = None
    #: Branches whose finishing decides the call (``quorum="auto"``; None: all of them),
    #: and the latency predicted until that many have finished.
    quorum: int | None = None
    quorum_latency_s: float | None = None
    #: Branch 0 decodes greedily inside the sampled vote (and wins its ties).
    greedy_member: bool = False

    def as_metadata(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("predicted_latency_s", "expected_accuracy", "p_complete", "p_none", "first_token_s",
                    "quorum_latency_s"):
            data[key] = None if data[key] is None else round(data[key], 4)
        data["seconds_per_token"] = round(self.seconds_per_token, 6)
        return data


#: Standard errors by which a vote's measured gain over greedy must clear its noise to be
#: planned over one greedy answer (about a 95% one-sided bound). With one standard error
#: the built-in model's greedy-member vote of 9 (+6.3 points on the calibration questions)
#: was planned where it scored 2 points below greedy on held-out problems.
GAIN_Z = 2.0


def plan_call(profile: Profile, *, prompt_tokens: int, max_tokens: int, max_branches: int,
              speculation: SpeculationSetting = NO_SPECULATION, deadline_s: float | None = None,
              token_budget: int | None = None, load: int = 0, accuracy: AccuracyModel | None = None,
              length: LengthEstimate | None = None, tolerance: float = DEFAULT_TOLERANCE,
              max_num_seqs: int | None = None, slowdown: float = 1.0, peers: int = 0,
              greedy: bool = True, quorum: bool = False, greedy_member: bool = True) -> Plan:
    """Choose the branches of one call (module docstring). ``deadline_s`` is the time left;
    ``length`` the question's predicted output length (None: the profile's length
    distribution); ``load`` the sequences other calls run or reserved; ``peers`` the other
    planned calls sharing the engine, each assumed to run as many branches as this one
    (a fair share: ``B`` branches are timed at ``max(load, peers * B) + B`` sequences);
    ``slowdown`` scales every step time (the call asks for log-probs:
    :meth:`~langchain_latts.planner.profile.Profile.slowdown`); ``greedy``: whether greedy
    decoding may be chosen (when the accuracy model measured it), ``greedy_member``: and a
    vote with a greedy member (both need ``greedy``); ``quorum``: whether the
    call decides on the first :func:`~langchain_latts.planner.accuracy.quorum_size` branches
    to finish (the plan then predicts the time until that many have: the order statistic
    of the question's branch lengths, :meth:`~langchain_latts.planner.lengths.LengthEstimate.mth_of`)."""
    if length is None:
        length = marginal_length_model(profile.output_lengths).estimate("", max_tokens=max_tokens)
    model = (accuracy or profile.accuracy).for_length(length.median)  # longer questions may be harder

    def vote(finished: int) -> float:
        """The vote the plan would run (sampled, or with a greedy member where measured better)."""
        return model.best_vote(finished)[0] if greedy and greedy_member else model.vote_accuracy(finished)
    error = profile.timing_error
    slots = (max_num_seqs or profile.identity.max_num_seqs or 1 << 30) - load
    upper = min(float(max_tokens), length.quantile(Z90))
    scored: list[tuple[int, Outcome]] = []
    timing: dict[int, tuple[float, float]] = {}  # B -> (first-token seconds, seconds per token)
    budget_hit = False
    for b in range(1, max_branches + 1):
        if token_budget is not None and b * upper > token_budget and scored:
            budget_hit = True
            break
        others = max(load, peers * b)
        timing[b] = (slowdown * first_token_seconds(profile, b, prompt_tokens, speculation),
                     slowdown * seconds_per_token(profile, b + others, speculation, prompt_tokens))
        scored.append((b, expected_outcome(
            b, seconds_per_token=timing[b][1], first_token_s=timing[b][0], deadline_s=deadline_s, length=length,
            vote_accuracy=vote, timing_bias=error.bias_at(b), timing_sigma=error.sigma,
            free_slots=slots - (others - load), max_tokens=max_tokens)))
        # Past the point where more branches only lose (3 counts in a row well below the
        # best so far), more are not worth computing: a plan costs the call's own time.
        best_so_far = max(o.expected_accuracy for _, o in scored)
        if len(scored) > 3 and all(o.expected_accuracy < best_so_far - GIVE_UP for _, o in scored[-3:]):
            break
    # A plan never risks finishing nothing more than one branch would (plus NONE_SLACK).
    safe = [c for c in scored if c[0] == 1 or c[1].p_none <= scored[0][1].p_none + NONE_SLACK]
    best = max(outcome.expected_accuracy for _, outcome in safe)
    b, outcome = next(c for c in safe if c[1].expected_accuracy >= best - tolerance)
    if greedy and model.greedy_accuracy is not None:
        one = expected_outcome(
            1, seconds_per_token=timing[1][1], first_token_s=timing[1][0], deadline_s=deadline_s, length=length,
            vote_accuracy=lambda _: model.greedy_accuracy or 0.0, timing_bias=error.bias_at(1),
            timing_sigma=error.sigma, free_slots=slots - (max(load, peers) - load), max_tokens=max_tokens)
        member = greedy_member and model.best_vote(b)[1]
        noise = GAIN_Z * (model.member_gain_se if member else model.vote_gain_se)
        if one.expected_accuracy >= outcome.expected_accuracy - max(tolerance, noise):
            latency = slowdown * predict_latency(profile, lengths=[length.median], prompt_tokens=prompt_tokens,
                                                 load=max(load, peers), speculation=speculation, max_num_seqs=max_num_seqs)
            return Plan(1, speculation.name, latency, one.expected_accuracy, round(length.median),
                        profile.profile_id, "greedy", load, one.p_complete, one.p_none, *timing[1], peers=peers,
                        greedy=True, sampled=(b, round(outcome.expected_accuracy, 4)))
    plateau = max(vote(c) for c, _ in scored)
    unconstrained = next(c for c, _ in scored if vote(c) >= plateau - tolerance)
    if deadline_s is not None and scored[0][1].p_none > NOTHING_FITS and b == 1:
        limited_by = "nothing fits"
    elif b < unconstrained:
        limited_by = "deadline"
    elif budget_hit and b == scored[-1][0]:
        limited_by = "budget"
    elif b == max_branches:
        limited_by = "max_branches"
    else:
        limited_by = "plateau"
    latency = slowdown * predict_latency(profile, lengths=[length.median] * b, prompt_tokens=prompt_tokens,
                                         load=max(load, peers * b), speculation=speculation, max_num_seqs=max_num_seqs)
    m = quorum_size(model, b, tolerance) if quorum and b > 1 else None
    quorum_latency = None if m is None else mth_finish_seconds(
        length, m, b, first_token_s=timing[b][0], seconds_per_token=timing[b][1], max_tokens=max_tokens)
    return Plan(b, speculation.name, latency, outcome.expected_accuracy, round(length.median), profile.profile_id,
                limited_by, load, outcome.p_complete, outcome.p_none, *timing[b], peers=peers,
                quorum=m, quorum_latency_s=quorum_latency,
                greedy_member=greedy and greedy_member and model.best_vote(b)[1])


def derive_schedule(profile: Profile, max_batch: int) -> SpeculationSetting:
    """The dynamic schedule: per batch size the ``k`` with the most tokens/s per sequence.

    Candidates are the profiled fixed lengths and ``k = 0`` with the drafter loaded.
    Returns a fixed setting when one ``k`` wins everywhere."""
    options = [0, *profile.speculative_lengths()]

    def rate(k: int, b: int) -> float:
        curve = profile.steps["k=0+draft" if k == 0 else f"k={k}"]
        return curve.tokens_per_step / curve.at(b)

    best = [max(options, key=lambda k: (rate(k, b), -k)) for b in range(1, max_batch + 1)]
    ranges: list[tuple[int, int, int]] = []
    for b, k in enumerate(best, start=1):
        if ranges and ranges[-1][2] == k:
            ranges[-1] = (ranges[-1][0], b, k)
        else:
            ranges.append((b, b, k))
    ranges[-1] = (ranges[-1][0], max(max_batch, ranges[-1][1]), ranges[-1][2])
    if len(ranges) == 1:
        return SpeculationSetting.fixed(ranges[0][2]) if ranges[0][2] else SpeculationSetting(
            drafter=True, schedule=((1, max_batch, 0),))
    return SpeculationSetting(drafter=True, schedule=tuple(ranges))


def choose_speculation(profile: Profile, allowed: Sequence[SpeculationSetting], *, prompt_tokens: int,
                       max_tokens: int, max_branches: int,
                       max_num_seqs: int | None = None) -> tuple[SpeculationSetting, float]:
    """The engine's speculation: the allowed setting with the least predicted latency summed
    over the branch counts 1, 2, 4, ... ``max_branches`` (at the planned output length, idle
    engine); returns it and that sum in seconds. A setting faster at every count lets the
    planner fit more branches under any deadline, so it is chosen whatever the deadline."""
    if not allowed:
        raise ValueError("no speculation setting allowed")
    counts = sorted({min(max_branches, 1 << i) for i in range(max_branches.bit_length() + 1)})
    length = min(max_tokens, profile.output_length(DEFAULT_QUANTILE))

    def total(setting: SpeculationSetting) -> float:
        return sum(predict_latency(profile, lengths=[length] * b, prompt_tokens=prompt_tokens, speculation=setting,
                                   max_num_seqs=max_num_seqs) for b in counts)

    scored = [(total(s), i, s) for i, s in enumerate(allowed)]
    seconds, _, best = min(scored)
    return best, seconds
