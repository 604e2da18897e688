"""The PoseNet gRPC service (protos/sipec/v1/posenet.proto).

- `EstimatePose`: a batch of crops -> one pose per crop, in one backend call. Crops of any size are padded to a
  square (bottom/right) and resized to the network input; keypoints come back in crop pixels, or in frame
  pixels when `origin` is set (frame = origin + crop pixel * scale; scale 0 means 1). Keypoints with
  confidence below `min_confidence` come back with NaN x/y. An undecodable crop fails the whole call with
  INVALID_ARGUMENT naming `crops[i].crop` (as the proto says); more than `--max-batch` crops is
  RESOURCE_EXHAUSTED; a dead backend is UNAVAILABLE.
- `EstimatePoseStream`: one response per request, in order. A bad crop gets a per-pose `error` (the other
  crops of the frame are answered); a backend failure gives every pose of that frame an UNAVAILABLE error;
  the stream goes on either way.
- `GetModelInfo` (keypoint names from the model's metadata) and health, from :class:`ModuleService`.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from services.posenet.predict import estimate_crops
from sipec.api.convert import image_from_proto, item_error_from_exception, keypoints_to_proto
from sipec.serving.batching import DEFAULT_BATCH_SIZE
from sipec.serving.errors import (
    FailedPrecondition,
    InvalidInput,
    ServingError,
    TooLarge,
    Unavailable,
    grpc_errors,
    grpc_stream_errors,
)
from sipec.serving.module import ModuleService

log = logging.getLogger("sipec.posenet")

SERVICE_NAME = "sipec.v1.PoseNet"
DEFAULT_MODEL = "posenet"
DEFAULT_MAX_BATCH = 64
MAX_CROP_PIXELS = 2048 * 2048


def fit_crop(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Pad to a square (bottom/right, black) and resize to size x size; returns (crop, crop px per model px)."""
    h, w = image.shape[:2]
    side = max(h, w)
    if (h, w) != (side, side):
        square = np.zeros((side, side, 3), dtype=np.uint8)
        square[:h, :w] = image
        image = square
    if side != size:
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)
    return np.ascontiguousarray(image), side / size


class PoseNetServicer(ModuleService):
    """Pre/post-processing around a heatmap model behind a ModelBackend."""

    module = "posenet"
    service_name = SERVICE_NAME

    def __init__(self, backend: Any, runtime: Any = None, max_batch: int = DEFAULT_MAX_BATCH,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        super().__init__(backend, runtime, batch_size)
        self.max_batch = max_batch

    def _model(self) -> tuple[list[str], int, int]:
        meta = self.metadata()
        names = list(meta.info.get("keypoint_names", []))
        size = int(meta.info.get("input", {}).get("height", 0))
        if not names or not size:
            raise Unavailable(f"posenet: model {meta.name!r} has no keypoint_names / input size in its metadata")
        return names, size, meta.version

    def _check_request(self, request: Any) -> None:
        if len(request.crops) > self.max_batch:
            raise TooLarge(f"crops: {len(request.crops)} crops, at most {self.max_batch} per request (--max-batch)")
        mc = request.min_confidence
        if not (math.isfinite(mc) and 0.0 <= mc <= 1.0):
            raise InvalidInput(f"min_confidence: must be in [0, 1], got {mc}")
        for i, c in enumerate(request.crops):
            if not (math.isfinite(c.scale) and c.scale >= 0):
                raise InvalidInput(f"crops[{i}].scale: must be >= 0 (0 means 1), got {c.scale}")
            if c.HasField("origin") and not (math.isfinite(c.origin.x) and math.isfinite(c.origin.y)):
                raise InvalidInput(f"crops[{i}].origin: must be finite, got ({c.origin.x}, {c.origin.y})")

    def _answer(self, request: Any, strict: bool) -> Any:
        """One PoseResponse. strict: a bad crop raises (unary); else it becomes that pose's error (stream)."""
        from sipec.v1 import posenet_pb2

        self._check_request(request)
        names, size, version = self._model()
        response = posenet_pb2.PoseResponse(frame=request.frame, model_version=version)
        poses = [response.poses.add(key=c.key) for c in request.crops]
        crops, factors, good = [], [], []
        for i, c in enumerate(request.crops):
            try:
                img = image_from_proto(c.crop, max_pixels=MAX_CROP_PIXELS, field=f"crops[{i}].crop")
                crop, f = fit_crop(img, size)
            except (ValueError, ServingError) as exc:
                if strict:
                    raise
                poses[i].error.CopyFrom(item_error_from_exception(exc))
                continue
            crops.append(crop)
            factors.append(f)
            good.append(i)
        if not good:
            return response
        kp, version = estimate_crops(self.backend, np.stack(crops), predict=self.predict)
        if kp.shape[1] != len(names):
            raise FailedPrecondition(f"posenet: model {self.backend.model_name!r} outputs {kp.shape[1]} heatmaps "
                                     f"but its metadata names {len(names)} keypoints")
        response.model_version = version
        for j, i in enumerate(good):
            c = request.crops[i]
            pts = kp[j].copy()
            pts[:, :2] *= factors[j]
            if c.HasField("origin"):
                pts[:, :2] = pts[:, :2] * (c.scale or 1.0) + [c.origin.x, c.origin.y]
            if request.min_confidence > 0:
                pts[pts[:, 2] < request.min_confidence, :2] = np.nan
            poses[i].keypoints.extend(keypoints_to_proto(names, pts))
        return response

    @grpc_errors
    def EstimatePose(self, request: Any, context: Any) -> Any:
        return self._answer(request, strict=True)

    @grpc_stream_errors
    def EstimatePoseStream(self, request_iterator: Any, context: Any) -> Iterator[Any]:
        from sipec.v1 import posenet_pb2

        for request in request_iterator:
            try:
                yield self._answer(request, strict=False)
            except (ServingError, ValueError) as exc:
                log.warning("posenet stream: frame failed: %s", exc)
                response = posenet_pb2.PoseResponse(frame=request.frame)
                err = item_error_from_exception(exc)
                for c in request.crops:
                    response.poses.add(key=c.key).error.CopyFrom(err)
                yield response


def create_servicer(model_repo: Path, model_name: str = DEFAULT_MODEL) -> PoseNetServicer:
    """The servicer `sipec serve posenet` runs, on a LocalBackend of `model_repo` (for in-process use)."""
    from sipec.serving.backends import LocalBackend

    return PoseNetServicer(LocalBackend(Path(model_repo), model_name))


def serve(args: argparse.Namespace) -> int:
    from sipec.cli import CliError
    from sipec.serving.module import run_module_server
    from sipec.v1 import posenet_pb2_grpc

    if args.max_batch < 1:
        raise CliError(f"--max-batch: must be at least 1, not {args.max_batch}")
    return run_module_server(args, "posenet", SERVICE_NAME,
                             lambda backend, runtime: PoseNetServicer(backend, runtime, args.max_batch,
                                                                      args.batch_size),
                             posenet_pb2_grpc.add_PoseNetServicer_to_server)
