"""The IdNet gRPC service (protos/sipec/v1/idnet.proto).

The served model (NAME: recurrent, T>0; or NAME-frame: T=0) takes uint8 crops (B, 2T+1, S, S, 3) with masks
already applied; this service decodes crops, pads them square, resizes them to S and applies the masks with
`services.idnet.masking` (the function training used), then calls the `ModelBackend`.

- `Identify`: a batch of sequences of exactly 2T+1 crops (+ optional masks, one per crop, in crop
  coordinates). A sequence of another length, an undecodable crop or a mask of another size than its crop
  ends the RPC with INVALID_ARGUMENT naming the field (e.g. ``sequences[2].crops: 3 crops, the model needs 7``).
- `IdentifyStream`: one crop per track per frame; each crop is answered T crops of its track later, and
  `end_of_track` or the end of the stream flushes the track (future context edge-padded). A bad crop is
  answered at once with a per-item `error` and does not enter the window; a backend failure is a per-item
  UNAVAILABLE error; the stream goes on. Requests are read ahead on a thread (`sipec.serving.streams`) and
  the crops that became answerable among those that have arrived go to the model in one call (up to
  `--max-batch`), not one call per crop.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import grpc
import numpy as np

from services.idnet import DEFAULT_MODEL
from services.idnet.masking import MaskSettings, mask_crop
from services.idnet.model import INPUT_NAME, OUTPUT_NAME
from services.idnet.stream import ReadyItem, StreamItem, TrackWindows
from sipec.api.convert import (
    image_from_proto,
    item_error,
    item_error_from_exception,
    mask_from_proto,
    probabilities_to_proto,
)
from sipec.serving.backends import ModelBackend
from sipec.serving.batching import DEFAULT_BATCH_SIZE
from sipec.serving.errors import InvalidInput, ServingError, TooLarge, Unavailable, grpc_errors, grpc_stream_errors
from sipec.serving.module import ModuleService
from sipec.serving.streams import ReadAhead

log = logging.getLogger("sipec.idnet")

SERVICE_NAME = "sipec.v1.IdNet"
MAX_CROP_PIXELS = 2048 * 2048
MAX_SEQUENCES = 4096


@dataclass(frozen=True)
class ServedModel:
    """What the service needs of the served model, from its metadata."""

    t: int
    names: list[str]
    settings: MaskSettings
    version: int


def square_resize(image: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Pad a crop to a square (black, centred) and resize to size; also the padding (top, bottom, left, right)."""
    h, w = image.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    pad = (top, side - h - top, left, side - w - left)
    if side != h or side != w:
        image = cv2.copyMakeBorder(image, *pad, cv2.BORDER_CONSTANT, value=0)
    from services.idnet.masking import resize_image

    return resize_image(np.ascontiguousarray(image), size), pad


