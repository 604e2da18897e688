"""IdNet training in the paper's two stages.

1. Frame network (DenseNet per crop, dropout 0.5, softmax): Adam lr 2.5e-4, batch 16, class-weighted
   cross-entropy, lr_{E+1} = lr_E / 1.5^E.
2. Recurrent network on the FROZEN frame features of 2T+1 crops (masks dilated more the further in time):
   Adam lr 5e-5, batch 6, lr_{E+1} = lr_E / 1.25^E. Features are computed once per crop and dilation level.

`fit_idnet` returns the Keras models; `services.idnet.export.export_idnet` writes them to a repository.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.idnet.data import CropSet
from services.idnet.masking import MaskSettings
from services.idnet.model import (
    NetworkConfig,
    build_frame_network,
    build_recurrent_head,
    build_recurrent_network,
)

log = logging.getLogger("sipec.idnet")


@dataclass(frozen=True)
class TrainParams:
    """Optimiser settings of both stages (defaults: the paper's)."""

    epochs: int = 10
    batch_size: int = 16
    lr: float = 2.5e-4
    k: float = 1.5
    recurrent_epochs: int = 10
    recurrent_batch_size: int = 6
    recurrent_lr: float = 5e-5
    recurrent_k: float = 1.25
    augment: bool = True       # random flips / quarter turns of the frame network's crops
    seed: int = 0
    verbose: int = 0
    # train the frame network until its training loss stops falling (at most max_epochs) instead of `epochs`:
    # the accumulation's networks learn from few fragments, and a fixed short schedule leaves them underfit
    # (on the 8-zebrafish video, 10 epochs fit 77% of the first global fragment's crops and gave most new
    # fragments the two darkest fish's identities; docs/benchmarks.md)
    until_converged: bool = False
    max_epochs: int = 150


@dataclass
class TrainedIdNet:
    config: NetworkConfig
    settings: MaskSettings
    identity_names: list[str]
    frame: Any
    features: Any
    head: Any = None
    recurrent: Any = None
    history: dict[str, list[float]] = field(default_factory=dict)

    def frame_config(self) -> NetworkConfig:
        c = self.config
        return NetworkConfig(c.backbone, c.input_size, 0, c.num_identities, c.gru_units)


def class_weights(labels: np.ndarray, n: int) -> dict[int, float]:
    """Inverse-frequency weights (mean 1 over the samples) for the weighted cross-entropy."""
    counts = np.bincount(labels, minlength=n).astype(np.float64)
    present = counts > 0
    w = np.zeros(n)
    w[present] = len(labels) / (present.sum() * counts[present])
    return {i: float(w[i]) for i in range(n)}


def augmented_batches(x: np.ndarray, y: np.ndarray, weights: dict[int, float], batch_size: int,
                      seed: int = 0, aligned: bool = False) -> Any:
    """A keras PyDataset of (crops, labels, class weights), each crop in a random one of its 8 flips/quarter
    turns (animals seen from above have no preferred orientation), reshuffled every epoch. Crops `aligned` with
    their long axis horizontal get only the turns that keep it so: none or a half turn, each mirrored or not."""
    import keras

    w = np.array([weights[int(v)] for v in y], np.float32)

    class _Batches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(x))

        def __len__(self) -> int:
            return int(np.ceil(len(x) / batch_size))

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            rows = self.order[i * batch_size:(i + 1) * batch_size]
            xb = x[rows].copy()
            for n in range(len(xb)):
                img = np.rot90(xb[n, 0], 2 * int(self.rng.integers(2)) if aligned else int(self.rng.integers(4)))
                xb[n, 0] = img[:, ::-1] if self.rng.integers(2) else img
            return xb, y[rows], w[rows]

        def on_epoch_end(self) -> None:
            self.order = self.rng.permutation(len(x))

    return _Batches()


def sequence_features(features: Any, data: CropSet, t: int, settings: MaskSettings,
                      batch_size: int = 64) -> np.ndarray:
    """(N, 2T+1, F): frozen features of every row's sequence, each crop masked for its time offset."""
    per_level = [features.predict(data.masked_at_offset(d, settings), batch_size=batch_size, verbose=0)
                 for d in range(t + 1)]
    idx = data.sequence_indices(t)
    out = np.empty((len(data), 2 * t + 1, per_level[0].shape[-1]), np.float32)
    for j in range(2 * t + 1):
        out[:, j] = per_level[abs(j - t)][idx[:, j]]
    return out


