"""Distil a draft model for a real target, here on the CPU: sequence-level distillation.

``latts models train-draft --target smollm2-135m`` (about 45 minutes on 2 cores):

1. **Prompts** from the tasks the target will be asked (:data:`TASKS`: reasoning-gym
   generators and short arithmetic questions), drawn from a seed no benchmark uses.
2. **The target's own answers**: it answers every prompt :data:`SAMPLES` times on its vLLM
   engine at the temperature it is sampled at, as a user would call it (its chat template).
3. **A small Llama** with the target's tokenizer and vocabulary (vLLM's draft checks compare
   vocabulary sizes) learns those answers: next-token loss on the answer tokens only, AdamW
   with warm-up and linear decay, seeded. Its embeddings start as the target's own projected
   on their top principal directions (an SVD), so it starts out knowing which tokens are alike;
   input and output embeddings are tied, which keeps a 49,152-token vocabulary small.
4. Saved as a model folder (bfloat16 safetensors, the target's tokenizer and chat template,
   ``training.json``). Acceptance and speed are measured by ``latts bench speculation``.

Everything is seeded; the same command on the same machine gives the same weights.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["DistillSpec", "SMOLLM2_DRAFT", "TASKS", "distill_draft", "task_prompts"]

#: reasoning-gym generators (with options) and how many prompts each gives; "arithmetic" is
#: "What is a + b? Answer with the number." with a, b <= 50.
TASKS: dict[str, tuple[dict[str, Any], int]] = {
    "arithmetic": ({}, 400),
    "gcd": ({"min_value": 1, "max_value": 20, "min_numbers": 2, "max_numbers": 2}, 300),
    "basic_arithmetic": ({"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}, 300),
    "chain_sum": ({"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}, 300),
    "count_bits": ({"max_n": 16}, 200),
    "leg_counting": ({"min_animals": 1, "max_animals": 2, "max_instances": 3}, 200),
}
#: Samples of the target per prompt.
SAMPLES = 4
#: The seed of the prompts (the benchmarks use 20261126 and 20261130).
PROMPT_SEED = 20261201


@dataclass(frozen=True)
class DistillSpec:
    """Architecture and optimisation of a distilled draft."""

    hidden_size: int = 192
    layers: int = 2
    heads: int = 3
    intermediate_size: int = 576
    steps: int = 3000
    batch_size: int = 24
    lr: float = 2e-3
    warmup: int = 150
    seed: int = 13
    temperature: float = 0.7
    max_tokens: int = 96


#: The draft of SmolLM2-135M-Instruct (head_dim 64: vLLM's CPU attention needs a supported size).
SMOLLM2_DRAFT = DistillSpec()


def task_prompts(seed: int = PROMPT_SEED, tasks: dict[str, tuple[dict[str, Any], int]] | None = None) -> list[str]:
    """The distillation prompts (module docstring), shuffled, seeded."""
    rng = random.Random(seed)
    prompts = []
    for name, (options, count) in (tasks or TASKS).items():
        if name == "arithmetic":
            prompts += [f"What is {rng.randint(0, 50)} + {rng.randint(0, 50)}? Answer with the number."
                        for _ in range(count)]
            continue
        import reasoning_gym

        prompts += [str(e["question"]) for e in reasoning_gym.create_dataset(name, size=count, seed=seed, **options)]
    rng.shuffle(prompts)
    return prompts


def _sample_answers(target: str, prompts: list[str], spec: DistillSpec, eos: int) -> list[tuple[list[int], list[int]]]:
    """(prompt tokens, answer tokens) of the target's answers, :data:`SAMPLES` per prompt."""
    from langchain_latts.engines.base import BranchRequest, EngineConfig
    from langchain_latts.engines.vllm_local import VLLMEngine
    from langchain_latts.planner.profiler import run_requests

    engine = VLLMEngine(EngineConfig(model=target))
    try:
        engine.run_sync(engine.ensure_started())
        rendered = [engine.render_prompt([{"role": "user", "content": p}]) for p in prompts]
        pairs: list[tuple[list[int], list[int]]] = []
        chunk = 64
        for start in range(0, len(rendered), chunk):
            batch = rendered[start:start + chunk]
            requests = [BranchRequest(prompt_token_ids=tuple(p), max_tokens=spec.max_tokens,
                                      temperature=spec.temperature, seed=spec.seed * 100_000 + start * SAMPLES + i)
                        for p in batch for i in range(SAMPLES)]
            runs = engine.run_sync(run_requests(engine, requests, f"distill-{start}"))
            for request, run in zip(requests, runs):
                answer = engine.tokenize(run["text"])
                if answer:
                    pairs.append((list(request.prompt_token_ids), answer + [eos]))
            logger.info("sampled %d/%d prompts", min(start + chunk, len(rendered)), len(rendered))
        return pairs
    finally:
        engine.shutdown()


