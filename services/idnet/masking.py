"""Crops and masks as IdNet sees them: ONE function for training, evaluation and the service.

A sequence holds 2T+1 crops in time order; the centre one is the animal to identify. Each crop is resized to the
network's input side S. When a crop has a mask (in crop coordinates), pixels outside the mask dilated by
``base_px + step_px * |offset|`` (offset = frames from the centre; pixels of the S x S crop) are set to black, so
past and future crops keep more of their surroundings the further they are in time, as in the SIPEC paper.
A crop without a mask is used whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from sipec.geometry import dilate


@dataclass(frozen=True)
class MaskSettings:
    """Crop size and dilation schedule; stored in the model's metadata (``masking``) so callers match training."""

    input_size: int = 64     # network input side S
    crop_px: int = 96        # side of the square cut around the animal's centre, in source pixels
    base_px: int = 2         # dilation of the centre crop's mask, in S-pixels
    step_px: int = 2         # extra dilation per frame of distance from the centre
    align: int = 0           # 1: each masked crop turned so its mask's long axis lies horizontal

    def validate(self) -> None:
        if not 16 <= self.input_size <= 1024:
            raise ValueError(f"input_size must be 16 to 1024 pixels, not {self.input_size}")
        if not 8 <= self.crop_px <= 4096:
            raise ValueError(f"crop_px must be 8 to 4096 pixels, not {self.crop_px}")
        if self.base_px < 0 or self.step_px < 0:
            raise ValueError(f"dilation must be >= 0 (base_px={self.base_px}, step_px={self.step_px})")

    def dilation(self, offset: int) -> int:
        """Dilation in S-pixels of the mask of a crop `offset` frames from the centre."""
        return self.base_px + self.step_px * abs(int(offset))

    def to_json(self) -> dict[str, int]:
        return {"input_size": self.input_size, "crop_px": self.crop_px, "base_px": self.base_px,
                "step_px": self.step_px, "align": self.align}

    @classmethod
    def from_json(cls, d: dict) -> MaskSettings:
        return cls(**{k: int(d[k]) for k in ("input_size", "crop_px", "base_px", "step_px", "align") if k in d})


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 HxWx3 -> size x size x 3 (area interpolation when shrinking)."""
    if image.shape[0] == size and image.shape[1] == size:
        return np.ascontiguousarray(image)
    shrink = image.shape[0] > size or image.shape[1] > size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """HxW bool -> size x size bool (nearest neighbour)."""
    if mask.shape[0] == size and mask.shape[1] == size:
        return mask.astype(bool)
    return cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)


def long_axis_degrees(mask: np.ndarray) -> float | None:
    """Angle of the mask's long axis from the x axis (image coordinates, y down), from its second moments; None
    for an empty mask."""
    m = cv2.moments(mask.astype(np.uint8), binaryImage=True)
    if m["m00"] <= 0:
        return None
    return float(np.degrees(0.5 * np.arctan2(2 * m["mu11"], m["mu20"] - m["mu02"])))


def align_crop(crop: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop and mask turned about the crop's centre so the mask's long axis lies horizontal (which end points left
    stays undetermined: a half turn apart)."""
    angle = long_axis_degrees(mask)
    if angle is None:
        return crop, mask
    h, w = mask.shape
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
    turned = cv2.warpAffine(crop, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    turned_mask = cv2.warpAffine(mask.astype(np.uint8), m, (w, h), flags=cv2.INTER_NEAREST,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
    return turned, turned_mask


def mask_crop(crop: np.ndarray, mask: np.ndarray | None, offset: int, settings: MaskSettings) -> np.ndarray:
    """One S x S crop, black outside its mask dilated for `offset` (turned first with ``align``); the crop resized
    only when no mask."""
    crop = resize_image(crop, settings.input_size)
    if mask is None:
        return crop
    mask = resize_mask(mask, settings.input_size)
    if settings.align:
        crop, mask = align_crop(crop, mask)
    keep = dilate(mask, settings.dilation(offset))
    return np.where(keep[..., None], crop, np.uint8(0))


def prepare_sequence(crops: Sequence[np.ndarray], masks: Sequence[np.ndarray | None] | None,
                     settings: MaskSettings) -> np.ndarray:
    """2T+1 crops (+ optional masks in crop coordinates) -> uint8 (2T+1, S, S, 3), the network's input."""
    n = len(crops)
    if n % 2 != 1:
        raise ValueError(f"a sequence needs an odd number of crops (2T+1), got {n}")
    if masks is not None and len(masks) not in (0, n):
        raise ValueError(f"masks: {len(masks)} given for {n} crops (give none or one per crop)")
    t = n // 2
    out = np.empty((n, settings.input_size, settings.input_size, 3), np.uint8)
    for i, crop in enumerate(crops):
        mask = masks[i] if masks else None
        out[i] = mask_crop(crop, mask, i - t, settings)
    return out
