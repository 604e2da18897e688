"""Crops BehaveNet classifies: one per animal, and one per interacting pair.

- Individual crop: a square of ``crop_px`` source pixels centred on the animal's mask centre of mass
  (COM), resized to the network's input size.
- Pair crop: when two animals' masks, each dilated by ``dilation_px`` (a disk), overlap, a square of
  ``pair_crop_px`` pixels centred on their joint COM (the COM of both masks together, i.e. the
  area-weighted mean of the two COMs), resized to the same input size. Pair subjects are named
  "a+b" with a < b (track ids in the service, identities in training data).

Parts of a crop outside the frame are black.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from sipec.geometry import Box, crop_around, dilate


@dataclass(frozen=True)
class CropSettings:
    """How crops are cut from frames; stored in the model's metadata so callers cut them the same way."""

    input_size: int = 64        # network input side (pixels)
    crop_px: int = 128          # individual crop side in source pixels
    pair_crop_px: int = 192     # pair crop side in source pixels
    dilation_px: int = 8        # masks dilated by this much touch -> the pair is interacting

    def validate(self) -> None:
        for name in ("input_size", "crop_px", "pair_crop_px"):
            if not 16 <= getattr(self, name) <= 2048:
                raise ValueError(f"{name} must be 16 to 2048 pixels, not {getattr(self, name)}")
        if not 0 <= self.dilation_px <= 256:
            raise ValueError(f"dilation_px must be 0 to 256 pixels, not {self.dilation_px}")

    def to_json(self) -> dict[str, int]:
        return {"input_size": self.input_size, "crop_px": self.crop_px, "pair_crop_px": self.pair_crop_px,
                "dilation_px": self.dilation_px}


def resize_crop(crop: np.ndarray, size: int) -> np.ndarray:
    """Square uint8 RGB crop resized to size x size (area interpolation when shrinking)."""
    if crop.shape[0] == size and crop.shape[1] == size:
        return np.ascontiguousarray(crop)
    shrink = crop.shape[0] > size or crop.shape[1] > size
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def individual_crop(frame: np.ndarray, com: tuple[float, float], settings: CropSettings) -> np.ndarray:
    """The network-sized crop of one animal centred on its COM."""
    return resize_crop(crop_around(frame, com, settings.crop_px), settings.input_size)


def joint_com(com_a: tuple[float, float], area_a: float, com_b: tuple[float, float],
              area_b: float) -> tuple[float, float]:
    """COM of two masks together (area-weighted mean of their COMs)."""
    total = float(area_a) + float(area_b)
    if total <= 0:
        return (com_a[0] + com_b[0]) / 2.0, (com_a[1] + com_b[1]) / 2.0
    return ((com_a[0] * area_a + com_b[0] * area_b) / total, (com_a[1] * area_a + com_b[1] * area_b) / total)


def pair_crop(frame: np.ndarray, center: tuple[float, float], settings: CropSettings) -> np.ndarray:
    """The network-sized crop of an interacting pair centred on their joint COM."""
    return resize_crop(crop_around(frame, center, settings.pair_crop_px), settings.input_size)


def masks_touch(mask_a: np.ndarray, box_a: Box, mask_b: np.ndarray, box_b: Box, dilation_px: int) -> bool:
    """Whether the two HxW masks, each dilated by `dilation_px`, overlap (tested inside their boxes only)."""
    d = int(dilation_px)
    if (box_a[0] - d >= box_b[2] + d or box_b[0] - d >= box_a[2] + d
            or box_a[1] - d >= box_b[3] + d or box_b[1] - d >= box_a[3] + d):
        return False
    h, w = mask_a.shape
    x0 = max(0, int(min(box_a[0], box_b[0])) - 2 * d - 1)
    y0 = max(0, int(min(box_a[1], box_b[1])) - 2 * d - 1)
    x1 = min(w, int(max(box_a[2], box_b[2])) + 2 * d + 1)
    y1 = min(h, int(max(box_a[3], box_b[3])) + 2 * d + 1)
    a = dilate(mask_a[y0:y1, x0:x1], d)
    b = dilate(mask_b[y0:y1, x0:x1], d)
    return bool(np.any(a & b))


def interacting_pairs(masks: Sequence[np.ndarray], boxes: Sequence[Box], dilation_px: int) -> list[tuple[int, int]]:
    """Index pairs (i, j), i < j, of masks whose dilated versions overlap."""
    out = []
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            if masks_touch(masks[i], boxes[i], masks[j], boxes[j], dilation_px):
                out.append((i, j))
    return out


def pair_subject(a: int | str, b: int | str) -> str:
    """Subject name of a pair: "a+b" with the smaller id first."""
    ia, ib = sorted((a, b), key=lambda v: (int(v) if str(v).isdigit() else float("inf"), str(v)))
    return f"{ia}+{ib}"
