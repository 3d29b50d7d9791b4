"""A LangGraph agent that solves a long calculation under one token and time budget.

    pip install 'langchain-latts[cpu,agent]'
    python examples/agent_budget.py

The chain is too long for the model in one go (it learned chains of up to six numbers),
so the agent works through it a few terms at a time, carrying the running total:

    START -> reason -> check (ToolNode: calculator) -> reason -> check -> ... -> END

* **reason** asks :class:`LatencyOptimalTTSLLM` for the next part (``"Compute 512 + 37 - 98."``).
  Its branches are scored by the shipped step verifier (``verifier="arithmetic_steps"``)
  and pruned at their first wrong step; the verified answer wins (``best_of_n``).
* **check** is a LangGraph ``ToolNode`` running the calculator tool on the same part. When
  the model's answer disagrees, the agent retries that part once, then trusts the tool.
* One :class:`~langchain_latts.Budget` covers the whole run: it is passed in the run's
  config, every model call plans within what is left and records its spend per step
  (``reason[0]``, ``reason[1]``, ...), and when it runs out the run ends with
  :class:`~langchain_latts.BudgetExhaustedError` and the ledger.
"""

from __future__ import annotations

import operator
import uuid
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from langgraph.prebuilt import ToolNode

from langchain_latts import Budget, BudgetExhaustedError, LatencyOptimalTTSLLM
from langchain_latts.tasks.arithmetic import calculator, parse_problem

#: Terms the model is asked about at once (it learned chains of up to six numbers).
TERMS_PER_STEP = 3
#: Attempts per part before the agent takes the calculator's value.
ATTEMPTS = 2


@tool
def calculate(expression: str) -> str:
    """Evaluate integers joined by + and - (e.g. '12 + 35 - 7')."""
    return calculator(expression)


class AgentState(TypedDict):
    terms: list[str]  # the chain still to do: ["+ 37", "- 98", ...]
    total: int  # the running total so far
    part: str  # the expression of the current step
    answer: int | None  # the model's answer for it
    attempts: int
    messages: Annotated[list[Any], operator.add]
    log: Annotated[list[str], operator.add]


def split_chain(question: str) -> tuple[int, list[str]]:
    """The first number and the remaining ``op b`` terms of a chain."""
    problem = parse_problem(question)
    return problem.first, [f"{op} {b}" for op, b in problem.terms]


def build_agent(llm: LatencyOptimalTTSLLM) -> Any:
    """The compiled graph; ``llm`` reasons, a ToolNode checks."""
    reasoner = llm.bind(verifier="arithmetic_steps", strategy="best_of_n", prune=True)

    def reason(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        step = len(state["log"])
        part = " ".join([str(state["total"]), *state["terms"][:TERMS_PER_STEP]])
        message = reasoner.invoke([HumanMessage(f"Compute {part}.")], {**config, "run_name": f"reason[{step}]"})
        answer = message.response_metadata["tts"]["answer"]
        # The graph asks the calculator to check the model's step (the tool call is the agent's, not the model's).
        check = AIMessage("", tool_calls=[{"name": "calculate", "args": {"expression": part},
                                           "id": f"check-{uuid.uuid4().hex[:8]}"}])
        return {"part": part, "answer": None if answer is None else int(answer),
                "attempts": state["attempts"] + 1, "messages": [check]}

    def advance(state: AgentState) -> dict[str, Any]:
        checked = int(next(m for m in reversed(state["messages"]) if isinstance(m, ToolMessage)).content)
        agreed = state["answer"] == checked
        if not agreed and state["attempts"] < ATTEMPTS:
            return {"log": [f"{state['part']} = {state['answer']} (calculator: {checked}, retrying)"]}
        source = "verified" if agreed else "calculator"
        return {"total": checked, "terms": state["terms"][TERMS_PER_STEP:], "attempts": 0,
                "log": [f"{state['part']} = {checked} ({source})"]}

    def route(state: AgentState) -> str:
        return "reason" if state["terms"] else END

    graph = StateGraph(AgentState)
    graph.add_node("reason", reason)
    graph.add_node("check", ToolNode([calculate]))
    graph.add_node("advance", advance)
    graph.add_edge(START, "reason")
    graph.add_edge("reason", "check")
    graph.add_edge("check", "advance")
    graph.add_conditional_edges("advance", route, ["reason", END])
    return graph.compile()


def solve(llm: LatencyOptimalTTSLLM, question: str, budget: Budget) -> dict[str, Any]:
    """Run the agent on ``question`` within ``budget``; returns the final state."""
    first, terms = split_chain(question)
    state = {"terms": terms, "total": first, "part": "", "answer": None, "attempts": 0, "messages": [], "log": []}
    return build_agent(llm).invoke(state, {"configurable": {"latts_budget": budget}, "recursion_limit": 100})


def main() -> None:
    llm = LatencyOptimalTTSLLM(branches=8, seed=0, max_tokens=160)
    llm.warmup()  # the engine start is not part of the budget
    question = "Compute 512 + 37 - 98 + 260 - 45 + 19 - 330 + 81 - 7 + 150."
    print(question, "=", parse_problem(question).answer)
    for budget in (Budget(tokens=3000, seconds=20), Budget(tokens=200)):
        print(f"\n{budget}:")
        try:
            final = solve(llm, question, budget)
            print("\n".join(f"  {line}" for line in final["log"]), f"\n  answer: {final['total']}")
        except BudgetExhaustedError as e:
            print(f"  BudgetExhaustedError: {e}")
        for entry in budget.ledger:
            print(f"  ledger {entry.step:<10} {entry.tokens:>5} tokens {entry.seconds:.3f} s "
                  f"{entry.branches} branches -> {entry.answer}")
        print(f"  spent {budget.tokens_spent} tokens (steps sum to {sum(e.tokens for e in budget.ledger)}) "
              f"in {budget.seconds_spent:.2f} s")


if __name__ == "__main__":  # vLLM starts its engine in a spawned process: keep this guard
    main()
