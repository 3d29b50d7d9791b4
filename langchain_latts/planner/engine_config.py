"""The engine a set of settings needs: target, drafter and speculation, engine options.

This lives beside the planner, not in :mod:`langchain_latts.settings`, because
``num_speculative_tokens="auto"`` is a planning decision: it reads the cached profile
(:func:`auto_speculation`). Settings stay plain validated configuration that imports
nothing above it; the profiler and the runtime planner import this module, and it
imports neither.
"""

from __future__ import annotations

import json
import os
from typing import Any

from langchain_latts.engines.base import EngineConfig, SpeculativeConfig, SpeculativeMethod
from langchain_latts.planner.latency import SpeculationSetting
from langchain_latts.planner.plan import choose_speculation, derive_schedule
from langchain_latts.planner.profile import Identity, Profile, cache_dir, load_profile, model_identity
from langchain_latts.settings import TTSSettings

__all__ = ["auto_speculation", "cached_profile", "engine_config", "engine_identity", "forget_cached_profiles",
           "profile_identity", "speculative_config", "speculative_method", "to_speculative_config"]


def speculative_config(settings: TTSSettings) -> SpeculativeConfig | None:
    """The engine's speculation (None: none); ``"auto"`` asks the profile."""
    if settings.endpoints is not None:
        return None  # the servers speculate as they were started
    if settings.num_speculative_tokens == "auto":
        return auto_speculation(settings)
    drafter = settings.configured_drafter
    k = settings.num_speculative_tokens
    if drafter is None or k == 0:
        return None
    if isinstance(k, list):
        schedule = tuple((int(a), int(b), int(c)) for a, b, c in k)
        return SpeculativeConfig(method=drafter[0], num_speculative_tokens=max(c for _, _, c in schedule),
                                 model=drafter[1], schedule=schedule)
    return SpeculativeConfig(method=drafter[0], num_speculative_tokens=k, model=drafter[1])


def speculative_method(settings: TTSSettings) -> str | None:
    """The speculation method actually used (None: no speculation)."""
    spec = speculative_config(settings)
    return None if spec is None else spec.method


def engine_config(settings: TTSSettings) -> EngineConfig:
    """The engine ``settings`` need (equal configs share one engine)."""
    extra = settings.engine_kwargs | ({"reasoning_parser": settings.reasoning_parser}
                                      if settings.reasoning_parser and not settings.endpoints else {})
    return EngineConfig(
        model=settings.model_path,
        speculative=speculative_config(settings),
        max_model_len=settings.max_model_len,
        max_num_seqs=settings.max_num_seqs,
        kv_cache_gib=settings.kv_cache_gib,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        enforce_eager=settings.enforce_eager,
        dtype=settings.dtype,
        extra_json=json.dumps(extra, sort_keys=True),
        endpoints=tuple(settings.endpoints or ()),
        api_key=settings.api_key if settings.endpoints else None,
    )


def profile_identity(settings: TTSSettings) -> Identity:
    """The identity a profile for ``settings`` is measured and looked up under."""
    method, draft = settings.candidate_drafter or (None, None)
    return model_identity(target=settings.model_path, draft=draft, speculative_method=method, dtype=settings.dtype,
                          max_num_seqs=settings.max_num_seqs or 0, enforce_eager=settings.enforce_eager,
                          engine=engine_identity(settings))


#: vLLM environment variables that choose how the engine runs (and so its step times).
RUNNER_ENV: tuple[str, ...] = ("VLLM_USE_V2_MODEL_RUNNER",)


def engine_identity(settings: TTSSettings) -> dict[str, Any]:
    """The engine options, set by the user, that a profile's step times depend on beyond
    model, drafter, dtype, ``max_num_seqs`` and eagerness: memory shares, context length,
    the extra engine arguments (tensor parallelism, quantization, KV dtype, the CUDA-graph
    mode) and the model runner chosen by environment. Empty for a default setup."""
    found: dict[str, Any] = {name: getattr(settings, name) for name in
                             ("gpu_memory_utilization", "kv_cache_gib", "max_model_len")
                             if getattr(settings, name) is not None}
    found |= settings.engine_kwargs
    found |= {name: os.environ[name] for name in RUNNER_ENV if os.environ.get(name)}
    return found


# -- the engine's speculation (num_speculative_tokens="auto") -----------------------------------
#: Speculative length used for a configured drafter when no profile is cached.
UNPROFILED_K = 4
#: Prompt tokens assumed when speculation settings are compared (prefill is the same for all).
_COMPARE_PROMPT = 32
_CACHED: dict[tuple[Any, ...], Profile | None] = {}


def cached_profile(settings: TTSSettings) -> Profile | None:
    """The profile of ``settings``' setup (``latency_profile`` or the cache), read once per process."""
    key = (str(cache_dir()), settings.model_path, settings.draft_model, settings.speculative_method, settings.dtype,
           settings.max_num_seqs, settings.enforce_eager, settings.latency_profile,
           json.dumps(engine_identity(settings), sort_keys=True))
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
    chosen, _ = choose_speculation(profile, allowed, prompt_tokens=_COMPARE_PROMPT, max_tokens=settings.max_tokens or 1 << 30,
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
