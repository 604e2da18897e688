"""Crops of one animal and augmentation, as one affine warp that moves image and keypoints together.

A crop is a square of side ``side`` (frame pixels) centred on ``center``, resampled to ``size`` x ``size``
(``scale = side / size`` frame pixels per crop pixel). Augmentation (training only) rotates, scales, shifts
and optionally mirrors that square and jitters brightness/contrast; the same 2x3 matrix maps the keypoints,
so they stay on the animal, and a mirror swaps the rows of left/right keypoint pairs (a left ear seen in a
mirror is a right ear). Where the crop centre comes from (a box, a mask's centre of mass, the labelled
keypoints, the whole frame) is :mod:`services.posenet.data`'s business.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

PAD = 1.25            # crop side = PAD * animal size (Simple Baselines pads boxes by 1.25)


@dataclass(frozen=True)
class Augment:
    """Random affine + photometric jitter ranges; ``flip_pairs`` enables mirroring (None: never mirror)."""

    rotation_deg: float = 30.0
    scale: float = 0.2
    shift: float = 0.1        # fraction of the crop side
    brightness: float = 0.2
    contrast: float = 0.2
    flip_pairs: tuple[tuple[int, int], ...] | None = None


def left_right_pairs(names: Sequence[str]) -> list[tuple[int, int]]:
    """Index pairs of keypoints that swap in a mirror image, found by name.

    Recognised: ``left``/``right`` anywhere in the name (``leftear``/``rightear``, ``left_ear``/``right_ear``,
    ``ear_left``/``ear_right``, ``LeftEar``/``RightEar``) and an ``L``/``R`` letter after a lower-case letter,
    at the end or before digits (``wingL``/``wingR``, ``forelegL4``/``forelegR4``).
    """
    index = {n: i for i, n in enumerate(names)}
    pairs: set[tuple[int, int]] = set()
    for name, i in index.items():
        candidates = []
        low = name.lower()
        for a, b in (("left", "right"), ("right", "left")):
            pos = low.find(a)
            if pos >= 0:
                repl = b.capitalize() if name[pos].isupper() else b
                candidates.append(name[:pos] + repl + name[pos + len(a):])
        m = re.match(r"^(.*[a-z])([LR])(\d*)$", name)
        if m:
            candidates.append(m.group(1) + ("R" if m.group(2) == "L" else "L") + m.group(3))
        for c in candidates:
            j = index.get(c)
            if j is not None and j != i:
                pairs.add((min(i, j), max(i, j)))
    return sorted(pairs)


def keypoint_box(keypoints: np.ndarray) -> np.ndarray | None:
    """Box of the labelled keypoints (K, 2+), None when none is labelled."""
    xy = np.asarray(keypoints, dtype=np.float64)[:, :2]
    ok = np.isfinite(xy).all(axis=1)
    if not ok.any():
        return None
    return np.array([*xy[ok].min(axis=0), *xy[ok].max(axis=0)])


def crop_matrix(center: np.ndarray, side: float, size: int, rotation_deg: float = 0.0,
                mirror: bool = False) -> np.ndarray:
    """2x3 matrix frame -> crop: the square (center, side), rotated by rotation_deg and mirrored left-right
    if asked, maps to [0, size)^2 (pixel centres at integer coordinates in both)."""
    s = size / side
    a = np.deg2rad(rotation_deg)
    c, sn = np.cos(a) * s, np.sin(a) * s
    m = np.array([[c, sn], [-sn, c]])
    if mirror:
        m[0] = -m[0]
    half = (size - 1) / 2.0
    t = np.array([half, half]) - m @ np.asarray(center, dtype=np.float64)
    return np.column_stack([m, t])


def apply_matrix(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Map points (..., 2) by a 2x3 affine matrix (NaN stays NaN)."""
    p = np.asarray(xy, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


def invert_matrix(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(m, dtype=np.float64))


def warp(image: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """Resample the crop (size, size, 3) uint8; outside the frame is black. Blurs first when the crop
    shrinks the image by more than 1.5x, so that thin parts (legs, tails) do not alias away."""
    shrink = 1.0 / np.sqrt(abs(np.linalg.det(m[:, :2])))
    if shrink > 1.5:
        image = cv2.GaussianBlur(image, (0, 0), sigmaX=0.5 * np.sqrt(shrink ** 2 - 1.0))
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def make_crop(image: np.ndarray, keypoints: np.ndarray | None, center: np.ndarray, side: float, size: int,
              augment: Augment | None = None, rng: np.random.Generator | None = None
              ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Crop (and augment) an image and its keypoints (K, 2; NaN = unlabelled) together.

    Returns (crop uint8 (size, size, 3), keypoints in crop pixels or None, the 2x3 frame->crop matrix). When
    augmentation mirrors the crop, the returned keypoints have their left/right pairs swapped, so that row k
    is again keypoint k of the mirrored animal; the matrix maps frame points to crop points (no swap).
    """
    rot, mirror = 0.0, False
    center = np.asarray(center, dtype=np.float64)
    if augment is not None:
        rng = rng or np.random.default_rng()
        rot = rng.uniform(-augment.rotation_deg, augment.rotation_deg)
        side = side * float(np.exp(rng.uniform(-augment.scale, augment.scale)))
        center = center + rng.uniform(-augment.shift, augment.shift, size=2) * side
        mirror = augment.flip_pairs is not None and bool(rng.random() < 0.5)
    m = crop_matrix(center, side, size, rot, mirror)
    crop = warp(image, m, size)
    if augment is not None and (augment.brightness or augment.contrast):
        gain = 1.0 + rng.uniform(-augment.contrast, augment.contrast)
        bias = 255.0 * rng.uniform(-augment.brightness, augment.brightness)
        crop = np.clip(crop.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
    kp = None
    if keypoints is not None:
        kp = apply_matrix(m, np.asarray(keypoints, dtype=np.float64)[:, :2])
        if mirror and augment is not None:
            kp = swap_pairs(kp, augment.flip_pairs or ())
    return crop, kp, m


def patch_margin(augment: Augment | None) -> float:
    """Patch side / crop side that keeps an augmented crop inside the patch (worst rotation, zoom-out, shift)."""
    if augment is None:
        return 1.05
    r = np.deg2rad(min(abs(augment.rotation_deg), 45.0))
    return float(min(2.0, np.exp(augment.scale) * (np.cos(r) + np.sin(r)) + 2.0 * augment.shift + 0.05))


def swap_pairs(keypoints: np.ndarray, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """Rows of each (i, j) pair exchanged (a copy)."""
    out = np.array(keypoints, copy=True)
    for i, j in pairs:
        out[[i, j]] = out[[j, i]]
    return out
