"""A LangChain chain with LatencyOptimalTTSLLM: prompt | llm | parser.

    python examples/chain_demo.py

Runs offline on the built-in tiny arithmetic model. For a real model, pass e.g.
``model="Qwen/Qwen3-8B", draft_model="Qwen/Qwen3-0.6B"`` on a GPU machine.
"""

from langchain_core.prompts import ChatPromptTemplate

from langchain_latts import LatencyOptimalTTSLLM
from langchain_latts.parsers import VotedAnswerParser

if __name__ == "__main__":  # vLLM starts its engine in a spawned process: keep this guard
    llm = LatencyOptimalTTSLLM(branches=8, seed=0)
    chain = ChatPromptTemplate.from_messages([("human", "Compute {expression}.")]) | llm | VotedAnswerParser()
    # The built-in model knows chains of 2 to 6 numbers below 1000 joined by + and -
    # (see langchain_latts/models/MODEL_CARD.md).
    for expression in ["3 + 4 - 2", "12 + 35 - 7", "512+37-208", "91 + 78 - 640 + 85 - 33"]:
        result = chain.invoke({"expression": expression})
        print(f"{expression} = {result.answer}   votes {result.votes}   {result.latency_s:.2f} s")
