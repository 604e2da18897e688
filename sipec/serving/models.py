"""Loaded SavedModels, input validation, and a manager that follows a repository's newest versions.

Used by the local backend (a model inside the service process) and by `sipec serve model-server`
(TF Serving's protocol); both therefore validate and answer identically.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sipec.serving.errors import InvalidInput, NotFound, Unavailable
from sipec.serving.repository import (
    METADATA_INPUT,
    METADATA_SIGNATURE,
    SERVING_SIGNATURE,
    ModelRepository,
    ModelVersion,
)

log = logging.getLogger("sipec.serving.models")


@dataclass(frozen=True)
class TensorSpecInfo:
    name: str
    dtype: str                      # numpy dtype name ("uint8", "float32", "object" for strings)
    shape: tuple[int | None, ...] | None   # None: unknown rank

    def describe(self) -> str:
        dims = "?" if self.shape is None else "(" + ", ".join("None" if d is None else str(d)
                                                              for d in self.shape) + ")"
        return f"{self.dtype}{dims}"


@dataclass
class SignatureInfo:
    inputs: dict[str, TensorSpecInfo]
    outputs: dict[str, TensorSpecInfo]


def _spec_info(name: str, spec: Any) -> TensorSpecInfo:
    shape = None if spec.shape.rank is None else tuple(spec.shape.as_list())
    dtype = "object" if spec.dtype.name == "string" else spec.dtype.as_numpy_dtype().dtype.name
    return TensorSpecInfo(name, dtype, shape)


class LoadedModel:
    """One version of one model, loaded in this process, callable by signature."""

    def __init__(self, version: ModelVersion) -> None:
        import tensorflow as tf

        self.version = version
        t0 = time.perf_counter()
        self._obj = tf.saved_model.load(str(version.path))
        self.signatures: dict[str, Any] = dict(self._obj.signatures)
        self.signature_info: dict[str, SignatureInfo] = {}
        for key, fn in self.signatures.items():
            _, kwargs = fn.structured_input_signature
            self.signature_info[key] = SignatureInfo(
                inputs={n: _spec_info(n, s) for n, s in sorted(kwargs.items())},
                outputs={n: _spec_info(n, s) for n, s in sorted(fn.structured_outputs.items())},
            )
        self.metadata: dict[str, Any] = version.metadata() or self._graph_metadata()
        self.load_seconds = time.perf_counter() - t0

    def _graph_metadata(self) -> dict[str, Any]:
        import tensorflow as tf

        fn = self.signatures.get(METADATA_SIGNATURE)
        if fn is None:
            return {}
        return json.loads(fn(**{METADATA_INPUT: tf.zeros([1], tf.int32)})["metadata"].numpy()[0].decode())

    @property
    def name(self) -> str:
        return self.version.name

    def signature(self, key: str | None) -> tuple[str, SignatureInfo]:
        key = key or SERVING_SIGNATURE
        if key not in self.signature_info:
            raise InvalidInput(f"model {self.name!r} version {self.version.version} has no signature {key!r} "
                               f"(signatures: {', '.join(sorted(self.signature_info))})")
        return key, self.signature_info[key]

    def predict(self, inputs: dict[str, np.ndarray], signature: str | None = None,
                output_filter: list[str] | None = None) -> dict[str, np.ndarray]:
        import tensorflow as tf

        key, info = self.signature(signature)
        validate_inputs(self.name, info, inputs)
        wanted = _check_outputs(self.name, info, output_filter)
        tensors = {n: tf.constant(a) for n, a in inputs.items()}
        try:
            out = self.signatures[key](**tensors)
        except tf.errors.InvalidArgumentError as exc:
            raise InvalidInput(f"model {self.name!r} rejected the input: {exc.message}") from exc
        return {n: out[n].numpy() for n in wanted}


def validate_inputs(model: str, info: SignatureInfo, inputs: dict[str, np.ndarray]) -> None:
    """INVALID_ARGUMENT naming the input and what was expected, for every mismatch."""
    missing = sorted(set(info.inputs) - set(inputs))
    unknown = sorted(set(inputs) - set(info.inputs))
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing input(s) {', '.join(map(repr, missing))}")
        if unknown:
            parts.append(f"unknown input(s) {', '.join(map(repr, unknown))}")
        expected = ", ".join(f"{n}: {s.describe()}" for n, s in info.inputs.items())
        raise InvalidInput(f"model {model!r}: {'; '.join(parts)}; expected inputs {expected}")
    for name, arr in inputs.items():
        spec = info.inputs[name]
        got_dtype = "object" if arr.dtype.kind in "OSU" else arr.dtype.name
        if got_dtype != spec.dtype:
            raise InvalidInput(f"model {model!r} input {name!r}: dtype {got_dtype}, expected {spec.dtype}")
        if arr.size == 0:
            # TensorFlow's kernels answer an empty batch with errors that name no input (oneDNN convolutions:
            # "input depth must be evenly divisible by filter depth")
            raise InvalidInput(f"model {model!r} input {name!r}: shape {tuple(arr.shape)} has no elements; "
                               "send at least one example")
        if spec.shape is None:
            continue
        if arr.ndim != len(spec.shape) or any(d is not None and d != g for d, g in zip(spec.shape, arr.shape,
                                                                                          strict=True)):
            raise InvalidInput(f"model {model!r} input {name!r}: shape {tuple(arr.shape)}, "
                               f"expected {spec.describe()} (None = any size)")


def _check_outputs(model: str, info: SignatureInfo, output_filter: list[str] | None) -> list[str]:
    if not output_filter:
        return list(info.outputs)
    unknown = [n for n in output_filter if n not in info.outputs]
    if unknown:
        raise InvalidInput(f"model {model!r}: unknown output(s) {', '.join(map(repr, unknown))} "
                           f"(outputs: {', '.join(info.outputs)})")
    return list(dict.fromkeys(output_filter))


@dataclass
class ModelState:
    """What the manager knows of one model: the served version and the last load error."""

    loaded: LoadedModel | None = None
    loading_version: int | None = None
    error: str | None = None
    failed_versions: set[int] = field(default_factory=set)


class ModelManager:
    """Serves the newest version of each model in a repository and follows it without restarts; or, for a
    model in ``pinned``, exactly that version (loaded once it appears, never replaced by a newer one).

    A background thread polls the repository every `poll_s` seconds; a new version is loaded beside the
    served one and swapped in once loaded, so calls never wait for a load. A version that fails to load is
    logged and skipped (the older one stays served). `names=None` serves every model in the repository.
    """

    def __init__(self, repository: ModelRepository, names: list[str] | None = None,
                 poll_s: float = 2.0, pinned: dict[str, int] | None = None) -> None:
        self.repository = repository
        self.names = names
        self.pinned = dict(pinned or {})   # model -> the one version to serve (TF Serving's `specific` policy)
        self.poll_s = poll_s
        self._states: dict[str, ModelState] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.initial_load_done = threading.Event()

    def start(self) -> None:
        self.refresh()
        self.initial_load_done.set()
        if self.poll_s > 0:
            self._thread = threading.Thread(target=self._poll, name="model-poll", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - polling must never die
                log.exception("repository poll failed")

    def refresh(self) -> None:
        """Load any model version newer than the served one (the pinned version of a pinned model)."""
        names = self.names if self.names is not None else self.repository.models()
        for name in names:
            with self._lock:
                state = self._states.setdefault(name, ModelState())
            versions = [v for v in self.repository.versions(name) if v not in state.failed_versions]
            if not versions:
                if state.loaded is None:
                    state.error = f"no loadable version of model {name!r} in {self.repository.root}"
                continue
            newest = versions[-1]
            if name in self.pinned:
                newest = self.pinned[name]
                if newest not in versions:
                    if state.loaded is None:
                        state.error = (f"version {newest} of model {name!r} (pinned) is not in {self.repository.root}"
                                       f" or failed to load (versions there: {versions or 'none'})")
                    continue
            if state.loaded is not None and state.loaded.version.version == newest:
                continue
            state.loading_version = newest
            try:
                loaded = LoadedModel(self.repository.get(name, newest))
            except Exception as exc:  # noqa: BLE001 - a broken version must not take the server down
                state.failed_versions.add(newest)
                state.error = f"version {newest} of {name!r} failed to load: {exc}"
                log.error("model load failed", extra={"model": name, "version": newest, "error": str(exc)})
                continue
            finally:
                state.loading_version = None
            with self._lock:
                previous = state.loaded
                state.loaded = loaded
                state.error = None
            log.info("model loaded", extra={"model": name, "version": newest,
                                            "replaced": previous.version.version if previous else None,
                                            "seconds": round(loaded.load_seconds, 2)})

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(self._states)

    def state(self, name: str) -> ModelState | None:
        with self._lock:
            return self._states.get(name)

    def get(self, name: str, version: int | None = None) -> LoadedModel:
        """The served model; NotFound for an unknown model or a version not served, Unavailable if not loaded."""
        with self._lock:
            state = self._states.get(name)
        if state is None:
            known = ", ".join(self.model_names()) or "none"
            raise NotFound(f"model {name!r} is not served here (models: {known})")
        loaded = state.loaded
        if loaded is None:
            raise Unavailable(f"model {name!r} is not loaded: {state.error or 'loading'}")
        if version is not None and version != loaded.version.version:
            raise NotFound(f"version {version} of model {name!r} is not served "
                           f"(serving version {loaded.version.version})")
        return loaded

    def ready(self, name: str | None = None) -> bool:
        if not self.initial_load_done.is_set():
            return False
        with self._lock:
            states = [self._states.get(name)] if name else list(self._states.values())
        return bool(states) and all(s is not None and s.loaded is not None for s in states)
