"""`sipec serve model-server`: TensorFlow Serving's gRPC protocol, served from a model repository.

For machines where the TF Serving binary is not installed. Speaks the same
`tensorflow.serving.PredictionService` (Predict, GetModelMetadata) and `tensorflow.serving.ModelService`
(GetModelStatus) as TF Serving, from the same repository layout, with the same "newest version"
policy and hot loading of new versions, or, with `--model-config-file` (TF Serving's own models.config), the
models it lists and the version each pins (``specific { versions: N }``). Classify, Regress, MultiInference and
HandleReloadConfigRequest answer UNIMPLEMENTED.

Errors: unknown model or version -> NOT_FOUND naming it; a malformed model name ("../x", "a/b", "") ->
INVALID_ARGUMENT before anything is looked up; wrong input name, dtype or shape, or an input without
elements -> INVALID_ARGUMENT naming the input and what was expected; a tensor whose shape claims more
than `sipec.api.tensors.DEFAULT_MAX_TENSOR_BYTES` (a few bytes can claim terabytes) -> RESOURCE_EXHAUSTED
before anything is allocated; oversize message -> RESOURCE_EXHAUSTED (gRPC's own limit,
`--max-message-mb`). The server keeps serving after each.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from sipec.api.convert import TooLargeError
from sipec.api.tensors import ndarray_to_tensor_proto, tensor_proto_to_ndarray
from sipec.serving.errors import InvalidInput, NotFound, TooLarge, grpc_errors
from sipec.serving.models import LoadedModel, ModelManager
from sipec.serving.repository import ModelRepository, check_model_name
from sipec.serving.runtime import ServerConfig, ServiceRuntime

log = logging.getLogger("sipec.model_server")

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"


def _requested_version(model_spec: Any) -> int | None:
    if model_spec.HasField("version"):
        return int(model_spec.version.value)
    if model_spec.version_label:
        raise InvalidInput(f"version labels are not supported (got {model_spec.version_label!r}); "
                           "ask for a version number or none for the newest")
    return None


def _read_signature_defs(model: LoadedModel) -> dict[str, Any]:
    """SignatureDefs as TF Serving reports them, read from the SavedModel's own saved_model.pb."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((model.version.path / "saved_model.pb").read_bytes())
    return dict(sm.meta_graphs[0].signature_def) if sm.meta_graphs else {}


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager: ModelManager, runtime: ServiceRuntime | None = None) -> None:
        self.manager = manager
        self.runtime = runtime
        self._sigdefs: dict[tuple[str, int], dict[str, Any]] = {}

    @grpc_errors
    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext):
        spec = request.model_spec
        check_model_name(spec.name)   # one path component: "../x" or "a/b" is INVALID_ARGUMENT
        model = self.manager.get(spec.name, _requested_version(spec))
        inputs: dict[str, np.ndarray] = {}
        for name, tensor in request.inputs.items():
            try:
                inputs[name] = tensor_proto_to_ndarray(tensor)
            except ValueError as exc:   # ConversionError; TooLargeError keeps RESOURCE_EXHAUSTED
                cls = TooLarge if isinstance(exc, TooLargeError) else InvalidInput
                raise cls(f"model {spec.name!r} input {name!r}: {exc}") from exc
        outputs = model.predict(inputs, spec.signature_name or None, list(request.output_filter) or None)
        if self.runtime is not None:
            batch = next((a.shape[0] for a in inputs.values() if a.ndim > 0), 1)
            self.runtime.metrics.observe_batch(spec.name, int(batch))
        resp = predict_pb2.PredictResponse()
        resp.model_spec.name = model.name
        resp.model_spec.version.value = model.version.version
        resp.model_spec.signature_name = model.signature(spec.signature_name or None)[0]
        for name, arr in outputs.items():
            ndarray_to_tensor_proto(arr, out=resp.outputs[name])
        return resp

    @grpc_errors
    def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest,
                         context: grpc.ServicerContext):
        spec = request.model_spec
        check_model_name(spec.name)
        fields = list(request.metadata_field)
        if fields != ["signature_def"]:
            raise InvalidInput(f"metadata_field must be ['signature_def'], got {fields}")
        model = self.manager.get(spec.name, _requested_version(spec))
        key = (model.name, model.version.version)
        if key not in self._sigdefs:
            self._sigdefs = {key: _read_signature_defs(model),
                             **{k: v for k, v in self._sigdefs.items() if k[0] != model.name}}
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for name, sig in self._sigdefs[key].items():
            sig_map.signature_def[name].CopyFrom(sig)
        resp = get_model_metadata_pb2.GetModelMetadataResponse()
        resp.model_spec.name = model.name
        resp.model_spec.version.value = model.version.version
        resp.metadata["signature_def"].Pack(sig_map)
        return resp

    def _unimplemented(self, request: Any, context: grpc.ServicerContext):
        context.abort(grpc.StatusCode.UNIMPLEMENTED,
                      "sipec model-server implements Predict and GetModelMetadata only")

    Classify = Regress = MultiInference = _unimplemented


class ModelStatusServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    @grpc_errors
    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext):
        spec = request.model_spec
        check_model_name(spec.name)
        wanted = _requested_version(spec)
        state = self.manager.state(spec.name)
        if state is None:
            known = ", ".join(self.manager.model_names()) or "none"
            raise NotFound(f"model {spec.name!r} is not served here (models: {known})")
        mvs = get_model_status_pb2.ModelVersionStatus
        resp = get_model_status_pb2.GetModelStatusResponse()
        entries: list[tuple[int, int, str]] = []
        if state.loaded is not None:
            entries.append((state.loaded.version.version, mvs.AVAILABLE, ""))
        if state.loading_version is not None:
            entries.append((state.loading_version, mvs.LOADING, ""))
        for v in sorted(state.failed_versions):
            entries.append((v, mvs.END, state.error or "failed to load"))
        if wanted is not None:
            entries = [e for e in entries if e[0] == wanted]
            if not entries:
                raise NotFound(f"version {wanted} of model {spec.name!r} is not served")
        for version, st, err in entries:
            s = resp.model_version_status.add(version=version, state=st)
            if err:
                s.status.error_code = grpc.StatusCode.UNKNOWN.value[0]
                s.status.error_message = err
        return resp

    def HandleReloadConfigRequest(self, request: Any, context: grpc.ServicerContext):
        context.abort(grpc.StatusCode.UNIMPLEMENTED,
                      "the model-server follows its repository; drop a new version directory in instead")


class ModelServer:
    """The model server: a ServiceRuntime with the two TF Serving services and a repository manager."""

    def __init__(self, model_repo: str | Path, config: ServerConfig | None = None,
                 names: list[str] | None = None, poll_s: float = 2.0, pinned: dict[str, int] | None = None) -> None:
        self.repository = ModelRepository(model_repo)
        self.manager = ModelManager(self.repository, names, poll_s=poll_s, pinned=pinned)
        self.runtime = ServiceRuntime("model-server", config)
        self.runtime.add_service(prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server,
                                 PredictionServicer(self.manager, self.runtime), PREDICTION_SERVICE)
        self.runtime.add_service(model_service_pb2_grpc.add_ModelServiceServicer_to_server,
                                 ModelStatusServicer(self.manager), MODEL_SERVICE)
        self._health_stop = threading.Event()

    def start(self) -> int:
        """Start listening at once (NOT_SERVING), load the repository, then turn SERVING."""
        port = self.runtime.start()
        self.manager.start()
        self._update_health()
        threading.Thread(target=self._health_loop, name="model-health", daemon=True).start()
        log.info("models served", extra={"models": ",".join(self.manager.model_names()),
                                         "repository": str(self.repository.root)})
        return port

    def _update_health(self) -> None:
        self.runtime.set_serving(self.manager.ready())

    def _health_loop(self) -> None:
        while not self._health_stop.wait(max(self.manager.poll_s, 0.5)):
            self._update_health()

    def stop(self, grace_s: float | None = None) -> None:
        self._health_stop.set()
        self.runtime.stop(grace_s)
        self.manager.stop()

    def serve_forever(self) -> None:
        if self.runtime.port is None:
            self.start()
        self.runtime.install_signal_handlers()
        self.runtime.wait()
        self._health_stop.set()
        self.manager.stop()
