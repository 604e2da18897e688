"""The orchestrator as a service: `Pipeline.AnalyzeStream`, frames in, results out (live cameras).

Each stream runs its own `VideoPipeline` over the module stubs the server was started with (in-process
servicers or gRPC endpoints). Results come back in frame order, delayed by the non-causal windows of
IdNet and BehaveNet; everything pending is flushed when the client closes its side. A frame that cannot
be decoded gets a FrameResult with `error` set, and the stream goes on.
"""

from __future__ import annotations

import argparse
import json
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from orchestrator.config import PipelineConfig
from orchestrator.pipeline import FrameState, ModuleSet, VideoPipeline
from orchestrator.video import Frame
from sipec.api.convert import ConversionError, image_from_proto, item_error
from sipec.serving.errors import grpc_errors
from sipec.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc, tracker_pb2

_END = object()


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


class PipelineService(orchestrator_pb2_grpc.PipelineServicer):
    def __init__(self, modules: ModuleSet, config: PipelineConfig, max_pixels: int = 4096 * 4096) -> None:
        self.modules = modules
        self.config = config
        self.max_pixels = max_pixels

    def AnalyzeStream(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        out: queue.Queue = queue.Queue(maxsize=256)
        failure: list[BaseException] = []
        first = next(request_iterator, None)
        if first is None:
            return
        modules = self.modules
        if first.modules:
            try:
                modules = self.modules.subset(list(first.modules))
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
        versions = {m: int(i.version) for m, i in self.modules.info.items()}
        return common_pb2.ModelInfo(module="orchestrator", model_name="pipeline",
                                    architecture="+".join(self.modules.stubs),
                                    metadata_json=json.dumps({"modules": list(self.modules.stubs),
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
    from orchestrator.modules import ModuleSetupError, build_modules, read_endpoints
    from sipec.cli import CliError
    from sipec.serving.cli import server_config_from_args
    from sipec.serving.runtime import ServiceRuntime

    try:
        config = load_config(args.config)
        endpoints = read_endpoints(args.services) if args.services else None
        if endpoints is None and args.models is None:
            raise CliError("give --models REPO or --services endpoints.yaml")
        modules, servicers = build_modules(config.modules, args.models, endpoints)
    except (ConfigError, ModuleSetupError) as exc:
        raise CliError(str(exc)) from exc
    runtime = ServiceRuntime("orchestrator", server_config_from_args(args))
    runtime.add_service(orchestrator_pb2_grpc.add_PipelineServicer_to_server, PipelineService(modules, config),
                        "sipec.v1.Pipeline")
    runtime.install_signal_handlers()
    port = runtime.start()
    runtime.set_serving(True)
    print(f"orchestrator: serving on port {port} (modules {', '.join(modules.stubs)})", flush=True)
    try:
        runtime.serve_forever()
    finally:
        for s in servicers:
            s.close()
    return 0
