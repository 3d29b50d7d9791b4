"""The planner inside a call: which profile an engine uses, and the plan of each call.

An engine's profile is, in order of preference:

1. the file given as ``latency_profile`` (refused if it was measured for another setup);
2. the cached profile of this setup (``latts profile`` wrote it; same hardware, versions,
   models and engine settings, see :mod:`~langchain_latts.planner.profile`);
3. a **start-up profile**, measured once when the engine starts (always, for a fleet of
   servers: through the fleet, so its step times are the fleet's) (about a second on the
   built-in model): the step time of this engine as configured at a few batch sizes, the
   first-token time of the prompt, and output lengths -- of held-out problems for the
   built-in model, two samples each, which also fit its per-question length model; for
   another model ``max_tokens`` until calls have been observed, then the lengths of the
   last ``OBSERVED`` finished branches. A start-up profile has no accuracy calibration
   (the default accuracy model), no other speculation settings and the default latency
   error.

What confidence needs is measured the first time a call asks for it, when the profile
lacks it (:func:`price_confidence`): the step-time cost of the call's log-probs, and for
``prune="confidence"`` on the built-in model the cut-off's calibration from graded
samples of 16 held-out problems.

The profile in use is named in ``response_metadata["tts"]["plan"]["profile"]``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from langchain_latts.engines.base import (
    Engine,
    EngineConfig,
)
from langchain_latts.planner.calibration import MIN_PACE_TOKENS, adjusted_error, timing_observation
from langchain_latts.planner.calibration import WINDOW as TIMING_WINDOW
from langchain_latts.planner.engine_config import profile_identity
from langchain_latts.planner.latency import SpeculationSetting, seconds_per_token
from langchain_latts.planner.lengths import fit_length_model
from langchain_latts.planner.plan import Plan, plan_call
from langchain_latts.planner.profile import (
    Identity,
    Prefill,
    Profile,
    StepCurve,
    load_profile,
    monotone,
)
from langchain_latts.planner.profiler import (
    builtin_calibration,
    confidence_calibration,
    graded_samples,
    logprobs_slowdown,
    natural_samples,
    timed_batch,
)
from langchain_latts.settings import TTSSettings
from langchain_latts.tts.lifeline import Lifeline

logger = logging.getLogger(__name__)

__all__ = ["EngineProfile", "Reservations", "cut_off_calibration", "engine_profile", "lifeline_for", "plan_for_call",
           "reservations", "speculation_of"]

#: How long the planner remembers how many calls ran together, in seconds (a decay constant).
PEERS_MEMORY_S = 3.0
#: Finished branches whose lengths a start-up profile of a user model keeps.
OBSERVED = 256
#: Tokens per branch of the start-up step timing, and the batch sizes timed.
STARTUP_TOKENS = 24
STARTUP_BATCHES = (1, 2, 4, 8, 16, 32)
#: Finished branches a start-up profile must observe before it plans with their lengths.
MIN_OBSERVED = 8
#: Samples per held-out problem of the built-in model's start-up length model.
STARTUP_SAMPLES = 2


@dataclass
class EngineProfile:
    """The profile an engine plans with, and what calls observed since."""

    profile: Profile
    #: "latts profile <id>" or "start-up".
    source: str
    #: The speculation setting to look step curves up with (a start-up profile stores
    #: this engine's own curve as "off", whatever its speculation).
    lookup: SpeculationSetting
    observed: collections.deque[int] = field(default_factory=lambda: collections.deque(maxlen=OBSERVED))
    learns_lengths: bool = False
    #: ``(branches, ln(measured / predicted))`` of the last planned calls (calibration.py).
    timings: collections.deque[tuple[int, float]] = field(
        default_factory=lambda: collections.deque(maxlen=TIMING_WINDOW))

    def current(self, max_tokens: int | None = None) -> Profile:
        """The profile with what calls observed: their output lengths when it learns them
        (until :data:`MIN_OBSERVED` branches have finished, the call's own ``max_tokens``:
        no call's limit caps another's plan), and the latency model's error moved towards
        the calls' measured timing."""
        update: dict[str, Any] = {}
        if self.learns_lengths and len(self.observed) >= MIN_OBSERVED:
            update["output_lengths"] = sorted(self.observed)
        elif self.learns_lengths and max_tokens is not None:
            update["output_lengths"] = [max_tokens]
        if self.timings:
            update["latency_error"] = adjusted_error(self.profile.timing_error, list(self.timings))
        return self.profile.model_copy(update=update) if update else self.profile

    def observe(self, lengths: list[int]) -> None:
        if self.learns_lengths:
            self.observed.extend(lengths)

    def observe_timing(self, plan: Plan, branches: Sequence[Any], now_s: float, *, running: float,
                       prompt_tokens: int, slowdown: float = 1.0) -> None:
        """Record how a call's branches ran against the latency model (``branches`` carry
        ``first_token_at_s``, ``ended_at_s`` and ``num_tokens``; ``now_s`` ends the ones
        still open). ``running`` is the mean number of sequences the engine ran during the
        call (its own and other calls'): the model is judged at the load the call met, not at
        the load the plan foresaw, so that what calls that start together assume about each
        other (a fair share) is not learned as an error of the model."""
        firsts = [b.first_token_at_s for b in branches if b.first_token_at_s is not None]
        paces = [((b.ended_at_s if b.ended_at_s is not None else now_s) - b.first_token_at_s) / (b.num_tokens - 1)
                 for b in branches if b.first_token_at_s is not None and b.num_tokens - 1 >= MIN_PACE_TOKENS]
        met = slowdown * seconds_per_token(self.profile, max(1, round(running)), self.lookup, prompt_tokens)
        value = timing_observation(predicted_first_token_s=plan.first_token_s, predicted_seconds_per_token=met,
                                   length=plan.output_length, first_tokens_s=firsts, paces_s=paces)
        if value is not None:
            self.timings.append((plan.branches, value))


