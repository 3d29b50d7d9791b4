"""The shipped checkpoints: files, tokenizer round-trip and a transformers load (no vLLM)."""

from __future__ import annotations

import json
import string

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from langchain_latts.models import DEFAULT_DRAFT, DEFAULT_TARGET, MODELS_DIR
from langchain_latts.models.tokenizer import build_tokenizer
from langchain_latts.tasks.arithmetic import generate_problems

TASK_TEXT = "Compute 48 + 17 - 23 + 5.\n48 + 17 = 65\n65 - 23 = 42\n42 + 5 = 47\n#### 47"


@pytest.mark.parametrize("path", [DEFAULT_TARGET, DEFAULT_DRAFT], ids=["target", "draft"])
def test_tokenizer_round_trips_every_task_character(path) -> None:  # type: ignore[no-untyped-def]
    tokenizer = AutoTokenizer.from_pretrained(path)
    task_chars = set("".join(p.question + p.solution() for p in generate_problems(200, seed=0)))
    everything = "".join(sorted(task_chars | set(string.printable) - set("\t\r\x0b\x0c")))
    for text in (TASK_TEXT, everything):
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text
        assert tokenizer.unk_token_id not in ids
    # One token per character: digits never merge, so every step is tokenized alike.
    assert len(tokenizer.encode("12345", add_special_tokens=False)) == 5


def test_shipped_tokenizer_is_the_built_one() -> None:
    shipped = AutoTokenizer.from_pretrained(DEFAULT_TARGET)
    assert shipped.get_vocab() == build_tokenizer().get_vocab()
    assert shipped.chat_template == build_tokenizer().chat_template


def test_size_budget_and_files() -> None:
    total = sum(f.stat().st_size for d in (DEFAULT_TARGET, DEFAULT_DRAFT) for f in d.iterdir())
    assert total <= 60 * 2**20  # both models together <= 60 MB
    for d in (DEFAULT_TARGET, DEFAULT_DRAFT):
        assert (d / "model.safetensors").is_file() and (d / "tokenizer.json").is_file()
        config = json.loads((d / "config.json").read_text())
        assert config["architectures"] == ["LlamaForCausalLM"]
        assert config["hidden_size"] // config["num_attention_heads"] >= 32  # vLLM CPU attention
    assert (MODELS_DIR / "MODEL_CARD.md").is_file() and (MODELS_DIR / "eval_results.json").is_file()


def test_target_solves_an_easy_problem_greedily_in_transformers() -> None:
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_TARGET)
    model = AutoModelForCausalLM.from_pretrained(DEFAULT_TARGET)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Compute 3 + 4 - 2."}],
                                           add_generation_prompt=True, tokenize=False)
    ids = torch.tensor([tokenizer.encode(prompt, add_special_tokens=False)])
    out = model.generate(ids, max_new_tokens=40, do_sample=False, eos_token_id=tokenizer.eos_token_id)
    text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert text.strip().endswith("#### 5"), text