def _projected_embeddings(target_dir: Path, hidden: int) -> Any:
    """The target's input embeddings on their top ``hidden`` principal directions, scaled
    to the target's per-entry spread."""
    import torch
    from safetensors import safe_open

    weights = next(target_dir.glob("*.safetensors"))
    with safe_open(str(weights), framework="pt") as f:
        key = next(k for k in f.keys() if k.endswith("embed_tokens.weight"))
        embed = f.get_tensor(key).float()
    centered = embed - embed.mean(dim=0, keepdim=True)
    _, _, v = torch.linalg.svd(centered, full_matrices=False)
    projected = centered @ v[:hidden].T
    return projected * (0.02 / projected.std())


def distill_draft(target: str, out: Path, *, spec: DistillSpec = SMOLLM2_DRAFT, prompts: list[str] | None = None,
                  steps: int | None = None) -> dict[str, Any]:
    """Distil a draft for ``target`` (a model setting: folder, .gguf or alias) into ``out``
    (module docstring); returns the training summary."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    from langchain_latts.engines.gguf import prepare_model

    spec = spec if steps is None else DistillSpec(**{**asdict(spec), "steps": steps})
    started = time.perf_counter()
    target_dir = Path(prepare_model(target, cpu=True).weights)
    tokenizer = AutoTokenizer.from_pretrained(target_dir)
    prompts = prompts if prompts is not None else task_prompts()
    pairs = _sample_answers(target, prompts, spec, tokenizer.eos_token_id)
    sampled_s = time.perf_counter() - started
    torch.manual_seed(spec.seed)
    rng = random.Random(spec.seed)
    target_config = json.loads((target_dir / "config.json").read_text())
    config = LlamaConfig(
        vocab_size=target_config["vocab_size"], hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.heads,
        head_dim=spec.hidden_size // spec.heads, max_position_embeddings=target_config.get("max_position_embeddings", 2048),
        rope_parameters={"rope_theta": float(target_config.get("rope_theta", 10000.0)), "rope_type": "default"},
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        dtype="float32",
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(_projected_embeddings(target_dir, spec.hidden_size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.98), weight_decay=0.01)
    pad = config.pad_token_id
    smoothed = float("nan")
    model.train()
    for step in range(spec.steps):
        lr = spec.lr * (step + 1) / spec.warmup if step < spec.warmup else \
            spec.lr * (1 - 0.95 * (step - spec.warmup) / max(1, spec.steps - spec.warmup))
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = [pairs[rng.randrange(len(pairs))] for _ in range(spec.batch_size)]
        width = max(len(p) + len(a) for p, a in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for i, (prompt, answer) in enumerate(batch):
            row = prompt + answer
            ids[i, :len(row)] = torch.tensor(row)
            mask[i, :len(row)] = 1
            labels[i, len(prompt):len(row)] = torch.tensor(answer)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        smoothed = loss.item() if math.isnan(smoothed) else 0.98 * smoothed + 0.02 * loss.item()
        if step % 100 == 0 or step == spec.steps - 1:
            logger.warning("draft step %d/%d loss %.3f (%.1f min)", step, spec.steps, smoothed,
                           (time.perf_counter() - started) / 60)
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                     pad_token_id=config.pad_token_id).save_pretrained(str(out))
    summary = {"target": target, "spec": asdict(spec), "prompts": len(prompts), "sequences": len(pairs),
               "tasks": {name: count for name, (_, count) in TASKS.items()}, "samples_per_prompt": SAMPLES,
               "parameters": sum(p.numel() for p in model.parameters()), "final_loss": round(smoothed, 4),
               "sampling_minutes": round(sampled_s / 60, 1),
               "minutes": round((time.perf_counter() - started) / 60, 1)}
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
