"""The engine arguments, built by one pure function, checked against vLLM's own
dataclasses for CPU and GPU (no engine starts; no GPU is needed to check the GPU path)."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest

from langchain_latts import LatencyOptimalTTSLLM, LattsValueError
from langchain_latts.engines.base import SpecDecodeStats
from langchain_latts.engines.vllm_local import (
    CPU_DEFAULT_KV_CACHE_GIB,
    GPU_DEFAULT_SHARE,
    _spec_stats,
    check_model_dir,
    engine_args,
    gpu_share,
    is_retryable_start_error,
)
from langchain_latts.models import DEFAULT_DRAFT, DEFAULT_TARGET

vllm_config = pytest.importorskip("vllm.config", reason="needs vLLM's config classes (installed by the cpu extra)")
from vllm.engine.arg_utils import AsyncEngineArgs  # noqa: E402

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
EAGLE3 = "yuhuili/EAGLE3-LLaMA3.1-Instruct-8B"


def _args(cpu: bool, **settings: object) -> dict:
    return engine_args(LatencyOptimalTTSLLM(**settings).engine_config(), cpu=cpu)


def test_every_argument_is_an_async_engine_args_field() -> None:
    fields = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    for cpu in (True, False):
        args = _args(cpu, speculative_method="draft_model", engine_kwargs={"tensor_parallel_size": 2})
        assert set(args) <= fields, set(args) - fields


def test_cpu_defaults_eager_and_a_bounded_kv_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    args = _args(True)
    assert args["model"] == str(DEFAULT_TARGET) and args["enforce_eager"] is True
    assert args["kv_cache_memory_bytes"] == int(CPU_DEFAULT_KV_CACHE_GIB * 2**30)
    assert "gpu_memory_utilization" not in args  # vLLM's share means a share of RAM on CPU
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")  # the user's own setting is left to vLLM
    assert "kv_cache_memory_bytes" not in _args(True)


def test_gpu_defaults_cuda_graphs_and_a_memory_share() -> None:
    args = _args(False, model=LLAMA)
    assert args["enforce_eager"] is False and args["gpu_memory_utilization"] == GPU_DEFAULT_SHARE
    assert "kv_cache_memory_bytes" not in args  # vLLM sizes the cache from the share
    assert engine_args(LatencyOptimalTTSLLM(model=LLAMA).engine_config(), cpu=False,
                       gpu_memory_utilization=0.45)["gpu_memory_utilization"] == 0.45
    explicit = _args(False, model=LLAMA, gpu_memory_utilization=0.3, enforce_eager=True, kv_cache_gib=4)
    assert explicit["gpu_memory_utilization"] == 0.3 and explicit["enforce_eager"] is True
    assert explicit["kv_cache_memory_bytes"] == 4 * 2**30  # per GPU under tensor parallelism


def test_tensor_parallelism_through_engine_kwargs() -> None:
    args = _args(False, model=LLAMA, engine_kwargs={"tensor_parallel_size": 2, "enforce_eager": True})
    assert args["tensor_parallel_size"] == 2
    assert args["enforce_eager"] is True  # engine_kwargs are applied last and win


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"speculative_method": "draft_model"},
         {"method": "draft_model", "num_speculative_tokens": 4, "model": str(DEFAULT_DRAFT)}),
        ({"speculative_method": "ngram", "num_speculative_tokens": 3},
         {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 2, "prompt_lookup_max": 5}),
        ({"model": LLAMA, "draft_model": EAGLE3, "speculative_method": "eagle3", "num_speculative_tokens": 3},
         {"method": "eagle3", "num_speculative_tokens": 3, "model": EAGLE3}),
        ({"model": LLAMA, "draft_model": "yuhuili/EAGLE-LLaMA3.1-Instruct-8B", "speculative_method": "eagle"},
         {"method": "eagle", "num_speculative_tokens": 4, "model": "yuhuili/EAGLE-LLaMA3.1-Instruct-8B"}),
    ],
    ids=["draft_model", "ngram", "eagle3", "eagle"],
)
def test_speculative_config_matches_vllms_speculative_config(settings: dict, expected: dict) -> None:
    for cpu in (True, False):
        args = _args(cpu, **settings)
        assert args["speculative_config"] == expected
        assert args["per_request_spec_decode_metrics"] == "summary"
    # Field by field: every key is a field of vLLM's SpeculativeConfig and the method is
    # one vLLM knows (constructing it would need the model's config from the hub).
    spec_fields = {f.name for f in dataclasses.fields(vllm_config.SpeculativeConfig)}
    assert set(expected) <= spec_fields
    methods = _literal_values(vllm_config.speculative.SpeculativeMethod)
    assert expected["method"] in methods


def _literal_values(alias: object) -> set[str]:
    values: set[str] = set()
    for arg in typing.get_args(alias):
        values |= _literal_values(arg) if typing.get_args(arg) else {arg}  # type: ignore[arg-type]
    return values


def test_no_speculation_no_spec_arguments() -> None:
    args = _args(True)
    assert "speculative_config" not in args and "per_request_spec_decode_metrics" not in args


@pytest.mark.parametrize(
    ("requested", "claimed", "expected"),
    [
        (None, [], 0.9),  # alone: vLLM's default
        (None, [0.5], 0.5),  # beside a 0.5 engine: what is left
        (0.45, [0.45], 0.45),  # explicit shares that fit
        (0.3, [], 0.3),
    ],
)
def test_gpu_share(requested: float | None, claimed: list[float], expected: float) -> None:
    assert gpu_share(requested, claimed) == pytest.approx(expected)


@pytest.mark.parametrize(("requested", "claimed"), [(None, [0.9, 0.08]), (0.5, [0.9]), (0.6, [0.3, 0.3])])
def test_gpu_share_that_cannot_fit_names_the_setting(requested: float | None, claimed: list[float]) -> None:
    with pytest.raises(LattsValueError, match=r"gpu_memory_utilization must fit in the GPU memory this process's "
                                              r"\d other engine\(s\) left .* Give every model an explicit share"):
        gpu_share(requested, claimed)


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        # the engine core raised while loading (on a GPU: memory): the same again on a retry
        (RuntimeError("Engine core initialization failed. See root cause above. "
                      "Failed core proc(s): {'EngineCore_DP0': 1}"), False),
        # killed by a signal (e.g. the OOM killer on a busy machine): worth one more try
        (RuntimeError("Engine core initialization failed. See root cause above. "
                      "Failed core proc(s): {'EngineCore_DP0': -9}"), True),
        (ConnectionError("broken pipe"), True),
        (ValueError("max_model_len 200000 is greater than the model's 131072"), False),  # configuration
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), False),  # capacity
        (RuntimeError("Free memory on device is less than desired GPU memory utilization"), False),
        (TypeError("unexpected keyword argument"), False),
        (NotImplementedError("Unsupported CPU attention configuration"), False),
        (KeyError("speculative_config"), False),
    ],
)
def test_only_crashes_are_retried_at_start(error: BaseException, retry: bool) -> None:
    assert is_retryable_start_error(error) is retry


def test_check_model_dir(tmp_path: Path) -> None:
    assert check_model_dir("Qwen/Qwen3-8B", parameter="model", cpu=True) is None  # a hub id: vLLM resolves it
    assert check_model_dir(str(DEFAULT_TARGET), parameter="model", cpu=True)["head_dim"] == 32
    with pytest.raises(LattsValueError, match=r"model must be a model directory holding config.json"):
        check_model_dir(str(tmp_path), parameter="model", cpu=True)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 64, "num_attention_heads": 4}))
    with pytest.raises(LattsValueError, match=r"draft_model needs an attention head size in .* This model's head_dim is 16"):
        check_model_dir(str(tmp_path), parameter="draft_model", cpu=True)
    assert check_model_dir(str(tmp_path), parameter="draft_model", cpu=False) is not None  # GPUs take head_dim 16


def test_spec_stats_from_vllm_metrics() -> None:
    class Metrics:  # vLLM's per-request summary: histogram[j] = drafts with j tokens accepted
        histogram = [1, 0, 2, 3]
        num_draft_tokens = 18

    # 6 drafts; accepted 0*1 + 1*0 + 2*2 + 3*3 = 13 of 18 proposed.
    assert _spec_stats(Metrics()) == SpecDecodeStats(num_drafts=6, num_draft_tokens=18, num_accepted_tokens=13)
    assert _spec_stats(None) is None


def test_a_script_without_the_main_guard_is_named(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import sys
    import types

    from langchain_latts.engines.vllm_local import unguarded_main_script

    bare, guarded = tmp_path / "bare.py", tmp_path / "guarded.py"
    bare.write_text("from langchain_latts import LatencyOptimalTTSLLM\nLatencyOptimalTTSLLM().invoke('q')\n")
    guarded.write_text("import x\n\nif __name__ == '__main__':\n    x.run()\n")
    for path, expected in ((bare, str(bare)), (guarded, None)):
        main = types.ModuleType("__main__")
        main.__file__ = str(path)
        monkeypatch.setitem(sys.modules, "__main__", main)
        assert unguarded_main_script() == expected
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))  # a REPL or notebook
    assert unguarded_main_script() is None


def test_a_failed_engine_core_names_the_memory_settings_to_change() -> None:
    from langchain_latts.engines.vllm_local import start_failure_hint

    core = RuntimeError("Engine core initialization failed. See root cause above.")
    assert "gpu_memory_utilization" in start_failure_hint(core, cpu=False)
    assert "max_model_len" in start_failure_hint(core, cpu=False)
    assert "kv_cache_gib" in start_failure_hint(core, cpu=True) and "gpu" not in start_failure_hint(core, cpu=True)
    assert "vocab sizes" in start_failure_hint(ValueError("bad draft"), cpu=True)


def test_the_tokenizer_is_loaded_with_the_engine_s_own_options() -> None:
    from langchain_latts.engines.vllm_local import tokenizer_options

    assert tokenizer_options({"model": "org/m"}) == ("org/m", {})
    assert tokenizer_options({"model": "org/m", "tokenizer": "org/tok", "tokenizer_revision": "abc",
                              "revision": "def", "trust_remote_code": True, "download_dir": "/d"}) == (
        "org/tok", {"revision": "abc", "trust_remote_code": True, "cache_dir": "/d"})
    assert tokenizer_options({"model": "org/m", "revision": "def"}) == ("org/m", {"revision": "def"})


def test_a_tokenizer_that_cannot_load_is_refused_before_any_engine_starts(tmp_path: Path) -> None:
    from langchain_latts.engines.vllm_local import load_tokenizer

    with pytest.raises(LattsValueError, match=r"(?s)model must have a tokenizer transformers can load .* "
                                              r"engine_kwargs=\{'tokenizer'"):
        load_tokenizer({"model": str(tmp_path)})  # an empty folder: no tokenizer files


GIB = 1 << 30


def test_a_share_from_nvml_takes_what_the_gpu_has_free_less_headroom() -> None:
    from langchain_latts.engines.vllm_local import GPU_HEADROOM_BYTES, GpuMemory

    idle = GpuMemory(free=79 * GIB, total=80 * GIB)
    assert gpu_share(None, [], idle) == GPU_DEFAULT_SHARE  # alone on an idle GPU: vLLM's default
    # A second engine (this process or another) after the first took 72 GiB: 8 free, 1 kept free.
    busy = GpuMemory(free=8 * GIB, total=80 * GIB)
    assert gpu_share(None, [0.9], busy) == pytest.approx((8 * GIB - GPU_HEADROOM_BYTES) / (80 * GIB))
    with pytest.raises(LattsValueError, match=r"gpu_memory_utilization must fit in the GPU's free memory "
                                              r"\(8\.0 of 80\.0 GiB free, less 1 GiB headroom: 0\.09 of it\)"):
        gpu_share(0.5, [], busy)


def test_engine_and_server_arguments_on_a_faked_one_and_four_gpu_machine() -> None:
    from langchain_latts.engines.launch import replica_placement, server_command
    from langchain_latts.engines.vllm_local import GpuMemory

    # One GPU, two in-process engines, no settings: the first takes vLLM's default share, the
    # second what NVML then reports free (less headroom); both keep CUDA graphs.
    config = LatencyOptimalTTSLLM(model=LLAMA, num_speculative_tokens=0).engine_config()
    first = engine_args(config, cpu=False, gpu_memory_utilization=gpu_share(None, [], GpuMemory(79 * GIB, 80 * GIB)))
    second = engine_args(config, cpu=False, gpu_memory_utilization=gpu_share(
        None, [first["gpu_memory_utilization"]], GpuMemory(7 * GIB, 80 * GIB)))
    assert first["gpu_memory_utilization"] == 0.9 and second["gpu_memory_utilization"] == pytest.approx(0.075)
    assert first["enforce_eager"] is False and "kv_cache_memory_bytes" not in first
    # Four GPUs, four replicas: one GPU each, vLLM's default share, no --enforce-eager.
    places = replica_placement(4, ["0", "1", "2", "3"])
    assert [p.devices for p in places] == ["0", "1", "2", "3"]
    for port, place in zip(range(8001, 8005), places):
        command = server_command(port=port, model=LLAMA, draft=None, cpu=False,
                                 gpu_memory_utilization=place.gpu_memory_utilization)
        assert "--enforce-eager" not in command and "--gpu-memory-utilization" not in command
    # Four replicas on one GPU split it.
    shared = replica_placement(4, ["0"])
    assert {p.devices for p in shared} == {"0"} and sum(p.gpu_memory_utilization or 0 for p in shared) <= 0.9 + 1e-9


def test_profiling_waits_until_the_previous_engines_gpu_memory_is_back() -> None:
    """`latts profile` starts one engine per setting on the same GPU: each waits until NVML
    shows the memory the previous one held free again (vLLM frees it after shutdown returns)."""
    from langchain_latts.engines.vllm_local import GpuMemory, wait_for_memory_back

    before = GpuMemory(free=70 * GIB, total=80 * GIB)
    readings = iter([GpuMemory(10 * GIB, 80 * GIB), GpuMemory(40 * GIB, 80 * GIB), GpuMemory(int(69.9 * GIB), 80 * GIB)])
    slept: list[float] = []
    assert wait_for_memory_back(before, lambda: next(readings), sleep=slept.append, clock=lambda: 0.0)
    assert slept == [0.5, 0.5]  # back on the third reading (within the slack)
    clock = iter([0.0, 30.0, 61.0])
    stuck = wait_for_memory_back(before, lambda: GpuMemory(10 * GIB, 80 * GIB), sleep=lambda _: None,
                                 clock=lambda: next(clock))
    assert stuck is False  # gives up after the timeout; the next start's own check names the setting
    assert wait_for_memory_back(None, lambda: None)  # CPU: no NVML, nothing to wait for
