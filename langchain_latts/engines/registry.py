"""The process-wide engines, one per :class:`~langchain_latts.engines.base.EngineConfig`.

Chat models with equal engine configs share one engine; :func:`get_engine` creates it
(not started: it starts on first use) and :func:`shutdown_all` stops every one, at
interpreter exit too. A config with ``endpoints`` gets a fleet of ``vllm serve`` replicas
(:class:`~langchain_latts.engines.vllm_server.VLLMServerEngine`), any other an in-process
:class:`~langchain_latts.engines.vllm_local.VLLMEngine`.
"""

from __future__ import annotations

import atexit
import logging
import threading

from langchain_latts.engines.base import Engine, EngineConfig

__all__ = ["Registry", "engine_exists", "get_engine", "registered", "shutdown_all"]

logger = logging.getLogger(__name__)


class Registry:
    """Engines by config, under a lock (calls on many threads ask for the same engine)."""

    def __init__(self) -> None:
        self._engines: dict[EngineConfig, Engine] = {}
        self._lock = threading.Lock()
        self._at_exit = False

    def get(self, config: EngineConfig) -> Engine:
        """The engine for ``config``, created on first request."""
        from langchain_latts.engines.vllm_local import VLLMEngine

        with self._lock:
            engine = self._engines.get(config)
            if engine is None:
                if config.endpoints:
                    from langchain_latts.engines.vllm_server import VLLMServerEngine

                    engine = VLLMServerEngine(config)
                    self._shut_down_at_exit_locked()
                else:
                    engine = VLLMEngine(config, registry=self)
                self._engines[config] = engine
            return engine

    def __contains__(self, config: object) -> bool:
        with self._lock:
            return config in self._engines

    def engines(self) -> list[Engine]:
        """The registered engines (a snapshot)."""
        with self._lock:
            return list(self._engines.values())

    def forget(self, config: EngineConfig) -> None:
        """Drop ``config``'s engine without stopping it (tests that build engines by hand)."""
        with self._lock:
            self._engines.pop(config, None)

    def shut_down_at_exit(self) -> None:
        """Stop every engine at interpreter exit. atexit runs handlers last-in first-out:
        an engine calls this after importing vLLM (and with it multiprocessing, which
        terminates child processes at exit), so our orderly shutdown runs first."""
        with self._lock:
            self._shut_down_at_exit_locked()

    def _shut_down_at_exit_locked(self) -> None:
        if not self._at_exit:
            atexit.register(self.shutdown_all)
            self._at_exit = True

    def shutdown_all(self) -> None:
        """Shut down and forget every engine."""
        with self._lock:
            engines = list(self._engines.values())
            self._engines.clear()
        for engine in engines:
            try:
                engine.shutdown()
            except Exception:  # noqa: BLE001 - never fail interpreter exit
                logger.debug("error while shutting down an engine", exc_info=True)


#: This process's engines.
registered = Registry()


def get_engine(config: EngineConfig) -> Engine:
    """The process-wide engine for ``config`` (created, not started: it starts on first use)."""
    return registered.get(config)


def engine_exists(config: EngineConfig) -> bool:
    """Whether this process already has an engine for ``config`` (started or not)."""
    return config in registered


def shutdown_all() -> None:
    """Shut down every engine of this process (also registered to run at interpreter exit)."""
    registered.shutdown_all()
