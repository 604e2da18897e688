"""The Tracker gRPC service: `Track` (one bidirectional stream per video), `Estimate3D`, `GetModelInfo`.

- `Track`: the first message's `options` set up a :class:`StreamTracker` for the stream (invalid options
  end the stream with INVALID_ARGUMENT naming the field); each request then gets one response, in order.
  A bad frame (out of order, malformed instance, inconsistent identities, more live tracks than
  `max_tracks`) is answered with a per-frame `error` (INVALID_ARGUMENT / RESOURCE_EXHAUSTED) and changes
  nothing; the stream goes on. State lives only as long as its stream and is bounded (see
  :mod:`services.tracker.options`); at most `max_streams` streams run at once (RESOURCE_EXHAUSTED beyond).
- `Estimate3D`: mask area and centre of mass of each instance -> the depth model (`sipec train depth3d`,
  served by the backend: local SavedModel or TF Serving) -> x, y, z. `model_name` picks another depth
  model of the same repository / TF Serving; NOT_FOUND when there is none by that name, UNAVAILABLE while
  the model cannot be reached.
- Health: SERVING as soon as the server runs, since tracking needs no model; a missing or unreachable depth
  model makes `Estimate3D` answer UNAVAILABLE (it is picked up when it appears) and `GetModelInfo` report
  version 0 with the reason.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from services.tracker.detections import detection_from_instance
from services.tracker.model import ARCHITECTURE, INPUT_NAME, OUTPUT_NAME
from services.tracker.options import TrackerLimits, options_from_proto
from services.tracker.tracker import FrameResult, StreamTracker
from sipec.api.convert import ConversionError, box_to_proto, instance_from_proto, item_error, point_to_proto
from sipec.serving.backends import ModelBackend
from sipec.serving.batching import DEFAULT_BATCH_SIZE
from sipec.serving.errors import (
    InvalidInput,
    NotFound,
    ServingError,
    TooLarge,
    Unavailable,
    grpc_errors,
    grpc_stream_errors,
)
from sipec.serving.module import ModuleService
from sipec.serving.repository import check_model_name
from sipec.serving.runtime import ServiceRuntime
from sipec.v1 import common_pb2, tracker_pb2, tracker_pb2_grpc

log = logging.getLogger("sipec.tracker")

DEFAULT_MODEL = "depth3d"
TRACKER_ARCHITECTURE = "mask-iou-tracker"


class TrackerService(ModuleService, tracker_pb2_grpc.TrackerServicer):
    module = "tracker"
    service_name = "sipec.v1.Tracker"
    health_follows_backend = False   # tracking needs no model: SERVING as soon as the server runs

    def __init__(self, backend: ModelBackend, runtime: ServiceRuntime | None = None,
                 limits: TrackerLimits | None = None, max_streams: int = 16, max_estimate_instances: int = 1024,
                 backend_factory: Callable[[str], ModelBackend] | None = None, max_backends: int = 8,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        super().__init__(backend, runtime, batch_size)
        self.limits = limits or TrackerLimits()
        self.max_streams = max_streams
        self.max_estimate_instances = max_estimate_instances
        self._streams = threading.BoundedSemaphore(max_streams)
        self._backend_factory = backend_factory
        self._max_backends = max_backends
        self._backends: dict[str, ModelBackend] = {}
        self._backends_lock = threading.Lock()

    # ------------------------------------------------------------------ Track
    @grpc_stream_errors
    def Track(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        if not self._streams.acquire(blocking=False):
            raise TooLarge(f"this tracker already runs {self.max_streams} streams (its --max-streams); retry later")
        try:
            tracker: StreamTracker | None = None
            for request in request_iterator:
                if tracker is None:   # invalid options end the stream (InvalidInput -> INVALID_ARGUMENT)
                    tracker = StreamTracker(options_from_proto(request.options, self.limits), self.limits)
                yield self._track_frame(tracker, request)
        finally:
            self._streams.release()

    def _track_frame(self, tracker: StreamTracker, request: Any) -> Any:
        response = tracker_pb2.TrackResponse(frame=request.frame)
        try:
            dets = [detection_from_instance(instance_from_proto(m, field=f"instances[{i}]"), i)
                    for i, m in enumerate(request.instances)]
            identities = [(list(p.names), np.asarray(p.values, dtype=np.float64)) for p in request.identities]
            result = tracker.step(int(request.frame.index), dets, identities)
        except (ServingError, ConversionError) as exc:
            response.error.CopyFrom(item_error(exc.code, str(exc)))
            return response
        except Exception:  # noqa: BLE001 - a bug on one frame must not end the stream
            incident = uuid.uuid4().hex[:12]
            log.exception("tracking failed", extra={"incident": incident, "frame": int(request.frame.index)})
            response.error.CopyFrom(item_error(grpc.StatusCode.INTERNAL,
                                               f"internal error (incident {incident}); see the server log"))
            return response
        return _fill_response(response, result)

    # ------------------------------------------------------------------ Estimate3D
    @grpc_errors
    def Estimate3D(self, request: Any, context: grpc.ServicerContext) -> Any:
        n = len(request.instances)
        if n > self.max_estimate_instances:
            raise TooLarge(f"instances: {n} in one request, more than this server's limit "
                           f"{self.max_estimate_instances}")
        backend = self._depth_backend(request.model_name)
        if n == 0:
            return tracker_pb2.Estimate3DResponse()
        feats = np.zeros((n, 3), dtype=np.float32)
        for i, msg in enumerate(request.instances):
            if not msg.HasField("mask"):
                raise InvalidInput(f"instances[{i}].mask is missing: the 3D position is estimated from the mask's "
                                   "area and centre of mass")
            det = detection_from_instance(instance_from_proto(msg, field=f"instances[{i}]"), i)
            feats[i] = (det.area, det.com[0], det.com[1])
            self._check_frame_size(backend, det.frame_size, i)
        pred = self.predict({INPUT_NAME: feats}, [OUTPUT_NAME], backend=backend).outputs[OUTPUT_NAME]
        pred = np.asarray(pred, dtype=np.float64).reshape(n, 3)
        return tracker_pb2.Estimate3DResponse(positions=[
            tracker_pb2.Position3D(index=i, x=float(p[0]), y=float(p[1]), z=float(p[2])) for i, p in enumerate(pred)])

    def _check_frame_size(self, backend: ModelBackend, size: tuple[int, int] | None, i: int) -> None:
        if size is None:
            return
        meta = self._metadata_of(backend)
        inp = meta.info.get("input", {})
        h, w = int(inp.get("height", 0)), int(inp.get("width", 0))
        if h and w and size != (h, w):
            raise InvalidInput(f"instances[{i}].mask is {size[1]}x{size[0]} but depth model {meta.name!r} was trained "
                               f"on {w}x{h} frames; 3D positions are only valid for the camera it was trained on")

    def _metadata_of(self, backend: ModelBackend) -> Any:
        try:
            return backend.metadata()
        except ServingError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise Unavailable(f"depth model {backend.model_name!r} unavailable: {exc}") from exc

    def _depth_backend(self, name: str) -> ModelBackend:
        if not name or name == self.backend.model_name:
            return self.backend
        try:
            check_model_name(name)
        except InvalidInput as exc:
            raise InvalidInput(f"model_name: {exc}") from None
        with self._backends_lock:
            if name in self._backends:
                return self._backends[name]
            if self._backend_factory is None:
                raise NotFound(f"model_name {name!r}: this tracker serves only the depth model "
                               f"{self.backend.model_name!r}")
            if len(self._backends) >= self._max_backends:
                raise TooLarge(f"model_name {name!r}: this tracker already serves {self._max_backends} other depth "
                               "models; use its default model or another tracker")
            backend = self._backend_factory(name)
            self._backends[name] = backend
            return backend

    # ------------------------------------------------------------------ info and health
    @grpc_errors
    def GetModelInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return self.model_info()
        except Unavailable as exc:
            info = {"module": "tracker", "tracker": TRACKER_ARCHITECTURE, "depth_model": None,
                    "depth_model_error": str(exc)}
            return common_pb2.ModelInfo(module=self.module, model_name=self.backend.model_name, version=0,
                                        backend=self.backend.kind,
                                        architecture=f"{TRACKER_ARCHITECTURE} (depth model {ARCHITECTURE} not loaded)",
                                        metadata_json=json.dumps(info, sort_keys=True), batch_size=self.batch_size)

    def close(self) -> None:
        super().close()
        with self._backends_lock:
            for b in self._backends.values():
                b.close()
            self._backends.clear()


def _fill_response(response: Any, result: FrameResult) -> Any:
    for t in result.instances:
        response.instances.append(tracker_pb2.TrackedInstance(index=t.index, track_id=t.track_id, identity=t.identity,
                                                               identity_confidence=t.identity_confidence))
    for e in result.interactions:
        response.interactions.append(tracker_pb2.Interaction(track_a=e.track_a, track_b=e.track_b,
                                                             com=point_to_proto(e.com), box=box_to_proto(e.box)))
    return response


def backend_factory_from_args(args: argparse.Namespace) -> Callable[[str], ModelBackend]:
    """Backends for other depth models named in Estimate3D requests, like the default one."""
    from sipec.serving.backends import make_backend
    from sipec.serving.repository import ModelRepository

    def factory(name: str) -> ModelBackend:
        if args.backend == "local" and not ModelRepository(args.model_repo).versions(name):
            known = ", ".join(ModelRepository(args.model_repo).models()) or "none"
            raise NotFound(f"model_name {name!r}: no such model in {args.model_repo} (models: {known})")
        return make_backend(args.backend, name, model_repo=args.model_repo, address=args.tfserving,
                            poll_s=args.poll_s, timeout_s=args.backend_timeout_s,
                            version=args.model_version if name == args.model_name else 0)

    return factory


def create_servicer(model_repo: str | Path, model_name: str = DEFAULT_MODEL) -> TrackerService:
    """The servicer `sipec serve tracker` runs, in this process, on a local model repository (the orchestrator's
    in-process mode). The depth model is optional: without it tracking works and Estimate3D is UNAVAILABLE."""
    from sipec.serving.backends import LocalBackend

    return TrackerService(LocalBackend(model_repo, model_name))
