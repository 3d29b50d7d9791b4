"""The tiny model pair that ships with the package (see ``MODEL_CARD.md``)."""

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
#: The shipped target model: the default ``model`` of ``LatencyOptimalTTSLLM``.
DEFAULT_TARGET = MODELS_DIR / "target"
#: The shipped draft model for speculative decoding of :data:`DEFAULT_TARGET`.
DEFAULT_DRAFT = MODELS_DIR / "draft"
#: Drafts distilled here for real targets, by the target's alias (``latts models train-draft``).
SHIPPED_DRAFTS = {"smollm2-135m": MODELS_DIR / "smollm2-draft"}

__all__ = ["DEFAULT_DRAFT", "DEFAULT_TARGET", "MODELS_DIR", "SHIPPED_DRAFTS"]
