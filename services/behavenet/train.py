"""Training BehaveNet in SIPEC's two stages, and exporting its three SavedModels.

1. The frame classifier (Xception features + softmax) learns frame by frame from individual and pair
   crops: Adam, lr 3.5e-4, clipnorm 0.5, batch 36, focal loss (gamma 3, alpha 0.5). Crops are
   augmented with random flips, quarter turns (the camera looks straight down) and brightness/contrast.
2. The batch-norm moving averages are recomputed from training batches (precise BN), the feature
   network is frozen and the features of every crop are computed once (inference mode).
3. The temporal network learns from windows [t-n, t+n] of those features within each subject's
   sequence (edge-padded): Adam, lr 1e-4, clipnorm 0.5, batch 16, the same focal loss.

Exported (one version number for all three, and a shared `run_id` in their metadata; `input` in the
temporal model's metadata, which the service's GetModelInfo reports, is the crop side callers cut in
source pixels, `crops.input_size` the network's input the service resizes crops to):
- `<name>-features`: uint8 crop (B, S, S, 3) -> {"features": (B, F)}, what the service runs once per crop;
- `<name>`: {"features": (B, 2n+1, F)} -> {"probabilities": (B, C)}, the temporal network;
- `<name>-frame`: uint8 crop -> {"probabilities"}, the frame-only classifier for comparisons.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.behavenet.crops import CropSettings
from services.behavenet.data import CropSet
from services.behavenet.model import (
    CROP_INPUT,
    FEATURES_INPUT,
    FEATURES_OUTPUT,
    PROBABILITIES_OUTPUT,
    TemporalConfig,
    feature_network,
    frame_classifier,
    temporal_network,
)
from services.behavenet.windows import sequence_window_indices
from services.behavenet.xception import BACKBONES

log = logging.getLogger("sipec.behavenet.train")

FRAME_LR = 3.5e-4
TEMPORAL_LR = 1e-4
CLIPNORM = 0.5
BN_BATCHES = 200   # training batches whose statistics become the batch-norm moving averages after stage 1


@dataclass
class TrainSettings:
    """Everything a training run needs besides the data."""

    backbone: str = "xception-small"
    crops: CropSettings = field(default_factory=CropSettings)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    frame_epochs: int = 16
    temporal_epochs: int = 16
    frame_batch: int = 36
    temporal_batch: int = 16
    frame_lr: float = FRAME_LR
    temporal_lr: float = TEMPORAL_LR
    clipnorm: float = CLIPNORM
    gamma: float = 3.0
    alpha: float = 0.5
    frame_step: int = 3          # stage 1 sees every k-th crop of each sequence (stage 2 sees all)
    augment: bool = True
    weights: str | None = None   # None, 'imagenet' or a .weights.h5 of the feature network
    seed: int = 0

    def validate(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, not {self.backbone!r}")
        self.crops.validate()
        self.temporal.validate()
        for name in ("frame_epochs", "temporal_epochs", "frame_batch", "temporal_batch", "frame_step"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")


@dataclass
class TrainedBehaveNet:
    features: Any          # keras.Model crop -> features
    frame: Any             # keras.Model crop -> probabilities
    temporal: Any          # keras.Model window of features -> probabilities
    behaviours: list[str]
    settings: TrainSettings
    history: dict[str, dict[str, list[float]]]
    data: dict[str, Any]
    run_id: str
    seconds: float

    @property
    def feature_size(self) -> int:
        return int(self.features.output.shape[-1])


def _keras_dataset_base() -> type:
    import keras

    return keras.utils.PyDataset


def augment_batch(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random flips, quarter turns and brightness/contrast changes of a (B, S, S, 3) uint8 batch."""
    out = np.empty_like(x)
    for i in range(len(x)):
        img = np.rot90(x[i], int(rng.integers(4)))
        if rng.random() < 0.5:
            img = img[:, ::-1]
        out[i] = img
    gain = rng.uniform(0.8, 1.2, (len(x), 1, 1, 1))
    bias = rng.uniform(-20, 20, (len(x), 1, 1, 1))
    return np.clip(out.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)


