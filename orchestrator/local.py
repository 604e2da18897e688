"""`sipec up` / `sipec down`: every service on this machine as its own process.

`up` starts one `sipec serve <module>` process per module (and, with `--model-server`, one
`sipec serve model-server` that the modules reach through the tfserving backend, as in a cluster), each
in its own session with its log in `<state>/logs/`, waits until each answers its health check with
SERVING, and writes `<state>/services.json` (pids, ports) and `<state>/endpoints.yaml`, which
`sipec analyze --services` reads. `down` stops them (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

DEFAULT_PORTS = {"orchestrator": 50050, "segnet": 50051, "idnet": 50052, "posenet": 50053, "behavenet": 50054,
                 "tracker": 50055, "model-server": 8500}
STATE_FILE = "services.json"
ENDPOINTS_FILE = "endpoints.yaml"


class LocalServicesError(Exception):
    pass


@dataclass
class Started:
    name: str
    pid: int
    port: int
    metrics_port: int | None
    log: str
    command: list[str]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_in_use(port: int) -> bool:
    """Whether a process listens on ``port`` (any address), as a service started there would fail to bind while
    health checks reached the other process."""
    import errno
    import socket

    for family, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # TIME_WAIT leftovers do not count
                s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
    return False


def _spawn(name: str, args: list[str], log_path: Path) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child process, which outlives this one
    return subprocess.Popen([sys.executable, "-m", "sipec", *args], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_serving(name: str, proc: subprocess.Popen, port: int, log_path: Path, timeout_s: float) -> None:
    from sipec.serving.client import health_status, make_channel

    channel = make_channel(f"127.0.0.1:{port}")
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace").splitlines()[-15:]
                raise LocalServicesError(f"{name} exited with status {proc.returncode}; last lines of {log_path}:\n"
                                         + "\n".join(tail))
            if health_status(channel, "", timeout_s=1.0) == "SERVING":
                return
            time.sleep(0.2)
    finally:
        channel.close()
    raise LocalServicesError(f"{name} on port {port} not SERVING after {timeout_s:.0f} s; see {log_path}")


def up(model_repo: Path, modules: list[str], state_dir: Path, model_server: bool = False,
       ports: dict[str, int] | None = None, timeout_s: float = 180.0, extra_args: dict[str, list[str]] | None = None
       ) -> list[Started]:
    """Start the services; on any failure stop those already started and raise LocalServicesError."""
    state_dir.mkdir(parents=True, exist_ok=True)
    if (state_dir / STATE_FILE).exists():
        running = [s for s in read_state(state_dir) if _alive(s["pid"])]
        if running:
            raise LocalServicesError(f"services already running from {state_dir} "
                                     f"({', '.join(s['name'] for s in running)}); run `sipec down` first")
    ports = {**DEFAULT_PORTS, **(ports or {})}
    started: list[Started] = []
    procs: list[tuple[Started, subprocess.Popen]] = []
    try:
        plan: list[tuple[str, list[str]]] = []
        if model_server:
            plan.append(("model-server", ["serve", "model-server", "--model-repo", str(model_repo)]))
        for m in modules:
            backend = (["--backend", "tfserving", "--tfserving", f"127.0.0.1:{ports['model-server']}"] if model_server
                       else ["--backend", "local", "--model-repo", str(model_repo)])
            plan.append((m, ["serve", m, *backend, *(extra_args or {}).get(m, [])]))
        busy = [f"{name} {ports[name]}" for name, _ in plan if ports.get(name) and _port_in_use(ports[name])]
        if busy:
            raise LocalServicesError(f"port(s) in use: {', '.join(busy)} (services of another `sipec up`, or of an "
                                     "earlier run: `sipec down --state-dir` that run's folder, or free the ports)")
        for name, args in plan:
            port = ports.get(name) or _free_port()
            metrics = _free_port()
            log_path = state_dir / "logs" / f"{name}.log"
            cmd = [*args, "--port", str(port), "--metrics-port", str(metrics)]
            proc = _spawn(name, cmd, log_path)
            s = Started(name, proc.pid, port, metrics, str(log_path), ["sipec", *cmd])
            procs.append((s, proc))
            _wait_serving(name, proc, port, log_path, timeout_s)
            started.append(s)
        write_state(state_dir, started)
        return started
    except BaseException:
        for s, proc in procs:
            _terminate(s.pid)
            proc.wait(10)
        raise


def write_state(state_dir: Path, started: list[Started]) -> None:
    (state_dir / STATE_FILE).write_text(json.dumps([asdict(s) for s in started], indent=2))
    endpoints = {s.name: f"localhost:{s.port}" for s in started if s.name != "model-server"}
    (state_dir / ENDPOINTS_FILE).write_text(yaml.safe_dump(endpoints, sort_keys=False))


def read_state(state_dir: Path) -> list[dict]:
    path = state_dir / STATE_FILE
    if not path.is_file():
        return []
    return json.loads(path.read_text())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _terminate(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)


def down(state_dir: Path, grace_s: float = 15.0) -> list[str]:
    """Stop every service recorded in the state folder; returns their names."""
    entries = read_state(state_dir)
    for e in reversed(entries):  # modules first, the model server last
        _terminate(e["pid"])
    deadline = time.monotonic() + grace_s
    for e in entries:
        while _alive(e["pid"]) and time.monotonic() < deadline:
            time.sleep(0.1)
            with contextlib.suppress(ChildProcessError):  # reap our own children (no zombies)
                os.waitpid(e["pid"], os.WNOHANG)
        if _alive(e["pid"]):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(e["pid"], signal.SIGKILL)
    for name in (STATE_FILE, ENDPOINTS_FILE):
        (state_dir / name).unlink(missing_ok=True)
    return [e["name"] for e in entries]
