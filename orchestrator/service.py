"""The orchestrator as a service: `Pipeline.AnalyzeStream`, frames in, results out (live cameras).

Each stream runs its own `VideoPipeline` over the module stubs the server was started with (in-process
servicers or gRPC endpoints). Results come back in frame order, delayed by the non-causal windows of
IdNet and BehaveNet; everything pending is flushed when the client closes its side. A frame that cannot
be decoded gets a FrameResult with `error` set, and the stream goes on.

Over gRPC modules (`--services`), the server starts at once and reports NOT_SERVING until every module answers
GetModelInfo (`ModuleConnector` retries in the background, backing off to 30 s); meanwhile calls get UNAVAILABLE
naming what it waits for. So a cluster can start the orchestrator before its modules without a crash loop.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc

from orchestrator.config import PipelineConfig
from orchestrator.pipeline import FrameState, ModuleSet, VideoPipeline
from sipec.api.convert import ConversionError, image_from_proto, item_error
from sipec.serving.errors import Unavailable, grpc_errors
from sipec.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc, tracker_pb2
from sipec.video import Frame

_END = object()
RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0)   # waits between attempts to reach the modules (then 30 s each)

log = logging.getLogger("sipec.orchestrator")


def frame_result(state: FrameState) -> Any:
    out = orchestrator_pb2.FrameResult(frame=common_pb2.FrameRef(index=state.frame.index, time_s=state.frame.time_s),
                                       interactions=state.interactions)
    for a in state.animals:
        r = out.animals.add(track_id=a.track_id, identity=a.identity,
                            identity_confidence=a.identity_confidence if a.identity else 0.0)
        r.instance.CopyFrom(a.proto)
        r.instance.track_id = a.track_id
        if a.keypoints:
            r.keypoints.extend(a.keypoints)
        if a.behaviours is not None:
            r.behaviours.CopyFrom(a.behaviours)
        if a.position is not None:
            r.position.CopyFrom(tracker_pb2.Position3D(index=a.index, x=a.position[0], y=a.position[1],
                                                       z=a.position[2]))
    for subject, probs in state.pair_behaviours.items():
        out.pair_behaviours[subject].CopyFrom(probs)
    if state.error:
        out.error.CopyFrom(item_error(grpc.StatusCode.INVALID_ARGUMENT, state.error))
    return out


class ModuleConnector:
    """Builds the ModuleSet in a background thread, retrying until the modules answer; `on_ready` is called once
    with it. `build` raises (any Exception) while a module does not answer; the last reason is kept for callers."""

    def __init__(self, build: Callable[[], ModuleSet], on_ready: Callable[[ModuleSet], None],
                 retry_s: tuple[float, ...] = RETRY_S) -> None:
        self._build, self._on_ready, self._retry_s = build, on_ready, retry_s
        self._stop = threading.Event()
        self.error = "not tried yet"
        self._thread = threading.Thread(target=self._run, name="connect-modules", daemon=True)

    def start(self) -> ModuleConnector:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                modules = self._build()
            except Exception as exc:  # noqa: BLE001 - a module not answering yet: retried
                self.error = str(exc)
                wait = self._retry_s[min(attempt, len(self._retry_s) - 1)]
                log.warning("waiting for the modules", extra={"reason": self.error, "retry_in_s": wait})
                attempt += 1
                self._stop.wait(wait)
                continue
            self.error = ""
            self._on_ready(modules)
            return


class PipelineService(orchestrator_pb2_grpc.PipelineServicer):
    """`modules` None: not connected yet (`waiting()` says why); calls get UNAVAILABLE until `connected`."""

    def __init__(self, modules: ModuleSet | None, config: PipelineConfig, max_pixels: int = 4096 * 4096,
                 waiting: Callable[[], str] = lambda: "the modules are not connected yet") -> None:
        self.modules = modules
        self.config = config
        self.max_pixels = max_pixels
        self.waiting = waiting

    def connected(self, modules: ModuleSet) -> None:
        self.modules = modules

    def _modules(self) -> ModuleSet:
        if self.modules is None:
            raise Unavailable(f"the orchestrator is waiting for its modules: {self.waiting()}")
        return self.modules

    def AnalyzeStream(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        out: queue.Queue = queue.Queue(maxsize=256)
        failure: list[BaseException] = []
        if self.modules is None:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"the orchestrator is waiting for its modules: {self.waiting()}")
        first = next(request_iterator, None)
        if first is None:
            return
        try:   # the models served now (a rollout may have changed a version since the last stream)
            current = ModuleSet(self.modules.stubs)
        except ValueError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"a module does not answer GetModelInfo: {exc}")
        modules = current
        if first.modules:
            try:
                modules = current.subset(list(first.modules))
            except ValueError as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"modules: {exc}")

        def requests() -> Iterator[Any]:
            yield first
            yield from request_iterator

        def frames() -> Iterator[Frame]:
            for req in requests():
                try:
                    image = image_from_proto(req.image, max_pixels=self.max_pixels)
                except ConversionError as exc:
                    out.put(orchestrator_pb2.FrameResult(frame=req.frame, error=item_error(exc.code, str(exc))))
                    continue
                yield Frame(int(req.frame.index), float(req.frame.time_s), image)

        def run() -> None:
            try:
                VideoPipeline(modules, self.config.pipeline_options()).run(
                    frames(), lambda state: out.put(frame_result(state)))
            except BaseException as exc:  # noqa: BLE001 - reported to the client below
                failure.append(exc)
            finally:
                out.put(_END)

        threading.Thread(target=run, name="analyze-stream", daemon=True).start()
        while True:
            item = out.get()
            if item is _END:
                break
            yield item
        if failure:
            exc = failure[0]
            detail = exc.details() if hasattr(exc, "details") and callable(exc.details) else str(exc)
            context.abort(grpc.StatusCode.UNAVAILABLE, f"pipeline failed: {detail}")

    @grpc_errors
    def GetModelInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            modules = ModuleSet(self._modules().stubs)   # the versions served now
        except ValueError as exc:
            raise Unavailable(f"a module does not answer GetModelInfo: {exc}") from exc
        versions = {m: int(i.version) for m, i in modules.info.items()}
        return common_pb2.ModelInfo(module="orchestrator", model_name="pipeline",
                                    architecture="+".join(modules.stubs),
                                    metadata_json=json.dumps({"modules": list(modules.stubs),
                                                              "model_versions": versions}))


def register_serve(serve_sub: argparse._SubParsersAction) -> None:
    from sipec.serving.cli import add_server_arguments

    p = serve_sub.add_parser("orchestrator", help="the Pipeline service (AnalyzeStream: frames in, results out)",
                             description="Serve Pipeline.AnalyzeStream over the modules, in-process (--models) or "
                                         "over gRPC (--services endpoints.yaml).")
    p.add_argument("--models", type=Path, help="model repository (modules in this process)")
    p.add_argument("--services", type=Path, help="endpoints.yaml (modules as gRPC services)")
    p.add_argument("--config", type=Path, help="pipeline.yaml")
    add_server_arguments(p, default_port=50050)
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from orchestrator.config import ConfigError, load_config
    from orchestrator.modules import Connector, EndpointsError, ModuleSetupError, build_modules, read_endpoints
    from sipec.cli import CliError
    from sipec.serving.cli import server_config_from_args
    from sipec.serving.runtime import ServiceRuntime

    servicers: list[Any] = []
    try:
        config = load_config(args.config)
        endpoints = read_endpoints(args.services) if args.services else None
        if endpoints is None and args.models is None:
            raise CliError("give --models REPO or --services endpoints.yaml")
        if endpoints is None:   # in-process: a model that does not load is an error of this command
            modules, servicers = build_modules(config.modules, args.models, None)
        else:                   # over gRPC: bad files fail now; modules not answering yet are waited for
            for site in endpoints.sites:
                site.token()
            missing = [m for m in config.modules if m not in endpoints.modules()]
            if missing:
                raise CliError(f"{args.services}: no endpoint for module(s) {', '.join(missing)}")
            modules = None
    except (ConfigError, ModuleSetupError, EndpointsError) as exc:
        raise CliError(str(exc)) from exc
    runtime = ServiceRuntime("orchestrator", server_config_from_args(args))
    connector: ModuleConnector | None = None
    service = PipelineService(modules, config, waiting=lambda: connector.error if connector else "")
    runtime.add_service(orchestrator_pb2_grpc.add_PipelineServicer_to_server, service, "sipec.v1.Pipeline")
    runtime.install_signal_handlers()
    port = runtime.start()

    def ready(m: ModuleSet) -> None:
        service.connected(m)
        runtime.set_serving(True)
        print(f"orchestrator: serving on port {port} (modules {', '.join(m.stubs)})", flush=True)

    if modules is not None:
        ready(modules)
    else:
        print(f"orchestrator: listening on port {port}, NOT_SERVING until the modules answer", flush=True)
        sites = Connector(config.modules, None, endpoints)   # a preferred site that does not answer: the next one
        connector = ModuleConnector(sites.first_answering, ready).start()
    try:
        runtime.serve_forever()
    finally:
        if connector is not None:
            connector.stop()
        for s in servicers:
            s.close()
    return 0
