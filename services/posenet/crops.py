"""Crops of one animal and augmentation, as one affine warp that moves image and keypoints together.

A crop is a square of side ``side`` (frame pixels) centred on ``center``, resampled to ``size`` x ``size``.
Augmentation (training only) rotates, scales and shifts that square and jitters brightness/contrast; the
same 2x3 matrix maps the keypoints, so they stay on the animal. Crops come from boxes (SegNet, COCO, synth,
masks via their box) or, where only keypoints are labelled (DeepLabCut, SLEAP), from the keypoints' box.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PAD = 1.25            # crop side = PAD * longer box side (Simple Baselines)


@dataclass(frozen=True)
class Augment:
    """Random affine + photometric jitter ranges."""

    rotation_deg: float = 30.0
    scale: float = 0.2
    shift: float = 0.1        # fraction of the crop side
    brightness: float = 0.2
    contrast: float = 0.2


def box_square(box: np.ndarray, pad: float = PAD, min_side: float = 16.0) -> tuple[np.ndarray, float]:
    """Centre and side of the square crop of a box (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = np.asarray(box, dtype=np.float64)
    side = max(x2 - x1, y2 - y1, min_side / pad) * pad
    return np.array([(x1 + x2) / 2.0, (y1 + y2) / 2.0]), float(side)


def keypoint_box(keypoints: np.ndarray) -> np.ndarray | None:
    """Box of the labelled keypoints (K, 2+), None when none is labelled."""
    xy = np.asarray(keypoints, dtype=np.float64)[:, :2]
    ok = np.isfinite(xy).all(axis=1)
    if not ok.any():
        return None
    return np.array([*xy[ok].min(axis=0), *xy[ok].max(axis=0)])


def crop_matrix(center: np.ndarray, side: float, size: int, rotation_deg: float = 0.0) -> np.ndarray:
    """2x3 matrix frame -> crop: the square (center, side) rotated by rotation_deg maps to [0, size)^2."""
    s = size / side
    a = np.deg2rad(rotation_deg)
    c, sn = np.cos(a) * s, np.sin(a) * s
    cx, cy = center
    m = np.array([[c, sn, 0.0], [-sn, c, 0.0]])
    half = (size - 1) / 2.0
    m[:, 2] = [half - (c * cx + sn * cy), half - (-sn * cx + c * cy)]
    return m


def apply_matrix(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Map points (..., 2) by a 2x3 affine matrix (NaN stays NaN)."""
    p = np.asarray(xy, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


def invert_matrix(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(m, dtype=np.float64))


def warp(image: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """Resample the crop (size, size, 3) uint8; outside the frame is black."""
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def make_crop(image: np.ndarray, keypoints: np.ndarray | None, center: np.ndarray, side: float, size: int,
              augment: Augment | None = None, rng: np.random.Generator | None = None
              ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Crop (and augment) an image and its keypoints (K, 2; NaN = unlabelled) together.

    Returns (crop uint8 (size, size, 3), keypoints in crop pixels or None, the 2x3 frame->crop matrix).
    """
    rot = 0.0
    center = np.asarray(center, dtype=np.float64)
    if augment is not None:
        rng = rng or np.random.default_rng()
        rot = rng.uniform(-augment.rotation_deg, augment.rotation_deg)
        side = side * float(np.exp(rng.uniform(-augment.scale, augment.scale)))
        center = center + rng.uniform(-augment.shift, augment.shift, size=2) * side
    m = crop_matrix(center, side, size, rot)
    crop = warp(image, m, size)
    if augment is not None and (augment.brightness or augment.contrast):
        gain = 1.0 + rng.uniform(-augment.contrast, augment.contrast)
        bias = 255.0 * rng.uniform(-augment.brightness, augment.brightness)
        crop = np.clip(crop.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
    kp = None if keypoints is None else apply_matrix(m, np.asarray(keypoints, dtype=np.float64)[:, :2])
    return crop, kp, m