#: Per engine (for its lifetime) and ``latency_profile`` setting: the profile it plans with.
_PROFILES: weakref.WeakKeyDictionary[Engine, dict[str | None, EngineProfile]] = weakref.WeakKeyDictionary()
_LOCKS: weakref.WeakKeyDictionary[Engine, asyncio.Lock] = weakref.WeakKeyDictionary()


def speculation_of(config: EngineConfig) -> SpeculationSetting:
    """The speculation setting an engine config runs with."""
    spec = config.speculative
    if spec is None:
        return SpeculationSetting.off()
    if spec.schedule is not None:
        return SpeculationSetting(drafter=True, schedule=spec.schedule)
    return SpeculationSetting.fixed(spec.num_speculative_tokens)


def _covers(profile: Profile, setting: SpeculationSetting) -> bool:
    names = {setting.curve_name(b) for b in range(1, profile.max_batch + 1)}
    return names <= set(profile.steps)


async def engine_profile(engine: Engine, settings: TTSSettings, max_num_seqs: int) -> EngineProfile:
    """The engine's profile (module docstring), loaded or measured once per engine."""
    known = _PROFILES.setdefault(engine, {})
    key = settings.latency_profile
    if key not in known:
        async with _LOCKS.setdefault(engine, asyncio.Lock()):
            if key not in known:
                known[key] = await _resolve(engine, settings, max_num_seqs)
    return known[key]


async def _resolve(engine: Engine, settings: TTSSettings, max_num_seqs: int) -> EngineProfile:
    setting = speculation_of(engine.config)
    identity = await asyncio.to_thread(profile_identity, settings)
    if engine.config.endpoints:  # a fleet is profiled against itself, never with this machine's profile
        return await _startup_profile(engine, settings, identity, max_num_seqs)
    profile = load_profile(identity, settings.latency_profile)
    if profile is not None and _covers(profile, setting):
        return EngineProfile(profile, f"latts profile {profile.profile_id} ({profile.created})", setting)
    if profile is not None:
        logger.warning("profile %s has no step times for speculation %s; measuring a start-up profile instead",
                       profile.profile_id, setting.name)
    return await _startup_profile(engine, settings, identity, max_num_seqs)


