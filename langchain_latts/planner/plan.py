"""The planner: branches per call and speculation per engine, from a profile (pure).

Per call (:func:`plan_call`), with ``L`` the profiled output length at ``quantile``
(p90: most branches are done by then) capped at ``max_tokens``:

1. For ``B = 1 .. max_branches`` predict the latency of ``B`` branches of length ``L``
   on the engine as loaded now (:func:`~langchain_latts.planner.latency.predict_latency`)
   and the tokens they spend (``B * L``).
2. ``B`` is *feasible* when its latency fits the time left before the deadline and its
   tokens fit the token budget (no deadline, no budget: every ``B`` is feasible).
3. Among the feasible ``B``, take the best expected vote accuracy
   (:mod:`~langchain_latts.planner.accuracy`) and choose the **smallest** ``B`` within
   ``tolerance`` (default half a point) of it: no branches are spent on a plateau.
4. If no ``B`` is feasible, one branch (the anytime rules still return the best answer
   reached by the deadline).

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

from langchain_latts.planner.accuracy import AccuracyModel
from langchain_latts.planner.latency import NO_SPECULATION, SpeculationSetting, predict_latency
from langchain_latts.planner.profile import Profile

__all__ = ["DEFAULT_QUANTILE", "DEFAULT_TOLERANCE", "Plan", "choose_speculation", "derive_schedule", "plan_call"]

#: Output-length quantile a plan must fit.
DEFAULT_QUANTILE = 0.9
#: Accuracy (absolute) a plan may give up to use fewer branches.
DEFAULT_TOLERANCE = 0.005


@dataclass(frozen=True)
class Plan:
    """What the planner chose for one call, and why (goes to ``response_metadata["tts"]["plan"]``)."""

    branches: int
    speculation: str
    predicted_latency_s: float
    expected_accuracy: float
    output_length: int
    profile_id: str
    #: ``"plateau"`` (more branches would not pay), ``"deadline"``, ``"budget"`` (the
    #: limit that stopped more branches), ``"max_branches"`` or ``"nothing fits"``.
    limited_by: str
    load: int = 0

    def as_metadata(self) -> dict[str, Any]:
        data = asdict(self)
        data["predicted_latency_s"] = round(self.predicted_latency_s, 4)
        data["expected_accuracy"] = round(self.expected_accuracy, 4)
        return data


def plan_call(profile: Profile, *, prompt_tokens: int, max_tokens: int, max_branches: int,
              speculation: SpeculationSetting = NO_SPECULATION, deadline_s: float | None = None,
              token_budget: int | None = None, load: int = 0, accuracy: AccuracyModel | None = None,
              quantile: float = DEFAULT_QUANTILE, tolerance: float = DEFAULT_TOLERANCE,
              max_num_seqs: int | None = None, slowdown: float = 1.0) -> Plan:
    """Choose the branches of one call (module docstring). ``deadline_s`` is the time left;
    ``slowdown`` scales every predicted latency (the call asks for log-probs:
    :meth:`~langchain_latts.planner.profile.Profile.slowdown`)."""
    model = accuracy or profile.accuracy
    length = min(max_tokens, profile.output_length(quantile))
    candidates: list[tuple[int, float, float]] = []  # (B, latency, accuracy)
    limited_by = "max_branches"
    for b in range(1, max_branches + 1):
        latency = slowdown * predict_latency(profile, lengths=[length] * b, prompt_tokens=prompt_tokens, load=load,
                                             speculation=speculation, max_num_seqs=max_num_seqs)
        if deadline_s is not None and latency > deadline_s:
            limited_by = "deadline"
            break
        if token_budget is not None and b * length > token_budget:
            limited_by = "budget"
            break
        candidates.append((b, latency, model.vote_accuracy(b)))
    if not candidates:
        latency = slowdown * predict_latency(profile, lengths=[length], prompt_tokens=prompt_tokens, load=load,
                                             speculation=speculation, max_num_seqs=max_num_seqs)
        return Plan(1, speculation.name, latency, model.vote_accuracy(1), length, profile.profile_id,
                    "nothing fits", load)
    best = max(acc for _, _, acc in candidates)
    b, latency, acc = next(c for c in candidates if c[2] >= best - tolerance)
    if b < candidates[-1][0]:
        limited_by = "plateau"
    return Plan(b, speculation.name, latency, acc, length, profile.profile_id, limited_by, load)


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
