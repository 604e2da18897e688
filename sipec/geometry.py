"""Boxes, masks, IoU, centres of mass, crops and dilation.

Conventions used across the project:
- images are HxWxC uint8 arrays in RGB order;
- masks are HxW bool (or uint8 0/1) arrays;
- boxes are float ``(x1, y1, x2, y2)`` in pixel coordinates, x2/y2 exclusive
  (a one-pixel mask at column 3 has x1=3, x2=4);
- points are ``(x, y)``;
- COCO RLE dicts are the pycocotools encoding ``{"size": [h, w], "counts": bytes}``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np
from pycocotools import mask as mask_utils

Box = tuple[float, float, float, float]


def mask_box(mask: np.ndarray) -> Box | None:
    """Tight box around the mask's pixels, or None for an empty mask."""
    ys = np.flatnonzero(mask.any(axis=1))
    if ys.size == 0:
        return None
    xs = np.flatnonzero(mask.any(axis=0))
    return float(xs[0]), float(ys[0]), float(xs[-1] + 1), float(ys[-1] + 1)


def center_of_mass(mask: np.ndarray) -> tuple[float, float] | None:
    """Centre of mass (x, y) of the mask's pixels (pixel centres at +0.5), or None if empty."""
    m = cv2.moments(np.ascontiguousarray(mask, dtype=np.uint8), binaryImage=True)
    if m["m00"] == 0:
        return None
    return m["m10"] / m["m00"] + 0.5, m["m01"] / m["m00"] + 0.5


def mask_area(mask: np.ndarray) -> int:
    return int(np.count_nonzero(mask))


def encode_rle(mask: np.ndarray) -> dict:
    """COCO RLE of one HxW mask (counts as bytes, as pycocotools returns them)."""
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def decode_rle(rle: dict) -> np.ndarray:
    """HxW bool mask from a COCO RLE (counts as bytes or str)."""
    rle = dict(rle)
    if isinstance(rle["counts"], str):
        rle["counts"] = rle["counts"].encode("ascii")
    return mask_utils.decode(rle).astype(bool)


def rle_to_json(rle: dict) -> dict:
    """RLE with counts as str, for JSON files."""
    counts = rle["counts"]
    return {"size": [int(s) for s in rle["size"]],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def mask_iou_matrix(masks_a: Sequence[dict], masks_b: Sequence[dict]) -> np.ndarray:
    """True mask IoU between two lists of COCO RLEs, shape (len(a), len(b))."""
    if len(masks_a) == 0 or len(masks_b) == 0:
        return np.zeros((len(masks_a), len(masks_b)), dtype=np.float64)
    a = [_bytes_rle(r) for r in masks_a]
    b = [_bytes_rle(r) for r in masks_b]
    return np.asarray(mask_utils.iou(a, b, [0] * len(b)), dtype=np.float64).reshape(len(a), len(b))


class HasRegion(Protocol):
    """An instance's box and, when known, its mask as a COCO RLE (the tracker's Detection, a `Region`)."""

    box: Box
    rle: dict | None


@dataclass(frozen=True)
class Region:
    """A box and an optional RLE mask: the least an instance needs for `region_iou_matrix`."""

    box: Box
    rle: dict | None = None


def region_iou_matrix(a: Sequence[HasRegion], b: Sequence[HasRegion]) -> np.ndarray:
    """(len(a), len(b)) IoU: true mask IoU (pycocotools) where both have masks, box IoU for the other pairs."""
    out = np.zeros((len(a), len(b)), dtype=np.float64)
    if not a or not b:
        return out
    am = [i for i, r in enumerate(a) if r.rle is not None]
    bm = [j for j, r in enumerate(b) if r.rle is not None]
    if am and bm:
        out[np.ix_(am, bm)] = mask_iou_matrix([a[i].rle for i in am], [b[j].rle for j in bm])
    am_set, bm_set = set(am), set(bm)
    for i, ra in enumerate(a):
        for j, rb in enumerate(b):
            if i not in am_set or j not in bm_set:
                out[i, j] = box_iou(ra.box, rb.box)
    return out


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two HxW masks (0 when both are empty)."""
    a = a.astype(bool)
    b = b.astype(bool)
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 0.0


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(bool)
    b = b.astype(bool)
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return float(2 * np.count_nonzero(a & b) / total) if total else 0.0


def box_iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Dilate a mask by `pixels` with a disk kernel (every pixel within that distance; 0 returns a copy)."""
    if pixels <= 0:
        return mask.astype(bool).copy()
    yy, xx = np.mgrid[-pixels:pixels + 1, -pixels:pixels + 1]
    k = (xx * xx + yy * yy <= pixels * pixels).astype(np.uint8)
    return cv2.dilate(mask.astype(np.uint8), k).astype(bool)


def crop_around(image: np.ndarray, center: tuple[float, float], size: int | tuple[int, int],
                fill: int = 0) -> np.ndarray:
    """Crop of `size` (h, w) centred on `center` (x, y); parts outside the image are `fill`."""
    h, w = (size, size) if isinstance(size, int) else size
    x0, y0 = crop_origin(center, (h, w))
    out = np.full((h, w, *image.shape[2:]), fill, dtype=image.dtype)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + w, image.shape[1]), min(y0 + h, image.shape[0])
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


