"""``latts profile``: measure (or show) this machine's profile with a progress bar and a table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from langchain_latts.planner.engine_config import forget_cached_profiles, profile_identity
from langchain_latts.planner.plan import GAIN_Z
from langchain_latts.planner.profile import Profile, load_profile, save_profile
from langchain_latts.planner.profiler import (
    load_calibration,
    measure_profile,
    profile_steps,
)
from langchain_latts.settings import TTSSettings

__all__ = ["plot_steps", "print_profile", "run_profile"]


def run_profile(settings: dict[str, Any], *, prompts: Path | None = None, force: bool = False, calibrate: bool = True,
                plot: Path | None = None, console: Console | None = None) -> Profile:
    """Measure and cache the profile of ``settings`` (or show the cached one unless ``force``);
    ``plot``: also save the step-time curves there."""
    console = console or Console()
    profile = _measured_or_cached(settings, prompts=prompts, force=force, calibrate=calibrate, console=console)
    if plot is not None:
        plot_steps(profile, plot)
        console.print(f"step-time plot saved to {plot}")
    return profile


def _measured_or_cached(settings: dict[str, Any], *, prompts: Path | None, force: bool, calibrate: bool,
                        console: Console) -> Profile:
    tts = TTSSettings.model_validate(settings)
    if not force:
        cached = load_profile(profile_identity(tts))
        if cached is not None:
            console.print(f"cached profile {cached.profile_id} from {cached.created} (--force re-measures)")
            print_profile(cached, console)
            return cached
    calibration = load_calibration(prompts) if prompts is not None else None
    columns = (TextColumn("{task.description:<34}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("profiling", total=profile_steps(tts))

        def report(what: str, n: float) -> None:
            progress.update(task, description=what, advance=n)

        profile = measure_profile(tts, calibration, calibrate=calibrate, progress=report)
    path = save_profile(profile)
    forget_cached_profiles()
    console.print(f"profile {profile.profile_id} measured in {profile.duration_s:.0f} s, saved to {path}")
    print_profile(profile, console)
    return profile


def print_profile(profile: Profile, console: Console) -> None:
    """The profile as tables: step times, prefill, output lengths and accuracy."""
    table = Table(title=f"seconds per engine step ({profile.identity.hardware})")
    table.add_column("sequences", justify="right")
    names = list(profile.steps)
    for name in names:
        curve = profile.steps[name]
        extra = f"\ntau {curve.tokens_per_step:.2f}" if name.startswith("k=") and name != "k=0+draft" else ""
        table.add_column(name + extra, justify="right")
    sizes = sorted({b for c in profile.steps.values() for b in c.batch_sizes})
    for b in sizes:
        table.add_row(str(b), *(f"{profile.steps[n].at(b) * 1000:.2f} ms" for n in names))
    console.print(table)
    pre = profile.prefill
    console.print(f"prefill: {pre.intercept_s * 1000:.1f} ms + {pre.per_token_s * 1e6:.1f} us/token; "
                  f"output tokens p50 {profile.output_length(0.5)}, p90 {profile.output_length(0.9)} "
                  f"({len(profile.output_lengths)} samples, {profile.calibration})")
    acc = profile.accuracy
    console.print(f"vote accuracy model ({acc.source}): single sample {acc.mean_single_accuracy:.1%}, "
                  f"Beta({acc.alpha:.2f}, {acc.beta:.2f}), wrong-answer concentration {acc.concentration:.2f}; "
                  + ", ".join(f"vote of {b}: {acc.vote_accuracy(b):.1%}" for b in (1, 4, 8, 16))
                  + ("" if acc.greedy_accuracy is None else f"; greedy {acc.greedy_accuracy:.1%}")
                  + (f" (a vote is planned over greedy when it gains more than {GAIN_Z * acc.vote_gain_se:.1%}, {GAIN_Z:g} "
                     "standard errors of the vote of 8's measured gain)" if acc.vote_gain_se else "")
                  + ("" if not acc.greedy_member else
                     "; with a greedy member: " + ", ".join(f"vote of {b}: {acc.greedy_member[b - 1]:.1%}"
                                                            for b in sorted({min(b, len(acc.greedy_member)) for b in (2, 4, 8)}))
                     + f" (gain SE {acc.member_gain_se:.1%})"))


def plot_steps(profile: Profile, path: Path) -> None:
    """Seconds per engine step against running sequences, one curve per speculation setting,
    and the same per generated token (the paper's first claim: flat, then bending)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, curve in profile.steps.items():
        sizes = curve.batch_sizes
        left.plot(sizes, [t * 1000 for t in curve.step_s], "o-", label=name)
        right.plot(sizes, [t * 1000 / curve.tokens_per_step for t in curve.step_s], "o-", label=name)
    for ax, what in ((left, "ms per engine step"), (right, "ms per generated token of one sequence")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequences decoding at once")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    left.legend(fontsize=8)
    fig.suptitle(f"latts profile {profile.profile_id}: step time against branches ({profile.identity.hardware})",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
