"""Where a call happens: the package's call runner.

:class:`~langchain_latts.chat_models.LatencyOptimalTTSLLM` turns LangChain's arguments into
a :class:`Call` (validated settings, the engine, the messages, the budget); :func:`run_call`
runs it on the engine's loop, sync and async alike, in named steps:

1. **ready** (:func:`wait_for_engine`): the engine started and, for ``branches="auto"``,
   its profile loaded or measured; the deadline clock starts here (or at the call's start
   with ``deadline_includes_start``);
2. **prompt** (:func:`render`): the chat template applied, the room left in the context;
3. **plan** (:func:`plan_branches`): how many branches, greedy or sampled, the lifeline,
   the token cap -- from the planner, or as pinned;
4. **requests** (:func:`branch_requests`): one engine request per branch, and the branch
   policy (verifier, pruning, confidence cut-off, stop at the answer, reasoning split);
5. **run** (:func:`~langchain_latts.tts.branches.run_branches`), holding the plan's
   reservation so calls that start together see each other;
6. **settle** (:func:`settle`): the budget's ledger, and the errors a call may end with;
7. **shape** (:func:`~langchain_latts._messages.build_chat_result`): the ``AIMessage``
   and its ``tts`` metadata.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from langchain_core.outputs import ChatResult

from langchain_latts._messages import build_chat_result, speculation_metadata
from langchain_latts.budget import Budget, StepSpend, branches_within, least, spender
from langchain_latts.engines.base import BranchRequest, Engine, EngineStats
from langchain_latts.errors import BranchesFailedError, DeadlineExceededError, LattsValueError
from langchain_latts.planner.accuracy import quorum_size
from langchain_latts.planner.engine_config import cached_profile
from langchain_latts.planner.plan import DEFAULT_QUANTILE, DEFAULT_TOLERANCE, Plan
from langchain_latts.planner.profile import Profile
from langchain_latts.planner.runtime import (
    EngineProfile,
    cut_off_calibration,
    engine_profile,
    lifeline_for,
    plan_for_call,
    price_confidence,
    reservations,
)
from langchain_latts.settings import TTSSettings
from langchain_latts.structured import answer_grammar, object_extractor
from langchain_latts.tools import call_grammar, constrained_calls, parser_calls, tool_extractor
from langchain_latts.tts.answers import AnswerExtractor, answer_detector
from langchain_latts.tts.branches import BranchPolicy, BranchRun, ProgressCallback, branch_seeds, run_branches
from langchain_latts.tts.lifeline import Lifeline
from langchain_latts.tts.reasoning import reasoning_splitter

__all__ = ["Call", "make_ready", "run_call"]


@dataclass(frozen=True)
class Call:
    """One call, prepared: validated settings, the engine, the messages and the clock."""

    settings: TTSSettings
    engine: Engine
    messages: list[dict[str, Any]]
    stop: tuple[str, ...]
    #: ``time.monotonic()`` when the call started.
    started: float
    call_id: str
    progress: ProgressCallback | None = None
    #: The run's shared budget (None: none) and this call's name in its ledger.
    budget: Budget | None = None
    step: str = "call"
    #: The JSON schema every branch's output must match (None: free text).
    schema: dict[str, Any] | None = None
    #: Tools offered (OpenAI specs; empty: none) and the resolved tool choice.
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str = "auto"

    @property
    def question(self) -> str:
        """What the planner predicts a length for and a verifier is asked about: the text
        of the last user message."""
        return next((str(m["content"]) for m in reversed(self.messages) if m["role"] == "user"), "")


@dataclass(frozen=True)
class Ready:
    """Step 1's result: the engine's start-up measurements, the profile the call plans with
    (None when its branches are pinned), when its clock started and how long it waited."""

    stats: EngineStats
    state: EngineProfile | None
    started: float
    engine_start_s: float
    #: The profile the call reads measured choices from (extractor, cut-off): the planner's;
    #: for a pinned confidence-pruned call the one calibrated at start-up; else the cached one
    #: of this setup (None: none, or a fleet).
    profile: Profile | None = None


@dataclass(frozen=True)
class Branching:
    """Step 3's result: the branches to run and why."""

    branches: int
    plan: Plan | None
    lifeline: Lifeline | None
    #: The call's token cap: its ``token_budget`` and what the run's budget has left (None: none).
    token_cap: int | None
    #: The finished branches the call decides on (None: all of them).
    quorum: int | None = None


