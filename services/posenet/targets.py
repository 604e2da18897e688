"""Heatmap targets: one 2D Gaussian per labelled keypoint; unlabelled keypoints get a map filled with -1.

Coordinate convention (shared with :mod:`services.posenet.peaks`): heatmap cell (j, i) is centred on crop
pixel ``x = (i + 0.5) * stride - 0.5``, ``y = (j + 0.5) * stride - 0.5`` (pixel centres at integers).
"""

from __future__ import annotations

import numpy as np

MISSING = -1.0


def crop_to_heatmap(xy: np.ndarray, stride: int) -> np.ndarray:
    """Crop pixel coordinates -> heatmap cell coordinates."""
    return (np.asarray(xy, dtype=np.float64) + 0.5) / stride - 0.5


def heatmap_to_crop(xy: np.ndarray, stride: int) -> np.ndarray:
    """Heatmap cell coordinates -> crop pixel coordinates."""
    return (np.asarray(xy, dtype=np.float64) + 0.5) * stride - 0.5


def heatmap_targets(keypoints: np.ndarray, size: int, stride: int, sigma: float = 2.0) -> np.ndarray:
    """Targets (H, W, K) float32 for keypoints (K, 2) in crop pixels (NaN = not labelled).

    A labelled keypoint gets exp(-d^2 / 2 sigma^2) (sigma in heatmap cells), peak 1 at the keypoint, even
    when it lies outside the crop (the map is then near 0: the network learns it is not visible). An
    unlabelled keypoint's map is filled with -1 (:data:`MISSING`), which the loss reads as weight 0.
    """
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
    h = w = size // stride
    out = np.full((h, w, len(kp)), MISSING, dtype=np.float32)
    cells = crop_to_heatmap(kp, stride)
    ys, xs = np.mgrid[0:h, 0:w]
    for k, (cx, cy) in enumerate(cells):
        if not (np.isfinite(cx) and np.isfinite(cy)):
            continue
        out[:, :, k] = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2.0 * sigma ** 2))
    return out