def crop_origin(center: tuple[float, float], size: int | tuple[int, int]) -> tuple[int, int]:
    """Top-left (x, y) in image coordinates of the crop `crop_around` makes."""
    h, w = (size, size) if isinstance(size, int) else size
    # Round half up (not Python's half-to-even round), so that moving the centre by one pixel
    # always moves the crop by one pixel.
    return math.floor(center[0] - w / 2 + 0.5), math.floor(center[1] - h / 2 + 0.5)


def _bytes_rle(rle: dict) -> dict:
    counts = rle["counts"]
    if isinstance(counts, str):
        return {"size": list(rle["size"]), "counts": counts.encode("ascii")}
    return rle


def animals_apart(frame: np.ndarray, boxes: np.ndarray, margin: float,
          masks: Callable[[int], np.ndarray | None] | None = None) -> np.ndarray:
    """(rows,) bool: the row's animal is apart from every other detection of its frame. Boxes widened by `margin`
    x their longer side that do not meet are apart; when they meet and `masks(row)` gives both full-frame masks,
    the masks decide: apart unless they come within twice that widening of each other (elongated animals'
    boxes overlap long before the animals touch)."""
    frame = np.asarray(frame)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    grown = boxes + np.outer(margin * side, [-1.0, -1.0, 1.0, 1.0])
    out = np.ones(len(frame), bool)
    order = np.argsort(frame, kind="stable")
    starts = np.flatnonzero(np.r_[True, frame[order][1:] != frame[order][:-1]])
    for a, b in zip(starts, np.r_[starts[1:], len(order)], strict=True):
        rows = order[a:b]
        if len(rows) < 2:
            continue
        g = grown[rows]
        meets = ((g[:, None, 0] < g[None, :, 2]) & (g[None, :, 0] < g[:, None, 2])
                 & (g[:, None, 1] < g[None, :, 3]) & (g[None, :, 1] < g[:, None, 3]))
        np.fill_diagonal(meets, False)
        if masks is not None:
            for i, j in zip(*np.nonzero(np.triu(meets)), strict=True):
                gap = max(1, int(round(margin * max(side[rows[i]], side[rows[j]]))))
                if not _masks_meet(masks(int(rows[i])), masks(int(rows[j])), boxes[rows[i]], boxes[rows[j]], gap):
                    meets[i, j] = meets[j, i] = False
        out[rows] = ~meets.any(axis=1)
    return out


def _masks_meet(a: np.ndarray | None, b: np.ndarray | None, box_a: np.ndarray, box_b: np.ndarray,
                gap: int) -> bool:
    """Whether two full-frame masks come within 2 x `gap` pixels (True when either mask is unknown)."""
    if a is None or b is None or a.shape != b.shape:
        return True
    h, w = a.shape
    x1 = max(0, int(min(box_a[0], box_b[0])) - 2 * gap)
    y1 = max(0, int(min(box_a[1], box_b[1])) - 2 * gap)
    x2 = min(w, int(np.ceil(max(box_a[2], box_b[2]))) + 2 * gap + 1)
    y2 = min(h, int(np.ceil(max(box_a[3], box_b[3]))) + 2 * gap + 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (4 * gap + 1, 4 * gap + 1))
    grown = cv2.dilate(a[y1:y2, x1:x2].astype(np.uint8), kernel)
    return bool(np.any(grown.astype(bool) & b[y1:y2, x1:x2].astype(bool)))