def make_crop_batches(crops: np.ndarray, labels: np.ndarray, rows: np.ndarray, num_classes: int, batch: int,
                      augment: bool, seed: int) -> Any:
    """A shuffling Keras PyDataset of (crops, one-hot labels) batches."""
    base = _keras_dataset_base()

    class CropBatches(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(rows)

        def __len__(self) -> int:
            return math.ceil(len(rows) / batch)

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            idx = np.sort(self.order[i * batch:(i + 1) * batch])
            x = crops[idx]
            if augment:
                x = augment_batch(x, self.rng)
            return x, np.eye(num_classes, dtype=np.float32)[labels[idx]]

        def on_epoch_end(self) -> None:
            self.order = self.rng.permutation(rows)

    return CropBatches()


def make_window_batches(features: np.ndarray, window_rows: np.ndarray, labels: np.ndarray, num_classes: int,
                        batch: int, seed: int) -> Any:
    """A shuffling Keras PyDataset of (feature windows (B, 2n+1, F), one-hot labels of the centre frames)."""
    base = _keras_dataset_base()

    class WindowBatches(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(window_rows))

        def __len__(self) -> int:
            return math.ceil(len(window_rows) / batch)

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            idx = self.order[i * batch:(i + 1) * batch]
            return features[window_rows[idx]], np.eye(num_classes, dtype=np.float32)[labels[idx]]

        def on_epoch_end(self) -> None:
            self.order = self.rng.permutation(len(window_rows))

    return WindowBatches()


def stage1_rows(data: CropSet, step: int) -> np.ndarray:
    """Rows stage 1 trains on: every `step`-th crop of each sequence."""
    parts = [s.rows[::step] for s in data.sequences]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def recalibrate_batch_norm(model: Any, crops: np.ndarray, rows: np.ndarray, batch: int, max_batches: int,
                           seed: int) -> int:
    """Set every batch-norm layer's moving mean and variance to the average of its batch statistics over
    up to `max_batches` training batches (precise BN, Wu & Johnson 2021); returns the batches used.

    Keras' moving averages (momentum 0.99) lag behind the weights in short trainings, so the network in
    inference mode differs from the one trained; averaging the statistics of the final weights removes that.
    """
    import keras

    bns = [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    if not bns or len(rows) == 0:
        return 0
    rng = np.random.default_rng(seed)
    order = rng.permutation(rows)
    momenta = [layer.momentum for layer in bns]
    used = 0
    try:
        for k in range(min(max_batches, math.ceil(len(order) / batch))):
            for layer in bns:
                layer.momentum = k / (k + 1.0)   # moving = running mean of the batch statistics
            model(crops[np.sort(order[k * batch:(k + 1) * batch])], training=True)
            used += 1
    finally:
        for layer, m in zip(bns, momenta, strict=True):
            layer.momentum = m
    return used


def _all_layers(model: Any) -> list[Any]:
    out = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers"):
            out += _all_layers(layer)
    return out


def compute_features(features_model: Any, crops: np.ndarray, batch: int = 256) -> np.ndarray:
    """(N, F) float32 features of (N, S, S, 3) uint8 crops, in inference mode."""
    out = [np.asarray(features_model(crops[i:i + batch], training=False), dtype=np.float32)
           for i in range(0, len(crops), batch)]
    return np.concatenate(out) if out else np.zeros((0, int(features_model.output.shape[-1])), np.float32)


def window_rows(data: CropSet, n: int) -> np.ndarray:
    """(N, 2n+1) row indices of every crop's window within its sequence (edge-padded)."""
    starts = np.array([s.start for s in data.sequences], dtype=np.int64)
    lengths = np.array([len(s) for s in data.sequences], dtype=np.int64)
    return sequence_window_indices(starts, lengths, n)


def _sequence_order_rows(data: CropSet) -> np.ndarray:
    """Row of each window returned by window_rows (sequences in order)."""
    return np.concatenate([s.rows for s in data.sequences]) if data.sequences else np.zeros(0, np.int64)


def _fit_callbacks(progress: Callable[[str], None] | None, stage: str) -> list[Any]:
    import keras

    class Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if progress is not None:
                text = ", ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items())
                progress(f"{stage} epoch {epoch + 1}: {text}")

    return [Report()]


def train_behavenet(data: CropSet, settings: TrainSettings, progress: Callable[[str], None] | None = None
                    ) -> TrainedBehaveNet:
    """Both stages on `data`; returns the three Keras models."""
    import keras

    from services.behavenet.losses import FocalLoss

    settings.validate()
    if data.settings != settings.crops:
        raise ValueError("the crops were cut with other settings than the training settings")
    if len(data) == 0:
        raise ValueError("no crops to train on: no labelled animal is visible in the data")
    started = time.time()
    keras.utils.set_random_seed(settings.seed)
    num_classes = len(data.behaviours)
    backbone = BACKBONES[settings.backbone]
    loss = FocalLoss(settings.gamma, settings.alpha)

    features = feature_network(settings.crops.input_size, backbone, settings.weights)
    frame = frame_classifier(features, num_classes)
    frame.compile(optimizer=keras.optimizers.Adam(settings.frame_lr, clipnorm=settings.clipnorm), loss=loss,
                  metrics=["accuracy"])
    rows1 = stage1_rows(data, settings.frame_step)
    log.info("stage 1: frame classifier on %d crops (%s, %d classes)", len(rows1), settings.backbone, num_classes)
    h1 = frame.fit(make_crop_batches(data.crops, data.labels, rows1, num_classes, settings.frame_batch,
                                     settings.augment, settings.seed),
                   epochs=settings.frame_epochs, verbose=0, callbacks=_fit_callbacks(progress, "frame"))

    used = recalibrate_batch_norm(frame, data.crops, rows1, settings.frame_batch, BN_BATCHES, settings.seed)
    log.info("batch-norm statistics recomputed over %d batches", used)
    features.trainable = False
    feats = compute_features(features, data.crops)
    win = window_rows(data, settings.temporal.n)
    centre = _sequence_order_rows(data)
    temporal = temporal_network(feats.shape[1], num_classes, settings.temporal)
    temporal.compile(optimizer=keras.optimizers.Adam(settings.temporal_lr, clipnorm=settings.clipnorm), loss=loss,
                     metrics=["accuracy"])
    log.info("stage 2: temporal network on %d windows of %d frames", len(win), settings.temporal.window)
    h2 = temporal.fit(make_window_batches(feats, win, data.labels[centre], num_classes, settings.temporal_batch,
                                          settings.seed + 1),
                      epochs=settings.temporal_epochs, verbose=0, callbacks=_fit_callbacks(progress, "temporal"))
    counts = np.bincount(data.labels, minlength=num_classes)
    summary = {
        "videos": data.videos(), "crops": int(len(data)), "stage1_crops": int(len(rows1)),
        "individual_crops": int(len(data.rows("individual"))), "pair_crops": int(len(data.rows("pair"))),
        "class_counts": {b: int(c) for b, c in zip(data.behaviours, counts, strict=True)},
    }
    return TrainedBehaveNet(features, frame, temporal, list(data.behaviours), settings,
                            {"frame": _history(h1), "temporal": _history(h2)}, summary, uuid.uuid4().hex[:12],
                            time.time() - started)


def _history(h: Any) -> dict[str, list[float]]:
    return {k: [float(v) for v in vs] for k, vs in getattr(h, "history", {}).items()}


def model_names(name: str) -> dict[str, str]:
    """Repository names of the three models of a BehaveNet called `name`."""
    return {"temporal": name, "features": f"{name}-features", "frame": f"{name}-frame"}


def export_behavenet(trained: TrainedBehaveNet, repo: Any, name: str, version: int | None = None,
                     training: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the three models into the repository (one version for all); returns their ModelVersions by role."""
    import keras

    from sipec.serving.repository import ModelRepository

    repo = repo if isinstance(repo, ModelRepository) else ModelRepository(repo)
    names = model_names(name)
    version = version or max(repo.next_version(n) for n in names.values())
    s = trained.settings
    size = s.crops.input_size
    backbone = BACKBONES[s.backbone]
    common = {
        "module": "behavenet", "class_names": trained.behaviours, "run_id": trained.run_id,
        "crops": s.crops.to_json(), "window": {"n": s.temporal.n, "size": s.temporal.window},
        "feature_size": trained.feature_size, "backbone": {"name": s.backbone, **backbone.to_json()},
        "temporal": s.temporal.to_json(), "models": names,
        "input": {"height": size, "width": size, "channels": 3},
        "pair_rule": "pair crops (subject 'a+b') are labelled with a social behaviour when both animals show it "
                     "with each other as partner, else 'none'",
        "loss": {"name": "focal", "gamma": s.gamma, "alpha": s.alpha},
        "training": {**(training or {}), "run_seconds": round(trained.seconds, 1), "data": trained.data,
                     "history": trained.history},
    }
    feats = keras.Model(trained.features.input, {FEATURES_OUTPUT: trained.features.output})
    frame = keras.Model(trained.frame.input, {PROBABILITIES_OUTPUT: trained.frame.output})
    temporal = keras.Model(trained.temporal.input, {PROBABILITIES_OUTPUT: trained.temporal.output})
    out = {
        "features": repo.export(feats, names["features"], {
            **common, "architecture": f"{s.backbone} features", "role": "features",
            "inputs": {CROP_INPUT: f"uint8 (B, {size}, {size}, 3)"},
            "outputs": {FEATURES_OUTPUT: f"float32 (B, {trained.feature_size})"}}, version=version),
        "frame": repo.export(frame, names["frame"], {
            **common, "architecture": f"{s.backbone} frame classifier", "role": "frame",
            "inputs": {CROP_INPUT: f"uint8 (B, {size}, {size}, 3)"},
            "outputs": {PROBABILITIES_OUTPUT: "float32 (B, C)"}}, version=version),
        "temporal": repo.export(temporal, names["temporal"], {
            **common, "architecture": f"{s.backbone} + temporal conv net (n={s.temporal.n})", "role": "temporal",
            # the service's input (GetModelInfo): crops of this side in source pixels around the COM; it resizes
            # them to the network's input (crops.input_size); pair crops: crops.pair_crop_px around the joint COM
            "input": {"height": s.crops.crop_px, "width": s.crops.crop_px, "channels": 3},
            "inputs": {FEATURES_INPUT: f"float32 (B, {s.temporal.window}, {trained.feature_size})"},
            "outputs": {PROBABILITIES_OUTPUT: "float32 (B, C)"}}, version=version),
    }
    return out
