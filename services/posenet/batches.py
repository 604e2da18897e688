"""Training batches: augmented crops and their heatmap targets, as a Keras PyDataset."""

from __future__ import annotations

from typing import Any

import numpy as np

from services.posenet.crops import Augment, make_crop
from services.posenet.data import PoseSample
from services.posenet.model import OUTPUT_NAME
from services.posenet.targets import heatmap_targets


def sample_crop(s: PoseSample, size: int, augment: Augment | None = None,
                rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop one sample: (crop, keypoints in crop pixels, 2x3 frame->crop matrix)."""
    crop, kp, m_patch = make_crop(s.patch, s.keypoints - s.origin, s.center - s.origin, s.side, size, augment, rng)
    m = m_patch.copy()
    m[:, 2] -= m_patch[:, :2] @ s.origin        # frame -> crop = patch -> crop after frame -> patch
    assert kp is not None
    return crop, kp, m


def crop_batch(samples: list[PoseSample], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Un-augmented crops (B, S, S, 3) and their frame->crop matrices (B, 2, 3)."""
    crops, mats = [], []
    for s in samples:
        c, _, m = sample_crop(s, size)
        crops.append(c)
        mats.append(m)
    return np.stack(crops), np.stack(mats)


def make_dataset(samples: list[PoseSample], size: int, stride: int, batch_size: int, sigma: float,
                 augment: Augment | None, seed: int) -> Any:
    import keras

    class PoseBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(samples))

        def __len__(self) -> int:
            # full batches only (the remainder is reshuffled into the next epoch): one graph shape, and
            # no ragged last batch (TF 2.21 on CPU aborted with "double free" on one with 8-channel layers)
            return max(1, len(samples) // batch_size)

        def __getitem__(self, i: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
            idx = self.order[i * batch_size:(i + 1) * batch_size]
            xs, ys = [], []
            for j in idx:
                crop, kp, _ = sample_crop(samples[j], size, augment, self.rng)
                xs.append(crop)
                ys.append(heatmap_targets(kp, size, stride, sigma))
            return np.stack(xs), {OUTPUT_NAME: np.stack(ys)}

        def on_epoch_end(self) -> None:
            self.order = self.rng.permutation(len(samples))

    return PoseBatches()
