"""The demo: a LangChain chain ``prompt | llm | parser`` answering a few questions.

    latts demo            (or: make demo)

Uses the built-in tiny arithmetic model, so it runs offline on a CPU.
"""

from __future__ import annotations

from langchain_core.prompts import ChatPromptTemplate
from rich.console import Console
from rich.table import Table

from langchain_latts.chat_models import LatencyOptimalTTSLLM
from langchain_latts.parsers import VotedAnswerParser
from langchain_latts.tasks.arithmetic import generate_problems

__all__ = ["run_demo"]


def run_demo(*, questions: int = 5, branches: int = 8, seed: int = 0, console: Console | None = None) -> None:
    """Answer ``questions`` arithmetic problems (one per difficulty level) and print a table."""
    console = console or Console()
    llm = LatencyOptimalTTSLLM(branches=branches, seed=seed)
    chain = ChatPromptTemplate.from_messages([("human", "Compute {expression}.")]) | llm | VotedAnswerParser()
    with console.status("starting the vLLM engine (first call only)..."):
        llm.warmup()
    table = Table(title=f"prompt | LatencyOptimalTTSLLM(branches={branches}) | VotedAnswerParser")
    for column in ("question", "answer", "truth", "votes", "latency"):
        table.add_column(column)
    problems = generate_problems(questions, seed=seed + 12345)
    for problem in problems:
        expression = problem.question.removeprefix("Compute ").removesuffix(".")
        result = chain.invoke({"expression": expression})
        votes = ", ".join(f"{a}: {n}" for a, n in result.votes.items())
        mark = "[green]✓[/]" if result.answer == str(problem.answer) else "[red]✗[/]"
        table.add_row(problem.question, f"{result.answer} {mark}", str(problem.answer), votes,
                      f"{result.latency_s:.2f} s")
        console.print(f"[bold]{problem.question}[/] -> {result.answer}  (votes {votes}; "
                      f"{result.latency_s:.2f} s)")
    console.print(table)
