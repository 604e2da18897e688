"""The SegNet gRPC service (protos/sipec/v1/segnet.proto).

- `Segment`: one frame -> instances (RLE mask, box, score, COM) sorted by score. The frame is letterboxed to
  the model's input size; boxes and masks come back in frame pixels. `min_score` (0 = the model's
  `default_min_score` from its metadata, 0.5 for models trained here) and `max_instances` (0 = no limit)
  apply per call; `omit_masks` leaves masks out. INVALID_ARGUMENT for an
  undecodable image or a bad min_score (the message names the field), RESOURCE_EXHAUSTED above --max-pixels,
  UNAVAILABLE when the backend is down.
- `SegmentStream`: one response per request, in order. Frames that have arrived are batched to the backend
  (up to --max-batch per call) without waiting for more; a bad frame gets a response with `error` set, a
  backend failure gives the frames of that batch an UNAVAILABLE error; the stream goes on either way.
- `GetModelInfo` and health from :class:`ModuleService`.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.segnet.data import letterbox
from services.segnet.postprocess import DEFAULT_MASK_OVERLAP, to_instances
from sipec.api.convert import image_from_proto, instance_to_proto, item_error_from_exception
from sipec.serving.batching import DEFAULT_BATCH_SIZE
from sipec.serving.errors import InvalidInput, ServingError, Unavailable, grpc_errors, grpc_stream_errors
from sipec.serving.module import ModuleService
from sipec.serving.streams import ReadAhead

log = logging.getLogger("sipec.segnet")

SERVICE_NAME = "sipec.v1.SegNet"
DEFAULT_MODEL = "segnet"
DEFAULT_MAX_BATCH = 8
DEFAULT_MAX_PIXELS = 4096 * 4096


@dataclass
class _Frame:
    request: Any
    image: np.ndarray | None = None    # letterboxed model input
    scale: float = 1.0
    height: int = 0
    width: int = 0
    error: Exception | None = None


class SegNetServicer(ModuleService):
    """Letterboxing, batching and mask pasting around a Mask R-CNN behind a ModelBackend."""

    module = "segnet"
    service_name = SERVICE_NAME

    def __init__(self, backend: Any, runtime: Any = None, max_batch: int = DEFAULT_MAX_BATCH,
                 max_pixels: int = DEFAULT_MAX_PIXELS, mask_overlap: float = DEFAULT_MASK_OVERLAP,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        super().__init__(backend, runtime, batch_size)
        self.max_batch = max_batch
        self.max_pixels = max_pixels
        self.mask_overlap = mask_overlap

    def _model(self) -> tuple[tuple[int, int], list[str], float]:
        """(input height, width), class names and default min_score of the served model."""
        meta = self.metadata()
        size = meta.info.get("input", {})
        height, width = int(size.get("height", 0)), int(size.get("width", 0))
        if not height or not width:
            raise Unavailable(f"segnet: model {meta.name!r} has no input size in its metadata")
        return (height, width), list(meta.info.get("class_names", [])), float(meta.info.get("default_min_score", 0.5))

    def _prepare(self, request: Any, size: tuple[int, int]) -> _Frame:
        frame = _Frame(request)
        try:
            ms = request.min_score
            if not (math.isfinite(ms) and 0.0 <= ms <= 1.0):
                raise InvalidInput(f"min_score: must be in [0, 1], got {ms}")
            if not request.HasField("image"):
                raise InvalidInput("image: missing")
            img = image_from_proto(request.image, max_pixels=self.max_pixels, field="image")
            frame.height, frame.width = img.shape[:2]
            frame.image, frame.scale = letterbox(img, size[0], size[1])
        except (ValueError, ServingError) as exc:
            frame.error = exc
        return frame

    def _predict(self, frames: list[_Frame]) -> tuple[list[dict[str, np.ndarray]], int]:
        pred = self.predict({"image": np.stack([f.image for f in frames])})   # fixed-size calls
        out = {k: np.asarray(v) for k, v in pred.outputs.items()}
        return [{k: v[i] for k, v in out.items()} for i in range(len(frames))], pred.model_version

    def _respond(self, frame: _Frame, det: dict[str, np.ndarray], version: int, class_names: list[str],
                 default_min_score: float) -> Any:
        from sipec.v1 import segnet_pb2

        r = frame.request
        insts = to_instances(det, frame.scale, frame.height, frame.width, class_names,
                             min_score=r.min_score or default_min_score, max_instances=r.max_instances,
                             omit_masks=r.omit_masks, mask_overlap=self.mask_overlap)
        return segnet_pb2.SegmentResponse(frame=r.frame, model_version=version,
                                          instances=[instance_to_proto(i) for i in insts])

    def _error_response(self, request: Any, exc: Exception) -> Any:
        from sipec.v1 import segnet_pb2

        return segnet_pb2.SegmentResponse(frame=request.frame, error=item_error_from_exception(exc))

    @grpc_errors
    def Segment(self, request: Any, context: Any) -> Any:
        size, names, default_min = self._model()
        frame = self._prepare(request, size)
        if frame.error is not None:
            raise frame.error
        dets, version = self._predict([frame])
        return self._respond(frame, dets[0], version, names, default_min)

    def _answer_batch(self, requests: list[Any]) -> list[Any]:
        """Responses of a batch of stream requests; never raises."""
        try:
            size, names, default_min = self._model()
        except ServingError as exc:
            return [self._error_response(r, exc) for r in requests]
        frames = [self._prepare(r, size) for r in requests]
        good = [f for f in frames if f.error is None]
        results: dict[int, Any] = {}
        if good:
            try:
                dets, version = self._predict(good)
                for f, d in zip(good, dets, strict=True):
                    results[id(f)] = self._respond(f, d, version, names, default_min)
            except (ServingError, ValueError) as exc:
                log.warning("segnet stream: batch of %d frames failed: %s", len(good), exc)
                for f in good:
                    f.error = exc
        return [results[id(f)] if f.error is None else self._error_response(f.request, f.error) for f in frames]

    @grpc_stream_errors
    def SegmentStream(self, request_iterator: Any, context: Any) -> Iterator[Any]:
        reader = ReadAhead(request_iterator, self.max_batch, "segnet")   # frames that have arrived, batched
        try:
            for batch in reader.batches():
                yield from self._answer_batch(batch)
        finally:
            reader.close()


def create_servicer(model_repo: Path, model_name: str = DEFAULT_MODEL) -> SegNetServicer:
    """The servicer `sipec serve segnet` runs, on a LocalBackend of `model_repo` (for in-process use)."""
    from sipec.serving.backends import LocalBackend

    return SegNetServicer(LocalBackend(Path(model_repo), model_name))


def serve(args: argparse.Namespace) -> int:
    from sipec.cli import CliError
    from sipec.serving.module import run_module_server
    from sipec.v1 import segnet_pb2_grpc

    if args.max_batch < 1:
        raise CliError(f"--max-batch: must be at least 1, not {args.max_batch}")
    if args.max_pixels < 1:
        raise CliError(f"--max-pixels: must be at least 1, not {args.max_pixels}")
    if not 0.0 < args.mask_overlap <= 1.0:
        raise CliError(f"--mask-overlap: must be in (0, 1], not {args.mask_overlap}")
    return run_module_server(args, "segnet", SERVICE_NAME,
                             lambda backend, runtime: SegNetServicer(backend, runtime, args.max_batch,
                                                                     args.max_pixels, args.mask_overlap,
                                                                     args.batch_size),
                             segnet_pb2_grpc.add_SegNetServicer_to_server)
