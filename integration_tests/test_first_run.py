"""What a newcomer meets: README examples run as written, quiet output, clean exit.

Each test runs a script in a fresh Python process, as a user would, and checks
everything it printed: stdout holds only what the script printed itself and stderr is
empty (vLLM logs to stdout; torch, Triton and Python warnings to stderr).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
#: vLLM's log line prefix, e.g. "(EngineCore pid=12) WARNING 11-26 17:08:09 [cpu.py:224] ...".
VLLM_LOG = re.compile(r"^(\(\w+ pid=\d+\) )?(DEBUG|INFO|WARNING|ERROR) \d\d-\d\d ", re.M)


def run_script(code: str, tmp_path: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "user_script.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=timeout,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def readme_examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_examples_are_whole_scripts_with_the_spawn_guard() -> None:
    """Each example compiles as it stands, imports what it uses from the package, and builds
    the model only under ``if __name__ == "__main__":`` or in a function (vLLM's engine
    process imports the script again: a model built at import time would start another)."""
    examples = readme_examples()
    assert len(examples) >= 2
    for code in examples:
        tree = ast.parse(code)
        assert any(isinstance(node, ast.ImportFrom) and node.module == "langchain_latts" for node in tree.body), code
        top_level = [node for node in tree.body if not isinstance(node, (ast.If, ast.FunctionDef,
                                                                         ast.AsyncFunctionDef))]
        built_at_import = [node for stmt in top_level for node in ast.walk(stmt)
                           if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "LatencyOptimalTTSLLM"]
        assert not built_at_import, f"an example builds the model at import time:\n{code}"
        guards = [node for node in tree.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)]
        assert len(guards) == 1, f"an example has no `if __name__ == \"__main__\":` guard:\n{code}"


@pytest.mark.parametrize("index", range(len(readme_examples())))
def test_readme_example_runs_as_written_and_prints_only_its_own_output(index: int, tmp_path: Path) -> None:
    done = run_script(readme_examples()[index], tmp_path)
    assert done.stderr == "", done.stderr[-3000:]
    assert done.stdout.strip() and not VLLM_LOG.search(done.stdout), done.stdout[-3000:]


def test_engine_death_gives_one_clear_error_and_nothing_else(tmp_path: Path) -> None:
    done = run_script(textwrap.dedent("""
        import os, signal, threading
        from langchain_latts import EngineDeadError, LatencyOptimalTTSLLM

        if __name__ == "__main__":
            llm = LatencyOptimalTTSLLM(seed=0)
            llm.warmup()
            threading.Timer(0.2, os.kill, args=(llm.engine.engine_core_pids()[0], signal.SIGKILL)).start()
            try:  # 64 branches of a long problem: well over 0.2 s of work
                llm.invoke("Compute 591 + 78 - 364 + 85 - 233 + 557.", branches=64, early_stop=False)
            except EngineDeadError as e:
                print("caught:", e)
    """), tmp_path)
    assert done.stdout.startswith("caught: the vLLM engine process") and done.stdout.count("\n") == 1, done.stdout
    # No "Task exception was never retrieved", no traceback. Known and reported: the killed engine
    # process cannot unlink its shared memory, so Python's resource tracker warns about it at exit.
    stray = [line for line in done.stderr.splitlines() if "resource_tracker" not in line]
    assert stray == [], done.stderr


def test_logging_configuration_brings_vllms_log_back(tmp_path: Path) -> None:
    done = run_script(textwrap.dedent("""
        import logging
        from langchain_latts import LatencyOptimalTTSLLM

        if __name__ == "__main__":
            logging.basicConfig(level=logging.INFO)
            print(LatencyOptimalTTSLLM(branches=2, seed=0).invoke("Compute 3 + 4.").response_metadata["tts"]["answer"])
    """), tmp_path)
    assert VLLM_LOG.search(done.stdout), done.stdout[-2000:]  # vLLM's INFO log is back


def test_the_demo_prints_only_its_own_output(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "langchain_latts.cli", "demo", "--questions", "3"],
                          capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stderr == "", done.stderr[-3000:]
    assert not VLLM_LOG.search(done.stdout), done.stdout[-3000:]
    assert "one sample" in done.stdout and "Over 3 questions" in done.stdout


def test_python_c_prints_only_the_answer(tmp_path: Path) -> None:
    # No main file: the spawned engine process has nothing of the user's to re-import first, and
    # vLLM's import-time Triton warning reached stderr until the package named a quiet main module.
    code = ("from langchain_latts import LatencyOptimalTTSLLM; "
            "print(LatencyOptimalTTSLLM(seed=0).invoke('Compute 3 + 4 - 2.').response_metadata['tts']['answer'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == "" and done.stdout == "5\n", (done.stdout[-2000:], done.stderr[-2000:])
