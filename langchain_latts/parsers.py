"""``VotedAnswerParser``: the end of a ``prompt | llm | parser`` chain.

It turns the model's message into a :class:`VotedAnswer` -- the winning answer, the
votes, the latency and the full text -- so a chain's result carries what a user needs
to trust it, not only a string.
"""

from __future__ import annotations

from typing import Any

from langchain_core.exceptions import OutputParserException
from langchain_core.output_parsers import BaseGenerationOutputParser
from langchain_core.outputs import ChatGeneration, Generation
from pydantic import BaseModel

__all__ = ["VotedAnswer", "VotedAnswerParser"]


class VotedAnswer(BaseModel):
    """The outcome of one ``LatencyOptimalTTSLLM`` call."""

    answer: str | None
    """The winning answer (None when no branch gave an extractable answer)."""
    votes: dict[str, int]
    """Votes per answer, most first."""
    latency_s: float
    """Wall-clock seconds of the call."""
    branches_finished: int
    """Branches that completed (the others were stopped early or by the deadline)."""
    branches_launched: int = 0
    """Branches run (the planner's choice under ``branches="auto"``)."""
    text: str
    """The full text of the selected branch."""
    partial: bool = False
    """True when the deadline came before any branch finished."""


class VotedAnswerParser(BaseGenerationOutputParser[VotedAnswer]):
    """Parse a ``LatencyOptimalTTSLLM`` message into a :class:`VotedAnswer`."""

    def parse_result(self, result: list[Generation], *, partial: bool = False) -> VotedAnswer:
        generation = result[0]
        if not isinstance(generation, ChatGeneration) or "tts" not in generation.message.response_metadata:
            raise OutputParserException(
                "VotedAnswerParser needs the message of a LatencyOptimalTTSLLM (response_metadata['tts'] "
                "is missing); put it right after the model in the chain."
            )
        tts: dict[str, Any] = generation.message.response_metadata["tts"]
        return VotedAnswer(
            answer=tts["answer"],
            votes=tts["votes"],
            latency_s=tts["latency_s"],
            branches_finished=tts["branches_finished"],
            branches_launched=tts["branches_launched"],
            text=generation.text,
            partial=tts["partial"],
        )

    @property
    def _type(self) -> str:
        return "latts_voted_answer"
