"""Model backends: where a module service sends its tensors.

- `LocalBackend`: the SavedModel loaded in the service's own process (default on one machine); follows
  the repository's newest version without a restart.
- `TFServingBackend`: TensorFlow Serving's `PredictionService` over gRPC (tensorflow-serving-api), as in a
  cluster; also talks to `sipec serve model-server`.

Both raise `sipec.serving.errors` exceptions carrying the gRPC status a module service passes on:
INVALID_ARGUMENT for bad inputs, NOT_FOUND for unknown models or versions, UNAVAILABLE when the model
cannot be reached or is not loaded. A `TFServingBackend` call that fails with UNAVAILABLE (server gone,
connection refused) also tells the backend's unavailable-listeners at once (`add_unavailable_listener`): a
module service turns its health NOT_SERVING then, without waiting for its next readiness poll.
"""

from __future__ import annotations

import json
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from sipec.serving.client import ClientTLS, make_channel
from sipec.serving.errors import InvalidInput, NotFound, ServingError, TooLarge, Unavailable
from sipec.serving.models import ModelManager, TensorSpecInfo
from sipec.serving.repository import METADATA_INPUT, METADATA_SIGNATURE, SERVING_SIGNATURE, ModelRepository

log = logging.getLogger("sipec.serving")

# Reconnect backoff of a module's channel to its model server: gRPC's default grows to 120 s, so a model server
# restarted after a minute would be found again only minutes later (calls fail fast meanwhile). Capped at 1 s,
# a module answers again about a second after its model server does.
BACKEND_RECONNECT_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


@dataclass
class Prediction:
    outputs: dict[str, np.ndarray]
    model_version: int


@dataclass
class ModelMetadata:
    name: str
    version: int
    inputs: dict[str, TensorSpecInfo]
    outputs: dict[str, TensorSpecInfo]
    info: dict[str, Any] = field(default_factory=dict)   # assets/sipec.json


class ModelBackend(ABC):
    kind: str = ""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self._unavailable_listeners: list[Callable[[str], None]] = []

    def describe(self) -> str:
        """Where the model is, for logs: e.g. "tfserving localhost:8500 model 'segnet'"."""
        return f"{self.kind} model {self.model_name!r}"

    def add_unavailable_listener(self, listener: Callable[[str], None]) -> None:
        """`listener(message)` is called whenever a call to the model fails because it cannot be reached."""
        self._unavailable_listeners.append(listener)

    def _notify_unavailable(self, message: str) -> None:
        for listener in list(self._unavailable_listeners):
            try:
                listener(message)
            except Exception:  # noqa: BLE001 - a listener must not change the caller's error
                log.exception("unavailable listener failed")

    @abstractmethod
    def predict(self, inputs: dict[str, np.ndarray], output_filter: list[str] | None = None,
                signature: str | None = None) -> Prediction: ...

    @abstractmethod
    def metadata(self) -> ModelMetadata: ...

    @abstractmethod
    def ready(self) -> bool: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class LocalBackend(ModelBackend):
    """The model in this process: the newest version of `model_name` in the repository, followed as new ones
    appear, or exactly `version` when it is given (> 0)."""

    kind = "local"

    def __init__(self, repository: str | Path | ModelRepository, model_name: str, poll_s: float = 2.0,
                 start: bool = True, version: int = 0) -> None:
        super().__init__(model_name)
        repo = repository if isinstance(repository, ModelRepository) else ModelRepository(repository)
        self.manager = ModelManager(repo, [model_name], poll_s=poll_s,
                                    pinned={model_name: version} if version else None)
        if start:
            self.manager.start()

    def predict(self, inputs: dict[str, np.ndarray], output_filter: list[str] | None = None,
                signature: str | None = None) -> Prediction:
        model = self.manager.get(self.model_name)
        return Prediction(model.predict(inputs, signature, output_filter), model.version.version)

    def metadata(self) -> ModelMetadata:
        model = self.manager.get(self.model_name)
        info = model.signature_info[SERVING_SIGNATURE]
        return ModelMetadata(self.model_name, model.version.version, info.inputs, info.outputs, model.metadata)

    def ready(self) -> bool:
        return self.manager.ready(self.model_name)

    def close(self) -> None:
        self.manager.stop()


