"""The model repository, in TensorFlow Serving's layout.

```
<repo>/<model_name>/<version>/saved_model.pb
                             /variables/...
                             /assets/sipec.json     labels, keypoint names, input size, training summary
```

Versions are positive integers; the newest complete one is served. A version is written to a hidden
temporary directory and renamed into place when complete, so a server polling the repository never
sees half a model. Every SavedModel exported here also carries its metadata in the graph, as the
`sipec_metadata` signature (input `batch`: int32 (N,), output `metadata`: the same JSON, N times; an input is
needed because TF Serving's batching refuses signatures without one): a module
service reading a model through TF Serving, which does not serve assets, learns its labels that way.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sipec.serving.errors import InvalidInput, NotFound

METADATA_FILE = "sipec.json"
METADATA_SIGNATURE = "sipec_metadata"
SERVING_SIGNATURE = "serving_default"
METADATA_INPUT = "batch"     # int32 (N,): the metadata JSON comes back N times
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_model_name(name: str) -> str:
    """A model name is one path component of letters, digits, '_', '.', '-' (no traversal)."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in {".", ".."} or ".." in name:
        shown = repr(name[:64]) + (f"... ({len(name)} characters)" if len(name) > 64 else "") \
            if isinstance(name, str) else repr(name)
        raise InvalidInput(f"invalid model name {shown}: use letters, digits, '_', '.' and '-' "
                           "(at most 128, starting with a letter or digit)")
    return name


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    path: Path

    @property
    def metadata_path(self) -> Path:
        return self.path / "assets" / METADATA_FILE

    def metadata(self) -> dict[str, Any]:
        """assets/sipec.json, or {} when the model has none (e.g. a SavedModel made elsewhere)."""
        try:
            return json.loads(self.metadata_path.read_text())
        except FileNotFoundError:
            return {}


def _is_complete_version(path: Path) -> bool:
    return path.is_dir() and path.name.isdigit() and int(path.name) > 0 and (path / "saved_model.pb").is_file()


class ModelRepository:
    """Read and write a TF-Serving-layout model repository."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def models(self) -> list[str]:
        """Names of models with at least one complete version."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and _NAME_RE.match(p.name) and self.versions(p.name))

    def versions(self, name: str) -> list[int]:
        d = self.root / check_model_name(name)
        if not d.is_dir():
            return []
        return sorted(int(p.name) for p in d.iterdir() if _is_complete_version(p))

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        """The given version, or the newest; NotFound naming what exists otherwise."""
        versions = self.versions(name)
        if not versions:
            known = ", ".join(self.models()) or "none"
            raise NotFound(f"model {name!r} not found in repository {self.root} (models: {known})")
        if version is None:
            version = versions[-1]
        elif version not in versions:
            raise NotFound(f"version {version} of model {name!r} not found in {self.root} "
                           f"(versions: {', '.join(map(str, versions))})")
        return ModelVersion(name, version, self.root / name / str(version))

    def next_version(self, name: str) -> int:
        existing = [int(p.name) for p in (self.root / check_model_name(name)).glob("*") if p.name.isdigit()]
        return max(existing, default=0) + 1

    def export(self, model: Any, name: str, metadata: dict[str, Any], version: int | None = None,
               serve_fn: Callable[..., Any] | None = None,
               input_signature: Sequence[Any] | None = None) -> ModelVersion:
        """Export a Keras model (or a `serve_fn` with its input signature) as a new version.

        The serving signature takes the model's named inputs (uint8 images, rescaled in the graph) and
        returns a dict of named outputs. `metadata` becomes assets/sipec.json and the
        `sipec_metadata` signature. Returns the written version.
        """
        check_model_name(name)   # before anything else: a bad name never reaches the file system
        import tensorflow as tf
        from keras.export import ExportArchive

        version = version or self.next_version(name)
        final = self.root / name / str(version)
        if final.exists():
            raise FileExistsError(f"{final} exists; versions are never overwritten")
        meta = dict(metadata)
        meta.setdefault("model_name", name)
        meta.setdefault("created", _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
        meta["version"] = version
        meta_json = json.dumps(meta, indent=2, sort_keys=True)

        if input_signature is None:
            input_signature = [tf.TensorSpec(t.shape, t.dtype, name=_input_name(t)) for t in model.inputs]
        names = [s.name for s in input_signature]
        if serve_fn is None:
            def serve_fn(*xs: Any) -> Any:
                out = model(dict(zip(names, xs, strict=True)) if len(xs) > 1 else xs[0], training=False)
                return out if isinstance(out, dict) else {"output": out}

        archive = ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", tf.autograph.experimental.do_not_convert(serve_fn),
                             input_signature=list(input_signature))

        # a batch-shaped input: TF Serving's batching refuses signatures without inputs
        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name=METADATA_INPUT)], autograph=False)
        def sipec_metadata(batch: Any) -> dict[str, Any]:
            return {"metadata": tf.fill(tf.shape(batch), tf.constant(meta_json))}

        archive.add_endpoint(METADATA_SIGNATURE, sipec_metadata)
        tmp = self.root / name / f".tmp-{version}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            archive.write_out(str(tmp), verbose=False)
            (tmp / "assets").mkdir(exist_ok=True)
            (tmp / "assets" / METADATA_FILE).write_text(meta_json + "\n")
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return ModelVersion(name, version, final)


def _input_name(t: Any) -> str:
    # Keras 3 keeps the Input(name=...) on the tensor's history; fall back to the tensor's own name
    name = getattr(t, "name", None) or "input"
    return str(name).split(":")[0]
