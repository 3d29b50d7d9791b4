"""The latency model: one call's predicted latency from a measured profile (pure).

A call runs ``B`` branches of one prompt of ``P`` tokens on an engine where ``m`` other
sequences are already running, under a speculation setting ``S`` (a speculative length
``k(b)`` per running batch size ``b``: always 0 without a drafter, always ``k`` for a
fixed length, a schedule for vLLM's dynamic speculation). Branch ``i`` generates ``L_i``
tokens. Then::

    T = t_first(B, P) + sum over engine steps s of  t_step(n_s + m, k(n_s + m))

    t_first(B, P)  = seconds until all B branches have their first token: measured per
                     batch size with the profile's prompt (each branch costs the engine a
                     request set-up and its own first steps even though the B branches
                     share the prompt's KV cache: ~1-3 ms a branch on a CPU), plus the
                     fitted prefill time per prompt token beyond that prompt's; without
                     that measurement, the fitted prefill a + c * P
    t_step(b, k)   = the profiled step time at b running sequences with k speculative
                     tokens (linear between measured batch sizes), longer by the
                     profiled share per prompt token beyond the profile's prompt; for
                     a dynamic schedule the profile timed as a whole, that schedule's
                     own measured step time at b
    n_s            = branches of this call still running at step s: branch i runs while
                     the tokens it has gained after its first, sum over earlier steps of
                     tau(k(n + m)), are fewer than L_i - 1
    tau(k)         = tokens per step: 1 without speculation, the profiled mean acceptance
                     length with k speculative tokens

The ``m`` other sequences are assumed to run for the whole call (the conservative
reading of "the engine is loaded"); when ``n_s + m`` exceeds the engine's
``max_num_seqs``, the branches over the limit wait for a free slot. For planning, every
``L_i`` is the profiled output length at a quantile (the planner uses p90), so the call
is predicted to end when its branches reach that length. For validation (``latts
profile --validate``), ``L_i`` are the lengths the branches actually had.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from langchain_latts.planner.lengths import LengthEstimate
from langchain_latts.planner.profile import Profile, StepCurve

__all__ = ["NO_SPECULATION", "SpeculationSetting", "first_token_seconds", "mth_finish_seconds", "predict_latency",
           "seconds_per_token", "step_at"]

#: A dynamic speculation schedule: inclusive ``(first_batch, last_batch, k)`` ranges
#: starting at 1 (vLLM's ``num_speculative_tokens_per_batch_size``).
Schedule = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class SpeculationSetting:
    """An engine's speculation: none, a fixed length or a per-batch-size schedule."""

    #: The drafter is loaded (a dynamic schedule pays for it even where k = 0).
    drafter: bool = False
    #: ``(first_batch, last_batch, k)`` ranges; the last range extends to any batch size.
    schedule: Schedule = ()

    @classmethod
    def off(cls) -> SpeculationSetting:
        return cls()

    @classmethod
    def fixed(cls, k: int) -> SpeculationSetting:
        return cls(drafter=True, schedule=((1, 1 << 30, k),)) if k > 0 else cls()

    @property
    def name(self) -> str:
        if not self.drafter:
            return "off"
        if len(self.schedule) == 1:
            return f"k={self.schedule[0][2]}"
        return "dynamic " + ", ".join(f"{a}-{b}:{k}" for a, b, k in self.schedule)

    @property
    def dynamic(self) -> bool:
        return self.drafter and len(self.schedule) > 1

    @property
    def max_k(self) -> int:
        return max((k for _, _, k in self.schedule), default=0)

    def k_at(self, batch: int) -> int:
        """Speculative tokens in force when ``batch`` sequences run."""
        if not self.drafter:
            return 0
        for first, last, k in self.schedule:
            if first <= batch <= last:
                return k
        return self.schedule[-1][2]

    def curve_name(self, batch: int) -> str:
        """The profile's step curve in force at ``batch`` running sequences."""
        if not self.drafter:
            return "off"
        k = self.k_at(batch)
        return "k=0+draft" if k == 0 else f"k={k}"


