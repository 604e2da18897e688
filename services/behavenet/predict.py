"""Running BehaveNet over a CropSet: frame-only and temporal probabilities for every crop.

The same code runs Keras models fresh from training and the SavedModels of a model repository, so
`sipec evaluate behavenet` measures exactly what the service serves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.behavenet.data import CropSet
from services.behavenet.model import CROP_INPUT, FEATURES_INPUT, FEATURES_OUTPUT, PROBABILITIES_OUTPUT
from services.behavenet.train import TrainedBehaveNet, model_names, window_rows

Array = np.ndarray


@dataclass
class Predictors:
    """Batch functions of the three networks and the window half-width they were trained with."""

    features: Callable[[Array], Array]    # (B, S, S, 3) uint8 -> (B, F)
    frame: Callable[[Array], Array]       # (B, S, S, 3) uint8 -> (B, C)
    temporal: Callable[[Array], Array]    # (B, 2n+1, F) -> (B, C)
    n: int
    metadata: dict[str, Any]


def keras_predictors(trained: TrainedBehaveNet) -> Predictors:
    def call(model: Any) -> Callable[[Array], Array]:
        return lambda x: np.asarray(model(x, training=False), dtype=np.float32)

    return Predictors(call(trained.features), call(trained.frame), call(trained.temporal),
                      trained.settings.temporal.n, {"crops": trained.settings.crops.to_json(),
                                                    "class_names": trained.behaviours})


def repository_predictors(repo: str | Path, name: str, features_name: str | None = None,
                          frame_name: str | None = None) -> Predictors:
    """The newest versions of the three models in a repository (NotFound naming what is missing)."""
    from sipec.serving.models import LoadedModel
    from sipec.serving.repository import ModelRepository

    names = model_names(name)
    repository = ModelRepository(repo)
    temporal = LoadedModel(repository.get(name))
    features = LoadedModel(repository.get(features_name or names["features"]))
    frame = LoadedModel(repository.get(frame_name or names["frame"]))
    meta = temporal.metadata

    def call(model: LoadedModel, inp: str, out: str) -> Callable[[Array], Array]:
        return lambda x: np.asarray(model.predict({inp: x}, output_filter=[out])[out], dtype=np.float32)

    return Predictors(call(features, CROP_INPUT, FEATURES_OUTPUT), call(frame, CROP_INPUT, PROBABILITIES_OUTPUT),
                      call(temporal, FEATURES_INPUT, PROBABILITIES_OUTPUT), int(meta["window"]["n"]), meta)


def predict_cropset(predictors: Predictors, data: CropSet, batch: int = 256) -> dict[str, Array]:
    """{"frame": (N, C), "temporal": (N, C)} probabilities for every row of `data`."""
    num = len(data)
    if num == 0:
        c = len(data.behaviours)
        return {"frame": np.zeros((0, c), np.float32), "temporal": np.zeros((0, c), np.float32)}
    feats = np.concatenate([predictors.features(data.crops[i:i + batch]) for i in range(0, num, batch)])
    frame = np.concatenate([predictors.frame(data.crops[i:i + batch]) for i in range(0, num, batch)])
    win = window_rows(data, predictors.n)
    rows = np.concatenate([s.rows for s in data.sequences])
    temporal = np.zeros_like(frame)
    for i in range(0, len(win), batch):
        temporal[rows[i:i + batch]] = predictors.temporal(feats[win[i:i + batch]].astype(np.float32))
    return {"frame": frame, "temporal": temporal}