def decode_crop(image_msg: Any, mask_msg: Any | None, settings: MaskSettings, field: str, mfield: str
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """(S x S x 3 crop, S x S mask or None) from the messages; InvalidInput/TooLarge naming the fields."""
    image = image_from_proto(image_msg, max_pixels=MAX_CROP_PIXELS, field=field)
    crop, pad = square_resize(image, settings.input_size)
    if mask_msg is None:
        return crop, None
    mask = mask_from_proto(mask_msg, field=mfield)
    if mask.shape != image.shape[:2]:
        raise InvalidInput(f"{mfield}: mask is {mask.shape[1]}x{mask.shape[0]} but its crop is "
                           f"{image.shape[1]}x{image.shape[0]} (masks are in crop coordinates)")
    m = np.pad(mask, ((pad[0], pad[1]), (pad[2], pad[3]))).astype(np.uint8)
    m = cv2.resize(m, (settings.input_size, settings.input_size), interpolation=cv2.INTER_NEAREST).astype(bool)
    return crop, m


class IdNetServicer(ModuleService):
    """IdNet: Identify, IdentifyStream, GetModelInfo (+ health from the backend)."""

    module = "idnet"
    service_name = SERVICE_NAME

    def __init__(self, backend: ModelBackend, runtime: Any = None, max_batch: int = 64, max_tracks: int = 256,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        super().__init__(backend, runtime, batch_size)
        self.max_batch = max_batch
        self.max_tracks = max_tracks

    # model --------------------------------------------------------------------------------------------
    def served(self) -> ServedModel:
        meta = self.metadata()
        info = meta.info
        try:
            return ServedModel(int(info["t"]), list(info["class_names"]), MaskSettings.from_json(info["masking"]),
                               int(meta.version))
        except (KeyError, TypeError, ValueError) as exc:
            raise Unavailable(f"idnet: model {meta.name!r} has no IdNet metadata (t, class_names, masking): "
                              f"{exc}") from exc

    def classify(self, sequences: np.ndarray) -> tuple[np.ndarray, int]:
        """(B, 2T+1, S, S, 3) masked crops -> (B, identities) probabilities, in model calls of batch_size."""
        pred = self.predict({INPUT_NAME: sequences}, [OUTPUT_NAME])
        return np.asarray(pred.outputs[OUTPUT_NAME], np.float64), pred.model_version

    @staticmethod
    def identification(key: str, probs: np.ndarray, names: Sequence[str]) -> Any:
        from sipec.v1 import idnet_pb2

        best = int(np.argmax(probs))
        return idnet_pb2.Identification(key=key, identities=probabilities_to_proto(names, probs),
                                        identity=names[best], confidence=float(probs[best]))

    # Identify -----------------------------------------------------------------------------------------
    def sequence_input(self, seq: Any, i: int, model: ServedModel) -> np.ndarray:
        n = 2 * model.t + 1
        field = f"sequences[{i}]"
        if len(seq.crops) != n:
            raise InvalidInput(f"{field}.crops: {len(seq.crops)} crops, but the model needs 2T+1 = {n} (T={model.t})")
        if len(seq.masks) not in (0, n):
            raise InvalidInput(f"{field}.masks: {len(seq.masks)} masks for {n} crops (give none or one per crop)")
        out = np.empty((n, model.settings.input_size, model.settings.input_size, 3), np.uint8)
        for j in range(n):
            crop, mask = decode_crop(seq.crops[j], seq.masks[j] if seq.masks else None, model.settings,
                                     f"{field}.crops[{j}]", f"{field}.masks[{j}]")
            out[j] = mask_crop(crop, mask, j - model.t, model.settings)
        return out

    @grpc_errors
    def Identify(self, request: Any, context: Any) -> Any:
        from sipec.v1 import idnet_pb2

        if not request.sequences:
            raise InvalidInput("sequences: empty (send at least one CropSequence)")
        if len(request.sequences) > MAX_SEQUENCES:
            raise TooLarge(f"sequences: {len(request.sequences)} sequences, at most {MAX_SEQUENCES} per request")
        model = self.served()
        batch = np.stack([self.sequence_input(s, i, model) for i, s in enumerate(request.sequences)])
        probs, version = self.classify(batch)
        return idnet_pb2.IdentifyResponse(
            results=[self.identification(s.key, p, model.names) for s, p in zip(request.sequences, probs, strict=True)],
            model_version=version)

    # IdentifyStream ----------------------------------------------------------------------------------
    def _answer(self, ready: list[ReadyItem], model: ServedModel) -> Iterator[Any]:
        from sipec.v1 import idnet_pb2

        if not ready:
            return
        batch = np.stack([np.stack([mask_crop(it.crop, it.mask, j - model.t, model.settings)
                                    for j, it in enumerate(r.items)]) for r in ready])
        try:
            probs, version = self.classify(batch)
        except ServingError as exc:
            for r in ready:
                yield idnet_pb2.IdentifyStreamResponse(frame=r.centre.frame, track_id=r.track_id,
                                                       result=idnet_pb2.Identification(
                                                           key=_key(r.track_id, r.centre.frame),
                                                           error=item_error(exc.code, str(exc))))
            return
        for r, p in zip(ready, probs, strict=True):
            yield idnet_pb2.IdentifyStreamResponse(frame=r.centre.frame, track_id=r.track_id,
                                                   result=self.identification(_key(r.track_id, r.centre.frame), p,
                                                                              model.names),
                                                   model_version=version)

    @grpc_stream_errors
    def IdentifyStream(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:
        from sipec.v1 import idnet_pb2

        model = self.served()
        windows = TrackWindows(model.t, self.max_tracks)
        reader = ReadAhead(request_iterator, self.max_batch, "idnet")
        try:
            for batch in reader.batches():   # the crops that have arrived: one model call for all that are ready
                ready: list[ReadyItem] = []
                for req in batch:
                    if req.HasField("crop") or not req.end_of_track:
                        try:
                            if not req.HasField("crop"):
                                raise InvalidInput(f"crop: missing for track {req.track_id} (only a message with "
                                                   "end_of_track may come without a crop)")
                            if req.track_id < 1:
                                raise InvalidInput(f"track_id: {req.track_id}; track ids start at 1")
                            if not windows.can_open(req.track_id):
                                raise TooLarge(f"track_id {req.track_id}: {self.max_tracks} tracks are open "
                                               "(--max-tracks); end some with end_of_track")
                            crop, mask = decode_crop(req.crop, req.mask if req.HasField("mask") else None,
                                                     model.settings, "crop", "mask")
                        except (ServingError, ValueError) as exc:
                            err = item_error(exc.code, str(exc)) if isinstance(exc, ServingError) \
                                else item_error_from_exception(exc)
                            if err.code == grpc.StatusCode.INTERNAL.value[0]:
                                err = item_error(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                            yield from self._answer(ready, model)   # answers stay in request order
                            ready = []
                            yield idnet_pb2.IdentifyStreamResponse(frame=req.frame, track_id=req.track_id,
                                                                   result=idnet_pb2.Identification(
                                                                       key=_key(req.track_id, req.frame), error=err))
                        else:
                            ready += windows.add(req.track_id, StreamItem(req.frame, crop, mask))
                    if req.end_of_track:
                        ready += windows.flush(req.track_id)
                yield from self._answer(ready, model)
            if reader.client_gone:
                return  # the client went away: nothing to answer
            yield from self._answer(windows.flush_all(), model)
        finally:
            reader.close()


def _key(track_id: int, frame: Any) -> str:
    return f"track {track_id} frame {frame.index}"


def create_servicer(model_repo: Path, model_name: str = DEFAULT_MODEL) -> IdNetServicer:
    """The servicer `sipec serve idnet` runs, on a LocalBackend of `model_repo` (for in-process use)."""
    from sipec.serving.backends import LocalBackend

    return IdNetServicer(LocalBackend(Path(model_repo), model_name))