def fit_idnet(data: CropSet, config: NetworkConfig, settings: MaskSettings, params: TrainParams,
              weights: str | None = None, init: TrainedIdNet | None = None) -> TrainedIdNet:
    """Train the frame network (from `init`'s when given: training goes on), then (T > 0) the recurrent network on
    its frozen features."""
    import keras

    from sipec.training import paper_lr_schedule

    n = len(data.identity_names)
    cw = class_weights(data.identity, n)
    if init is not None:
        frame, features = init.frame, init.features
        features.trainable = True
    else:
        frame, features = build_frame_network(config, weights=weights)
    frame.compile(optimizer=keras.optimizers.Adam(params.lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    x = data.masked_at_offset(0, settings)[:, None]
    log.info("idnet: frame network on %d crops, %d identities", len(x), n)
    callbacks = [paper_lr_schedule(params.k)]
    epochs = params.epochs
    if params.until_converged:
        epochs = params.max_epochs
        callbacks += [keras.callbacks.EarlyStopping(monitor="loss", patience=6, min_delta=0.005,
                                                    restore_best_weights=True), _StopWhenFit(0.995)]
    if params.augment:
        hist = frame.fit(augmented_batches(x, data.identity, cw, params.batch_size, params.seed,
                                           aligned=bool(settings.align)), epochs=epochs,
                         callbacks=callbacks, verbose=params.verbose)
    else:
        hist = frame.fit(x, data.identity, batch_size=params.batch_size, epochs=epochs, class_weight=cw,
                         shuffle=True, callbacks=callbacks, verbose=params.verbose)
    log.info("idnet: frame network trained %d epochs (training accuracy %.3f)", len(hist.history["loss"]),
             hist.history.get("accuracy", [float("nan")])[-1])
    history = {f"frame_{k}": [float(v) for v in vs] for k, vs in hist.history.items()}
    trained = TrainedIdNet(config, settings, list(data.identity_names), frame, features, history=history)
    if config.t == 0:
        return trained
    features.trainable = False
    feats = sequence_features(features, data, config.t, settings)
    head = build_recurrent_head(config, feats.shape[-1])
    head.compile(optimizer=keras.optimizers.Adam(params.recurrent_lr), loss="sparse_categorical_crossentropy",
                 metrics=["accuracy"])
    log.info("idnet: recurrent network (T=%d) on %d sequences", config.t, len(feats))
    hist = head.fit(feats, data.identity, batch_size=params.recurrent_batch_size, epochs=params.recurrent_epochs,
                    class_weight=cw, shuffle=True, callbacks=[paper_lr_schedule(params.recurrent_k)],
                    verbose=params.verbose)
    trained.history.update({f"recurrent_{k}": [float(v) for v in vs] for k, vs in hist.history.items()})
    trained.head = head
    trained.recurrent = build_recurrent_network(config, features, head)
    return trained


def _StopWhenFit(accuracy: float) -> Any:
    """A Keras callback ending training once the epoch's training accuracy reaches ``accuracy``."""
    import keras

    class StopWhenFit(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if (logs or {}).get("accuracy", 0.0) >= accuracy:
                self.model.stop_training = True

    return StopWhenFit()


def predict_frame(trained: TrainedIdNet, data: CropSet, batch_size: int = 64) -> np.ndarray:
    """(N, identities) probabilities of the frame network (masks at offset 0)."""
    return trained.frame.predict(data.masked_at_offset(0, trained.settings)[:, None], batch_size=batch_size,
                                 verbose=0)


def predict_recurrent(trained: TrainedIdNet, data: CropSet, batch_size: int = 64) -> np.ndarray:
    """(N, identities) probabilities of the recurrent network (sequences within `data` only)."""
    if trained.head is None:
        raise ValueError("this IdNet has no recurrent network (T=0)")
    feats = sequence_features(trained.features, data, trained.config.t, trained.settings, batch_size)
    return trained.head.predict(feats, batch_size=batch_size, verbose=0)
