"""``LatencyOptimalTTSLLM``: the LangChain adapter (messages in, ``AIMessage`` out).

It validates a call's arguments into a :class:`~langchain_latts.call.Call` and hands it to
:func:`~langchain_latts.call.run_call`, where the call happens. Everything else lives in its
own module: settings (:mod:`langchain_latts.settings`), message shaping
(:mod:`langchain_latts._messages`), structured output (:mod:`langchain_latts.structured`),
the engine (:mod:`langchain_latts.engines`), the planner (:mod:`langchain_latts.planner`)
and branches and voting (:mod:`langchain_latts.tts`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import suppress
from contextvars import ContextVar
from functools import partial
from typing import Any, ClassVar, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.language_models.model_profile import ModelProfile
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import (
    Runnable,
    RunnableConfig,
    RunnableLambda,
    ensure_config,
)
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ValidationError, model_validator
from pydantic.v1 import BaseModel as BaseModelV1

from langchain_latts._messages import (
    PROVIDER,
    result_to_chunks,
    to_chat_messages,
    with_instruction,
)
from langchain_latts._progress import STREAM_RUN, ProgressEmitter
from langchain_latts._version import __version__
from langchain_latts.budget import active_budget
from langchain_latts.call import Call, make_ready, run_call
from langchain_latts.engines.base import Engine, EngineConfig
from langchain_latts.engines.registry import engine_exists, get_engine
from langchain_latts.engines.vllm_local import local_context_length
from langchain_latts.errors import LattsValueError
from langchain_latts.planner.engine_config import engine_config, speculative_method
from langchain_latts.settings import CALL_OPTIONS, ENGINE_OPTIONS, TTSSettings, as_latts_error
from langchain_latts.structured import (
    ANY_OBJECT,
    StructuredMethod,
    answer_grammar,
    json_instruction,
    json_schema_of,
    parse_structured,
    response_schema,
    with_raw,
)
from langchain_latts.tools import (
    resolve_tool_choice,
    tool_specs,
)
from langchain_latts.tts.answers import extractor_name
from langchain_latts.tts.branches import (
    ProgressCallback,
)
from langchain_latts.tts.verifiers import verifier_name

logger = logging.getLogger(__name__)

__all__ = ["LatencyOptimalTTSLLM"]

#: Per-call keyword arguments LangChain itself may pass along; accepted and ignored.
_LANGCHAIN_KWARGS = frozenset({"stream", "ls_structured_output_format"})
#: Per-call keyword arguments that shape the output (set by with_structured_output).
_OUTPUT_KWARGS = frozenset({"response_format", "tools", "tool_choice"})

#: The config of the ``invoke``/``stream`` call running in this context (LangChain does
#: not hand ``configurable`` to ``_generate``; chains and graphs set it for their steps).
_CALL_CONFIG: ContextVar[RunnableConfig | None] = ContextVar("latts_call_config", default=None)


class LatencyOptimalTTSLLM(BaseChatModel, TTSSettings):
    """A chat model that answers with the vote of parallel, speculatively decoded branches.

    Data flow of one call::

        messages -> chat template -> N branch requests (seed + i) on a local vLLM engine
                 -> each finished branch's answer (answer_extractor) -> majority vote
                 -> AIMessage: the text of a branch with the winning answer,
                    usage over all branches, and response_metadata["tts"]

    The engine starts on first use (never in the constructor), is shared by every
    instance with the same engine settings, and shuts down at exit. Without ``model``
    the package's own tiny arithmetic model is used, so it runs offline::

        from langchain_latts import LatencyOptimalTTSLLM

        llm = LatencyOptimalTTSLLM(branches=8, seed=0)
        msg = llm.invoke("Compute 48 + 17 - 23.")
        msg.response_metadata["tts"]["votes"]   # e.g. {"42": 7, "43": 1}

    ``usage_metadata`` counts the prompt once and the output tokens of **all** branches
    (aborted ones included). ``response_metadata["tts"]`` holds branches launched,
    finished and aborted, the votes, the winning answer, latency and the speculative
    decoding acceptance. Any setting can be overridden per call
    (``llm.invoke(q, branches=16)``) or per chain step (``llm.bind(deadline_s=2)``).

    Ties in the vote go to the answer of the lowest-numbered branch; branch ``i``
    samples with a seed derived from ``(seed, prompt, i)``, so a seeded call is
    deterministic.
    """

    def __init__(self, **kwargs: Any) -> None:
        try:
            super().__init__(**kwargs)
        except ValidationError as e:
            raise as_latts_error(e, kwargs) from None

    @model_validator(mode="after")
    def _latts_add_version(self) -> LatencyOptimalTTSLLM:
        self._add_version("langchain-latts", __version__)
        return self

    # -- LangChain metadata ----------------------------------------------------------
    @property
    def _llm_type(self) -> str:
        return "latts-vllm"

    def _resolve_model_profile(self) -> ModelProfile | None:
        """What this model supports (LangChain's ``.profile``): text in and out, tool calls
        and structured output (both under vLLM's grammars), reasoning output when a
        ``reasoning_parser`` splits it off, and the context when it is known without
        loading the model (``max_model_len``, or a local model folder's config)."""
        profile = ModelProfile(text_inputs=True, text_outputs=True, image_inputs=False, audio_inputs=False,
                               video_inputs=False, pdf_inputs=False, tool_calling=True, tool_choice=True,
                               structured_output=True, reasoning_output=self.reasoning_parser is not None,
                               max_output_tokens=self.max_tokens)
        context = self.max_model_len or local_context_length(self.model_path)
        if context is not None:
            profile["max_input_tokens"] = context
        return profile

    def engine_config(self) -> EngineConfig:
        """The engine this model runs on (equal configs share one engine;
        :func:`~langchain_latts.planner.engine_config.engine_config`)."""
        return engine_config(self)

    @property
    def resolved_speculative_method(self) -> str | None:
        """The speculation method actually used (None: none; ``"auto"`` resolved from the profile)."""
        return speculative_method(self)

    #: Settings that do not change what a call answers, so they stay out of
    #: ``_identifying_params`` (LangChain's cache key): how much memory the engine may use,
    #: eager mode (timing only), and the servers' secret.
    NOT_IDENTIFYING: ClassVar[frozenset[str]] = frozenset(
        {"kv_cache_gib", "gpu_memory_utilization", "enforce_eager", "api_key"})

    @property
    def _identifying_params(self) -> dict[str, Any]:
        """Every setting that changes the output (tracing and the LLM cache key): each field
        but :attr:`NOT_IDENTIFYING`, with callables and paths by name and speculation as resolved."""
        params: dict[str, Any] = {name: getattr(self, name) for name in TTSSettings.model_fields
                                  if name not in self.NOT_IDENTIFYING}
        return params | {
            "model": self.model_name,
            "speculative_method": speculative_method(self),
            "answer_extractor": extractor_name(self.answer_extractor),
            "verifier": verifier_name(self.verifier),
            "strategy": self.selection_strategy,
            "latency_profile": None if self.latency_profile is None else str(self.latency_profile),
        }

    @property
    def lc_secrets(self) -> dict[str, str]:
        """Secrets LangChain's serializer replaces by the environment variable's name."""
        return {"api_key": "VLLM_API_KEY"}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider=PROVIDER,
            ls_model_name=kwargs.get("model") or self.model_name,
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
            ls_max_tokens=kwargs.get("max_tokens", self.max_tokens),
        )
        stops = stop or self.stop
        if isinstance(stops, (list, tuple)) and stops:  # a bad per-call stop is reported by the call itself
            params["ls_stop"] = list(stops)
        budget = active_budget(_current_config().get("configurable"))
        if budget is not None:  # LangChain puts these params in the run's metadata
            cast(dict[str, Any], params)["latts_budget"] = budget.as_metadata()
        return params

    # -- one call ----------------------------------------------------------------------
    def _settings_for_call(self, stop: list[str] | None, kwargs: dict[str, Any]) -> TTSSettings:
        unknown = sorted(k for k in kwargs if k not in CALL_OPTIONS and k not in _LANGCHAIN_KWARGS
                         and k not in _OUTPUT_KWARGS)
        if unknown:
            raise LattsValueError.bad(
                "call option", unknown[0], "is not a setting of LatencyOptimalTTSLLM",
                f"Per-call options are: {', '.join(CALL_OPTIONS)}.",
            )
        overrides = {k: v for k, v in kwargs.items() if k in CALL_OPTIONS}
        if stop is not None:
            overrides["stop"] = list(stop) if isinstance(stop, (list, tuple)) else stop
        if not overrides:
            return self
        values = {name: getattr(self, name) for name in CALL_OPTIONS} | overrides
        try:
            return TTSSettings.model_validate(values)
        except ValidationError as e:
            raise as_latts_error(e, overrides) from None

    def _prepare(self, messages: Sequence[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any],
                 progress: ProgressCallback | None = None) -> Call:
        started = time.monotonic()
        settings = self._settings_for_call(stop, kwargs)
        # Only engine settings choose the engine: the rest (max_tokens too) may vary per call.
        changed = sorted(k for k in ENGINE_OPTIONS if k in kwargs and kwargs[k] != getattr(self, k))
        config = self.engine_config() if not changed else engine_config(
            self._settings_for_call(None, {k: kwargs[k] for k in changed}))
        if changed and config != self.engine_config() and not engine_exists(config):
            logger.warning(
                "per-call setting(s) %s need a separate vLLM engine: starting one, which stays until exit or "
                "llm.engine.shutdown(); set engine options on the model instead of per call.", ", ".join(changed))
        run_config = _current_config()
        budget = active_budget(run_config.get("configurable"))
        step = _step_name(run_config)
        if budget is not None:
            budget.check(step)
        schema = response_schema(kwargs.get("response_format"))
        tools = tuple(tool_specs(kwargs.get("tools") or ()))
        tool_choice = resolve_tool_choice(kwargs.get("tool_choice"), [t["function"]["name"] for t in tools])
        chat = to_chat_messages(messages)
        if schema is not None:
            chat = with_instruction(chat, json_instruction(schema))
        return Call(
            settings=settings,
            engine=get_engine(config),
            messages=chat,
            stop=tuple(settings.stop or ()),
            started=started,
            call_id=f"latts-{uuid.uuid4().hex[:12]}",
            progress=progress,
            budget=budget,
            step=step,
            schema=schema,
            tools=tools,
            tool_choice=tool_choice,
        )

    # -- the BaseChatModel hooks: sync wraps async, one code path ------------------------
    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        call = self._prepare(messages, stop, kwargs, ProgressEmitter.create(run_manager, model_callbacks=self.callbacks))
        return call.engine.run_sync(run_call(call))

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        progress = ProgressEmitter.create(run_manager, asyncio.get_running_loop(), model_callbacks=self.callbacks)
        call = self._prepare(messages, stop, kwargs, progress)
        try:
            return await call.engine.run(run_call(call))
        finally:
            if progress is not None:
                await progress.flush()

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        yield from result_to_chunks(self._generate(messages, stop, run_manager, **kwargs))

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in result_to_chunks(await self._agenerate(messages, stop, run_manager, **kwargs)):
            yield chunk

    # The call's config (its ``configurable`` may carry a budget) is left in _CALL_CONFIG.
    def invoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
               stop: list[str] | None = None, **kwargs: Any) -> AIMessage:
        token = _CALL_CONFIG.set(ensure_config(config))
        try:
            return super().invoke(input, config, stop=stop, **kwargs)
        finally:
            _CALL_CONFIG.reset(token)

    async def ainvoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
                      stop: list[str] | None = None, **kwargs: Any) -> AIMessage:
        token = _CALL_CONFIG.set(ensure_config(config))
        try:
            return await super().ainvoke(input, config, stop=stop, **kwargs)
        finally:
            _CALL_CONFIG.reset(token)

    # LangChain passes no run manager to _stream/_astream: fix the run's id in its config
    # so that progress events reach the same run (see _progress.py).
    def stream(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
               stop: list[str] | None = None, **kwargs: Any) -> Iterator[AIMessageChunk]:
        config = _with_run_id(config)
        token = STREAM_RUN.set(config)
        try:
            yield from super().stream(input, config, stop=stop, **kwargs)
        finally:
            with suppress(ValueError):  # closed from another context: that context's value is gone anyway
                STREAM_RUN.reset(token)

    async def astream(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
                      stop: list[str] | None = None, **kwargs: Any) -> AsyncIterator[AIMessageChunk]:
        config = _with_run_id(config)
        token = STREAM_RUN.set(config)
        try:
            async for chunk in super().astream(input, config, stop=stop, **kwargs):
                yield chunk
        finally:
            with suppress(ValueError):  # closed from another context (aclose): that context's value is gone anyway
                STREAM_RUN.reset(token)

    # -- tools --------------------------------------------------------------------------------
    def bind_tools(self, tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool], *,
                   tool_choice: str | dict[str, Any] | bool | None = None,
                   **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """This model with ``tools`` offered (LangChain tools, pydantic models, functions or
        OpenAI-format dicts). ``tool_choice``: ``"auto"`` (default: call or answer), ``"any"``
        / ``"required"`` (must call), a tool's name (must call that one) or ``"none"``.

        Every branch proposes calls or an answer; the vote is over the calls' names and
        canonical arguments and the answers (:mod:`langchain_latts.tools`); the winner's calls
        are the ``AIMessage.tool_calls``. ``tool_calling`` chooses how text becomes calls.
        """
        specs = tool_specs(tools)
        resolve_tool_choice(tool_choice, [s["function"]["name"] for s in specs])  # fail at bind time
        return self.bind(tools=specs, tool_choice=tool_choice, **kwargs)

    # -- structured output ------------------------------------------------------------------
    def with_structured_output(self, schema: Any, *, include_raw: bool = False,
                               method: StructuredMethod = "json_schema", strict: bool | None = None,
                               **kwargs: Any) -> Runnable[LanguageModelInput, Any]:
        """This model returning objects of ``schema`` (pydantic model, TypedDict or JSON schema).

        ``method="json_schema"``: every branch decodes under vLLM structured outputs --
        free reasoning lines, then one JSON object matching the schema (see
        :mod:`langchain_latts.structured`); ``"json_mode"``: any JSON object (with a
        ``schema``, objects of that schema, since that is what is returned);
        ``"function_calling"``: the schema as a tool the model must call (``bind_tools``). The branches
        vote with their parsed objects (canonical JSON); the winner is returned parsed
        (a pydantic instance for a pydantic schema, else a dict). ``include_raw=True``
        returns ``{"raw": AIMessage, "parsed": ..., "parsing_error": ...}``, the raw message
        carrying the usual ``tts`` metadata. ``strict`` is accepted for compatibility: the
        grammar always enforces the schema.
        """
        if kwargs:
            raise LattsValueError.bad("with_structured_output argument", sorted(kwargs)[0], "is not supported",
                                      "Pass schema, method ('json_schema' or 'json_mode') and include_raw.")
        if method not in ("json_schema", "json_mode", "function_calling"):
            raise LattsValueError.bad("method", method, "must be 'json_schema', 'json_mode' or 'function_calling'",
                                      "Use method='json_schema' (the default).")
        parser: Runnable[Any, Any]
        if method == "function_calling":
            name = convert_to_openai_tool(schema)["function"]["name"]
            llm = self.bind_tools([schema], tool_choice=name,
                                  ls_structured_output_format={"kwargs": {"method": method}, "schema": schema})
            parser = (PydanticToolsParser(tools=[schema], first_tool_only=True)
                      if isinstance(schema, type) and issubclass(schema, (BaseModel, BaseModelV1))
                      else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True))
            return with_raw(llm, parser) if include_raw else llm | parser
        if method == "json_mode" and schema is None:
            json_schema = ANY_OBJECT
        else:
            if schema is None:
                raise LattsValueError.bad("schema", None, "is required with method='json_schema'",
                                          "Pass a pydantic model, a TypedDict or a JSON schema, or use method='json_mode'.")
            json_schema = json_schema_of(schema)
            answer_grammar(json_schema)  # a schema vLLM cannot compile fails here, not in a branch
        llm = self.bind(response_format={"method": method, "schema": json_schema},
                        ls_structured_output_format={"kwargs": {"method": method}, "schema": json_schema})
        parser = RunnableLambda(partial(parse_structured, schema=schema), name="LattsStructuredOutputParser")
        return with_raw(llm, parser) if include_raw else llm | parser

    # -- engine lifecycle ------------------------------------------------------------------
    def warmup(self) -> None:
        """Start the engine now, with its planning profile (it otherwise starts on the
        first call, ~20 s on CPU)."""
        engine = get_engine(self.engine_config())
        engine.run_sync(make_ready(engine, self))

    async def awarmup(self) -> None:
        """Async :meth:`warmup`."""
        engine = get_engine(self.engine_config())
        await engine.run(make_ready(engine, self))

    @property
    def engine(self) -> Engine:
        """The (shared) engine of this model's settings; it starts on first use."""
        return get_engine(self.engine_config())


def _current_config() -> RunnableConfig:
    """The config of the call running in this context (ours, else the enclosing chain's)."""
    return _CALL_CONFIG.get() or STREAM_RUN.get() or ensure_config()


def _step_name(config: RunnableConfig) -> str:
    """A call's name in a budget's ledger: the run name, the LangGraph node, a tag, or "call"."""
    metadata = config.get("metadata") or {}
    tags = [t for t in config.get("tags") or () if not t.startswith(("seq:", "graph:", "langsmith:"))]
    return str(config.get("run_name") or metadata.get("langgraph_node") or (tags[0] if tags else "call"))


def _with_run_id(config: RunnableConfig | None) -> RunnableConfig:
    """``config`` with a ``run_id`` (LangChain uses it as the id of the model's run)."""
    config = ensure_config(config)
    if config.get("run_id") is None:
        config["run_id"] = uuid.uuid4()
    return config
