"""Run a server command and take its whole process group down when the parent dies.

``python -m langchain_latts.engines._supervise CMD...`` is how :mod:`.launch` starts a
vLLM server: this process leads the server's process group and asks the kernel for a
SIGTERM when its parent (the test run, the benchmark) dies -- however it dies, SIGKILL
included. On SIGTERM (or SIGINT) it stops the server gracefully, waits a bounded time and
then kills what is left of the group. vLLM's engine-core process outlives a killed API
server, so without this a crashed parent would leave engines running.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from types import FrameType

#: Linux prctl option: the signal this process gets when its parent dies.
PR_SET_PDEATHSIG = 1
#: Seconds the server gets to shut down on SIGTERM before the group is killed.
GRACE_S = 10.0


def main() -> int:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    parent = int(os.environ.get("LATTS_PARENT_PID", os.getppid()))
    server = subprocess.Popen(sys.argv[1:])

    def stop(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            server.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=GRACE_S)
        os.killpg(0, signal.SIGKILL)  # the engine core and workers, and this process

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if os.getppid() != parent:  # the parent died before the death signal was armed
        stop(signal.SIGTERM, None)
    code = server.wait()
    os.killpg(0, signal.SIGKILL)  # the server exited (crashed?): take its engine with it
    return code


if __name__ == "__main__":
    sys.exit(main())
