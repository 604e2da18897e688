"""The BehaveNet gRPC service (protos/sipec/v1/behavenet.proto).

It holds two models: the feature network (`behavenet-features`, run once per crop) and the temporal
network (`behavenet`, run once per answered frame on 2n+1 feature vectors), each behind its own
`ModelBackend` (in-process or TF Serving). Crops of any size are padded to a square and resized to
the network input; callers cut them as the model was trained: GetModelInfo's input_height/width is the
side of an animal's crop in source pixels around its mask COM, and `crops.pair_crop_px` in its
metadata_json the side of a pair's crop around the pair's joint COM.

- `Classify`: one window of 2n+1 crops -> the centre frame's behaviour probabilities.
- `ClassifyStream`: crops of any number of subjects in frame order. Requests are read ahead on a
  thread and processed in batches of whatever has arrived (one feature call and one temporal call per
  batch). Each frame is answered n frames after it (start edge-padded); `end_of_track` or the end of
  the stream flushes the subject's pending frames. A frame that cannot be used (bad crop, empty subject,
  too many open subjects, backend failure) is answered at once with a per-item `error`; it does not
  enter the subject's window and the stream goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.behavenet import DEFAULT_MAX_BATCH, DEFAULT_MAX_CROP_PIXELS, DEFAULT_MAX_SUBJECTS, DEFAULT_MODEL
from services.behavenet.crops import resize_crop
from services.behavenet.model import CROP_INPUT, FEATURES_INPUT, FEATURES_OUTPUT, PROBABILITIES_OUTPUT
from services.behavenet.stream import ReadyWindow, StreamState
from sipec.api.convert import image_from_proto, item_error_from_exception, probabilities_to_proto
from sipec.serving.backends import ModelBackend, ModelMetadata, Prediction
from sipec.serving.batching import DEFAULT_BATCH_SIZE
from sipec.serving.errors import InvalidInput, ServingError, Unavailable, grpc_errors, grpc_stream_errors
from sipec.serving.module import ModuleService
from sipec.serving.streams import ReadAhead

log = logging.getLogger("sipec.behavenet")

SERVICE_NAME = "sipec.v1.BehaveNet"
MAX_SUBJECT_CHARS = 128


class BehaveNetBackends(ModelBackend):
    """The temporal model's backend (its name, metadata and version are the service's) plus the feature model's.

    Ready only when both are.
    """

    def __init__(self, temporal: ModelBackend, features: ModelBackend) -> None:
        super().__init__(temporal.model_name)
        self.kind = temporal.kind
        self.temporal = temporal
        self.features = features

    def predict(self, inputs: dict[str, np.ndarray], output_filter: list[str] | None = None,
                signature: str | None = None) -> Prediction:
        return self.temporal.predict(inputs, output_filter, signature)

    def metadata(self) -> ModelMetadata:
        return self.temporal.metadata()

    def ready(self) -> bool:
        return self.temporal.ready() and self.features.ready()

    def describe(self) -> str:
        return f"{self.temporal.describe()} + {self.features.describe()}"

    def add_unavailable_listener(self, listener: Any) -> None:
        self.temporal.add_unavailable_listener(listener)
        self.features.add_unavailable_listener(listener)

    def close(self) -> None:
        self.temporal.close()
        self.features.close()


@dataclass(frozen=True)
class ServingConfig:
    """What the service needs to know of the served pair of models."""

    n: int
    classes: list[str]
    input_size: int
    feature_size: int
    version: int

    @property
    def window(self) -> int:
        return 2 * self.n + 1


@dataclass
class _Item:
    """One stream request on its way through a batch."""

    request: Any
    crop: np.ndarray | None = None
    feature: np.ndarray | None = None
    error: Exception | None = None


class BehaveNetService(ModuleService):
    module = "behavenet"
    service_name = SERVICE_NAME

    def __init__(self, backend: BehaveNetBackends, runtime: Any = None, max_subjects: int = DEFAULT_MAX_SUBJECTS,
                 max_batch: int = DEFAULT_MAX_BATCH, max_crop_pixels: int = DEFAULT_MAX_CROP_PIXELS,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        super().__init__(backend, runtime, batch_size)
        self.models = backend
        self.max_subjects = max_subjects
        self.max_batch = max_batch
        self.max_crop_pixels = max_crop_pixels

    # models -----------------------------------------------------------------------------------
    def serving_config(self) -> ServingConfig:
        """n, classes and sizes from the temporal model's metadata, checked against the feature model's."""
        temporal = self.metadata()
        try:
            features = self.models.features.metadata()
        except ServingError:
            raise
        except Exception as exc:  # noqa: BLE001 - an unreachable feature model is unavailable to callers
            raise Unavailable(f"behavenet: feature model {self.models.features.model_name!r} unavailable: {exc}") \
                from exc
        info, finfo = temporal.info, features.info
        run, frun = info.get("run_id"), finfo.get("run_id")
        if run and frun and run != frun:
            raise Unavailable(f"behavenet: the feature model {features.name!r} version {features.version} (run "
                              f"{frun}) was not trained with the temporal model {temporal.name!r} version "
                              f"{temporal.version} (run {run}); serve versions exported together")
        try:
            n = int(info["window"]["n"])
            classes = [str(c) for c in info["class_names"]]
            size = int(finfo["crops"]["input_size"])
            fsize = int(info["feature_size"])
        except (KeyError, TypeError, ValueError) as exc:
            raise Unavailable(f"behavenet: model {temporal.name!r} version {temporal.version} has no BehaveNet "
                              f"metadata (window.n, class_names, crops.input_size, feature_size): {exc}") from exc
        return ServingConfig(n, classes, size, fsize, temporal.version)

    def _decode(self, image: Any, size: int, field: str) -> np.ndarray:
        crop = image_from_proto(image, max_pixels=self.max_crop_pixels, field=field)
        h, w = crop.shape[:2]
        if h != w:  # pad to a square around the centre, as the training crops are square
            side = max(h, w)
            square = np.zeros((side, side, 3), np.uint8)
            y0, x0 = (side - h) // 2, (side - w) // 2
            square[y0:y0 + h, x0:x0 + w] = crop
            crop = square
        return resize_crop(crop, size)

    def _features(self, crops: np.ndarray) -> np.ndarray:
        pred = self.predict({CROP_INPUT: crops}, [FEATURES_OUTPUT], backend=self.models.features)
        return np.asarray(pred.outputs[FEATURES_OUTPUT], dtype=np.float32)

    def _probabilities(self, windows: np.ndarray) -> tuple[np.ndarray, int]:
        pred = self.predict({FEATURES_INPUT: windows.astype(np.float32)}, [PROBABILITIES_OUTPUT],
                            backend=self.models.temporal)
        return np.asarray(pred.outputs[PROBABILITIES_OUTPUT], dtype=np.float32), pred.model_version

    # Classify ---------------------------------------------------------------------------------
    @grpc_errors
    def Classify(self, request: Any, context: Any) -> Any:
        from sipec.v1 import behavenet_pb2

        cfg = self.serving_config()
        if len(request.window) != cfg.window:
            raise InvalidInput(f"window: expected {cfg.window} crops (2n+1 with n={cfg.n}, frames t-{cfg.n} .. "
                               f"t+{cfg.n}), got {len(request.window)}")
        crops = np.stack([self._decode(img, cfg.input_size, f"window[{i}]") for i, img in enumerate(request.window)])
        feats = self._features(crops)
        probs, version = self._probabilities(feats[None])
        p = probs[0]
        best = int(p.argmax())
        return behavenet_pb2.ClassifyResponse(key=request.key, behaviours=probabilities_to_proto(cfg.classes, p),
                                              behaviour=cfg.classes[best], confidence=float(p[best]),
                                              model_version=version or cfg.version)

    # ClassifyStream ---------------------------------------------------------------------------
    @grpc_stream_errors
    def ClassifyStream(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:
        cfg = self.serving_config()
        state: StreamState[Any] = StreamState(cfg.n, self.max_subjects)
        reader = ReadAhead(request_iterator, self.max_batch, "behavenet")
        try:
            for batch in reader.batches():
                yield from self._process(batch, state, cfg)
            if reader.client_gone:
                return  # the client went away: nothing to answer
            yield from self._answer(state.end_all(), cfg)
        finally:
            reader.close()

    def _process(self, batch: list[Any], state: StreamState[Any], cfg: ServingConfig) -> Iterator[Any]:
        items = [_Item(r) for r in batch]
        # subjects open at each point of the batch, in request order: an end_of_track early in the batch makes
        # room for a new subject later in it, as if the requests had come one by one
        open_subjects = set(state.subjects)
        for item in items:
            r = item.request
            try:
                if not r.subject:
                    raise InvalidInput("subject: empty; name the track (\"3\") or the interacting pair (\"2+5\")")
                if len(r.subject) > MAX_SUBJECT_CHARS:
                    raise InvalidInput(f"subject: longer than {MAX_SUBJECT_CHARS} characters")
                if r.HasField("crop"):
                    state.check_room(r.subject, open_subjects)
                    item.crop = self._decode(r.crop, cfg.input_size, "crop")
                    open_subjects.add(r.subject)
                elif not r.end_of_track:
                    raise InvalidInput(f"crop: missing for subject {r.subject!r} (only a message with "
                                       "end_of_track may come without a crop)")
            except Exception as exc:  # noqa: BLE001 - a bad frame is answered with its error, the stream goes on
                item.error = exc
            if r.end_of_track and r.subject:
                open_subjects.discard(r.subject)
        good = [it for it in items if it.crop is not None]
        if good:
            try:
                feats = self._features(np.stack([it.crop for it in good]))
                for it, f in zip(good, feats, strict=True):
                    it.feature = f
            except Exception as exc:  # noqa: BLE001 - backend down: these frames get the error
                log.warning("behavenet: feature model failed on %d crops: %s", len(good), exc)
                for it in good:
                    it.error = _as_serving_error(exc)
        ready: list[ReadyWindow[Any]] = []
        for it in items:
            r = it.request
            if it.error is not None:
                yield _error_result(r, it.error)
            elif it.feature is not None:
                try:
                    ready += state.add(r.subject, r.frame, it.feature)
                except Exception as exc:  # noqa: BLE001
                    yield _error_result(r, exc)
                    continue
            if r.end_of_track and r.subject:
                ready += state.end(r.subject)
        yield from self._answer(ready, cfg)

    def _answer(self, ready: list[ReadyWindow[Any]], cfg: ServingConfig) -> Iterator[Any]:
        from sipec.v1 import behavenet_pb2

        if not ready:
            return
        try:
            probs, version = self._probabilities(np.stack([w.window for w in ready]))
        except Exception as exc:  # noqa: BLE001 - backend down: every frame of the batch gets the error
            log.warning("behavenet: temporal model failed on %d windows: %s", len(ready), exc)
            err = item_error_from_exception(_as_serving_error(exc))
            for w in ready:
                yield behavenet_pb2.BehaviourResult(frame=w.ref, subject=w.subject, error=err)
            return
        for w, p in zip(ready, probs, strict=True):
            best = int(p.argmax())
            yield behavenet_pb2.BehaviourResult(frame=w.ref, subject=w.subject,
                                                behaviours=probabilities_to_proto(cfg.classes, p),
                                                behaviour=cfg.classes[best], confidence=float(p[best]),
                                                model_version=version or cfg.version)


def _as_serving_error(exc: Exception) -> Exception:
    if isinstance(exc, ServingError | ValueError):
        return exc
    return Unavailable(f"behavenet: model backend failed: {exc}")


def _error_result(request: Any, exc: Exception) -> Any:
    from sipec.v1 import behavenet_pb2

    return behavenet_pb2.BehaviourResult(frame=request.frame, subject=request.subject,
                                         error=item_error_from_exception(exc))


def create_servicer(model_repo: Path, model_name: str = DEFAULT_MODEL,
                    features_model: str | None = None) -> BehaveNetService:
    """The servicer `sipec serve behavenet` runs, on LocalBackends of `model_repo` (for in-process use):
    the temporal model `model_name` and its feature model (default `MODEL_NAME-features`)."""
    from sipec.serving.backends import LocalBackend

    repo = Path(model_repo)
    return BehaveNetService(BehaveNetBackends(LocalBackend(repo, model_name),
                                              LocalBackend(repo, features_model or f"{model_name}-features")))
