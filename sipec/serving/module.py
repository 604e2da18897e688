"""What every module service (SegNet, IdNet, PoseNet, BehaveNet, Tracker) shares.

A module service = pre/post-processing in Python + a `ModelBackend` + a `ServiceRuntime`. This module
gives them, once:
- `ModuleService`: holds the backend, builds the `GetModelInfo` answer from the model's metadata, and
  keeps the health status in step with the backend (SERVING only while the model answers);
- `add_backend_arguments` / `backend_from_args`: the `--backend local|tfserving` flags of `sipec serve <module>`.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from typing import Any

from sipec.serving.backends import ModelBackend, ModelMetadata
from sipec.serving.errors import Unavailable, grpc_errors
from sipec.serving.runtime import ServiceRuntime

log = logging.getLogger("sipec.module")


class ModuleService:
    """Base of module servicers. Subclasses set `module` and `service_name` and implement the RPCs."""

    module: str = ""
    service_name: str = ""   # full gRPC service name, e.g. "sipec.v1.SegNet"

    def __init__(self, backend: ModelBackend, runtime: ServiceRuntime | None = None) -> None:
        self.backend = backend
        self.runtime = runtime
        self._stop = threading.Event()

    def metadata(self) -> ModelMetadata:
        """The backend's metadata; UNAVAILABLE while no model is loaded or reachable."""
        try:
            return self.backend.metadata()
        except Unavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - a backend that cannot answer is unavailable to callers
            raise Unavailable(f"{self.module}: model {self.backend.model_name!r} unavailable: {exc}") from exc

    def model_info(self) -> Any:
        from sipec.v1 import common_pb2

        meta = self.metadata()
        info = meta.info
        size = info.get("input", {})
        return common_pb2.ModelInfo(
            module=self.module, model_name=meta.name, version=meta.version,
            input_height=int(size.get("height", 0)), input_width=int(size.get("width", 0)),
            class_names=list(info.get("class_names", [])), keypoint_names=list(info.get("keypoint_names", [])),
            backend=self.backend.kind, architecture=str(info.get("architecture", "")),
            metadata_json=json.dumps(info, sort_keys=True))

    @grpc_errors
    def GetModelInfo(self, request: Any, context: Any) -> Any:
        return self.model_info()

    def observe_batch(self, size: int) -> None:
        if self.runtime is not None:
            self.runtime.metrics.observe_batch(self.backend.model_name, size)

    # health ---------------------------------------------------------------------------------------
    def watch_health(self, poll_s: float = 1.0) -> None:
        """Keep this service's health status equal to the backend's readiness, in a daemon thread."""
        if self.runtime is None:
            return
        self._update_health()
        threading.Thread(target=self._health_loop, args=(poll_s,), name=f"{self.module}-health",
                         daemon=True).start()

    def _update_health(self) -> None:
        try:
            ready = self.backend.ready()
        except Exception:  # noqa: BLE001
            ready = False
        assert self.runtime is not None
        self.runtime.set_serving(ready, self.service_name)

    def _health_loop(self, poll_s: float) -> None:
        while not self._stop.wait(poll_s):
            self._update_health()

    def close(self) -> None:
        self._stop.set()
        self.backend.close()


def add_backend_arguments(p: argparse.ArgumentParser, default_model: str) -> None:
    g = p.add_argument_group("model backend")
    g.add_argument("--backend", choices=("local", "tfserving"), default="local",
                   help="local: load the SavedModel in this process (default); "
                        "tfserving: call TF Serving / `sipec serve model-server` over gRPC")
    g.add_argument("--model-repo", help="model repository (local backend)")
    g.add_argument("--model-name", default=default_model,
                   help=f"model name in the repository (default {default_model})")
    g.add_argument("--tfserving", metavar="HOST:PORT", help="TF Serving address (tfserving backend)")
    g.add_argument("--backend-timeout-s", type=float, default=30.0, help="deadline of each backend call")
    g.add_argument("--poll-s", type=float, default=2.0, help="seconds between checks for a new model version")


def backend_from_args(args: argparse.Namespace) -> ModelBackend:
    from pathlib import Path

    from sipec.cli import CliError
    from sipec.serving.backends import make_backend
    from sipec.serving.repository import check_model_name

    check_model_name(args.model_name)
    if args.backend == "local":
        if not args.model_repo:
            raise CliError("--backend local needs --model-repo")
        if not Path(args.model_repo).is_dir():
            raise CliError(f"--model-repo: directory not found: {args.model_repo}")
    try:
        return make_backend(args.backend, args.model_name, model_repo=args.model_repo, address=args.tfserving,
                            poll_s=args.poll_s, timeout_s=args.backend_timeout_s)
    except ValueError as exc:
        raise CliError(str(exc)) from exc


def run_module_server(args: argparse.Namespace, name: str, service_name: str,
                      make_servicer: Any, add_to_server: Any) -> int:
    """Run a module service in the foreground: backend from the flags, runtime, health, SIGTERM.

    `make_servicer(backend, runtime)` returns the servicer (a ModuleService subclass);
    `add_to_server` is the generated `add_<Service>Servicer_to_server`. Prints one line
    `<name>: serving on port N` once listening (tests and `sipec up` wait for it).
    """
    from sipec.serving.cli import server_config_from_args

    config = server_config_from_args(args)
    backend = backend_from_args(args)
    runtime = ServiceRuntime(name, config)
    servicer = make_servicer(backend, runtime)
    runtime.add_service(add_to_server, servicer, service_name)
    runtime.install_signal_handlers()  # before the ready line: a SIGTERM right after it drains
    port = runtime.start()
    servicer.watch_health()
    print(f"{name}: serving on port {port} (backend {backend.kind}, model {backend.model_name})"
          + (f", metrics on {runtime.metrics_port}" if runtime.metrics_port else ""), flush=True)
    try:
        runtime.serve_forever()
    finally:
        servicer.close()
    return 0
