"""LangChain's standard integration tests against the real vLLM engine."""

from __future__ import annotations

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_tests.integration_tests import ChatModelIntegrationTests

from langchain_latts import LatencyOptimalTTSLLM
from langchain_latts.models import DEFAULT_TARGET


class TestLatencyOptimalTTSLLMIntegration(ChatModelIntegrationTests):
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
        # Same engine settings as the other integration tests: one shared engine.
        # Tools by grammar: the tiny model knows only its calculator, so the format comes from
        # constrained decoding (tool_calling="constrained", see langchain_latts/tools.py).
        return {"branches": 2, "seed": 0, "max_tokens": 160, "temperature": 0.8, "tool_calling": "constrained"}

    @property
    def model_override_value(self) -> str:
        # A per-call `model` really selects the engine; the shipped target by path shares
        # the default engine, so the override tests cost no extra engine start.
        return str(DEFAULT_TARGET)

    # Tests that need knowledge the tiny arithmetic model cannot have. The format still holds in
    # each (a schema-valid call to the named tool), which other tests here check.
    @pytest.mark.xfail(strict=True, reason="needs English: choosing magic_function's argument 3 from 'What is the "
                       "value of magic_function(3)?'; the tiny model calls it with a schema-valid but wrong integer")
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)  # as in the base test
    def test_tool_calling(self, model: BaseChatModel) -> None:
        super().test_tool_calling(model)

    @pytest.mark.xfail(strict=True, reason="needs English: choosing magic_function's argument 3 from 'What is the "
                       "value of magic_function(3)?'; the tiny model calls it with a schema-valid but wrong integer")
    async def test_tool_calling_async(self, model: BaseChatModel) -> None:
        await super().test_tool_calling_async(model)

    @pytest.mark.xfail(strict=True, reason="the built-in model's tokenizer is printable ASCII: Chinese text is refused "
                       "with a LattsValueError naming the characters")
    def test_unicode_tool_call_integration(self, model: BaseChatModel, *, tool_choice: str | None = None,
                                           force_tool_call: bool = True) -> None:
        super().test_unicode_tool_call_integration(model, tool_choice=tool_choice, force_tool_call=force_tool_call)

    @pytest.mark.xfail(strict=True, reason="needs English: the tiny arithmetic model fills the joke's free-text strings "
                       "with digits and does not close them within max_tokens=160, so no branch's object completes "
                       "(the schema-constrained format itself passes in test_structured_output)")
    def test_json_mode(self, model: BaseChatModel) -> None:
        super().test_json_mode(model)
