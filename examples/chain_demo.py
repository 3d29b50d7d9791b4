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
    for expression in ["12 + 7 - 5", "48 + 17 - 23 + 5", "91 + 78 - 64 + 85 - 33"]:
        result = chain.invoke({"expression": expression})
        print(f"{expression} = {result.answer}   votes {result.votes}   {result.latency_s:.2f} s")
