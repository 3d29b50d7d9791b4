"""Unit tests never read or write the user's profile cache."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_profile_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LATTS_CACHE_DIR", str(tmp_path_factory.mktemp("latts-cache")))
