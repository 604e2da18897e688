"""From the exported graph's fixed-size detections to per-frame instances in frame pixels.

The model sees the frame letterboxed (scaled by `scale`, padded bottom/right); its boxes are divided by
`scale`, each M x M mask is resized bilinearly onto its box in the frame and thresholded at 0.5.

Mask suppression: the graph's NMS works on boxes, per class, at box IoU 0.5. Two boxes of one animal
(the whole body and the head and shoulders, say) can overlap less than that while one mask lies mostly
inside the other. Such a detection, whose mask overlaps a higher-scored kept mask by more than
`mask_overlap` of the smaller mask's area, is dropped (default 0.5; 1 keeps everything). Touching
animals overlap by a few pixels of their masks, far below it. On held-out synth frames this raised
precision at IoU 0.5 from 0.35 to 0.85 at the same mask AP for a briefly trained model (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from sipec.api.convert import InstanceData

DEFAULT_MASK_OVERLAP = 0.5


def paste_mask(mask: np.ndarray, box: Sequence[float], height: int, width: int) -> np.ndarray:
    """HxW bool mask: the M x M probabilities `mask` resized onto `box` (x1, y1, x2, y2), threshold 0.5."""
    out = np.zeros((height, width), bool)
    got = _paste_patch(mask, box, height, width)
    if got is not None:
        patch, ix1, iy1 = got
        out[iy1:iy1 + patch.shape[0], ix1:ix1 + patch.shape[1]] = patch
    return out


def _paste_patch(mask: np.ndarray, box: Sequence[float], height: int,
                 width: int) -> tuple[np.ndarray, int, int] | None:
    """The part of `paste_mask` inside the box's pixels: (bool patch, its x, its y), or None if the box is empty."""
    x1, y1, x2, y2 = (float(v) for v in box)
    bw, bh = x2 - x1, y2 - y1
    if bw <= 0 or bh <= 0:
        return None
    ix1, iy1 = max(int(np.floor(x1)), 0), max(int(np.floor(y1)), 0)
    ix2, iy2 = min(int(np.ceil(x2)), width), min(int(np.ceil(y2)), height)
    if ix2 <= ix1 or iy2 <= iy1:
        return None
    m = mask.shape[0]
    # sample the mask at the centres of the frame pixels inside the box (bilinear, via an affine warp)
    sx, sy = m / bw, m / bh
    affine = np.array([[sx, 0, (ix1 + 0.5 - x1) * sx - 0.5], [0, sy, (iy1 + 0.5 - y1) * sy - 0.5]], np.float32)
    patch = cv2.warpAffine(mask.astype(np.float32), affine, (ix2 - ix1, iy2 - iy1),
                           flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    return patch >= 0.5, ix1, iy1


def _frame_mask(patch: np.ndarray, ox: int, oy: int, height: int, width: int) -> tuple | None:
    """From a pasted patch: (HxW uint8 0/1 mask in column-major order, tight box, area, centre of mass), or None
    when the patch is empty. Box, area and centre come from the patch alone, and the column-major frame is encoded
    as RLE without another copy: at 640x480 this made the postprocessing 3x faster than working on the whole frame
    (docs/benchmarks.md, per-module table)."""
    rows = np.flatnonzero(patch.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(patch.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    tight_patch = np.ascontiguousarray(patch[r0:r1, c0:c1], dtype=np.uint8)
    mom = cv2.moments(tight_patch, binaryImage=True)
    x1, y1 = ox + c0, oy + r0
    frame = np.zeros((height, width), np.uint8, order="F")
    frame[y1:oy + r1, x1:ox + c1] = tight_patch
    com = (mom["m10"] / mom["m00"] + 0.5 + x1, mom["m01"] / mom["m00"] + 0.5 + y1)
    box = (float(x1), float(y1), float(ox + c1), float(oy + r1))
    return frame, box, int(mom["m00"]), com


def to_instances(outputs: Mapping[str, np.ndarray], scale: float, height: int, width: int,
                 class_names: Sequence[str], min_score: float = 0.0, max_instances: int = 0,
                 omit_masks: bool = False, mask_overlap: float = DEFAULT_MASK_OVERLAP) -> list[InstanceData]:
    """Instances of ONE image's detections (boxes (D,4), scores (D,), classes (D,), masks (D,M,M),
    num_detections ()), sorted by score; detections whose mask is empty, or lies more than `mask_overlap`
    inside a higher-scored kept mask, are dropped; `omit_masks` leaves mask and RLE unset (box and COM
    still come from the mask)."""
    n = int(np.asarray(outputs["num_detections"]).reshape(()))
    scores = np.asarray(outputs["scores"])[:n]
    order = [i for i in np.argsort(-scores, kind="stable") if scores[i] >= min_score]
    named = len(class_names) > 1
    out: list[InstanceData] = []
    kept: list[tuple[np.ndarray, Sequence[float], int]] = []   # mask, its tight box, its area
    for i in order:
        if max_instances and len(out) >= max_instances:
            break
        box = np.asarray(outputs["boxes"][i], np.float64) / scale
        box = np.clip(box, 0, [width, height, width, height])
        cls = int(outputs["classes"][i])
        name = class_names[cls] if named and 0 <= cls < len(class_names) else ""
        got = _paste_patch(np.asarray(outputs["masks"][i]), box, height, width)
        pasted = _frame_mask(*got, height, width) if got is not None else None
        if pasted is None:
            continue
        frame, tight, area, com = pasted
        mask = frame.view(bool)
        if mask_overlap < 1.0 and _inside_kept(mask, tight, area, kept, mask_overlap):
            continue
        kept.append((mask, tight, area))
        out.append(InstanceData(box=tight, score=float(scores[i]),
                                mask=None if omit_masks else mask,
                                rle=None if omit_masks else mask_utils.encode(frame), com=com,
                                class_name=name, index=len(out)))
    return out


def _inside_kept(mask: np.ndarray, box: Sequence[float], area: int,
                 kept: list[tuple[np.ndarray, Sequence[float], int]], limit: float) -> bool:
    """Whether `mask` overlaps one of the `kept` masks by more than `limit` of the smaller one's area."""
    x1, y1, x2, y2 = (int(v) for v in box)
    for other, (ox1, oy1, ox2, oy2), other_area in kept:
        ix1, iy1, ix2, iy2 = max(x1, int(ox1)), max(y1, int(oy1)), min(x2, int(ox2)), min(y2, int(oy2))
        if ix2 <= ix1 or iy2 <= iy1:
            continue
        inter = int(np.count_nonzero(mask[iy1:iy2, ix1:ix2] & other[iy1:iy2, ix1:ix2]))
        if inter > limit * min(area, other_area):
            return True
    return False
