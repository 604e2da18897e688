"""Shared fixtures: a project-local temp dir for Keras, small exported models, server processes."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
os.environ.setdefault("KERAS_HOME", str(ROOT / ".tmp" / "keras"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class ServerProcess:
    """A `sipec ...` server in its own process; waits for a line matching `ready` and keeps its output."""

    def __init__(self, args: list[str], ready: str, timeout_s: float = 120.0, env: dict | None = None) -> None:
        self.args = args
        self.output: deque[str] = deque(maxlen=400)
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "sipec", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=full_env, cwd=ROOT)
        self._ready = threading.Event()
        self.match: re.Match | None = None
        pattern = re.compile(ready)

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line.rstrip())
                if not self._ready.is_set():
                    m = pattern.search(line)
                    if m:
                        self.match = m
                        self._ready.set()
            self._ready.set()

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        if not self._ready.wait(timeout_s) or self.match is None:
            self.kill()
            raise RuntimeError(f"server {' '.join(args)} did not start:\n" + "\n".join(self.output))

    def text(self) -> str:
        return "\n".join(self.output)

    def terminate(self, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self._pump.join(5)  # the last lines the process wrote
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


MODEL_SERVER_READY = r"model-server: serving .* on port (\d+)"


def start_model_server(repo: Path, port: int | str = 0, poll_s: str = "0.3") -> ServerProcess:
    """`sipec serve model-server` on `repo`, on `port` (0: a free one; `match.group(1)` is the port bound)."""
    return ServerProcess(["serve", "model-server", "--model-repo", str(repo), "--port", str(port),
                          "--poll-s", poll_s], MODEL_SERVER_READY)


@contextlib.contextmanager
def behind_model_server(module: str, repo: Path, ready: str, *module_args: str,
                        poll_s: str = "0.3") -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """`sipec serve model-server` on `repo` and `sipec serve MODULE --backend tfserving` in front of it:
    yields (model server, module server); both are stopped on exit (a test may stop the model server first,
    and start another on the same port with `start_model_server(repo, port)`)."""
    ms = start_model_server(repo, 0, poll_s)
    module_server = None
    try:
        module_server = ServerProcess(["serve", module, "--backend", "tfserving", "--tfserving",
                                       f"localhost:{ms.match.group(1)}", "--port", "0", *module_args], ready)
        yield ms, module_server
    finally:
        if module_server is not None:
            module_server.terminate()
        ms.terminate()


def wait_until(predicate, timeout_s: float = 30.0, poll_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return False


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


# --stress: the suite beside CPU-burning neighbours (a loaded CI machine), `make test-stress` ----------------------
_BURNER = """
import os, sys, time
end, parent = time.monotonic() + float(sys.argv[1]), os.getppid()
while time.monotonic() < end and os.getppid() == parent:   # stops by itself: time limit, or the test run gone
    for _ in range(100000):
        pass
"""


def pytest_addoption(parser):
    parser.addoption("--stress", type=int, nargs="?", const=-1, default=0, metavar="N",
                     help="run the tests beside N CPU-burning processes (without N: one per core), as on a "
                          "loaded machine; results must not change (make test-stress)")
    parser.addoption("--stress-max-s", type=float, default=3600.0,
                     help="the burners stop by themselves after this many seconds (default 3600)")


@pytest.fixture(scope="session", autouse=True)
def cpu_burners(request) -> Iterator[int]:
    n = request.config.getoption("--stress")
    if n == -1:
        n = os.cpu_count() or 2
    procs = [subprocess.Popen([sys.executable, "-c", _BURNER, str(request.config.getoption("--stress-max-s"))])
             for _ in range(max(0, n))]
    try:
        yield len(procs)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def pytest_collection_modifyitems(config, items):
    """Every end-to-end test is slow (real processes, trained models, whole pipelines): `make test-fast` skips them."""
    for item in items:
        if "/tests/e2e/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.slow)


def pytest_report_header(config):
    n = config.getoption("--stress")
    if n:
        return f"stress: {'one per core' if n == -1 else n} CPU-burning neighbour process(es) for the whole run"
    return None
