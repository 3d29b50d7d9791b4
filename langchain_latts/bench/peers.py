"""``latts bench peers``: the package beside its-hub and plain ``n=N`` sampling, in one run.

One ``vllm serve`` of the model (started here, no speculation) serves every method that talks
HTTP; the in-process engine runs after the server is stopped (the two would share the same
two cores). On the same questions (a reasoning-gym task or the built-in one), for N = 4, 8, 16:

* **its-hub** (PyPI ``its-hub``): ``SelfConsistency`` with the answers projected by the same
  extractor the package votes with, over the server's OpenAI API (``OpenAICompatibleLanguageModel``);
* **plain n=N**: one ``/v1/chat/completions`` request with ``n=N``, majority vote of the
  extracted answers (what a ``ChatOpenAI(n=N)`` user would write);
* **latts over the server**: ``LatencyOptimalTTSLLM(endpoints=[server], branches=N)``;
* **latts in-process**: the same on the in-process engine;

and at deadlines of 1, 1.5 and 2 x one sample's p90 latency (measured in-process), ``latts
auto`` on both engines beside its-hub and plain ``n=8`` cut at the deadline (the peers have
no deadline: a call still running then has no answer). Reported: accuracy, median and p90
latency, output tokens per question.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from langchain_latts.bench.stats import summarize
from langchain_latts.bench.tts import Item, bench_items
from langchain_latts.chat_models import LatencyOptimalTTSLLM
from langchain_latts.tts.answers import AnswerExtractor
from langchain_latts.tts.voting import majority_vote

__all__ = ["run_peers_bench"]

SIZES = (4, 8, 16)
MULTIPLES = (1.0, 1.5, 2.0)


def _row(correct: bool, elapsed: float, tokens: int) -> dict[str, Any]:
    return {"correct": correct, "elapsed_s": elapsed, "tokens": tokens}


async def _its_hub(endpoint: str, model: str, item: Item, n: int, extract: AnswerExtractor, settings: dict[str, Any],
                   deadline: float | None) -> dict[str, Any]:
    from its_hub.core.algorithms.self_consistency import SelfConsistency
    from its_hub.core.lms.openai_lm import OpenAICompatibleLanguageModel

    lm = OpenAICompatibleLanguageModel(endpoint=endpoint, api_key="none", model_name=model,
                                       max_tokens=settings["max_tokens"], temperature=settings["temperature"])
    algorithm = SelfConsistency(consistency_space_projection_func=lambda text: extract(text) or "")
    started = time.monotonic()
    try:
        result = await asyncio.wait_for(algorithm.ainfer(lm, item.question, n, return_response_only=False), deadline)
    except TimeoutError:
        return _row(False, time.monotonic() - started, 0)
    finally:
        await lm.close()
    elapsed = time.monotonic() - started
    answer = extract(str(result.the_one.get("content") or ""))
    usage = getattr(result, "usage", None)
    return _row(item.grade(answer), elapsed, int(getattr(usage, "completion_tokens", 0) or 0))


async def _plain_n(client: httpx.AsyncClient, endpoint: str, model: str, item: Item, n: int, extract: AnswerExtractor,
                   settings: dict[str, Any], seed: int, deadline: float | None) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": item.question}], "n": n,
            "temperature": settings["temperature"], "max_tokens": settings["max_tokens"], "seed": seed}
    started = time.monotonic()
    try:
        response = await asyncio.wait_for(client.post(f"{endpoint}/chat/completions", json=body), deadline)
    except TimeoutError:
        return _row(False, time.monotonic() - started, 0)
    elapsed = time.monotonic() - started
    data = response.json()
    answers = [extract(str(c["message"]["content"] or "")) for c in data["choices"]]
    return _row(item.grade(majority_vote(answers).answer), elapsed, int(data["usage"]["completion_tokens"]))


def _latts(llm: LatencyOptimalTTSLLM, item: Item, options: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    message = llm.invoke(item.question, **options)
    elapsed = time.monotonic() - started
    return _row(item.grade(message.response_metadata["tts"]["answer"]), elapsed,
                message.usage_metadata["output_tokens"] if message.usage_metadata else 0)


def run_peers_bench(*, settings: dict[str, Any], dataset: str = "rg:gcd", dataset_options: dict[str, Any] | None = None,
                    problems: int = 40, out: Path | None = None, console: Console | None = None) -> dict[str, Any]:
    """Run the benchmark (module docstring), print the tables, save JSON."""
    from langchain_latts.engines.launch import running_fleet

    console = console or Console(width=140)
    items = bench_items(dataset, problems, options=dataset_options)
    settings = {"seed": 0, "temperature": 0.7, "max_tokens": 64} | settings
    model = settings["model"]
    results: dict[str, dict[str, Any]] = {}
    started = time.monotonic()

    def measure(name: str, call: Callable[[Item, int], dict[str, Any]]) -> None:
        with console.status(f"{name}..."):
            results[name] = summarize([call(item, i) for i, item in enumerate(items)])

    inproc = LatencyOptimalTTSLLM(**settings)
    inproc.warmup()
    extract = inproc.extractor(None)
    measure("1 sample (in-process)", lambda item, i: _latts(inproc, item, {"branches": 1}))
    p90 = results["1 sample (in-process)"]["p90_s"]
    deadlines = [round(p90 * m, 3) for m in MULTIPLES]
    for n in SIZES:
        measure(f"latts in-process, N={n}", lambda item, i, n=n: _latts(inproc, item, {"branches": n}))
    for d in deadlines:
        measure(f"latts auto in-process @ {d * 1000:.0f} ms", lambda item, i, d=d: _latts(inproc, item, {"deadline_s": d}))
    inproc.engine.shutdown()
    with running_fleet(1, model=model, draft=None) as servers:
        endpoint = servers[0].endpoint
        server = LatencyOptimalTTSLLM(**{k: v for k, v in settings.items() if k != "max_num_seqs"}, endpoints=[endpoint])
        server.warmup()

        async def http_methods() -> None:
            async with httpx.AsyncClient(timeout=120) as client:
                for n in SIZES:
                    rows = [await _its_hub(endpoint, model, item, n, extract, settings, None) for item in items]
                    results[f"its-hub SelfConsistency, N={n}"] = summarize(rows)
                    rows = [await _plain_n(client, endpoint, model, item, n, extract, settings, i, None)
                            for i, item in enumerate(items)]
                    results[f"plain n={n} (one request)"] = summarize(rows)
                for d in deadlines:
                    rows = [await _its_hub(endpoint, model, item, 8, extract, settings, d) for item in items]
                    results[f"its-hub N=8 cut @ {d * 1000:.0f} ms"] = summarize(rows)
                    rows = [await _plain_n(client, endpoint, model, item, 8, extract, settings, i, d)
                            for i, item in enumerate(items)]
                    results[f"plain n=8 cut @ {d * 1000:.0f} ms"] = summarize(rows)

        with console.status("its-hub and plain n=N over the server..."):
            asyncio.run(http_methods())
        for n in SIZES:
            measure(f"latts over the server, N={n}", lambda item, i, n=n: _latts(server, item, {"branches": n}))
        for d in deadlines:
            measure(f"latts auto over the server @ {d * 1000:.0f} ms",
                    lambda item, i, d=d: _latts(server, item, {"deadline_s": d}))
        server.engine.shutdown()
    report = {"model": model, "dataset": dataset, "dataset_options": dataset_options or {}, "problems": len(items),
              "settings": settings, "one_sample_p90_s": p90, "deadlines": deadlines, "results": results,
              "minutes": round((time.monotonic() - started) / 60, 1)}
    _print(report, console)
    if out is not None:
        out.write_text(json.dumps(report, indent=1))
    return report


def _print(report: dict[str, Any], console: Console) -> None:
    table = Table(title=f"latts bench peers: {report['model']} on {report['dataset']} ({report['problems']} problems)")
    for column in ("method", "accuracy", "median ms", "p90 ms", "tokens"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for name, r in report["results"].items():
        table.add_row(name, f"{r['accuracy']:.1%}", f"{r['median_s'] * 1000:.0f}", f"{r['p90_s'] * 1000:.0f}",
                      f"{r['tokens']:.0f}")
    console.print(table)
