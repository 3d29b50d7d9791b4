"""A standard LangChain agent (``langchain.agents.create_agent``) whose reasoning steps are
voted across branches under a deadline, with a calculator tool.

    pip install 'langchain-latts[cpu,agent]'
    python examples/agent_tools.py

No hand-written loop: ``create_agent`` binds the tool (``bind_tools``), calls the model,
runs the tool the model called, feeds its result back as a ``ToolMessage`` and asks the model
again until it answers. Each model step runs 8 branches under ``deadline_s``: they propose
calls (read by vLLM's ``hermes`` tool parser, the built-in model's format), the vote picks
the call with its arguments, and the final answer is voted the same way.

For a real tool-calling model on a GPU, the same code runs with e.g.
``LatencyOptimalTTSLLM(model="Qwen/Qwen3-8B", tool_parser="hermes", deadline_s=5)``.
"""

from __future__ import annotations

from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool

from langchain_latts import LatencyOptimalTTSLLM
from langchain_latts.tasks.arithmetic import calculator as evaluate


@tool
def calculator(expression: str) -> str:
    """Evaluate integers joined by + and -, e.g. '12 + 35 - 7'."""
    return evaluate(expression)


def build_agent(llm: LatencyOptimalTTSLLM) -> Any:
    """The agent: the model and the calculator tool, LangChain's standard loop."""
    return create_agent(llm, tools=[calculator])


def ask(agent: Any, question: str) -> dict[str, Any]:
    """Run the agent on one question: its final answer and what the tool was called with."""
    messages = agent.invoke({"messages": [{"role": "user", "content": question}]})["messages"]
    calls = [c for m in messages if isinstance(m, AIMessage) for c in m.tool_calls]
    results = [m.content for m in messages if isinstance(m, ToolMessage)]
    final = messages[-1]
    return {"answer": final.response_metadata.get("tts", {}).get("answer"), "calls": calls, "tool_results": results,
            "steps": sum(isinstance(m, AIMessage) for m in messages), "text": final.content}


def main() -> None:
    llm = LatencyOptimalTTSLLM(branches=8, seed=0, max_tokens=160, deadline_s=1.0)
    llm.warmup()  # the engine start is not part of any step's deadline
    agent = build_agent(llm)
    for question in ("Compute 512 + 37 - 98.", "What is 48 + 17 - 23 + 15 - 30?", "12+35-7="):
        result = ask(agent, question)
        call = result["calls"][0] if result["calls"] else None
        print(f"{question:<36} -> calculator({call['args'] if call else None}) = {result['tool_results']} "
              f"-> answer {result['answer']} ({result['steps']} model steps)")


if __name__ == "__main__":  # vLLM starts its engine in a spawned process: keep this guard
    main()
