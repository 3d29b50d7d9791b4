"""Message shaping: LangChain messages in, ``AIMessage`` / chunks with metadata out.

Pure functions, tested without an engine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.messages.utils import convert_to_openai_messages, merge_message_runs
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from langchain_latts.engines.base import EngineConfig
from langchain_latts.errors import LattsValueError
from langchain_latts.tools import CALL_PREFIX, calls_from_key
from langchain_latts.tts.branches import Branch, BranchRun

__all__ = ["build_chat_result", "result_to_chunks", "speculation_metadata", "to_chat_messages", "with_instruction"]

#: Content blocks of an assistant message that repeat its tool calls (Anthropic, OpenAI).
_CALL_BLOCKS = frozenset({"tool_use", "tool_call", "function_call"})
#: ``model_provider`` reported in metadata and to LangSmith.
PROVIDER = "vllm"


def to_chat_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """Validate messages and turn them into chat-template dicts (``role``/``content``).

    Consecutive messages of the same role are merged (many chat templates reject two
    user or two system turns in a row). Only text content is accepted; an assistant's
    ``tool_calls`` and a tool message's ``tool_call_id`` are kept (OpenAI format).
    """
    if not messages:
        raise LattsValueError.bad(
            "messages", [], "must hold at least one message",
            "Pass e.g. [HumanMessage('Compute 2 + 3.')] or a plain string.",
        )
    for i, message in enumerate(messages):
        if isinstance(message.content, str):
            continue
        for block in message.content:
            kind = block if isinstance(block, str) else block.get("type")
            if message.type == "ai" and kind in _CALL_BLOCKS:
                continue  # the same calls are in message.tool_calls, which the template renders
            if not isinstance(block, str) and kind != "text":
                raise LattsValueError.bad(
                    f"messages[{i}].content block type", kind,
                    "is not supported: this model reads text only",
                    "Send text content (a string or {'type': 'text', 'text': ...} blocks).",
                )
    merged = merge_message_runs(list(messages))
    shaped = convert_to_openai_messages(merged, text_format="string")
    chat: list[dict[str, Any]] = []
    for m in shaped:
        raw: dict[str, Any] = dict(m)  # type: ignore[arg-type]
        entry = {"role": raw["role"], "content": raw.get("content") or ""}
        for key in ("tool_calls", "tool_call_id"):  # tool use, rendered by the chat template
            if raw.get(key):
                entry[key] = raw[key]
        chat.append(entry)
    return chat


def with_instruction(chat: list[dict[str, Any]], instruction: str) -> list[dict[str, Any]]:
    """``chat`` with ``instruction`` in its system message (added first, or appended to a
    leading one)."""
    if chat and chat[0]["role"] == "system":
        return [{**chat[0], "content": f"{chat[0]['content']}\n{instruction}".strip()}, *chat[1:]]
    return [{"role": "system", "content": instruction}, *chat]


def _tts_metadata(run: BranchRun, *, selected: int, latency_s: float, speculative: dict[str, Any] | None,
                  deadline_s: float | None, partial: bool, engine_start_s: float,
                  plan: dict[str, Any] | None, typical_lengths: Sequence[int] | None = None) -> dict[str, Any]:
    branches = run.branches
    spec = run.spec
    spec_meta = None
    if speculative is not None:
        spec_meta = {
            **speculative,
            "acceptance_rate": None if spec is None else spec.acceptance_rate,
            "mean_acceptance_length": None if spec is None else spec.mean_acceptance_length,
            "num_drafts": 0 if spec is None else spec.num_drafts,
            "num_draft_tokens": 0 if spec is None else spec.num_draft_tokens,
            "num_accepted_tokens": 0 if spec is None else spec.num_accepted_tokens,
        }
    saved_tokens, saved_s = run.early_stop_savings(typical_lengths)
    return {
        "branches_launched": len(branches),
        "branches_finished": len(run.finished),
        "branches_aborted": sum(1 for b in branches if not b.finished),
        "votes": dict(run.vote.counts),
        "answer": run.answer,
        "strategy": run.strategy,
        "weights": None if run.selection is None else {a: round(w, 6) for a, w in run.selection.weights.items()},
        "selected_branch": selected,
        "partial": partial,
        "stopped_early": run.stopped_early,
        "early_stop_saved_tokens": saved_tokens,
        "early_stop_saved_s": round(saved_s, 4),
        "deadline_s": deadline_s,
        "deadline_hit": run.deadline_hit,
        "decided_at_s": round(run.decided_at_s, 4),
        "latency_s": round(latency_s, 4),
        "engine_start_s": round(engine_start_s, 4),
        "speculative": spec_meta,
        "plan": plan,
        "branch_answers": [b.answer for b in branches],
        "branch_tokens": [b.num_tokens for b in branches],
        "branch_finish_reasons": [b.finish_reason if b.finished or b.finish_reason in ("pruned", "budget", "lifeline")
                                  else "abort" for b in branches],
        "no_branch_finished": not run.finished,
        "kept_alone": run.kept_alone,
        "quorum": run.quorum,
        "quorum_reached": run.quorum_reached,
        "branch_scores": [None if b.score is None else round(b.score, 6) for b in branches],
        "score_errors": sum(1 for b in branches if b.score_error is not None),
        "branches_pruned": sum(1 for b in branches if b.pruned),
        "branches_respawned": sum(1 for b in branches if b.respawned),
        "budget_hit": run.budget_hit,
        "branch_errors": [b.error for b in branches if b.error is not None],
        "branch_confidences": ([None if b.confidence is None else round(b.confidence, 4) for b in branches]
                               if any(b.confidence is not None for b in branches) else None),
        "servers": _servers(branches),
    }


def _servers(branches: Sequence[Branch]) -> dict[str, int] | None:
    """Branches per server that produced them (None for an in-process engine)."""
    counts: dict[str, int] = {}
    for branch in branches:
        for server in branch.servers:
            counts[server] = counts.get(server, 0) + 1
    return counts or None


def select_branch(run: BranchRun) -> tuple[int, bool]:
    """The branch whose text is returned, and whether it is partial.

    The branch the selection picked (for ``majority`` the first with the winning answer,
    else the highest-scoring one with it); with no answer, the first finished branch;
    with nothing finished (deadline), the most advanced partial branch (most tokens,
    lowest index on a tie).
    """
    if run.winner_index is not None:
        return run.winner_index, False
    finished = run.finished
    if finished:
        return finished[0].index, False
    best = max(run.branches, key=lambda b: (b.num_tokens, -b.index))
    return best.index, True


def speculation_metadata(config: EngineConfig, run: BranchRun) -> dict[str, Any] | None:
    """The ``tts.speculative`` entry: the engine's speculation as configured (None: none)."""
    if config.endpoints:  # the servers speculate as they were started; they report it or not
        return {"method": "configured on the servers", "reported": run.spec is not None}
    spec = config.speculative
    if spec is None:
        return None
    return {"method": spec.method, "num_speculative_tokens": spec.num_speculative_tokens,
            "schedule": None if spec.schedule is None else [list(r) for r in spec.schedule]}


