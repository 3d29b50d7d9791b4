"""The demo: one sample against the vote of several branches, at the same deadline.

    latts demo            (or: make demo)

A LangChain chain ``prompt | llm | VotedAnswerParser()`` answers arithmetic questions
typed the way people type them, three times per question and under the same deadline:
with a single branch (what a plain chat model gives), with a hand-picked vote of several
parallel branches, and with the planner's choice (``branches="auto"``, the default). It
prints a few questions side by side, then the accuracy of each over a few dozen. Uses the
built-in tiny model, so it runs offline on a CPU.

Without ``--deadline-s`` the deadline is measured: twice the 90th percentile of one
sample's latency on a dozen calibration questions (a seed the shown questions do not
use), so a single sample almost always finishes and the votes have to fit in the same
time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from langchain_core.prompts import ChatPromptTemplate
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from langchain_latts.chat_models import LatencyOptimalTTSLLM
from langchain_latts.parsers import VotedAnswer, VotedAnswerParser
from langchain_latts.tasks.arithmetic import Problem, generate_problems

__all__ = ["run_demo"]

#: Questions shown one by one before the accuracy summary.
SHOWN = 6
#: Calibration questions timed to choose the deadline, and the percentile taken.
CALIBRATION_QUESTIONS = 12
CALIBRATION_PERCENTILE = 90
#: The deadline is this multiple of that percentile.
DEADLINE_MULTIPLE = 2.0


@dataclass(frozen=True)
class _Row:
    problem: Problem
    single: VotedAnswer
    voted: VotedAnswer
    auto: VotedAnswer

    def correct(self, answer: VotedAnswer) -> bool:
        return answer.answer == str(self.problem.answer)


def run_demo(*, questions: int = 24, branches: int = 8, deadline_s: float | None = None, seed: int = 0,
             console: Console | None = None) -> dict[str, float]:
    """Answer ``questions`` problems both ways and print the comparison; returns the accuracies.

    ``deadline_s=None`` measures it (module docstring)."""
    console = console or Console()
    llm = LatencyOptimalTTSLLM(seed=seed)
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    with console.status("starting the vLLM engine (once per process)..."):
        llm.warmup()
    if deadline_s is None:
        with console.status("timing one sample to choose the deadline..."):
            deadline_s = measured_deadline(llm, seed=seed)
        console.print(f"deadline: {deadline_s:.3f} s, {DEADLINE_MULTIPLE:g}x one sample's p{CALIBRATION_PERCENTILE} latency "
                      f"on {CALIBRATION_QUESTIONS} calibration questions")
    single = prompt | llm.bind(branches=1, deadline_s=deadline_s) | VotedAnswerParser()
    voted = prompt | llm.bind(branches=branches, deadline_s=deadline_s) | VotedAnswerParser()
    auto = prompt | llm.bind(deadline_s=deadline_s) | VotedAnswerParser()
    problems = generate_problems(questions, seed=seed + 12345)
    rows: list[_Row] = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("asking", total=len(problems))
        for problem in problems:
            question = {"question": problem.question}
            rows.append(_Row(problem, single.invoke(question), voted.invoke(question), auto.invoke(question)))
            progress.advance(task)

    table = Table(title=f"the same deadline ({deadline_s:g} s): one sample, a vote of {branches}, the planner")
    for column in ("question", "truth", "one sample", f"vote of {branches}", "planner (branches)", "planner's votes"):
        table.add_column(column)
    for row in rows[:SHOWN]:
        table.add_row(row.problem.question, str(row.problem.answer), _cell(row, row.single), _cell(row, row.voted),
                      f"{_cell(row, row.auto)} ({row.auto.branches_launched})",
                      ", ".join(f"{a}: {n}" for a, n in list(row.auto.votes.items())[:3]))
    console.print(table)
    names = ("single", "voted", "auto")
    accuracy = {name: sum(row.correct(getattr(row, name)) for row in rows) / len(rows) for name in names}
    mean_branches = sum(row.auto.branches_launched for row in rows) / len(rows)
    console.print(
        f"Over {len(rows)} questions, deadline {deadline_s:g} s each: one sample [bold]{accuracy['single']:.0%}[/] "
        f"correct, the vote of {branches} branches [bold]{accuracy['voted']:.0%}[/], the planner "
        f"[bold]{accuracy['auto']:.0%}[/] (it chose {mean_branches:.1f} branches on average)."
    )
    return accuracy


def measured_deadline(llm: LatencyOptimalTTSLLM, *, seed: int) -> float:
    """``DEADLINE_MULTIPLE`` x one sample's latency percentile on calibration questions."""
    problems = generate_problems(CALIBRATION_QUESTIONS, seed=seed + 777)
    latencies = sorted(llm.invoke(p.question, branches=1).response_metadata["tts"]["latency_s"] for p in problems)
    rank = math.ceil(CALIBRATION_PERCENTILE / 100 * len(latencies)) - 1
    return round(DEADLINE_MULTIPLE * latencies[rank], 3)


def _cell(row: _Row, answer: VotedAnswer) -> str:
    mark = "[green]✓[/]" if row.correct(answer) else "[red]✗[/]"
    late = " (partial)" if answer.partial else ""
    return f"{answer.answer} {mark}{late}  {answer.latency_s:.2f} s"