async def run_call(call: Call) -> ChatResult:
    """The whole call, on the engine's loop (module docstring)."""
    settings, engine = call.settings, call.engine
    ready = await wait_for_engine(call)
    deadline = call_deadline(call, ready)
    prompt, room = render(call)
    # From here on the call's max_tokens is a number: its own, or the room its prompt leaves.
    call = replace(call, settings=call.settings.model_copy(update={"max_tokens": call.settings.output_budget(room)}))
    settings = call.settings
    branching = plan_branches(call, ready.state, prompt, deadline)
    branches = branch_requests(call, branching, prompt, room, ready.profile)
    book = reservations(engine)
    # The sequences the engine ran during the call, sampled at its start and as each branch ends.
    plan = branching.plan
    running = [] if plan is None else [plan.load + plan.branches]

    def progress(event: dict[str, Any]) -> None:
        book.hold(call.call_id, event["running"])  # ended branches free their reservation
        running.append(engine.num_unfinished_requests())
        if call.progress is not None:
            call.progress(event)

    try:
        run = await run_branches(
            engine, branches.requests, call_id=call.call_id, extractor=branches.extractor,
            started=ready.started, deadline=deadline, early_stop=settings.early_stop,
            early_stop_threshold=settings.early_stop_threshold, on_progress=progress,
            policy=branches.policy, respawn=branches.respawn,
            spend=spender(branching.token_cap is not None, settings.token_budget, call.budget),
            lifeline=branching.lifeline, quorum=branching.quorum,
        )
    finally:
        book.release(call.call_id)
    settle(call, run, ready.started)
    plan_meta, typical_lengths = None, None
    if ready.state is not None and plan is not None:
        state = ready.state
        state.observe([b.num_tokens for b in run.finished])
        state.observe_timing(plan, run.branches, run.decided_at_s, running=statistics.fmean(running),
                             prompt_tokens=len(prompt), slowdown=state.current().slowdown(settings.logprobs))
        plan_meta = plan.as_metadata() | {"profile": state.source}
        typical_lengths = state.current().output_lengths
    return build_chat_result(
        run, prompt_tokens=len(prompt), model_name=settings.model_name,
        latency_s=time.monotonic() - ready.started, speculative=speculation_metadata(engine.config, run),
        deadline_s=settings.deadline_s, engine_start_s=ready.engine_start_s,
        plan=plan_meta, typical_lengths=typical_lengths,
        extra={"verifier": branches.policy.verifier.name if branches.policy.verifier else None,
               "greedy_member": greedy_member(settings, branching), "token_budget": branching.token_cap,
               "budget": None if call.budget is None else call.budget.as_metadata()},
    )


# -- 1. ready ---------------------------------------------------------------------------------
async def make_ready(engine: Engine, settings: TTSSettings) -> None:
    """Start ``engine`` and, for planned calls, load or measure its profile (``warmup``)."""
    stats = await engine.ensure_started()
    if settings.planned:
        await price_confidence(await engine_profile(engine, settings, stats.max_num_seqs), engine, settings)


