"""Train the shipped tiny target and draft models on the arithmetic task (CPU, seeded).

    python -m langchain_latts.models.train            # both models, ~50 min on 2 cores
    latts models train --steps-target 200 --out /tmp/m  # a quick smoke run

Both are Hugging Face Llama checkpoints (safetensors) with the character tokenizer of
:mod:`langchain_latts.models.tokenizer`; vLLM and transformers load them. Training data
is generated on the fly from :mod:`langchain_latts.tasks.arithmetic` with a per-step
slip rate (see that module), in the conversation formats of
:mod:`langchain_latts.tasks.formats` (plain, system message, JSON answer, calculator tool
call), and never contains an expression of the held-out split.
Everything is seeded: the same command gives the same weights on the same machine.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from langchain_latts.models.tokenizer import build_tokenizer
from langchain_latts.tasks.arithmetic import (
    HELD_OUT_SEED,
    HELD_OUT_SIZE,
    LEVELS,
    generate_problem,
    generate_problems,
)
from langchain_latts.tasks.formats import Conversation, Format, make_conversation

logger = logging.getLogger(__name__)

#: Share of training steps whose written result carries a slip (see tasks.arithmetic).
SLIP_RATE = 0.15
#: How often each conversation format appears in training (see tasks.formats).
FORMAT_MIX: dict[Format, float] = {"plain": 0.62, "system": 0.08, "json": 0.15, "tool": 0.15}


@dataclass(frozen=True)
class ModelSpec:
    """Architecture and optimisation settings of one shipped model."""

    name: str
    hidden_size: int
    layers: int
    heads: int
    intermediate_size: int
    steps: int
    batch_size: int
    lr: float
    seed: int


TARGET = ModelSpec("target", hidden_size=192, layers=4, heads=6, intermediate_size=576,
                   steps=2600, batch_size=48, lr=2e-3, seed=11)
DRAFT = ModelSpec("draft", hidden_size=96, layers=2, heads=3, intermediate_size=288,
                  steps=2500, batch_size=48, lr=3e-3, seed=12)


def llama_config(spec: ModelSpec, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    """The Llama config of ``spec`` (head_dim 32: vLLM's CPU attention needs >= 32)."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        head_dim=spec.hidden_size // spec.heads,
        max_position_embeddings=1024,
        rope_parameters={"rope_theta": 10000.0, "rope_type": "default"},
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )


def encode_conversation(tokenizer: PreTrainedTokenizerFast, conversation: Conversation) -> tuple[list[int], list[bool]]:
    """Token ids of a whole conversation and, per token, whether it is trained on: the
    content of every assistant turn and the ``<|end|>`` that closes it."""
    text = tokenizer.apply_chat_template(conversation.messages, tools=conversation.tools,  # type: ignore[arg-type]
                                         tokenize=False)
    ids = tokenizer.encode(text, add_special_tokens=False)
    assistant = tokenizer.convert_tokens_to_ids("<|assistant|>")
    trained, inside = [], False
    for token in ids:
        trained.append(inside)
        if token == assistant:
            inside = True
        elif token == tokenizer.eos_token_id:
            inside = False
    return ids, trained


def make_batch(
    tokenizer: PreTrainedTokenizerFast, rng: random.Random, size: int, held_out: set[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A padded batch (input ids, attention mask, labels with -100 outside the answers)."""
    rows: list[tuple[list[int], list[bool]]] = []
    formats, weights = list(FORMAT_MIX), list(FORMAT_MIX.values())
    while len(rows) < size:
        problem = generate_problem(rng, rng.choice(LEVELS))
        if problem.expression in held_out:
            continue
        fmt = rng.choices(formats, weights)[0]
        rows.append(encode_conversation(tokenizer, make_conversation(problem, fmt, rng, slip_rate=SLIP_RATE)))
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((size, width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((size, width), dtype=torch.long)
    labels = torch.full((size, width), -100, dtype=torch.long)
    for i, (row, trained) in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        labels[i, : len(row)] = torch.where(torch.tensor(trained), torch.tensor(row), -100)
    return ids, mask, labels


def lr_at(step: int, spec: ModelSpec, warmup: int = 200) -> float:
    """Linear warm-up, then linear decay to 5% of the peak."""
    if step < warmup:
        return spec.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, spec.steps - warmup)
    return spec.lr * (1 - 0.95 * progress)


def train_model(spec: ModelSpec, out_dir: Path, progress: Progress) -> dict[str, float]:
    """Train one model and save it with the tokenizer to ``out_dir``; returns a summary."""
    torch.manual_seed(spec.seed)
    rng = random.Random(spec.seed)
    tokenizer = build_tokenizer()
    held_out = {p.expression for p in generate_problems(HELD_OUT_SIZE, seed=HELD_OUT_SEED)}
    model = LlamaForCausalLM(llama_config(spec, tokenizer))
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.98), weight_decay=0.01)
    task = progress.add_task(f"train {spec.name}", total=spec.steps, loss=float("nan"))
    started = time.perf_counter()
    smoothed = float("nan")
    model.train()
    for step in range(spec.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, spec)
        ids, mask, labels = make_batch(tokenizer, rng, spec.batch_size, held_out)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        smoothed = loss.item() if math.isnan(smoothed) else 0.98 * smoothed + 0.02 * loss.item()
        progress.update(task, advance=1, loss=smoothed)
        if step % 250 == 0 or step == spec.steps - 1:
            logger.info("%s step %d/%d loss %.4f (%.1f min)", spec.name, step, spec.steps, smoothed,
                        (time.perf_counter() - started) / 60)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ).save_pretrained(str(out_dir))
    summary = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_loss": round(smoothed, 4),
        "minutes": round((time.perf_counter() - started) / 60, 1),
    }
    (out_dir / "training.json").write_text(
        json.dumps({"spec": asdict(spec), "slip_rate": SLIP_RATE, "format_mix": FORMAT_MIX, **summary}, indent=2) + "\n"
    )
    return summary


def train_all(out: Path, *, target_steps: int | None = None, draft_steps: int | None = None) -> None:
    """Train the target and the draft into ``out/target`` and ``out/draft``."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    specs = [
        TARGET if target_steps is None else _with_steps(TARGET, target_steps),
        DRAFT if draft_steps is None else _with_steps(DRAFT, draft_steps),
    ]
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns) as progress:
        for spec in specs:
            summary = train_model(spec, out / spec.name, progress)
            progress.console.print(f"{spec.name}: {summary}")


def _with_steps(spec: ModelSpec, steps: int) -> ModelSpec:
    return ModelSpec(**{**asdict(spec), "steps": steps})


if __name__ == "__main__":
    import sys

    from langchain_latts.models import MODELS_DIR

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train_all(Path(sys.argv[1]) if len(sys.argv) > 1 else MODELS_DIR)
