"""Quiet by default, loud on request: what vLLM, torch and Triton may print.

A library user's script should print what the user asked for and nothing else. vLLM
logs start-up warnings (eager mode, Triton, model runner, weight dtypes) from every
process it starts, torch's C++ layer prints NUMA-binding notices, and vLLM's imports
warn through Python's last-resort handler before vLLM has configured its logging.

The policy, in one place:

- vLLM logs at ``ERROR`` unless the user asked otherwise: ``VLLM_LOGGING_LEVEL`` in the
  environment wins; so does logging configured for ``langchain_latts`` at ``INFO`` or
  below (``logging.basicConfig(level=logging.INFO)``, or ``latts -v``), which brings
  vLLM's ``INFO`` log back.
- torch's C++ warnings (``TORCH_CPP_LOG_LEVEL``) follow the same rule.
- Both are environment variables, so the engine processes vLLM spawns inherit them.
- When the engine process dies, vLLM's output handler logs the death with a traceback;
  the caller gets a clear :class:`~langchain_latts.EngineDeadError` for it, so in quiet
  mode that one record is dropped (:class:`EngineDeathFilter`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

__all__ = ["EngineDeathFilter", "dependency_log_level", "quiet_dependencies", "quiet_spawned_children"]


class EngineDeathFilter(logging.Filter):
    """Drops vLLM's "output_handler failed" record of a dead engine while vLLM is quiet
    (the call raises EngineDeadError instead); with vLLM's log on, it passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if os.environ.get("VLLM_LOGGING_LEVEL", "ERROR") in ("DEBUG", "INFO", "WARNING"):
            return True
        dead = record.exc_info is not None and type(record.exc_info[1]).__name__ == "EngineDeadError"
        return not (dead and str(record.msg).startswith("AsyncLLM output_handler failed"))


def dependency_log_level() -> str:
    """``"INFO"`` when the user configured this package's logging at INFO or below, else ``"ERROR"``."""
    return "INFO" if logging.getLogger("langchain_latts").isEnabledFor(logging.INFO) else "ERROR"


def quiet_dependencies() -> None:
    """Apply the policy before vLLM is imported or an engine process is started.

    Called at package import (so the engine processes vLLM spawns from a user's script,
    which re-import that script, are quiet from their first import) and again before an
    engine starts (when the user's logging configuration is known).
    """
    level = os.environ.get("VLLM_LOGGING_LEVEL")
    if level is None or os.environ.get("_LATTS_SET_VLLM_LOGGING_LEVEL") == level:
        level = dependency_log_level()
        os.environ["VLLM_LOGGING_LEVEL"] = level
        os.environ["_LATTS_SET_VLLM_LOGGING_LEVEL"] = level
    if "TORCH_CPP_LOG_LEVEL" not in os.environ or os.environ.get("_LATTS_SET_TORCH_CPP_LOG_LEVEL"):
        cpp = "WARNING" if level in ("DEBUG", "INFO", "WARNING") else "ERROR"
        os.environ["TORCH_CPP_LOG_LEVEL"] = cpp
        os.environ["_LATTS_SET_TORCH_CPP_LOG_LEVEL"] = cpp
    handler_logger = logging.getLogger("vllm.v1.engine.async_llm")
    if not any(isinstance(f, EngineDeathFilter) for f in handler_logger.filters):
        handler_logger.addFilter(EngineDeathFilter())
    vllm_logger = logging.getLogger("vllm")
    if vllm_logger.level == logging.NOTSET or getattr(vllm_logger, "_latts_level", None) == vllm_logger.level:
        # Before vLLM configures its own logging, its import-time warnings would reach
        # Python's last-resort handler; vLLM's dictConfig later sets the same level.
        vllm_logger.setLevel(level)
        vllm_logger._latts_level = vllm_logger.level  # type: ignore[attr-defined]


def quiet_spawned_children() -> None:
    """Make processes spawned from a main module without a file (``python -c``, a REPL)
    apply the policy before they import vLLM: their main module becomes
    :mod:`langchain_latts._spawn_main`, which multiprocessing's spawn re-imports in the
    child first. A main module with a file or a module spec is left alone (the child
    re-imports it, and it imports this package)."""
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__file__", None) is not None or getattr(main, "__spec__", None) is not None:
        return
    main.__spec__ = importlib.util.find_spec("langchain_latts._spawn_main")
