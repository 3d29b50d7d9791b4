"""A machine profile: what ``latts profile`` measured, as versioned JSON in a cache directory.

A profile belongs to one *identity*: the hardware (CPU model and cores, GPU names), the
vLLM, torch and langchain-latts versions, the engine settings that change speed (dtype,
``max_num_seqs``, eager mode) and the target and drafter, each named and hashed by its
``config.json`` (and weights' sizes). A model loads the profile of exactly its identity;
a profile whose identity differs is never used silently: :func:`load_profile` says what
differs and how to re-measure.

Files live in ``$LATTS_CACHE_DIR`` or the platform's user cache directory
(``platformdirs``), named by a hash of the identity::

    <cache>/profiles/<profile_id>.json
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from langchain_latts.engines.gguf import model_label
from langchain_latts.errors import LattsValueError
from langchain_latts.planner.accuracy import DEFAULT_ACCURACY_MODEL, AccuracyModel
from langchain_latts.planner.lengths import LengthEstimate, LengthModel, marginal_length_model
from langchain_latts.tts.confidence import WARMUP_KEEP, ConfidenceMeasure, cut_measure, warmup_threshold

__all__ = ["DEFAULT_LATENCY_ERROR", "PROFILE_SCHEMA", "RIGHT_KEPT", "ConfidenceCalibration", "Identity", "LatencyError",
           "Profile", "StepCurve", "cache_dir", "load_profile", "model_identity", "monotone", "save_profile"]

#: Bumped whenever the JSON layout or the meaning of a measurement changes.
PROFILE_SCHEMA = 1


class Identity(BaseModel):
    """What a profile was measured on; two profiles are interchangeable iff these match."""

    model_config = ConfigDict(frozen=True)

    hardware: str
    vllm: str
    torch: str
    latts: str
    target: str
    target_hash: str
    draft: str | None = None
    draft_hash: str | None = None
    speculative_method: str | None = None
    dtype: str = "auto"
    max_num_seqs: int = 0
    enforce_eager: bool | None = None
    #: Engine options that change step times or capacity beyond the fields above, when
    #: set: memory (``gpu_memory_utilization``, ``kv_cache_gib``), ``max_model_len``, the
    #: extra engine arguments (tensor parallelism, quantization, KV dtype, the CUDA-graph
    #: mode in ``compilation_config``) and vLLM's model runner (``VLLM_USE_V2_MODEL_RUNNER``).
    engine: dict[str, Any] = Field(default_factory=dict)

    @property
    def profile_id(self) -> str:
        """A short stable name of this identity (the cache file's name). An identity with
        no engine options hashes as before they were recorded: existing profiles keep their id."""
        dump = self.model_dump_json(exclude=None if self.engine else {"engine"})
        return hashlib.sha256(dump.encode()).hexdigest()[:16]

    def differences(self, other: Identity) -> list[str]:
        """Human-readable ``field: ours != theirs`` lines."""
        mine, theirs = self.model_dump(), other.model_dump()
        return [f"{k}: {theirs[k]!r} (profile) != {mine[k]!r} (now)" for k in mine if mine[k] != theirs[k]]


class StepCurve(BaseModel):
    """Seconds per engine step against the number of sequences running (one engine setting)."""

    #: Running sequences at which the step was timed, ascending.
    batch_sizes: list[int]
    #: Median seconds per step at each of ``batch_sizes``.
    step_s: list[float]
    #: Tokens one sequence gains per step (1 without speculation; the mean acceptance
    #: length with it).
    tokens_per_step: float = 1.0
    #: Accepted / proposed draft tokens (None without speculation).
    acceptance_rate: float | None = None
    #: Seconds until *every* one of ``b`` branches of one prompt launched together had its
    #: first token, at each of ``batch_sizes`` (empty: not measured; the prefill model is
    #: used). Each new branch costs the engine a request's set-up and its own first steps
    #: -- measured ~1 ms per branch without speculation and ~3 ms with a draft model on
    #: this CPU -- which sharing the prompt's KV cache does not save.
    first_token_s: list[float] = Field(default_factory=list)
    #: Tokens of the prompt ``first_token_s`` and ``step_s`` were measured with.
    prompt_tokens: int = 0
    #: How much longer a step gets per prompt token beyond ``prompt_tokens``, relative
    #: (0.001: 10% slower with 100 more tokens of context). Measured with a ~400-token
    #: prompt; on this CPU ~0 without speculation and ~0.0015 with the draft model, whose
    #: verification steps attend over the whole context.
    context_slope: float = Field(default=0.0, ge=0)

    def step_at(self, batch: float, prompt_tokens: int = 0) -> float:
        """Step time at ``batch`` running sequences of a ``prompt_tokens``-token prompt."""
        return self.at(batch) * (1.0 + self.context_slope * max(0, prompt_tokens - self.prompt_tokens))

    def at(self, batch: float) -> float:
        """Step time at ``batch`` running sequences: linear between measured sizes, linear
        extrapolation (never below the last measurement) past the largest."""
        return _interpolate(self.batch_sizes, self.step_s, batch)

    def first_token_at(self, batch: float) -> float | None:
        """Seconds until every one of ``batch`` branches launched together has its first
        token (None: not measured), interpolated like :meth:`at`."""
        return _interpolate(self.batch_sizes, self.first_token_s, batch) if self.first_token_s else None


def monotone(values: Sequence[float]) -> list[float]:
    """The closest non-decreasing sequence in least squares (pool adjacent violators):
    measured step and first-token times, noisy on a shared machine, never fall as the
    batch grows."""
    blocks: list[list[float]] = []  # [mean, weight]
    for value in values:
        blocks.append([float(value), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m2, w2), (m1, w1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2])
    return [mean for mean, weight in blocks for _ in range(int(weight))]


def _interpolate(sizes: list[int], times: list[float], batch: float) -> float:
    """``times`` at ``batch``: linear between measured sizes, linear extrapolation (never
    below the last measurement) past the largest."""
    if batch <= sizes[0]:
        return times[0]
    if batch >= sizes[-1]:
        if len(sizes) == 1:
            return times[-1]
        slope = max(0.0, (times[-1] - times[-2]) / (sizes[-1] - sizes[-2]))
        return times[-1] + slope * (batch - sizes[-1])
    i = bisect.bisect_left(sizes, batch)
    lo, hi = sizes[i - 1], sizes[i]
    return times[i - 1] + (times[i] - times[i - 1]) * (batch - lo) / (hi - lo)


class Prefill(BaseModel):
    """Time to first token: ``intercept_s + per_token_s * new_prompt_tokens`` (least squares)."""

    intercept_s: float
    per_token_s: float
    #: The measured points: (new prompt tokens, seconds).
    points: list[tuple[int, float]] = Field(default_factory=list)

    def at(self, tokens: int) -> float:
        return self.intercept_s + self.per_token_s * tokens


class LatencyError(BaseModel):
    """How wrong the latency model is on calls it was not fitted on: ``ln(measured /
    predicted)`` ~ N(``bias + slope * ln B``, ``sigma``^2) for a call of ``B`` branches,
    given the calls' true output lengths (so it holds the timing error only; the length
    error is the length model's). The slope lets the error grow with the branch count:
    on this CPU a call of 24 branches runs further over its prediction than one of 3."""

    model_config = ConfigDict(frozen=True)

    bias: float = 0.0
    slope: float = 0.0
    sigma: float = Field(default=0.10, ge=0)
    #: Calls it was measured on (0: the default).
    calls: int = 0
    source: str = "default"

    def bias_at(self, branches: int) -> float:
        """The expected ``ln(measured / predicted)`` of a call of ``branches`` branches."""
        return self.bias + self.slope * math.log(max(1, branches))


#: Without ``latts profile --validate``: no bias and a 10% spread (the validation measured
#: a 7% median absolute error, sigma ~0.1, on the built-in pair on a 2-core CPU).
DEFAULT_LATENCY_ERROR = LatencyError()


#: With graded calibration samples, the cut-off's threshold is the value this share of the
#: *right* samples pass (on the built-in task it then catches ~9 in 10 wrong ones).
RIGHT_KEPT = 0.95


class ConfidenceCalibration(BaseModel):
    """What natural samples of the calibration prompts looked like to the in-flight
    confidence cut-off: per sample its lowest sampled-token log-prob and its lowest
    16-token group confidence (:mod:`~langchain_latts.tts.confidence`), each ascending;
    and the same of the samples graded right (empty when the prompts have no answers)."""

    lowest_logprob: list[float]
    lowest_group: list[float]
    right_lowest_logprob: list[float] = Field(default_factory=list)
    right_lowest_group: list[float] = Field(default_factory=list)

    def threshold(self, measure: ConfidenceMeasure) -> float | None:
        """The cut-off on the value the cut-off tracks for ``measure``: the one
        :data:`RIGHT_KEPT` of the right samples pass when samples were graded, else the one
        :data:`~langchain_latts.tts.confidence.WARMUP_KEEP` of all samples pass (None
        without samples)."""
        by_logprob = cut_measure(measure) == "lowest_logprob"
        right = self.right_lowest_logprob if by_logprob else self.right_lowest_group
        if right:
            return warmup_threshold(right, RIGHT_KEPT)
        values = self.lowest_logprob if by_logprob else self.lowest_group
        return warmup_threshold(values, WARMUP_KEEP) if values else None


class Profile(BaseModel):
    """Everything the latency model and the planner need about one machine and model pair."""

    schema_version: int = PROFILE_SCHEMA
    identity: Identity
    created: str
    #: Seconds ``latts profile`` took.
    duration_s: float = 0.0
    #: Engine setting name -> its step curve: ``"off"`` (no drafter), ``"k=<n>"`` (a fixed
    #: speculative length) and ``"k=0+draft"`` (drafter loaded, speculating 0 tokens: what
    #: a dynamic schedule costs where it turns speculation off).
    steps: dict[str, StepCurve]
    prefill: Prefill
    #: Output tokens of single samples on the calibration prompts, ascending.
    output_lengths: list[int]
    accuracy: AccuracyModel = DEFAULT_ACCURACY_MODEL
    #: Where the calibration prompts came from.
    calibration: str = ""
    #: The confidence cut-off's calibration (None: measured before it existed).
    confidence: ConfidenceCalibration | None = None
    #: How much slower a decoding step is when every sequence asks for log-probs, by
    #: vLLM's ``logprobs=k`` (``"0"``: the sampled token's only; ``"5"``: the top 5), at
    #: the largest batch timed (empty: measured before it existed; the planner then
    #: assumes no slowdown).
    logprobs_slowdown: dict[str, float] = Field(default_factory=dict)
    #: The per-question output-length model fitted on the calibration samples (None:
    #: measured before it existed, or no calibration prompts; the planner then uses the
    #: marginal distribution of ``output_lengths``, see :mod:`~langchain_latts.planner.lengths`).
    length_model: LengthModel | None = None
    #: The latency model's error measured by ``latts profile --validate`` (None: not
    #: validated; :data:`DEFAULT_LATENCY_ERROR` is assumed).
    latency_error: LatencyError | None = None
    #: The answer extractor ``answer_extractor="auto"`` uses for this model and task: the
    #: one that graded the calibration samples best (None: the default chain), and each
    #: candidate's share of right samples.
    extractor: str | None = None
    extractor_scores: dict[str, float] = Field(default_factory=dict)
    #: The dynamic speculation schedule (``(first_batch, last_batch, k)`` ranges) timed as a
    #: whole, its step curve stored as ``steps["schedule"]``: vLLM runs a schedule
    #: differently from the fixed lengths it is made of (on CUDA, piecewise instead of
    #: full graphs), so that schedule is priced with its own measured step times. None:
    #: none timed (the drafter's fixed-length curves price every schedule).
    timed_schedule: list[tuple[int, int, int]] | None = None

    def schedule_curve(self, schedule: Sequence[tuple[int, int, int]]) -> StepCurve | None:
        """The measured step curve of exactly ``schedule`` (None: that schedule was not timed)."""
        if self.timed_schedule is None or "schedule" not in self.steps:
            return None
        same = [tuple(r) for r in self.timed_schedule] == [tuple(r) for r in schedule]
        return self.steps["schedule"] if same else None

    def length_estimate(self, question: str, *, max_tokens: int | None = None) -> LengthEstimate:
        """The output length the planner expects for ``question``: the fitted length
        model's, else the marginal distribution of the profiled lengths."""
        model = self.length_model or marginal_length_model(self.output_lengths)
        return model.estimate(question, max_tokens=max_tokens)

    @property
    def timing_error(self) -> LatencyError:
        """The latency model's measured error, or the default."""
        return self.latency_error or DEFAULT_LATENCY_ERROR

    def slowdown(self, logprobs: int | None) -> float:
        """The step-time factor of a call that asks for ``logprobs`` (1 for None or unmeasured)."""
        return 1.0 if logprobs is None else self.logprobs_slowdown.get(str(logprobs), 1.0)

    @property
    def profile_id(self) -> str:
        return self.identity.profile_id

    @property
    def max_batch(self) -> int:
        """The largest batch size measured."""
        return max(curve.batch_sizes[-1] for curve in self.steps.values())

    def output_length(self, quantile: float) -> int:
        """The ``quantile`` (0-1) of the profiled output lengths (nearest rank)."""
        lengths = self.output_lengths
        rank = min(len(lengths) - 1, max(0, round(quantile * len(lengths) + 0.5) - 1))
        return lengths[rank]

    def speculative_lengths(self) -> list[int]:
        """The fixed speculative lengths measured (ascending; ``k=0+draft`` and a timed
        ``schedule`` are not fixed lengths)."""
        return sorted(int(name[2:]) for name in self.steps if name.startswith("k=") and name[2:].isdigit())


def cache_dir() -> Path:
    """``$LATTS_CACHE_DIR`` or the platform's user cache directory for langchain-latts."""
    override = os.environ.get("LATTS_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("langchain-latts"))


def _profile_path(identity: Identity) -> Path:
    return cache_dir() / "profiles" / f"{identity.profile_id}.json"


def save_profile(profile: Profile) -> Path:
    """Write ``profile`` to the cache (atomically); returns its path."""
    path = _profile_path(profile.identity)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(profile.model_dump_json(indent=1))
    tmp.replace(path)
    return path


def load_profile(identity: Identity, path: str | Path | None = None) -> Profile | None:
    """The cached profile of ``identity`` (None when there is none).

    ``path`` loads a given file instead; one measured for another identity, or written by
    another schema version, raises :class:`LattsValueError` saying what differs.
    """
    file = Path(path).expanduser() if path is not None else _profile_path(identity)
    if not file.is_file():
        if path is not None:
            raise LattsValueError.bad("profile", str(path), "must be a profile file written by `latts profile`",
                                      "Check the path, or run `latts profile` to measure one.")
        return None
    try:
        data: dict[str, Any] = json.loads(file.read_text())
        if data.get("schema_version") != PROFILE_SCHEMA:
            raise LattsValueError.bad(
                "profile", str(file), f"was written with profile schema {data.get('schema_version')}, "
                f"this version reads schema {PROFILE_SCHEMA}", "Re-measure: latts profile")
        profile = Profile.model_validate(data)
    except (ValueError, ValidationError) as e:
        if isinstance(e, LattsValueError):
            raise
        raise LattsValueError.bad("profile", str(file), f"is not a readable profile ({e.__class__.__name__})",
                                  "Delete it and re-measure: latts profile") from e
    if profile.identity != identity:
        diff = "; ".join(identity.differences(profile.identity))
        raise LattsValueError.bad(
            "profile", str(file), f"was measured for another setup ({diff})",
            "Re-measure on this setup: latts profile (with the same model settings).")
    return profile


def _file_hash(directory: Path) -> str:
    """Hash of a local model's config.json plus its weight files' names and sizes."""
    h = hashlib.sha256()
    config = directory / "config.json"
    if config.is_file():
        h.update(config.read_bytes())
    for weights in sorted(directory.glob("*.safetensors")) + sorted(directory.glob("*.bin")):
        h.update(f"{weights.name}:{weights.stat().st_size}".encode())
    return h.hexdigest()[:16]


def _model_hash(model: str) -> str:
    _, gguf_hash = model_label(model)
    if gguf_hash:
        return gguf_hash
    local = Path(model).expanduser()
    if local.is_dir():
        return _file_hash(local)
    return hashlib.sha256(model.encode()).hexdigest()[:16]  # a hub id: its name is its identity


def _model_name(model: str) -> str:
    """A local model by its directory's name (its hash tells copies apart), a GGUF file by
    its file name, an alias by itself, a hub model by id."""
    name, gguf_hash = model_label(model)
    if gguf_hash:
        return name
    local = Path(model).expanduser()
    return local.name if local.is_dir() else model


def _hardware() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # NVIDIA GPUs from the driver's /proc entries: importing torch here would put a
    # second of start-up on the first call's path.
    names = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        for line in info.read_text().splitlines():
            if line.startswith("Model:"):
                names.append(line.split(":", 1)[1].strip())
    gpus = ", GPUs: " + ", ".join(names) if names else ""
    return f"{cpu} x {cores} cores{gpus}"


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    for name in (package, f"{package}-cpu"):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return "not installed"


def model_identity(*, target: str, draft: str | None, speculative_method: str | None, dtype: str,
                   max_num_seqs: int, enforce_eager: bool | None,
                   engine: dict[str, Any] | None = None) -> Identity:
    """The identity of this machine, these libraries and this model pair."""
    from langchain_latts._version import __version__

    return Identity(
        hardware=_hardware(), vllm=_version("vllm"), torch=_version("torch"), latts=__version__,
        target=_model_name(target), target_hash=_model_hash(target),
        draft=None if draft is None else _model_name(draft), draft_hash=None if draft is None else _model_hash(draft),
        speculative_method=speculative_method, dtype=dtype, max_num_seqs=max_num_seqs, enforce_eager=enforce_eager,
        engine=engine or {},
    )