_STATUS_TO_ERROR: dict[grpc.StatusCode, type[ServingError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.RESOURCE_EXHAUSTED: TooLarge,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
    grpc.StatusCode.FAILED_PRECONDITION: Unavailable,
}


class TFServingBackend(ModelBackend):
    """TensorFlow Serving (or `sipec serve model-server`) over gRPC. With `version` (> 0) every request names
    that version (`model_spec.version`): the server answers it or NOT_FOUND, never another version."""

    kind = "tfserving"

    def __init__(self, address: str, model_name: str, timeout_s: float = 30.0, tls: ClientTLS | None = None,
                 max_message_bytes: int = 64 * 1024 * 1024, channel: grpc.Channel | None = None,
                 token: str | None = None, version: int = 0) -> None:
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        super().__init__(model_name)
        self.version = version
        self.address = address
        self.timeout_s = timeout_s
        self._channel = channel or make_channel(address, tls, max_message_bytes, token=token,
                                                options=BACKEND_RECONNECT_OPTIONS)
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._status = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._meta_lock = threading.Lock()
        self._meta: ModelMetadata | None = None

    def describe(self) -> str:
        pinned = f" version {self.version}" if self.version else ""
        return f"{self.kind} {self.address} model {self.model_name!r}{pinned}"

    def _spec(self, model_spec: Any) -> None:
        model_spec.name = self.model_name
        if self.version:
            model_spec.version.value = self.version

    def _error(self, exc: grpc.RpcError, what: str) -> ServingError:
        cls = _STATUS_TO_ERROR.get(exc.code(), ServingError)
        err = cls(f"{what} at {self.address}: {exc.details()}")
        if cls is ServingError:
            err.code = exc.code()
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            self._notify_unavailable(str(err))
        return err

    def predict(self, inputs: dict[str, np.ndarray], output_filter: list[str] | None = None,
                signature: str | None = None) -> Prediction:
        from tensorflow_serving.apis import predict_pb2

        from sipec.api.tensors import ndarray_to_tensor_proto, tensor_proto_to_ndarray

        req = predict_pb2.PredictRequest()
        self._spec(req.model_spec)
        req.model_spec.signature_name = signature or SERVING_SIGNATURE
        for name, arr in inputs.items():
            ndarray_to_tensor_proto(np.asarray(arr), out=req.inputs[name])
        req.output_filter.extend(output_filter or [])
        try:
            resp = self._predict.Predict(req, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise self._error(exc, f"Predict on model {self.model_name!r}") from exc
        version = resp.model_spec.version.value if resp.model_spec.HasField("version") else 0
        if self._meta is not None and version and version != self._meta.version:
            self._meta = None  # a new version is served: read its metadata again
        return Prediction({k: tensor_proto_to_ndarray(v) for k, v in resp.outputs.items()}, version)

    def metadata(self) -> ModelMetadata:
        with self._meta_lock:
            if self._meta is None:
                self._meta = self._read_metadata()
            return self._meta

    def _read_metadata(self) -> ModelMetadata:
        from tensorflow_serving.apis import get_model_metadata_pb2

        req = get_model_metadata_pb2.GetModelMetadataRequest()
        self._spec(req.model_spec)
        req.metadata_field.append("signature_def")
        try:
            resp = self._predict.GetModelMetadata(req, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise self._error(exc, f"GetModelMetadata of model {self.model_name!r}") from exc
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        resp.metadata["signature_def"].Unpack(sig_map)
        if SERVING_SIGNATURE not in sig_map.signature_def:
            raise Unavailable(f"model {self.model_name!r} at {self.address} has no {SERVING_SIGNATURE!r} signature")
        sig = sig_map.signature_def[SERVING_SIGNATURE]
        info: dict[str, Any] = {}
        if METADATA_SIGNATURE in sig_map.signature_def:
            one = {METADATA_INPUT: np.zeros(1, np.int32)}
            out = self.predict(one, signature=METADATA_SIGNATURE).outputs["metadata"]
            first = out.reshape(-1)[0]
            info = json.loads(first.decode() if isinstance(first, bytes) else first)
        version = resp.model_spec.version.value if resp.model_spec.HasField("version") else 0
        return ModelMetadata(self.model_name, version, _specs(sig.inputs), _specs(sig.outputs), info)

    def ready(self) -> bool:
        from tensorflow_serving.apis import get_model_status_pb2

        req = get_model_status_pb2.GetModelStatusRequest()
        self._spec(req.model_spec)
        try:
            resp = self._status.GetModelStatus(req, timeout=min(self.timeout_s, 5.0))
        except grpc.RpcError:
            return False
        available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return any(s.state == available for s in resp.model_version_status)

    def close(self) -> None:
        self._channel.close()


def _specs(tensor_infos: Any) -> dict[str, TensorSpecInfo]:
    import tensorflow as tf

    out = {}
    for name, ti in sorted(tensor_infos.items()):
        shape = None if ti.tensor_shape.unknown_rank else tuple(
            None if d.size < 0 else int(d.size) for d in ti.tensor_shape.dim)
        dtype = tf.dtypes.as_dtype(ti.dtype)
        out[name] = TensorSpecInfo(name, "object" if dtype == tf.string else np.dtype(dtype.as_numpy_dtype).name,
                                   shape)
    return out


def make_backend(kind: str, model_name: str, model_repo: str | Path | None = None,
                 address: str | None = None, poll_s: float = 2.0, timeout_s: float = 30.0,
                 tls: ClientTLS | None = None, version: int = 0) -> ModelBackend:
    """A backend from CLI-style settings: `local` needs `model_repo`, `tfserving` needs `address`; `version`
    > 0 pins the model version (0: the newest, followed as new versions appear)."""
    if version < 0:
        raise ValueError(f"model version must be >= 0 (0: the newest), not {version}")
    if kind == "local":
        if model_repo is None:
            raise ValueError("the local backend needs --model-repo")
        return LocalBackend(model_repo, model_name, poll_s=poll_s, version=version)
    if kind == "tfserving":
        if not address:
            raise ValueError("the tfserving backend needs --tfserving ADDRESS (host:port)")
        from sipec.serving.auth import client_token

        # a model-server started with --auth-token-file needs the token; TF Serving ignores the header
        return TFServingBackend(address, model_name, timeout_s=timeout_s, tls=tls, token=client_token(),
                                version=version)
    raise ValueError(f"unknown backend {kind!r}: use 'local' or 'tfserving'")
