"""The measurements behind a :class:`~langchain_latts.planner.profile.Profile` (needs vLLM).

``latts profile`` (or :func:`measure_profile`) starts one engine per speculation setting
in turn -- no drafter, the drafter at ``k`` = 1, 2, 4 and the drafter at ``k = 0``
(vLLM's dynamic speculation turned fully down) -- and measures on each:

* **step time** against running sequences ``b`` = 1, 2, 4, ... up to ``max_num_seqs``
  (or 64): ``b`` branches of a calibration prompt generate a fixed number of tokens
  (``ignore_eos``), three times (the first run of a batch shape is slower and is dropped),
  and, per branch, the seconds from its first to its last token divided by its engine
  steps (tokens - 1 without speculation, its drafts with it) give the step time; the
  median over branches is kept; and the **first-token time** of the ``b`` branches: the
  seconds until the last of them had its first token;
* **context slope**: how much longer a step gets with a ~400-token prompt than with the
  calibration question alone, per extra prompt token;
* **tokens per step** (speculative settings): the mean acceptance length of natural
  samples of the calibration prompts, and their acceptance rate;

and on the engine without a drafter:

* **prefill**: time to first token of fresh random prompts of 16 to 256 tokens, one and
  eight at a time, fitted as ``a + c * tokens``;
* **output lengths** of natural samples of the calibration prompts, the per-question
  length model fitted on them (:mod:`~langchain_latts.planner.lengths`), and -- with their
  log-probs -- the confidence cut-off's calibration (each sample's lowest sampled-token
  log-prob and lowest group confidence, :func:`confidence_calibration`);
* with calibration answers (the built-in task always has them): each calibration
  question sampled ``CALIBRATION_SAMPLES`` times, graded, and the vote-accuracy model
  fitted (:func:`~langchain_latts.planner.accuracy.fit_accuracy_model`).

For the built-in model the calibration prompts are held-out arithmetic problems the
model never trained on (and the benchmarks do not use); for another model they are
user-given prompts (a list, or a JSONL file of ``{"prompt": ..., "answer": ...}`` lines;
``answer`` optional).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from langchain_latts.engines.base import (
    BranchRequest,
    Engine,
    EngineConfig,
    SpeculativeConfig,
)
from langchain_latts.engines.vllm_local import (
    VLLMEngine,
    first_visible_gpu,
    nvml_memory,
    wait_for_memory_back,
)
from langchain_latts.errors import LattsValueError
from langchain_latts.planner.accuracy import (
    DEFAULT_ACCURACY_MODEL,
    fit_accuracy_model,
    fit_length_slope,
    member_vote_table,
    observed_vote,
    paired_standard_error,
)
from langchain_latts.planner.engine_config import engine_config, profile_identity, to_speculative_config
from langchain_latts.planner.lengths import MIN_QUESTIONS, LengthModel, fit_length_model
from langchain_latts.planner.plan import derive_schedule
from langchain_latts.planner.profile import (
    ConfidenceCalibration,
    Prefill,
    Profile,
    StepCurve,
    monotone,
)
from langchain_latts.settings import TTSSettings
from langchain_latts.tts.answers import EXTRACTORS, normalize_answer
from langchain_latts.tts.confidence import (
    TOP_K,
    WINDOW,
    lowest_group_confidence,
    lowest_logprob,
    token_confidence,
)

__all__ = ["CalibrationPrompt", "builtin_calibration", "confidence_calibration", "grade_runs", "graded_samples", "load_calibration", "logprobs_slowdown", "measure_profile",
           "natural_samples", "per_token_seconds", "profile_identity", "run_requests", "timed_batch"]

#: Speculative lengths profiled when a drafter is configured.
SPECULATIVE_LENGTHS = (1, 2, 4)
#: Largest batch size profiled (or the engine's max_num_seqs when smaller).
MAX_PROFILED_BATCH = 64
#: Tokens each branch generates in a step-time run.
STEP_RUN_TOKENS = 40
#: Timed step-time runs per batch size (after one dropped warm-up run).
STEP_RUNS = 2
#: Samples per calibration question when fitting the accuracy model.
CALIBRATION_SAMPLES = 8
#: Built-in calibration problems: a slice of the held-out split that ``latts models eval``
#: (the first 500) and ``latts bench planner`` (from 600) do not use.
BUILTIN_CALIBRATION = slice(500, 564)
#: Prompt lengths and concurrencies of the prefill measurement.
PREFILL_LENGTHS = (16, 64, 128, 256)
PREFILL_BATCHES = (1, 8)

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class CalibrationPrompt:
    """A calibration conversation and, when known, its correct answer."""

    messages: tuple[tuple[str, str], ...]
    answer: str | None = None


def builtin_calibration() -> list[CalibrationPrompt]:
    """Held-out arithmetic problems of the built-in task, with their answers."""
    from langchain_latts.tasks.arithmetic import HELD_OUT_SEED, HELD_OUT_SIZE, generate_problems

    problems = generate_problems(HELD_OUT_SIZE, seed=HELD_OUT_SEED)[BUILTIN_CALIBRATION]
    return [CalibrationPrompt(messages=(("user", p.question),), answer=str(p.answer)) for p in problems]


def load_calibration(prompts: Sequence[str] | str | Path) -> list[CalibrationPrompt]:
    """Calibration prompts from a list of strings or a JSONL file (``prompt``, optional ``answer``)."""
    if isinstance(prompts, (str, Path)) and Path(prompts).expanduser().is_file():
        items = []
        for n, line in enumerate(Path(prompts).expanduser().read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                items.append(CalibrationPrompt(messages=(("user", str(row["prompt"])),),
                                               answer=None if row.get("answer") is None else str(row["answer"])))
            except (ValueError, KeyError, TypeError) as e:
                raise LattsValueError.bad("prompts", f"{prompts}:{n}", "must hold one JSON object with a "
                                          "'prompt' (and optionally 'answer') per line", 'e.g. {"prompt": "...", '
                                          '"answer": "42"}') from e
    elif isinstance(prompts, str):
        raise LattsValueError.bad("prompts", prompts, "must be a JSONL file or a list of prompts",
                                  "Give an existing file path, or a list of strings in Python.")
    else:
        items = [CalibrationPrompt(messages=(("user", str(p)),)) for p in prompts]  # type: ignore[union-attr]
    if len(items) < 4:
        raise LattsValueError.bad("prompts", f"{len(items)} prompts", "must hold at least 4 calibration prompts",
                                  "Give a few dozen prompts like the ones the model will be asked.")
    return items


def _engine_configs(settings: TTSSettings, lengths: Sequence[int] = SPECULATIVE_LENGTHS) -> dict[str, EngineConfig]:
    """Name -> engine config of every setting to profile (no drafter, the candidate drafter
    at each of ``lengths`` and at k = 0; only no drafter when ``lengths`` is empty)."""
    off = engine_config(settings.model_copy(update={"num_speculative_tokens": 0}))
    configs = {"off": off}
    if settings.candidate_drafter is None or not lengths:
        return configs
    method, draft = settings.candidate_drafter
    for k in lengths:
        configs[f"k={k}"] = _with_spec(off, SpeculativeConfig(method=method, num_speculative_tokens=k, model=draft))
    # k = 0 with the drafter loaded, sized as a schedule over these lengths sizes it (the
    # largest k: what the drafter's buffers and graphs are built for).
    configs["k=0+draft"] = _with_spec(off, SpeculativeConfig(method=method, num_speculative_tokens=max(lengths),
                                                               model=draft, schedule=((1, 1 << 16, 0),)))
    return configs


def _with_spec(config: EngineConfig, spec: SpeculativeConfig) -> EngineConfig:
    from dataclasses import replace

    return replace(config, speculative=spec)


# -- measurements on one engine ----------------------------------------------------------
async def run_requests(engine: Engine, requests: Sequence[BranchRequest], tag: str) -> list[dict[str, Any]]:
    """Run requests concurrently; per request its update times, tokens, text, spec stats
    and (when asked for) token confidences and sampled log-probs."""

    async def one(i: int, request: BranchRequest) -> dict[str, Any]:
        stamps: list[float] = []
        tokens, pieces, spec, confidences, logprobs = 0, [], None, [], []
        sent = time.perf_counter()
        async for update in engine.branch(request, f"latts-profile-{tag}-{i}"):
            stamps.append(time.perf_counter())
            tokens += update.num_new_tokens
            pieces.append(update.text_delta)
            spec = update.spec or spec
            if request.logprobs and update.top_logprobs and update.token_logprobs:
                confidences += [token_confidence(p, request.logprobs) for p in update.top_logprobs if p]
                logprobs += update.token_logprobs
        return {"sent": sent, "stamps": stamps, "tokens": tokens, "text": "".join(pieces), "spec": spec,
                "confidences": confidences, "logprobs": logprobs}

    return list(await asyncio.gather(*(one(i, r) for i, r in enumerate(requests))))


async def _step_curve(engine: VLLMEngine, prompts: Sequence[list[int]], batch_sizes: Sequence[int], *,
                      speculative: bool, progress: Progress) -> tuple[list[int], list[float], list[float]]:
    """Per batch size ``b``: the median step time, and the seconds until all ``b`` branches
    of one prompt launched together had their first token (the mean of ``STEP_RUNS`` runs);
    both made non-decreasing in ``b`` (:func:`~langchain_latts.planner.profile.monotone`:
    measurement noise on a shared machine must not make a bigger batch faster). Every run asks about
    a prompt the engine has not seen, as a call does: a cached prompt would skip its prefill."""
    fresh = itertools.cycle(prompts)
    times: list[float] = []
    first: list[float] = []
    for b in batch_sizes:
        def batch(prompt: list[int]) -> list[BranchRequest]:
            return [BranchRequest(prompt_token_ids=tuple(prompt), max_tokens=STEP_RUN_TOKENS, temperature=0.8,
                                  seed=1000 * b + i, ignore_eos=True) for i in range(b)]

        await run_requests(engine, batch(next(fresh)), f"warmup-{b}")  # the first run of a batch shape is slower
        per_branch, launched = [], []
        for repeat in range(STEP_RUNS):
            runs = await run_requests(engine, batch(next(fresh)), f"steps-{b}-{repeat}")
            launched.append(max(run["stamps"][0] - run["sent"] for run in runs))
            for run in runs:
                drafts = run["spec"].num_drafts if speculative and run["spec"] is not None else 0
                steps = drafts or run["tokens"] - 1  # k = 0 proposes no drafts: one token per step
                if steps > 0 and len(run["stamps"]) > 1:
                    per_branch.append((run["stamps"][-1] - run["stamps"][0]) / steps)
        times.append(statistics.median(per_branch))
        first.append(statistics.fmean(launched))
        progress(f"step time at {b} sequences", 1)
    return list(batch_sizes), monotone(times), monotone(first)


#: The long prompt's system message of the context-slope measurement (~400 tokens on the built-in model).
LONG_CONTEXT = ("You answer arithmetic questions. Write every step on its own line as a + b = c, keep each "
                "intermediate result, and finish with four hash marks and the result. ") * 3
#: Branches of the context-slope measurement.
CONTEXT_BATCH = 4


async def context_slope(engine: Engine, questions: Sequence[str], *, speculative: bool) -> float:
    """The relative step-time increase per prompt token: ``CONTEXT_BATCH`` branches of a
    question with and without :data:`LONG_CONTEXT` before it, alternately, fresh questions
    each time (none below 0)."""
    def steps(runs: Sequence[dict[str, Any]]) -> float:
        per = []
        for run in runs:
            drafts = run["spec"].num_drafts if speculative and run["spec"] is not None else 0
            n = drafts or run["tokens"] - 1
            if n > 0 and len(run["stamps"]) > 1:
                per.append((run["stamps"][-1] - run["stamps"][0]) / n)
        return statistics.median(per)

    ratios, extra = [], 0
    for i in range(STEP_RUNS + 1):
        question = questions[i % len(questions)]
        short = engine.render_prompt([{"role": "user", "content": question}])
        long = engine.render_prompt([{"role": "system", "content": LONG_CONTEXT}, {"role": "user", "content": question}])
        timed = []
        for prompt in (long, short):
            requests = [BranchRequest(prompt_token_ids=tuple(prompt), max_tokens=STEP_RUN_TOKENS, temperature=0.8,
                                      seed=500 + 10 * i + b, ignore_eos=True) for b in range(CONTEXT_BATCH)]
            timed.append(steps(await run_requests(engine, requests, f"context-{i}-{len(prompt)}")))
        extra = len(long) - len(short)
        if i:  # the first pair warms both shapes up
            ratios.append(timed[0] / timed[1])
    return max(0.0, (statistics.median(ratios) - 1.0) / max(1, extra))


async def natural_samples(engine: Engine, prompts: Sequence[list[int]], samples: int, max_tokens: int | None,
                          temperature: float, logprobs: int | None = None) -> list[list[dict[str, Any]]]:
    """``samples`` natural completions of each prompt (seeded), as :func:`run_requests` gives
    them, per prompt; each may write ``max_tokens`` (None: the room its prompt leaves in the
    context -- the output budget the model's calls have, so calibration is not cut short)."""
    requests = [BranchRequest(prompt_token_ids=tuple(p), max_tokens=min(max_tokens or engine.max_model_len - len(p),
                                                                       engine.max_model_len - len(p)),
                              temperature=temperature,
                              seed=7919 * q + s, logprobs=logprobs) for q, p in enumerate(prompts) for s in range(samples)]
    runs = await run_requests(engine, requests, "natural")
    return [runs[q * samples:(q + 1) * samples] for q in range(len(prompts))]


async def _prefill(engine: VLLMEngine, vocab: int, max_len: int, progress: Progress) -> Prefill:
    rng = random.Random(0)
    points: list[tuple[int, float]] = []
    for length in (n for n in PREFILL_LENGTHS if n < max_len - 2):
        for b in PREFILL_BATCHES:
            samples = []
            for _ in range(3):
                requests = [BranchRequest(prompt_token_ids=tuple(rng.randrange(3, vocab) for _ in range(length)),
                                          max_tokens=1, temperature=0.0) for _ in range(b)]
                started = time.perf_counter()
                await run_requests(engine, requests, f"prefill-{length}-{b}")
                samples.append(time.perf_counter() - started)
            points.append((length * b, statistics.median(samples)))
        progress(f"prefill of {length} tokens", 1)
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    slope = max(0.0, sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx) if sxx else 0.0
    return Prefill(intercept_s=max(0.0, mean_y - slope * mean_x), per_token_s=slope, points=points)


async def per_token_seconds(engine: Engine, prompts: Sequence[list[int]], batch: int, *, tokens: int,
                            seed: int = 0, logprobs: int | None = None) -> float:
    """Median seconds per output token of a sequence when ``batch`` sequences (prompts in
    turn) generate ``tokens`` tokens each (``ignore_eos``, T = 0.8, asking for ``logprobs``)
    on the engine as configured; a first run of the batch shape is dropped (it is slower)."""
    return (await timed_batch(engine, prompts, batch, tokens=tokens, seed=seed, logprobs=logprobs))[0]


async def timed_batch(engine: Engine, prompts: Sequence[list[int]], batch: int, *, tokens: int,
                      seed: int = 0, logprobs: int | None = None) -> tuple[float, float]:
    """:func:`per_token_seconds`, and the seconds until all ``batch`` sequences had their
    first token. The timed run asks about the last of ``prompts``; give two or more so
    that the dropped first run asked about another, and that prompt is new to the engine."""
    def requests(prompt: list[int]) -> list[BranchRequest]:
        return [BranchRequest(prompt_token_ids=tuple(prompt), max_tokens=tokens, temperature=0.8,
                              seed=seed + 1000 * batch + i, ignore_eos=True, logprobs=logprobs) for i in range(batch)]

    await run_requests(engine, requests(prompts[0]), f"warm-{batch}")
    runs = await run_requests(engine, requests(prompts[-1]), f"timed-{batch}")
    per_token = statistics.median((r["stamps"][-1] - r["stamps"][0]) / max(1, r["tokens"] - 1) for r in runs)
    return per_token, max(r["stamps"][0] - r["sent"] for r in runs)


#: The ``logprobs=k`` whose step-time cost a profile measures (what the confidence measures ask for).
LOGPROBS_KS = (0, TOP_K)


async def logprobs_slowdown(engine: Engine, prompts: Sequence[list[int]], batch: int, *, tokens: int,
                            rounds: int = 2, ks: Sequence[int] = LOGPROBS_KS) -> dict[str, float]:
    """Per ``k`` of ``ks``, seconds per token at ``batch`` sequences asking for
    ``logprobs=k`` over the same without; each side timed ``rounds`` times in alternation, medians."""
    timed: dict[int | None, list[float]] = {None: [], **{k: [] for k in ks}}
    for _ in range(rounds):
        for k, times in timed.items():
            times.append(await per_token_seconds(engine, prompts, batch, tokens=tokens, logprobs=k))
    plain = statistics.median(timed[None])
    return {str(k): round(statistics.median(timed[k]) / plain, 4) for k in ks}


def confidence_calibration(runs: Sequence[dict[str, Any]],
                           right: Sequence[bool] | None = None) -> ConfidenceCalibration | None:
    """The cut-off's calibration from natural samples run with log-probs (None without
    any); ``right`` grades each run when the prompts have answers."""
    graded = list(zip(runs, right if right is not None else [False] * len(runs)))
    measured = [(r, ok) for r, ok in graded if r["confidences"] and r["logprobs"]]
    if not measured:
        return None

    def lowest(samples: Sequence[dict[str, Any]]) -> tuple[list[float], list[float]]:
        return (sorted(lowest_logprob(r["logprobs"]) for r in samples),
                sorted(lowest_group_confidence(r["confidences"], WINDOW) for r in samples))

    every, good = lowest([r for r, _ in measured]), lowest([r for r, ok in measured if ok])
    return ConfidenceCalibration(lowest_logprob=every[0], lowest_group=every[1], right_lowest_logprob=good[0],
                                 right_lowest_group=good[1])


def grade_runs(runs: Sequence[dict[str, Any]], answer: str, extractor: Callable[[str], str | None]) -> list[bool]:
    """Whether each run's extracted answer is ``answer``."""
    truth = normalize_answer(answer)
    return [(given := extractor(r["text"])) is not None and normalize_answer(given) == truth for r in runs]


async def graded_samples(engine: Engine, calibration: Sequence[CalibrationPrompt], *, samples: int,
                         max_tokens: int | None,
                         temperature: float, extractor: Callable[[str], str | None]
                         ) -> list[list[tuple[dict[str, Any], bool]]]:
    """Per calibration question with an answer, ``samples`` natural samples with log-probs
    (top 5 and the sampled token's), each with whether it is right."""
    answered = [p for p in calibration if p.answer is not None]
    prompts = [engine.render_prompt([{"role": r, "content": c} for r, c in p.messages]) for p in answered]
    natural = await natural_samples(engine, prompts, samples, max_tokens, temperature, logprobs=TOP_K)
    return [list(zip(runs, grade_runs(runs, p.answer or "", extractor))) for runs, p in zip(natural, answered)]


async def greedy_answers(engine: Engine, prompts: Sequence[Sequence[int]], max_tokens: int | None,
                         extractor: Callable[[str], str | None]) -> list[str | None]:
    """One greedy (temperature 0) answer per prompt, normalized (None: none stated): what
    the planner weighs greedy decoding and a greedy vote member with
    (``AccuracyModel.greedy_accuracy``, ``vote_gain_se`` and ``greedy_member``)."""
    runs = await natural_samples(engine, prompts, 1, max_tokens, 0.0)
    return [_answer_of(q[0], extractor) for q in runs]


def _answer_of(run: dict[str, Any], extractor: Callable[[str], str | None]) -> str | None:
    given = extractor(run["text"])
    return None if given is None else normalize_answer(given)


def _grade(runs: Sequence[dict[str, Any]], answer: str, extractor: Callable[[str], str | None]) -> tuple[int, int, float]:
    """(correct, votes of the most common wrong answer, what the plurality vote of all of
    them scored) among one question's samples."""
    truth = normalize_answer(answer)
    given = [extractor(r["text"]) for r in runs]
    correct = sum(1 for g in given if g is not None and normalize_answer(g) == truth)
    # An answer-less sample votes for nothing (as in tts.voting): it never joins a wrong answer.
    wrong = Counter(normalize_answer(g) for g in given if g is not None and normalize_answer(g) != truth)
    main = max(wrong.values(), default=0)
    vote = observed_vote(correct, main, sum(1 for v in wrong.values() if v == main))
    return correct, max(main, 1 if len(given) > correct else 0), vote


def _question_of(prompt: CalibrationPrompt) -> str:
    """The text a call's output length is predicted from: its last user message."""
    return next((c for r, c in reversed(prompt.messages) if r == "user"), "")


#: The extractors ``answer_extractor="auto"`` chooses among (the default chain first).
AUTO_CANDIDATES: tuple[str, ...] = ("auto", "stated", "answer_tag", "last_number", "hash", "boxed")
#: How much better than the default chain (absolute accuracy) another extractor must be.
EXTRACTOR_MARGIN = 0.01


def extractor_scores(answered: Sequence[tuple[Sequence[dict[str, Any]], CalibrationPrompt]]) -> dict[str, float]:
    """Per candidate extractor, the share of the calibration samples it grades right."""
    scores = {}
    for name in AUTO_CANDIDATES:
        right = [ok for runs, p in answered for ok in grade_runs(runs, p.answer or "", EXTRACTORS[name])]
        scores[name] = sum(right) / len(right) if right else 0.0
    return scores


def choose_extractor(scores: dict[str, float]) -> str | None:
    """The extractor ``"auto"`` uses for this model and task: the best scoring one when it
    beats the default chain by :data:`EXTRACTOR_MARGIN`, else None (the default chain)."""
    if not scores:
        return None
    best = max(AUTO_CANDIDATES, key=lambda name: (scores.get(name, 0.0), name == "auto"))
    return best if best != "auto" and scores[best] >= scores.get("auto", 0.0) + EXTRACTOR_MARGIN else None


def batch_sizes_for(max_num_seqs: int) -> list[int]:
    """1, 2, 4, ... up to ``min(max_num_seqs, MAX_PROFILED_BATCH)`` (that limit included)."""
    top = min(max_num_seqs, MAX_PROFILED_BATCH)
    sizes = [1]
    while sizes[-1] * 2 <= top:
        sizes.append(sizes[-1] * 2)
    if sizes[-1] != top:
        sizes.append(top)
    return sizes


def measure_profile(settings: TTSSettings, calibration: Sequence[CalibrationPrompt] | None = None,
                    *, calibrate: bool = True, progress: Progress | None = None,
                    speculative_lengths: Sequence[int] = SPECULATIVE_LENGTHS) -> Profile:
    """Measure a profile for ``settings`` on this machine (module docstring);
    ``speculative_lengths`` are the drafter's lengths measured (empty: no drafter, one
    engine; the engine then plans without speculation); ``calibrate``
    fits the vote-accuracy model when the calibration prompts have answers (False keeps
    the default model and samples each prompt twice, for output lengths only)."""
    report: Progress = progress or (lambda _what, _n: None)
    if calibration is None:
        if settings.model is not None:
            raise LattsValueError.bad("prompts", None, "must be given to profile a model other than the built-in one",
                                      "Pass calibration prompts: latts profile --prompts prompts.jsonl")
        calibration = builtin_calibration()
    started = time.perf_counter()
    configs = _engine_configs(settings, speculative_lengths)
    curves: dict[str, StepCurve] = {}
    prefill: Prefill | None = None
    lengths: list[int] = []
    confidence: ConfidenceCalibration | None = None
    slowdown: dict[str, float] = {}
    length_model: LengthModel | None = None
    scores: dict[str, float] = {}
    chosen: str | None = None
    accuracy = DEFAULT_ACCURACY_MODEL
    extractor = settings.extractor()
    gpu = first_visible_gpu()
    for name, config in configs.items():
        report(f"starting the engine ({name})", 0)
        free_before = nvml_memory(gpu)  # None on CPU
        engine = VLLMEngine(config)
        try:
            stats = engine.run_sync(engine.ensure_started())
            prompts = [engine.render_prompt([{"role": r, "content": c} for r, c in p.messages],
                                            template_kwargs=settings.chat_template_kwargs) for p in calibration]
            speculative = config.speculative is not None
            sizes, times, first = engine.run_sync(_step_curve(engine, prompts, batch_sizes_for(stats.max_num_seqs),
                                                              speculative=speculative, progress=report))
            slope = engine.run_sync(context_slope(engine, [_question_of(p) for p in calibration[-4:]],
                                                  speculative=speculative))
            tokens_per_step, acceptance = 1.0, None
            if name == "off":
                calibrating = calibrate and any(p.answer is not None for p in calibration)
                samples = CALIBRATION_SAMPLES if calibrating else 2
                natural = engine.run_sync(natural_samples(engine, prompts, samples, settings.max_tokens,
                                                   settings.temperature or 0.8, logprobs=TOP_K))
                lengths = sorted(r["tokens"] for q in natural for r in q)
                if len(calibration) >= MIN_QUESTIONS:
                    length_model = fit_length_model([_question_of(p) for p in calibration],
                                                    [[r["tokens"] for r in q] for q in natural])
                answered = [(q, p) for q, p in zip(natural, calibration) if p.answer is not None]
                if calibrating and settings.answer_extractor == "auto" and answered:
                    scores = extractor_scores(answered)
                    chosen = choose_extractor(scores)
                    extractor = EXTRACTORS[chosen or "auto"]
                confidence = confidence_calibration(
                    [r for q in natural for r in q],
                    None if any(p.answer is None for p in calibration)
                    else [ok for q, p in zip(natural, calibration) for ok in grade_runs(q, p.answer or "", extractor)])
                graded = [_grade(q, p.answer or "", extractor) for q, p in answered]
                if calibrating and len(graded) >= 2:
                    accuracy = fit_accuracy_model([c for c, _, _ in graded], [w for _, w, _ in graded], samples,
                                                  votes=[v for _, _, v in graded])
                    harder, reference = fit_length_slope([c for c, _, _ in graded], samples,
                                                         [statistics.median(r["tokens"] for r in q) for q, _ in answered])
                    firsts = engine.run_sync(greedy_answers(engine, [prompts[i] for i, p in enumerate(calibration)
                                                                     if p.answer is not None],
                                                            settings.max_tokens, extractor))
                    truths = [normalize_answer(p.answer or "") for _, p in answered]
                    greedy = [first == truth for first, truth in zip(firsts, truths)]
                    members = member_vote_table([[_answer_of(r, extractor) for r in q] for q, _ in answered],
                                                firsts, truths)
                    accuracy = accuracy.model_copy(update={
                        "length_slope": harder, "reference_length": reference,
                        "greedy_accuracy": sum(greedy) / len(greedy),
                        "vote_gain_se": paired_standard_error([v for _, _, v in graded], [float(g) for g in greedy]),
                        "greedy_member": [statistics.fmean(c) for c in zip(*members)],
                        "member_gain_se": paired_standard_error([row[-1] for row in members],
                                                                [float(g) for g in greedy])})
                report("output lengths and accuracy", 1)
                prefill = engine.run_sync(_prefill(engine, len(engine._tokenizer), engine.max_model_len, report))
                slowdown = engine.run_sync(logprobs_slowdown(engine, prompts, min(16, sizes[-1]),
                                                             tokens=STEP_RUN_TOKENS))
            elif not name.startswith("k=0"):
                natural = engine.run_sync(natural_samples(engine, prompts, 1, settings.max_tokens,
                                                   settings.temperature or 0.8))
                spec = [r["spec"] for q in natural for r in q if r["spec"] is not None]
                drafts = sum(s.num_drafts for s in spec)
                proposed = sum(s.num_draft_tokens for s in spec)
                accepted = sum(s.num_accepted_tokens for s in spec)
                tokens_per_step = 1 + accepted / drafts if drafts else 1.0
                acceptance = accepted / proposed if proposed else None
                report(f"acceptance ({name})", 1)
            curves[name] = StepCurve(batch_sizes=sizes, step_s=times, tokens_per_step=tokens_per_step,
                                     acceptance_rate=acceptance, first_token_s=first,
                                     prompt_tokens=round(statistics.median(len(p) for p in prompts)),
                                     context_slope=slope)
        finally:
            engine.shutdown()
            wait_for_memory_back(free_before, lambda: nvml_memory(gpu))  # before the next engine starts
    assert prefill is not None
    profile = Profile(
        identity=profile_identity(settings), created=datetime.now(UTC).isoformat(timespec="seconds"),
        duration_s=time.perf_counter() - started, steps=curves, prefill=prefill, output_lengths=lengths,
        accuracy=accuracy, confidence=confidence, logprobs_slowdown=slowdown, length_model=length_model,
        extractor=chosen, extractor_scores=scores,
        calibration=(f"{len(calibration)} prompts, " + ("built-in held-out arithmetic" if settings.model is None
                                                         else "user-given")),
    )
    profile = _time_schedule(profile, settings, calibration, report, gpu)
    return profile.model_copy(update={"duration_s": time.perf_counter() - started})


def _time_schedule(profile: Profile, settings: TTSSettings, calibration: Sequence[CalibrationPrompt],
                   report: Progress, gpu: int) -> Profile:
    """``profile`` with the dynamic schedule the planner would derive from it timed as a
    whole on its own engine (``steps["schedule"]``, ``timed_schedule``): vLLM may run a
    schedule slower than the fixed lengths it is made of (on CUDA a schedule downgrades
    full CUDA graphs to piecewise), and the planner must not choose it on the fixed
    lengths' times. Unchanged without a drafter or when one length wins at every batch size."""
    drafter = settings.candidate_drafter
    if drafter is None or "k=0+draft" not in profile.steps:
        return profile
    setting = derive_schedule(profile, profile.max_batch)
    spec = to_speculative_config(setting, *drafter)
    if not setting.dynamic or spec is None:
        return profile
    config = _with_spec(engine_config(settings.model_copy(update={"num_speculative_tokens": 0})), spec)
    report("starting the engine (schedule)", 0)
    free_before = nvml_memory(gpu)
    engine = VLLMEngine(config)
    try:
        stats = engine.run_sync(engine.ensure_started())
        prompts = [engine.render_prompt([{"role": r, "content": c} for r, c in p.messages],
                                        template_kwargs=settings.chat_template_kwargs) for p in calibration]
        sizes, times, first = engine.run_sync(_step_curve(engine, prompts, batch_sizes_for(stats.max_num_seqs),
                                                          speculative=True, progress=report))
    finally:
        engine.shutdown()
        wait_for_memory_back(free_before, lambda: nvml_memory(gpu))
    longest = profile.steps[f"k={setting.max_k}"]  # the context slope of its longest drafts
    curve = StepCurve(batch_sizes=sizes, step_s=times, first_token_s=first,
                      prompt_tokens=round(statistics.median(len(p) for p in prompts)),
                      context_slope=longest.context_slope)
    return profile.model_copy(update={"steps": profile.steps | {"schedule": curve},
                                      "timed_schedule": [tuple(r) for r in setting.schedule]})


def profile_steps(settings: TTSSettings) -> int:
    """Progress steps of :func:`measure_profile` (for a progress bar)."""
    configs = _engine_configs(settings)
    batches = len(batch_sizes_for(settings.max_num_seqs or 256))
    prefill = len([n for n in PREFILL_LENGTHS if n < (settings.max_model_len or 1 << 30) - 2])
    return len(configs) * batches + 1 + prefill + sum(1 for n in configs if n.startswith("k=") and n != "k=0+draft")
