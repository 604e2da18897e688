"""Interactions: pairs of animals whose dilated masks overlap (SIPEC's social crops).

Both masks are dilated by `dilation` pixels (a disk) and a pair interacts when the dilated masks share a
pixel, i.e. when the animals come within about 2 x dilation pixels of each other. Only pairs whose
boxes, grown by the dilation, overlap are decoded, and only inside their joint region. Box-only
instances interact when their grown boxes overlap. Each interaction carries the pair's joint centre of
mass (area-weighted) and a crop box: the union of both boxes grown by the dilation, clipped to the frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.tracker.detections import Detection
from sipec.geometry import Box, dilate


@dataclass(frozen=True)
class InteractionEvent:
    track_a: int     # the smaller track id
    track_b: int
    com: tuple[float, float]
    box: Box


def _grow(box: Box, d: float) -> Box:
    return box[0] - d, box[1] - d, box[2] + d, box[3] + d


def _boxes_overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _clip(box: Box, size: tuple[int, int] | None) -> Box:
    if size is None:
        return box
    h, w = size
    return max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3])


def masks_touch(a: Detection, b: Detection, dilation: int) -> bool:
    """Whether the two masks, each dilated by `dilation` pixels, overlap (boxes for box-only instances)."""
    ga, gb = _grow(a.box, dilation), _grow(b.box, dilation)
    if not _boxes_overlap(ga, gb):
        return False
    if a.rle is None or b.rle is None:
        return True
    h, w = a.frame_size  # type: ignore[misc]
    # the joint region, with room for the dilation on every side
    x0 = int(max(0, np.floor(min(a.box[0], b.box[0])) - dilation - 1))
    y0 = int(max(0, np.floor(min(a.box[1], b.box[1])) - dilation - 1))
    x1 = int(min(w, np.ceil(max(a.box[2], b.box[2])) + dilation + 1))
    y1 = int(min(h, np.ceil(max(a.box[3], b.box[3])) + dilation + 1))
    ma = dilate(a.mask()[y0:y1, x0:x1], dilation)
    mb = dilate(b.mask()[y0:y1, x0:x1], dilation)
    return bool(np.any(ma & mb))


def find_interactions(tracked: Sequence[tuple[int, Detection]], dilation: int) -> list[InteractionEvent]:
    """Interaction events among (track id, detection) pairs of one frame, sorted by track ids."""
    events = []
    items = sorted(tracked, key=lambda t: t[0])
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            (ta, a), (tb, b) = items[i], items[j]
            if not masks_touch(a, b, dilation):
                continue
            total = a.area + b.area
            wa = a.area / total if total > 0 else 0.5
            com = (wa * a.com[0] + (1 - wa) * b.com[0], wa * a.com[1] + (1 - wa) * b.com[1])
            union = (min(a.box[0], b.box[0]), min(a.box[1], b.box[1]), max(a.box[2], b.box[2]),
                     max(a.box[3], b.box[3]))
            events.append(InteractionEvent(ta, tb, com, _clip(_grow(union, dilation), a.frame_size or b.frame_size)))
    return events
