"""What every module service (SegNet, IdNet, PoseNet, BehaveNet, Tracker) shares.

A module service = pre/post-processing in Python + a `ModelBackend` + a `ServiceRuntime`. This module
gives them, once:
- `ModuleService`: holds the backend, builds the `GetModelInfo` answer from the model's metadata, and
  keeps the health status in step with the backend (SERVING only while the model answers): a watcher
  thread asks the backend `ready()` every `--backend-poll-s` seconds (local: the model is loaded;
  tfserving: GetModelStatus says AVAILABLE), and a call that finds the backend unreachable (UNAVAILABLE)
  turns the health NOT_SERVING at once. The overall status ("") follows. Transitions are logged with the
  backend's address;
- `ModuleService.predict`: every call to the model with exactly `batch_size` items (`sipec.serving.batching`), so
  that an item's result does not depend on which other items arrived with it;
- `add_backend_arguments` / `backend_from_args`: the `--backend local|tfserving` and `--batch-size` flags of
  `sipec serve <module>`.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from typing import Any

import numpy as np

from sipec.serving.backends import ModelBackend, ModelMetadata, Prediction
from sipec.serving.batching import DEFAULT_BATCH_SIZE, check_batch_size, predict_fixed
from sipec.serving.errors import ServingError, Unavailable, grpc_errors
from sipec.serving.runtime import ServiceRuntime

log = logging.getLogger("sipec.module")


class ModuleService:
    """Base of module servicers. Subclasses set `module` and `service_name` and implement the RPCs."""

    module: str = ""
    service_name: str = ""   # full gRPC service name, e.g. "sipec.v1.SegNet"
    health_follows_backend = True   # False: SERVING while the server runs (the tracker needs no model to track)

    def __init__(self, backend: ModelBackend, runtime: ServiceRuntime | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.backend = backend
        self.runtime = runtime
        self.batch_size = batch_size
        self._stop = threading.Event()
        self._health_lock = threading.Lock()
        self._backend_ready: bool | None = None   # last health set from the backend; None: not yet

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
            metadata_json=json.dumps(info, sort_keys=True), batch_size=self.batch_size)

    @grpc_errors
    def GetModelInfo(self, request: Any, context: Any) -> Any:
        return self.model_info()

    def observe_batch(self, size: int, model_name: str | None = None, seconds: float = 0.0) -> None:
        if self.runtime is not None:
            self.runtime.metrics.observe_batch(model_name or self.backend.model_name, size, seconds)

    def predict(self, inputs: dict[str, np.ndarray], output_filter: list[str] | None = None,
                backend: ModelBackend | None = None) -> Prediction:
        """The model (`backend`, default the service's) on `inputs`, in calls of exactly `batch_size` items, the
        last one padded: an item's result depends on the item and the model alone, never on what arrived with it.
        A backend failure that is not a ServingError is UNAVAILABLE."""
        backend = backend or self.backend
        try:
            return predict_fixed(backend, inputs, self.batch_size, output_filter,
                                 on_call=lambda k, sec: self.observe_batch(k, backend.model_name, sec))
        except ServingError:
            raise
        except Exception as exc:  # noqa: BLE001 - a backend that fails is unavailable to callers
            raise Unavailable(f"{self.module}: model backend failed: {exc}") from exc

    # health ---------------------------------------------------------------------------------------
    def watch_health(self, poll_s: float = 1.0) -> None:
        """Keep this service's health status equal to the backend's readiness, in a daemon thread.

        Every `poll_s` seconds the backend's `ready()` decides SERVING / NOT_SERVING; a backend call that
        fails with UNAVAILABLE in between turns it NOT_SERVING at once (`backend_unavailable`).
        """
        if self.runtime is None:
            return
        if poll_s <= 0:
            raise ValueError(f"health poll interval must be > 0 seconds, got {poll_s}")
        self.backend.add_unavailable_listener(self.backend_unavailable)
        self._update_health()
        threading.Thread(target=self._health_loop, args=(poll_s,), name=f"{self.module}-health",
                         daemon=True).start()

    def backend_ready(self) -> bool:
        """Whether the backend can answer now (never raises)."""
        if not self.health_follows_backend:
            return True
        try:
            return bool(self.backend.ready())
        except Exception:  # noqa: BLE001 - a backend that cannot say is not ready
            return False

    def backend_unavailable(self, message: str) -> None:
        """A backend call found the model unreachable: NOT_SERVING now, until a poll finds it ready again."""
        if self.health_follows_backend and not self._stop.is_set():
            self._set_backend_health(False, message)

    def _update_health(self) -> None:
        if not self._stop.is_set():
            self._set_backend_health(self.backend_ready())

    def _set_backend_health(self, ready: bool, reason: str = "") -> None:
        if self.runtime is None:
            return
        with self._health_lock:
            before, self._backend_ready = self._backend_ready, ready
            self.runtime.set_serving(ready, self.service_name)
        if before == ready:
            return
        where = self.backend.describe()
        if ready:
            log.info("%s: model backend %s ready: health SERVING", self.module, where)
        elif before is None:
            log.info("%s: model backend %s not ready yet: health NOT_SERVING", self.module, where)
        else:
            log.warning("%s: model backend %s not ready: health NOT_SERVING%s", self.module, where,
                        f" ({reason})" if reason else "")

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
    g.add_argument("--model-version", type=int, default=0,
                   help="serve exactly this version of the model (as TF Serving's `specific` version policy; with "
                        "--backend tfserving every Predict names it). Default 0: the newest, followed as new "
                        "versions appear")
    g.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help="items in every call to the model; shorter calls are padded, so that an item's result never "
                        "depends on what it was batched with (results are reproducible for one batch size; 0: no "
                        f"padding, results may vary in the last bits with batching; default {DEFAULT_BATCH_SIZE})")
    g.add_argument("--backend-poll-s", type=float, default=1.0,
                   help="seconds between checks that the model backend answers; the health status "
                        "(grpc.health.v1) is NOT_SERVING while it does not (default 1)")


def backend_from_args(args: argparse.Namespace) -> ModelBackend:
    from pathlib import Path

    from sipec.cli import CliError
    from sipec.serving.backends import make_backend
    from sipec.serving.repository import check_model_name

    check_model_name(args.model_name)
    try:
        check_batch_size(args.batch_size)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if args.backend == "local":
        if not args.model_repo:
            raise CliError("--backend local needs --model-repo")
        if not Path(args.model_repo).is_dir():
            raise CliError(f"--model-repo: directory not found: {args.model_repo}")
    try:
        return make_backend(args.backend, args.model_name, model_repo=args.model_repo, address=args.tfserving,
                            poll_s=args.poll_s, timeout_s=args.backend_timeout_s, version=args.model_version)
    except ValueError as exc:
        raise CliError(str(exc)) from exc


def run_module_server(args: argparse.Namespace, name: str, service_name: str,
                      make_servicer: Any, add_to_server: Any) -> int:
    """Run a module service in the foreground: backend from the flags, runtime, health, SIGTERM.

    `make_servicer(backend, runtime)` returns the servicer (a ModuleService subclass);
    `add_to_server` is the generated `add_<Service>Servicer_to_server`. Prints one line
    `<name>: serving on port N` once listening (tests and `sipec up` wait for it).
    """
    from sipec.cli import CliError
    from sipec.serving.cli import server_config_from_args

    poll_s = getattr(args, "backend_poll_s", 1.0)
    if not poll_s > 0:
        raise CliError(f"--backend-poll-s: must be > 0 seconds, not {poll_s}")
    config = server_config_from_args(args)
    backend = backend_from_args(args)
    runtime = ServiceRuntime(name, config)
    servicer = make_servicer(backend, runtime)
    runtime.add_service(add_to_server, servicer, service_name)
    runtime.install_signal_handlers()  # before the ready line: a SIGTERM right after it drains
    port = runtime.start()
    servicer.watch_health(poll_s)
    print(f"{name}: serving on port {port} (backend {backend.kind}, model {backend.model_name})"
          + (f", metrics on {runtime.metrics_port}" if runtime.metrics_port else ""), flush=True)
    try:
        runtime.serve_forever()
    finally:
        servicer.close()
    return 0
