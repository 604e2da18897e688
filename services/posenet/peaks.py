"""Heatmap decoding: the arg-max cell, refined to sub-pixel precision, and a confidence per keypoint.

Refinement fits a parabola to the log of the heatmap around the maximum along x and along y (exact for a
Gaussian peak, which is what the network is trained to produce). Confidence is the heatmap value at the
maximum (the Gaussian target peaks at 1), clipped to [0, 1]. One implementation, used by evaluation and by
the service.
"""

from __future__ import annotations

import numpy as np

from services.posenet.targets import heatmap_to_crop

_EPS = 1e-6


def _offset(lm: np.ndarray, l0: np.ndarray, lp: np.ndarray) -> np.ndarray:
    """Vertex of the parabola through (-1, lm), (0, l0), (1, lp); 0 where it is not a maximum."""
    denom = lm - 2.0 * l0 + lp
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(denom < -_EPS, 0.5 * (lm - lp) / denom, 0.0)
    return np.clip(off, -0.5, 0.5)


def decode_heatmaps(heatmaps: np.ndarray, stride: int) -> np.ndarray:
    """Heatmaps (B, H, W, K) -> keypoints (B, K, 3): x, y in crop pixels, confidence."""
    hm = np.asarray(heatmaps, dtype=np.float64)
    if hm.ndim != 4:
        raise ValueError(f"heatmaps must be (B, H, W, K), got shape {hm.shape}")
    b, h, w, k = hm.shape
    flat = hm.transpose(0, 3, 1, 2).reshape(b, k, h * w)
    idx = flat.argmax(axis=-1)
    iy, ix = np.divmod(idx, w)
    conf = np.take_along_axis(flat, idx[..., None], axis=-1)[..., 0]
    bi, ki = np.meshgrid(np.arange(b), np.arange(k), indexing="ij")
    logm = np.log(np.clip(hm, _EPS, None))

    def at(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return logm[bi, np.clip(y, 0, h - 1), np.clip(x, 0, w - 1), ki]

    l0 = at(iy, ix)
    dx = np.where((ix > 0) & (ix < w - 1), _offset(at(iy, ix - 1), l0, at(iy, ix + 1)), 0.0)
    dy = np.where((iy > 0) & (iy < h - 1), _offset(at(iy - 1, ix), l0, at(iy + 1, ix)), 0.0)
    xy = heatmap_to_crop(np.stack([ix + dx, iy + dy], axis=-1), stride)
    return np.concatenate([xy, np.clip(conf, 0.0, 1.0)[..., None]], axis=-1)