async def wait_for_engine(call: Call) -> Ready:
    """Wait for the engine to be ready.

    Ready means started and, for planned calls, with its profile loaded or measured (a
    start-up profile is a one-time cost too). By default the clock starts once the engine
    is ready; with ``deadline_includes_start`` it started with the call, and a deadline
    that passes during the start raises :class:`DeadlineExceededError`.
    """
    settings = call.settings
    strict = settings.deadline_includes_start and settings.deadline_s is not None
    try:
        stats = await call.engine.ensure_started(
            deadline=call.started + settings.deadline_s if strict and settings.deadline_s else None)
    except TimeoutError:
        elapsed = time.monotonic() - call.started
        raise DeadlineExceededError(
            f"deadline_s={settings.deadline_s} passed after {elapsed:.2f} s while the engine was still starting "
            "(deadline_includes_start=True); it keeps starting in the background. Call llm.warmup() before "
            "deadline-bound calls, or leave deadline_includes_start=False so the deadline starts once the "
            "engine is ready.",
            deadline_s=settings.deadline_s or 0.0, elapsed_s=elapsed, tokens=0,
        ) from None
    state = await engine_profile(call.engine, settings, stats.max_num_seqs) if settings.planned else None
    if state is not None:  # measured once, like the start-up profile: not against the deadline
        await price_confidence(state, call.engine, settings)
    calibrated = state
    if state is None and _needs_cut_off_calibration(call):
        # Pinned branches calibrate the confidence cut-off as planned calls do (once per engine).
        calibrated = await engine_profile(call.engine, settings, stats.max_num_seqs)
        await price_confidence(calibrated, call.engine, settings)
    if calibrated is not None:
        profile = calibrated.current(settings.max_tokens)
    else:  # pinned branches read the cached profile of this setup (in-process engines only)
        profile = None if call.engine.config.endpoints else cached_profile(settings)
    ready = time.monotonic()
    return Ready(stats, state, call.started if strict else ready, ready - call.started, profile=profile)


def _needs_cut_off_calibration(call: Call) -> bool:
    """A pinned ``prune="confidence"`` call with no threshold given and none in the cached profile."""
    settings = call.settings
    if settings.prune != "confidence" or settings.confidence_threshold is not None or settings.planned:
        return False
    cached = None if call.engine.config.endpoints else cached_profile(settings)
    return cached is None or cached.confidence is None


def call_deadline(call: Call, ready: Ready) -> float | None:
    """The call's deadline on the ``time.monotonic()`` clock: ``deadline_s`` from when the
    clock started, or sooner when the run's budget has fewer seconds left (None: none)."""
    settings = call.settings
    if settings.deadline_s is not None and settings.deadline_s < ready.stats.min_step_s:
        raise LattsValueError.bad(
            "deadline_s", settings.deadline_s,
            f"must be at least this engine's fastest decode step ({ready.stats.min_step_s:.4f} s, measured "
            "at start-up): no branch could produce a token",
            f"Use deadline_s >= {ready.stats.min_step_s:.3f}, or None for no deadline.",
        )
    deadline = None if settings.deadline_s is None else ready.started + settings.deadline_s
    budget = call.budget
    if budget is not None and budget.seconds_left is not None:
        budget_end = time.monotonic() + budget.seconds_left
        deadline = budget_end if deadline is None else min(deadline, budget_end)
    return deadline


# -- 2. prompt --------------------------------------------------------------------------------
def render(call: Call) -> tuple[list[int], int]:
    """The prompt's tokens (chat template, tools shown unless ``tool_choice="none"``) and
    the room left for the answer in the model's context."""
    engine = call.engine
    shown = list(call.tools) if call.tools and call.tool_choice != "none" else None
    prompt = engine.render_prompt(call.messages, shown, call.settings.chat_template_kwargs)
    room = engine.max_model_len - len(prompt)
    if room < 1:
        raise LattsValueError.bad(
            "messages", f"{len(prompt)} prompt tokens",
            f"must fit the model's context of {engine.max_model_len} tokens with room to answer",
            "Shorten the conversation or raise max_model_len.",
        )
    return prompt, room