def build_chat_result(run: BranchRun, *, prompt_tokens: int, model_name: str, latency_s: float,
                      speculative: dict[str, Any] | None, deadline_s: float | None,
                      engine_start_s: float = 0.0, plan: dict[str, Any] | None = None,
                      typical_lengths: Sequence[int] | None = None,
                      extra: dict[str, Any] | None = None) -> ChatResult:
    """The ``ChatResult`` of a call: the selected branch's text with usage and TTS metadata.

    ``usage_metadata`` counts the prompt once and the output tokens of *all* branches
    (aborted ones included): that is the compute the answer cost. ``latency_s`` and
    ``decided_at_s`` count from when the deadline clock started; ``engine_start_s`` is how
    long the call waited for the engine to start before that (0 once it runs). ``plan`` is
    the planner's choice when the branches were planned (None when they were pinned);
    ``typical_lengths`` (the profile's output lengths) estimate what an early stop saved;
    ``extra`` is added to the ``tts`` metadata as is.
    """
    index, partial = select_branch(run)
    branch = run.branches[index]
    tts = _tts_metadata(run, selected=index, latency_s=latency_s, speculative=speculative, deadline_s=deadline_s,
                        partial=partial, engine_start_s=engine_start_s, plan=plan,
                        typical_lengths=typical_lengths) | (extra or {})
    finish_reason = branch.finish_reason
    if partial:
        finish_reason = "budget" if run.budget_hit and not run.deadline_hit else "deadline"
    output_tokens = run.num_output_tokens
    usage = UsageMetadata(input_tokens=prompt_tokens, output_tokens=output_tokens,
                          total_tokens=prompt_tokens + output_tokens)
    content, tool_calls = branch.text, []
    if not partial and run.answer is not None and run.answer.startswith(CALL_PREFIX):
        content, tool_calls, finish_reason = "", calls_from_key(run.answer), "tool_calls"
    metadata = {"model_name": model_name, "model_provider": PROVIDER, "finish_reason": finish_reason, "tts": tts}
    reasoning = {"reasoning_content": branch.reasoning} if branch.reasoning else {}  # a "reasoning" content block
    message = AIMessage(content=content, tool_calls=tool_calls, usage_metadata=usage, response_metadata=metadata,
                        additional_kwargs=reasoning)
    return ChatResult(generations=[ChatGeneration(message=message)], llm_output={"model_name": model_name})


def result_to_chunks(result: ChatResult) -> Iterator[ChatGenerationChunk]:
    """Stream a finished result: the text, then a last chunk with usage and metadata.

    The selected answer is only known once the vote is done, so streaming yields the
    same text ``invoke`` returns. Usage and ``model_name``/``finish_reason`` go on the
    last chunk only, so that summing chunks does not double them.
    """
    message = result.generations[0].message
    calls = [tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i)
             for i, c in enumerate(getattr(message, "tool_calls", None) or [])]
    yield ChatGenerationChunk(message=AIMessageChunk(content=message.content, id=message.id, tool_call_chunks=calls,
                                                     additional_kwargs=dict(message.additional_kwargs)))
    yield ChatGenerationChunk(
        message=AIMessageChunk(
            content="",
            id=message.id,
            usage_metadata=getattr(message, "usage_metadata", None),
            response_metadata=dict(message.response_metadata),
            chunk_position="last",
        )
    )
