"""Engine lifecycle in a fresh process: lazy start, one engine per config, clean exit."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil

SCRIPT = textwrap.dedent(
    """
    import psutil
    from langchain_latts import LatencyOptimalTTSLLM
    from langchain_latts.engines.registry import registered

    if __name__ == "__main__":
        a = LatencyOptimalTTSLLM(branches=2, seed=0, kv_cache_gib=0.25)
        b = LatencyOptimalTTSLLM(branches=4, seed=1, kv_cache_gib=0.25)
        assert not registered.engines(), "the constructor must not start an engine"
        assert not psutil.Process().children(), "no engine process before the first call"
        print("answer", a.invoke("Compute 3 + 4 - 2.").response_metadata["tts"]["answer"])
        b.invoke("Compute 1 + 1.")
        assert a.engine is b.engine and len(registered.engines()) == 1, "one engine per config"
        print("children", " ".join(str(p.pid) for p in psutil.Process().children(recursive=True)))
    """
)


def test_lazy_shared_engine_and_clean_exit(tmp_path: Path) -> None:
    script = tmp_path / "use_llm.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^answer \d+$", done.stdout, re.M)
    children = [int(pid) for pid in re.search(r"^children ([\d ]+)$", done.stdout, re.M).group(1).split()]
    assert len(children) >= 1  # the engine process(es) were running (engine core; workers on CPU) ...
    # ... and the exit shut them down, without tracebacks or leaked shared memory.
    # (multiprocessing's resource tracker may take a moment to notice its parent is gone)
    _, alive = psutil.wait_procs([p for p in map(_process, children) if p is not None], timeout=10)
    assert not alive, [p.cmdline() for p in alive]
    for bad in ("Traceback", "Exception ignored", "leaked shared_memory"):
        assert bad not in done.stderr, done.stderr[-3000:]
    assert "force killing" not in done.stdout and "WARNING" not in done.stdout, done.stdout[-3000:]  # quiet exit


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None