# -- 3. plan ----------------------------------------------------------------------------------
def plan_branches(call: Call, state: EngineProfile | None, prompt: Sequence[int], deadline: float | None) -> Branching:
    """The branches to run: the planner's (``branches="auto"``), else the pinned count
    (fewer when a token cap cannot pay for them)."""
    settings = call.settings
    token_cap = least(settings.token_budget, None if call.budget is None else call.budget.tokens_left)
    if state is not None:
        time_left = None if deadline is None else deadline - time.monotonic()
        plan = plan_for_call(state, settings, call.engine, prompt_tokens=len(prompt), time_left_s=time_left,
                             question=call.question, call_id=call.call_id, token_budget=token_cap)
        lifeline = lifeline_for(state, settings, plan, question=call.question, time_left_s=time_left,
                                prompt_tokens=len(prompt))
        quorum = plan.quorum if settings.quorum == "auto" else settings.quorum
        return Branching(plan.branches, plan, lifeline, token_cap, _quorum_of(quorum, plan.branches))
    branches = settings.effective_branches
    profile = cached_profile(settings) if token_cap is not None or settings.quorum == "auto" else None
    if token_cap is not None:
        typical = settings.max_tokens if profile is None else min(settings.max_tokens,
                                                                  profile.output_length(DEFAULT_QUANTILE))
        branches = branches_within(branches, token_cap, typical)
    quorum = settings.quorum
    if quorum == "auto":
        quorum = None if profile is None else quorum_size(profile.accuracy, branches, DEFAULT_TOLERANCE)
    return Branching(branches, None, None, token_cap, _quorum_of(quorum, branches))


def _quorum_of(quorum: int | str | None, branches: int) -> int | None:
    """A quorum that decides anything: fewer than the call's branches (else None)."""
    return quorum if isinstance(quorum, int) and quorum < branches else None


# -- 4. requests ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Requests:
    """Step 4's result: what :func:`~langchain_latts.tts.branches.run_branches` runs."""

    requests: list[BranchRequest]
    #: A replacement for a pruned branch: (branch index, its verified text) -> request.
    respawn: Callable[[int, str], BranchRequest]
    #: The branch policy: verifier, pruning, confidence cut-off, stop at the answer.
    policy: BranchPolicy
    #: How a branch votes.
    extractor: AnswerExtractor


def branch_requests(call: Call, branching: Branching, prompt: Sequence[int], room: int,
                    profiled: Profile | None) -> Requests:
    """One request per branch, the factory of replacements for pruned branches, the branch
    policy and how a branch votes."""
    settings, engine = call.settings, call.engine
    grammar, extractor = output_rules(call, profiled)
    temperature = 0.0 if branching.plan is not None and branching.plan.greedy else settings.temperature
    max_tokens = settings.output_budget(room)

    def request(seed: int | None) -> BranchRequest:
        return BranchRequest(prompt_token_ids=tuple(prompt), max_tokens=max_tokens, temperature=temperature,
                             top_p=settings.top_p, top_k=settings.top_k, min_p=settings.min_p, seed=seed,
                             stop=call.stop, grammar=grammar,
                             logprobs=settings.logprobs)

    def respawn(index: int, prefix: str) -> BranchRequest:
        """A replacement for a pruned branch: a fresh sample continuing its verified steps."""
        head = engine.tokenize(prefix) if prefix else []
        seed = branch_seeds(settings.seed, prompt, index + 1)[index]
        return replace(request(seed), prompt_token_ids=(*prompt, *head), max_tokens=max(1, max_tokens - len(head)))

    extractor_choice = (profiled.extractor if profiled is not None and profiled.extractor is not None
                        and settings.answer_extractor == "auto" else settings.answer_extractor)
    policy = BranchPolicy(
        verifier=settings.resolved_verifier(), question=call.question,
        strategy=settings.selection_strategy, aggregation=settings.step_aggregation,
        prune="verifier" if settings.prune is True else (settings.prune or None),
        prune_threshold=settings.prune_threshold, step_delimiter=settings.step_delimiter,
        max_respawns=branching.branches if settings.max_respawns is None else settings.max_respawns,
        confidence_measure=settings.confidence_measure, confidence_keep=settings.confidence_keep,
        answered=answer_detector(extractor_choice)
        if settings.stop_at_answer and call.schema is None and not call.tools else None,
        reasoning=None if settings.reasoning_parser is None else reasoning_splitter(settings.reasoning_parser,
                                                                                    engine.tokenizer),
        **(cut_off_calibration(settings, profiled) if settings.prune == "confidence" else {}),
    )
    requests = [request(seed) for seed in branch_seeds(settings.seed, prompt, branching.branches)]
    if greedy_member(settings, branching):
        # Branch 0 decodes greedily inside the vote; as the lowest index it wins the vote's ties.
        requests[0] = replace(requests[0], temperature=0.0)
    return Requests(requests, respawn, policy, extractor)