async def _startup_profile(engine: Engine, settings: TTSSettings, identity: Identity,
                           max_num_seqs: int) -> EngineProfile:
    started = time.perf_counter()
    builtin = settings.model is None
    if builtin:
        problems = builtin_calibration()[:16]
        prompts = [engine.render_prompt([{"role": "user", "content": p.messages[0][1]}]) for p in problems]
    top = min(max_num_seqs or 1 << 30, max(settings.max_branches, 1))
    sizes = [b for b in STARTUP_BATCHES if b <= top] or [1]
    if sizes[-1] < top <= STARTUP_BATCHES[-1]:
        sizes.append(top)
    # Every timed batch asks about a prompt the engine has not seen (as a call does).
    fresh = [engine.render_prompt([{"role": "user", "content": f"Hello, this is message {i}."}])
             for i in range(2 * len(sizes))]
    if not builtin:
        prompts = fresh[:1]
    timed = [await timed_batch(engine, fresh[2 * i:2 * i + 2], b, tokens=STARTUP_TOKENS) for i, b in enumerate(sizes)]
    times = monotone([per_token for per_token, _ in timed])  # more branches are never faster
    launched = monotone([first for _, first in timed])
    ttft = launched[0]
    length_model = None
    if builtin:  # two samples of each problem: the per-question length model and its spreads
        natural = await natural_samples(engine, prompts, STARTUP_SAMPLES, settings.max_tokens, 0.8)
        lengths = sorted(r["tokens"] for runs in natural for r in runs)
        length_model = fit_length_model([p.messages[0][1] for p in problems],
                                        [[r["tokens"] for r in runs] for runs in natural],
                                        source=f"start-up: {len(problems)} held-out problems x {STARTUP_SAMPLES}")
    else:
        lengths = [settings.output_budget(engine.max_model_len - len(fresh[0]))]
    # Seconds per token per sequence, stored as the "off" curve: the lookup is always "off".
    profile = Profile(
        identity=identity,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        duration_s=time.perf_counter() - started,
        steps={"off": StepCurve(batch_sizes=sizes, step_s=times, first_token_s=launched,
                                prompt_tokens=len(fresh[0]))},
        prefill=Prefill(intercept_s=ttft, per_token_s=0.0, points=[(len(fresh[0]), ttft)]),
        output_lengths=lengths,
        length_model=length_model,
        calibration="start-up: " + ("16 held-out arithmetic problems" if builtin else "none (lengths observed)"),
    )
    logger.info("no latts profile for this setup: measured a start-up profile in %.1f s (run `latts profile` "
                "for speculation and accuracy calibration)", profile.duration_s)
    return EngineProfile(profile, "start-up", SpeculationSetting.off(), learns_lengths=not builtin)


async def price_confidence(state: EngineProfile, engine: Engine, settings: TTSSettings) -> None:
    """Complete ``state``'s profile with what a call using confidence needs (module
    docstring), measured once per engine; nothing for a call that asks for no log-probs."""
    k = settings.logprobs
    if k is None:
        return
    async with _LOCKS.setdefault(engine, asyncio.Lock()):
        profile = state.profile
        update: dict[str, Any] = {}
        if str(k) not in profile.logprobs_slowdown:
            prompts = [engine.render_prompt([{"role": "user", "content": "Compute 12 + 7 - 5."}])]
            batch = min(16, profile.max_batch)
            measured = await logprobs_slowdown(engine, prompts, batch, tokens=STARTUP_TOKENS, rounds=1, ks=(k,))
            update["logprobs_slowdown"] = profile.logprobs_slowdown | measured
        if settings.prune == "confidence" and profile.confidence is None and settings.model is None:
            graded = await graded_samples(engine, builtin_calibration()[:16], samples=1, max_tokens=settings.max_tokens,
                                          temperature=0.8, extractor=settings.extractor())
            update["confidence"] = confidence_calibration([r for q in graded for r, _ in q],
                                                          [ok for q in graded for _, ok in q])
        if update:
            state.profile = profile.model_copy(update=update)


class Reservations:
    """The sequences this process's calls have planned on one engine and not yet ended.

    Calls that start together (``batch``, parallel agent steps, concurrent users) all find
    an idle engine: their branches reach vLLM only after each has planned. So a plan is
    made and *reserved* in one step under a lock (:meth:`plan`), and every later plan
    counts the reservations of the calls still running; a call lowers its reservation as
    its branches end (:meth:`hold`) and drops it when it returns (:meth:`release`).

    A plan also knows its *peers*: the other planned calls running now, or the most seen
    recently (a peak that decays with time constant :data:`PEERS_MEMORY_S`), since callers
    that come in waves arrive after a plan is made. The planner shares the engine fairly
    with them: each is assumed to hold as many branches as the plan (``plan_call(peers=)``).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}
        self._clock = clock
        self._peak = 0.0
        self._peak_at = clock()

    def _recent_peers(self, now: float) -> float:
        return self._peak * math.exp(-(now - self._peak_at) / PEERS_MEMORY_S)

    def plan(self, call_id: str, engine_load: int, make: Callable[[int, int], Plan]) -> Plan:
        """``make(load, peers)`` with ``load`` the larger of the engine's unfinished requests
        and the other calls' reservations, and ``peers`` the other planned calls (now, or
        recently at most); reserves the plan's branches for ``call_id``."""
        with self._lock:
            now = self._clock()
            others = [n for key, n in self._held.items() if key != call_id]
            peers = max(len(others), math.floor(self._recent_peers(now) + 0.5))
            plan = make(max(engine_load, sum(others)), peers)
            self._held[call_id] = plan.branches
            if len(self._held) - 1 >= self._recent_peers(now):
                self._peak, self._peak_at = float(len(self._held) - 1), now
            return plan

    def hold(self, call_id: str, running: int) -> None:
        """``call_id`` now runs ``running`` branches."""
        with self._lock:
            if call_id in self._held:
                self._held[call_id] = running

    def release(self, call_id: str) -> None:
        with self._lock:
            self._held.pop(call_id, None)

    @property
    def held(self) -> int:
        """Sequences reserved by all calls."""
        with self._lock:
            return sum(self._held.values())


