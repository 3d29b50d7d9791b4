"""LangChain's standard integration tests against the real vLLM engine."""

from __future__ import annotations

from langchain_tests.integration_tests import ChatModelIntegrationTests

from langchain_latts import LatencyOptimalTTSLLM
from langchain_latts.models import DEFAULT_TARGET


class TestLatencyOptimalTTSLLMIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[LatencyOptimalTTSLLM]:
        return LatencyOptimalTTSLLM

    @property
    def chat_model_params(self) -> dict:
        # Same engine settings as the other integration tests: one shared engine.
        return {"branches": 2, "seed": 0, "max_tokens": 160, "temperature": 0.8}

    @property
    def model_override_value(self) -> str:
        # A per-call `model` really selects the engine; the shipped target by path shares
        # the default engine, so the override tests cost no extra engine start.
        return str(DEFAULT_TARGET)
