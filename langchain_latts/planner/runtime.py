"""The planner inside a call: which profile an engine uses, and the plan of each call.

An engine's profile is, in order of preference:

1. the file given as ``latency_profile`` (refused if it was measured for another setup);
2. the cached profile of this setup (``latts profile`` wrote it; same hardware, versions,
   models and engine settings, see :mod:`~langchain_latts.planner.profile`);
3. a **start-up profile**, measured once when the engine starts (always, for a fleet of
   servers: through the fleet, so its step times are the fleet's) (about a second on the
   built-in model): the step time of this engine as configured at a few batch sizes, the
   first-token time of the prompt, and output lengths -- of held-out problems for the
   built-in model; for another model ``max_tokens`` until calls have been observed, then
   the lengths of the last ``OBSERVED`` finished branches. A start-up profile has no
   accuracy calibration (the default accuracy model) and no other speculation settings.

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
import time
import weakref
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from langchain_latts.engines.base import (
    BranchRequest,
    Engine,
    EngineConfig,
    SpeculativeConfig,
    SpeculativeMethod,
)
from langchain_latts.planner.latency import SpeculationSetting
from langchain_latts.planner.plan import Plan, choose_speculation, derive_schedule, plan_call
from langchain_latts.planner.profile import Identity, Prefill, Profile, StepCurve, cache_dir, load_profile
from langchain_latts.planner.profiler import (
    builtin_calibration,
    confidence_calibration,
    graded_samples,
    logprobs_slowdown,
    per_token_seconds,
    profile_identity,
    run_requests,
)
from langchain_latts.settings import TTSSettings

logger = logging.getLogger(__name__)

__all__ = ["EngineProfile", "auto_speculation", "cached_profile", "engine_profile", "forget_cached_profiles",
           "plan_for_call", "speculation_of", "to_speculative_config"]

#: Finished branches whose lengths a start-up profile of a user model keeps.
OBSERVED = 256
#: Tokens per branch of the start-up step timing, and the batch sizes timed.
STARTUP_TOKENS = 24
STARTUP_BATCHES = (1, 2, 4, 8, 16, 32)


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

    def current(self) -> Profile:
        """The profile with the observed output lengths when it learns them."""
        if self.learns_lengths and len(self.observed) >= 8:
            return self.profile.model_copy(update={"output_lengths": sorted(self.observed)})
        return self.profile

    def observe(self, lengths: list[int]) -> None:
        if self.learns_lengths:
            self.observed.extend(lengths)


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
    else:
        prompts = [engine.render_prompt([{"role": "user", "content": "Hello."}])]
    top = min(max_num_seqs or 1 << 30, max(settings.max_branches, 1))
    sizes = [b for b in STARTUP_BATCHES if b <= top] or [1]
    if sizes[-1] < top <= STARTUP_BATCHES[-1]:
        sizes.append(top)
    times = [await per_token_seconds(engine, prompts[:1], b, tokens=STARTUP_TOKENS) for b in sizes]
    probe = BranchRequest(prompt_token_ids=tuple(prompts[0]), max_tokens=1, temperature=0.0)
    first = await run_requests(engine, [probe], "startup-prefill")
    ttft = first[0]["stamps"][0] - first[0]["sent"]
    if builtin:
        samples = [BranchRequest(prompt_token_ids=tuple(p), max_tokens=settings.max_tokens, temperature=0.8, seed=i)
                   for i, p in enumerate(prompts)]
        natural = await run_requests(engine, samples, "startup-lengths")
        lengths = sorted(r["tokens"] for r in natural)
    else:
        lengths = [settings.max_tokens]
    # Seconds per token per sequence, stored as the "off" curve: the lookup is always "off".
    profile = Profile(
        identity=identity,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        duration_s=time.perf_counter() - started,
        steps={"off": StepCurve(batch_sizes=sizes, step_s=times)},
        prefill=Prefill(intercept_s=ttft, per_token_s=0.0, points=[(len(prompts[0]), ttft)]),
        output_lengths=lengths,
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


def plan_for_call(state: EngineProfile, settings: TTSSettings, engine: Engine, *, prompt_tokens: int,
                  time_left_s: float | None, token_budget: int | None = None) -> Plan:
    """The plan of one call on ``engine`` as loaded now, within ``time_left_s`` and
    ``token_budget`` (generated tokens over all branches)."""
    profile = state.current()
    plan = plan_call(
        profile, prompt_tokens=prompt_tokens, max_tokens=settings.max_tokens,
        max_branches=settings.max_branches, speculation=state.lookup, deadline_s=time_left_s,
        token_budget=token_budget, load=engine.num_unfinished_requests(), slowdown=profile.slowdown(settings.logprobs),
    )
    return replace(plan, speculation=speculation_of(engine.config).name)


# -- the engine's speculation (num_speculative_tokens="auto") -----------------------------------
#: Speculative length used for a configured drafter when no profile is cached.
UNPROFILED_K = 4
#: Prompt tokens assumed when speculation settings are compared (prefill is the same for all).
_COMPARE_PROMPT = 32
_CACHED: dict[tuple[Any, ...], Profile | None] = {}


def cached_profile(settings: TTSSettings) -> Profile | None:
    """The profile of ``settings``' setup (``latency_profile`` or the cache), read once per process."""
    key = (str(cache_dir()), settings.model_path, settings.draft_model, settings.speculative_method, settings.dtype,
           settings.max_num_seqs, settings.enforce_eager, settings.latency_profile)
    if key not in _CACHED:
        _CACHED[key] = load_profile(profile_identity(settings), settings.latency_profile)
    return _CACHED[key]


def forget_cached_profiles() -> None:
    """Drop profiles read so far (after ``latts profile`` wrote a new one)."""
    _CACHED.clear()


def auto_speculation(settings: TTSSettings) -> SpeculativeConfig | None:
    """The engine's speculation for ``num_speculative_tokens="auto"``.

    With a profile that timed a drafter: among no speculation, each profiled fixed length
    and the derived per-batch-size schedule (:func:`~langchain_latts.planner.plan.derive_schedule`),
    the one :func:`~langchain_latts.planner.plan.choose_speculation` predicts fastest over
    the branch counts the planner may use. Without one: ``UNPROFILED_K`` tokens when the
    user configured a drafter, else none (the built-in draft is used only when measured
    to help).
    """
    configured = settings.configured_drafter
    profile = cached_profile(settings)
    if profile is None or not profile.speculative_lengths():
        if configured is None:
            return None
        return SpeculativeConfig(method=configured[0], num_speculative_tokens=UNPROFILED_K, model=configured[1])
    assert settings.candidate_drafter is not None  # the profile timed one
    method, draft = settings.candidate_drafter
    allowed = [SpeculationSetting.off(), *(SpeculationSetting.fixed(k) for k in profile.speculative_lengths()),
               derive_schedule(profile, profile.max_batch)]
    chosen, _ = choose_speculation(profile, allowed, prompt_tokens=_COMPARE_PROMPT, max_tokens=settings.max_tokens,
                                max_branches=settings.max_branches)
    return to_speculative_config(chosen, method, draft)


def to_speculative_config(setting: SpeculationSetting, method: SpeculativeMethod,
                          draft: str | None) -> SpeculativeConfig | None:
    """The engine config of a speculation setting (None: no drafter)."""
    if not setting.drafter or setting.max_k == 0:
        return None
    model = None if method == "ngram" else draft
    if setting.dynamic:
        return SpeculativeConfig(method=method, num_speculative_tokens=setting.max_k, model=model,
                                 schedule=setting.schedule)
    return SpeculativeConfig(method=method, num_speculative_tokens=setting.max_k, model=model)