def greedy_member(settings: TTSSettings, branching: Branching) -> bool:
    """Whether the call's vote holds a greedy member (``greedy_member``: always, or where
    its plan chose one), in a sampled vote of two or more branches."""
    plan = branching.plan
    if branching.branches < 2 or settings.temperature == 0 or (plan is not None and plan.greedy):
        return False
    return settings.greedy_member is True or (settings.greedy_member == "auto" and plan is not None
                                              and plan.greedy_member)


def output_rules(call: Call, profiled: Profile | None = None) -> tuple[str | None, AnswerExtractor]:
    """The grammar branches decode under (None: free text) and how a branch votes, for a
    call's structured output or tools; a profile's extractor serves ``answer_extractor="auto"``."""
    settings = call.settings
    chosen = None if profiled is None else profiled.extractor
    if call.schema is not None:
        return answer_grammar(call.schema, settings.max_tokens // 2), object_extractor(call.schema)
    if not call.tools:
        return None, settings.extractor(chosen)
    names = [t["function"]["name"] for t in call.tools]
    constrained = settings.tool_calling == "constrained" and call.tool_choice != "none"
    read = constrained_calls if constrained else parser_calls(settings.tool_parser, call.tools)
    grammar = call_grammar(call.tools, call.tool_choice) if constrained else None
    return grammar, tool_extractor(read, names, call.tool_choice, settings.extractor(chosen))


# -- 6. settle --------------------------------------------------------------------------------
def settle(call: Call, run: BranchRun, started: float) -> None:
    """Record the call in its budget's ledger, then raise what a call may end with: the
    budget ran out before any branch finished, every branch failed in the engine, or no
    branch finished by the deadline with ``on_deadline="raise"``."""
    settings, budget = call.settings, call.budget
    if budget is not None:
        budget.record(StepSpend(
            step=call.step, tokens=run.num_output_tokens, seconds=time.monotonic() - started,
            branches=len(run.branches), answer=run.answer, started_at_s=started - budget.started))
        if not run.finished and (budget.exhausted or run.budget_hit):
            raise budget.exhausted_error(f"the budget ran out during step {call.step!r} before any branch finished")
    if not run.finished and run.branches and all(b.error is not None for b in run.branches):
        raise BranchesFailedError(
            f"every branch of this call failed in the engine ({len(run.branches)} branches); the first: "
            f"{run.branches[0].error}", errors=[b.error or "" for b in run.branches])
    if run.deadline_hit and not run.finished and settings.on_deadline == "raise":
        elapsed = time.monotonic() - started
        raise DeadlineExceededError(
            f"no branch finished within deadline_s={settings.deadline_s} (elapsed {elapsed:.3f} s, "
            f"{run.num_output_tokens} tokens generated over {len(run.branches)} branches, all aborted). "
            "Raise deadline_s, lower max_tokens, or use on_deadline='best_partial' to get the most "
            "advanced partial answer.",
            deadline_s=settings.deadline_s or 0.0, elapsed_s=elapsed, tokens=run.num_output_tokens,
        )
