"""LangChain's standard unit tests for chat models (no engine, no network)."""

from __future__ import annotations

from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_latts import LatencyOptimalTTSLLM


class TestLatencyOptimalTTSLLMUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[LatencyOptimalTTSLLM]:
        return LatencyOptimalTTSLLM

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def chat_model_params(self) -> dict:
        return {"branches": 2, "seed": 0}
