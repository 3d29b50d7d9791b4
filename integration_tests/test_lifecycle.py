"""Engine lifecycle in a fresh process: lazy start, one engine per config, clean exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import psutil
    from langchain_latts import LatencyOptimalTTSLLM
    from langchain_latts.engines import vllm_local

    if __name__ == "__main__":
        a = LatencyOptimalTTSLLM(branches=2, seed=0, kv_cache_gib=0.25)
        b = LatencyOptimalTTSLLM(branches=4, seed=1, kv_cache_gib=0.25)
        assert not vllm_local._ENGINES, "the constructor must not start an engine"
        assert not psutil.Process().children(), "no engine process before the first call"
        print("answer", a.invoke("Compute 3 + 4 - 2.").response_metadata["tts"]["answer"])
        b.invoke("Compute 1 + 1.")
        assert a.engine is b.engine and len(vllm_local._ENGINES) == 1, "one engine per config"
        print("children", len(psutil.Process().children(recursive=True)))
    """
)


def test_lazy_shared_engine_and_clean_exit(tmp_path: Path) -> None:
    script = tmp_path / "use_llm.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "answer 5" in done.stdout
    assert "children 0" not in done.stdout  # the engine processes were running ...
    # ... and the exit shut them down without tracebacks or leaked shared memory.
    for bad in ("Traceback", "Exception ignored", "leaked shared_memory"):
        assert bad not in done.stderr, done.stderr[-3000:]