#: The setting of an engine without a drafter.
NO_SPECULATION = SpeculationSetting()


def predict_latency(profile: Profile, *, lengths: Sequence[float], prompt_tokens: int, load: int = 0,
                    speculation: SpeculationSetting = NO_SPECULATION,
                    max_num_seqs: int | None = None) -> float:
    """Predicted seconds of one call (module docstring): ``lengths`` are the branches'
    output tokens, ``load`` the sequences other calls already run on the engine."""
    if not lengths:
        return 0.0
    seconds = first_token_seconds(profile, len(lengths), prompt_tokens, speculation)
    slots = max(1, (max_num_seqs or profile.identity.max_num_seqs or 1 << 30) - load)
    remaining = sorted((max(0.0, float(n) - 1) for n in lengths), reverse=True)
    waiting, running = remaining[slots:], remaining[slots:slots] + remaining[:slots]
    # Advance phase by phase: the batch is constant until the shortest running branch ends.
    while running:
        batch = len(running) + load
        step_s, per_step = step_at(profile, speculation, batch, prompt_tokens)
        steps = steps_for(min(running), per_step)
        seconds += steps * step_s
        gained = steps * per_step
        running = [r - gained for r in running if r - gained > 1e-9]
        while waiting and len(running) < slots:
            running.append(waiting.pop(0))
    return seconds


def first_token_seconds(profile: Profile, branches: int, prompt_tokens: int,
                        speculation: SpeculationSetting = NO_SPECULATION) -> float:
    """Seconds until all of ``branches`` branches of a ``prompt_tokens``-token prompt have
    their first token (module docstring: ``t_first``)."""
    curve = _timed(profile, speculation) or profile.steps[speculation.curve_name(branches)]
    launched = curve.first_token_at(branches)
    if launched is None:
        return profile.prefill.at(prompt_tokens)
    return launched + profile.prefill.per_token_s * max(0, prompt_tokens - curve.prompt_tokens)


def seconds_per_token(profile: Profile, batch: int, speculation: SpeculationSetting = NO_SPECULATION,
                      prompt_tokens: int = 0) -> float:
    """Seconds one sequence waits per output token while ``batch`` sequences of a
    ``prompt_tokens``-token prompt run: the step time in force at that batch size and
    context over the tokens a step gains."""
    step_s, per_step = step_at(profile, speculation, batch, prompt_tokens)
    return step_s / per_step


def step_at(profile: Profile, speculation: SpeculationSetting, batch: int,
            prompt_tokens: int = 0) -> tuple[float, float]:
    """(seconds per engine step, tokens a sequence gains per step) while ``batch``
    sequences run under ``speculation``: the step time of the curve in force at that
    batch size -- or, for a dynamic schedule the profile timed as a whole, its own curve --
    and the acceptance of the length in force."""
    curve = profile.steps[speculation.curve_name(batch)]
    timed = _timed(profile, speculation)
    return (timed or curve).step_at(batch, prompt_tokens), curve.tokens_per_step


def _timed(profile: Profile, speculation: SpeculationSetting) -> StepCurve | None:
    """The measured curve of ``speculation`` when it is the dynamic schedule the profile timed."""
    return profile.schedule_curve(speculation.schedule) if speculation.dynamic else None


def mth_finish_seconds(length: LengthEstimate, m: int, branches: int, *, first_token_s: float,
                       seconds_per_token: float, max_tokens: int) -> float:
    """Seconds until the ``m``-th of ``branches`` branches finishes (a quorum decides then):
    their first token, then the ``m``-th shortest of their lengths, by the question's
    length estimate (:meth:`~langchain_latts.planner.lengths.LengthEstimate.mth_of`, capped
    at ``max_tokens``), at the pace of the whole batch -- the others run until the quorum."""
    return first_token_s + min(float(max_tokens), length.mth_of(m, branches)) * seconds_per_token


def steps_for(length: float, tokens_per_step: float) -> int:
    """Engine steps one sequence needs for ``length`` tokens."""
    return max(1, math.ceil(length / tokens_per_step))
