"""Check a machine end to end, one PASS/FAIL line per step: the engine starts, a call runs
with speculative decoding, a fleet of two ``vllm serve`` replicas answers, and a profile is
measured.

    python examples/gpu_check.py                                   # the built-in pair (CPU or GPU)
    python examples/gpu_check.py --settings '{"model": "Qwen/Qwen3-8B", "draft_model": "Qwen/Qwen3-0.6B",
        "reasoning_parser": "qwen3", "max_tokens": 2048, "max_model_len": 4096}' --question "What is 17 * 23?"

Made for a GPU machine we are lent (``make setup EXTRA=gpu``): on a GPU each replica of the
fleet gets its own GPU (round-robin over ``CUDA_VISIBLE_DEVICES``) or a split share, and
engines take their memory share from NVML. It runs on this CPU too, with the built-in pair.
Exits 1 when a step fails.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from langchain_latts import LatencyOptimalTTSLLM
from langchain_latts.engines.launch import running_fleet, visible_gpus
from langchain_latts.settings import ENGINE_OPTIONS

app = typer.Typer(add_completion=False)


def step(name: str, check: Callable[[], str], failures: list[str]) -> None:
    """Run one check and print its line: PASS with what it measured, or FAIL with why."""
    started = time.monotonic()
    try:
        detail = check()
    except Exception as e:  # noqa: BLE001 - a check script reports every failure and goes on
        failures.append(name)
        print(f"FAIL {name} ({time.monotonic() - started:.1f} s): {type(e).__name__}: {e}")
        if os.environ.get("LATTS_CHECK_TRACEBACK"):
            traceback.print_exc()
        return
    print(f"PASS {name} ({time.monotonic() - started:.1f} s): {detail}")


@app.command()
def main(settings: str = typer.Option("{}", help="Model settings as JSON (default: the built-in pair)."),
         question: str = typer.Option("Compute 48 + 17 - 23.", help="The question every step asks."),
         branches: int = typer.Option(4, help="Branches per call."),
         prompts: Path | None = typer.Option(None, help="Calibration prompts (JSONL) for the profile of a model "
                                                         "other than the built-in one.")) -> None:
    given = json.loads(settings)
    # Speculation on: the built-in draft for the built-in pair, else the draft the settings name.
    drafter = {"speculative_method": "draft_model"} if "model" not in given else {}
    options: dict[str, Any] = {"seed": 0, "num_speculative_tokens": 4} | drafter | given
    gpus = visible_gpus()
    print(f"platform: {'GPU ' + ','.join(gpus) if gpus else 'CPU'}; settings {options}")
    failures: list[str] = []
    llm = LatencyOptimalTTSLLM(**options)

    def start() -> str:
        llm.warmup()
        config = llm.engine_config()
        spec = config.speculative
        return f"engine up, speculation {spec.method + ' k=' + str(spec.num_speculative_tokens) if spec else 'off'}"

    def speculative_call() -> str:
        message = llm.invoke(question, branches=branches)
        tts = message.response_metadata["tts"]
        spec = tts["speculative"]
        if spec is None or spec.get("acceptance_rate") is None:
            raise RuntimeError(f"no speculation reported: {spec}")
        return (f"answer {tts['answer']!r} in {tts['latency_s']:.2f} s, acceptance {spec['acceptance_rate']:.2f}, "
                f"{tts['branches_finished']}/{tts['branches_launched']} branches finished")

    def fleet() -> str:
        llm.engine.shutdown()  # the replicas need the memory
        with running_fleet(2, model=options.get("model"), draft=None) as servers:
            # The servers hold the model's engine settings (speculation, memory): only call settings here.
            calls = {k: v for k, v in options.items() if k not in ENGINE_OPTIONS or k == "model"}
            remote = LatencyOptimalTTSLLM(**calls | {"endpoints": [s.endpoint for s in servers]})
            tts = remote.invoke(question, branches=branches).response_metadata["tts"]
            remote.engine.shutdown()
        if not tts["servers"] or len(tts["servers"]) < 2:
            raise RuntimeError(f"branches did not spread over both replicas: {tts['servers']}")
        return f"answer {tts['answer']!r}, branches per replica {tts['servers']}"

    def profile() -> str:
        from rich.console import Console

        from langchain_latts.planner.report import run_profile

        with tempfile.TemporaryDirectory() as cache:  # never replaces the user's cached profile
            os.environ["LATTS_CACHE_DIR"] = cache
            measured = run_profile(options, prompts=prompts, force=True, console=Console(quiet=True))
        return f"profile {measured.profile_id} in {measured.duration_s:.0f} s, steps {sorted(measured.steps)}"

    for name, check in (("start", start), ("call with speculation", speculative_call), ("fleet of two", fleet),
                        ("profile", profile)):
        step(name, check, failures)
    print("all steps passed" if not failures else f"failed: {', '.join(failures)}")
    raise typer.Exit(1 if failures else 0)


if __name__ == "__main__":  # vLLM starts its engine in a spawned process: keep this guard
    app()