_RESERVATIONS: weakref.WeakKeyDictionary[Engine, Reservations] = weakref.WeakKeyDictionary()
_RESERVATIONS_LOCK = threading.Lock()


def reservations(engine: Engine) -> Reservations:
    """The reservation book of ``engine`` (one per engine and process)."""
    with _RESERVATIONS_LOCK:
        book = _RESERVATIONS.get(engine)
        if book is None:
            book = _RESERVATIONS[engine] = Reservations()
        return book


def plan_for_call(state: EngineProfile, settings: TTSSettings, engine: Engine, *, prompt_tokens: int,
                  time_left_s: float | None, question: str = "", call_id: str = "",
                  token_budget: int | None = None) -> Plan:
    """The plan of one call on ``engine`` as loaded now (other calls' running and reserved
    sequences), for ``question`` (the text its output length is predicted from), within
    ``time_left_s`` and ``token_budget`` (generated tokens over all branches). The plan's
    branches stay reserved for ``call_id`` until :meth:`Reservations.release`."""
    profile = state.current(settings.max_tokens)
    length = profile.length_estimate(question, max_tokens=settings.max_tokens)

    def make(load: int, peers: int) -> Plan:
        return plan_call(
            profile, prompt_tokens=prompt_tokens, max_tokens=settings.max_tokens,
            max_branches=settings.effective_branches if settings.temperature == 0 else settings.max_branches,
            speculation=state.lookup, deadline_s=time_left_s,
            token_budget=token_budget, load=load, peers=peers, length=length,
            slowdown=profile.slowdown(settings.logprobs), greedy=settings.plans_greedy,
            quorum=settings.quorum == "auto", greedy_member=settings.greedy_member == "auto",
        )

    plan = reservations(engine).plan(call_id, engine.num_unfinished_requests(), make)
    return replace(plan, speculation=speculation_of(engine.config).name)


#: Standard-normal quantile of the length the lifeline expects the leader to write (p75).
LIFELINE_Z = 0.6745


def lifeline_for(state: EngineProfile, settings: TTSSettings, plan: Plan, *, question: str,
                 time_left_s: float | None, prompt_tokens: int = 0) -> Lifeline | None:
    """The lifeline of a planned call with a deadline and several branches (None otherwise):
    the question's predicted length at its 75th percentile and how much faster a token is
    with one branch running than with the plan's (:mod:`~langchain_latts.tts.lifeline`)."""
    if time_left_s is None or plan.branches < 2:
        return None
    profile = state.current(settings.max_tokens)
    length = profile.length_estimate(question, max_tokens=settings.max_tokens)
    crowded = seconds_per_token(profile, plan.branches + plan.load, state.lookup, prompt_tokens)
    alone = seconds_per_token(profile, 1 + plan.load, state.lookup, prompt_tokens)
    return Lifeline(expected_tokens=length.quantile(LIFELINE_Z), solo_speedup=max(1.0, crowded / alone),
                    tick_s=min(0.05, max(0.005, time_left_s / 20)))


def cut_off_calibration(settings: TTSSettings, profile: Profile | None) -> dict[str, Any]:
    """The confidence cut-off's threshold and a branch's typical length: as given, else
    from ``profile`` (the planner's, or the cached one of this setup), else None (learned
    in the call) and ``max_tokens``. Pinned and planned calls read the same profile."""
    threshold = settings.confidence_threshold
    if threshold is None and profile is not None and profile.confidence is not None:
        threshold = profile.confidence.threshold(settings.confidence_measure)
    typical = settings.max_tokens if profile is None else min(settings.max_tokens, profile.output_length(0.5))
    return {"confidence_threshold": threshold, "typical_tokens": typical}
