"""An agent whose reasoning step runs under its own deadline.

    python examples/agent_deadline.py

The agent splits a long calculation into sub-problems. Each *reasoning step* is the
chat model bound to a deadline (``llm.bind(deadline_s=...)``): at the deadline it votes
over the branches that finished and aborts the rest, so the step is on time whatever
the branches do. A *tool step* then checks the reasoning with the task's step verifier;
when the answer came from a partial branch or fails the check, the agent retries that
step once with a doubled budget. Other steps of the chain are untouched by the deadline.
"""

from __future__ import annotations

import time

from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda

from langchain_latts import LatencyOptimalTTSLLM
from langchain_latts.tasks.arithmetic import parse_problem, step_scores

PROMPT = ChatPromptTemplate.from_messages([("human", "{question}")])


def verify(inputs: dict) -> dict:
    """Tool step: check every arithmetic step of the reasoning (no model involved)."""
    message = inputs["message"]
    scores = step_scores(parse_problem(inputs["question"]), str(message.content))
    tts = message.response_metadata["tts"]
    return {**inputs, "answer": tts["answer"], "verified": min(scores) == 1.0, "partial": tts["partial"],
            "finished": tts["branches_finished"], "latency_s": tts["latency_s"]}


def reasoning_step(llm: LatencyOptimalTTSLLM, deadline_s: float):  # noqa: ANN201 - a Runnable
    """The model under a deadline, then the verifier tool."""
    step = PROMPT | llm.bind(deadline_s=deadline_s)
    return RunnableLambda(lambda q: {"question": q, "message": step.invoke({"question": q})}) | RunnableLambda(verify)


def solve(llm: LatencyOptimalTTSLLM, parts: list[str], budget_s: float) -> None:
    total = 0
    started = time.monotonic()
    for part in parts:
        deadline = budget_s
        for _attempt in (1, 2):
            result = reasoning_step(llm, deadline).invoke(part)
            status = "partial" if result["partial"] else f"{result['finished']} branches finished"
            print(f"  {part:<42} deadline {deadline:.2f} s -> {result['answer']!s:>5} "
                  f"({status}, verified={result['verified']}, {result['latency_s']:.2f} s)")
            if result["verified"] and not result["partial"]:
                break
            deadline *= 2  # escalate the budget once
        total += int(result["answer"] or 0)
    print(f"sum of the parts = {total}  ({time.monotonic() - started:.2f} s in all)")


if __name__ == "__main__":  # vLLM starts its engine in a spawned process: keep this guard
    model = LatencyOptimalTTSLLM(branches=8, seed=0)
    model.warmup()  # pay the engine start before any deadline-bound step
    parts = ["Compute 48 + 17 - 23 + 15.", "Compute 91 + 78 - 64 + 85 - 33.", "Compute 12 + 17 - 15."]
    print("budget 0.5 s per reasoning step:")
    solve(model, parts, budget_s=0.5)
