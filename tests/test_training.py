"""The training script is seeded: the same spec gives bit-identical weights."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from rich.progress import Progress
from safetensors.torch import load_file

from langchain_latts.models.train import DRAFT, train_model


def test_training_is_reproducible(tmp_path: Path) -> None:
    spec = replace(DRAFT, steps=4, batch_size=4)
    with Progress(disable=True) as progress:
        first = train_model(spec, tmp_path / "a", progress)
        second = train_model(spec, tmp_path / "b", progress)
    a = load_file(tmp_path / "a" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert first["final_loss"] == second["final_loss"]
    # The saved directory is a complete checkpoint: weights, tokenizer, generation config.
    for name in ("config.json", "tokenizer.json", "generation_config.json", "training.json"):
        assert (tmp_path / "a" / name).is_file()
