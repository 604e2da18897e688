"""Start a `sipec ...` server as a child process and wait for the port it prints (demo and benchmarks)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def spawn_sipec(args: list[str], ready: str = r"on port (\d+)",
                env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int]:
    """Run `python -m sipec ARGS`; return the process and the port from the first output line matching `ready`
    (its first group). The rest of its output is drained on a thread, so that a chatty server never blocks on a
    full pipe. RuntimeError with the output's tail if it exits first."""
    proc = subprocess.Popen([sys.executable, "-m", "sipec", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})
    assert proc.stdout is not None
    pattern = re.compile(ready)
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line)
        m = pattern.search(line)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True,   # type: ignore[union-attr]
                             name=f"drain-{args[0]}").start()
            return proc, int(m.group(1))
    proc.wait()
    raise RuntimeError(f"`sipec {' '.join(args)}` exited with {proc.returncode} before serving:\n"
                       + "".join(seen[-30:]))
