"""The tracker's view of one instance: box, COCO RLE mask (optional), centre of mass and area."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils

from sipec.api.convert import InstanceData
from sipec.geometry import Box, center_of_mass, decode_rle
from sipec.serving.errors import InvalidInput


@dataclass(frozen=True)
class Detection:
    """One animal in one frame, as the tracker needs it.

    `rle` is the pycocotools RLE (counts as bytes) of the mask, or None for box-only instances, which
    are then matched by box IoU.
    """

    index: int
    box: Box
    com: tuple[float, float]
    area: float
    rle: dict | None = None
    preset_track: int = 0   # > 0: the client already knows the track (second pass); no matching
    score: float = 1.0      # the detector's confidence; below the tracker's min_score: a low-score instance

    @property
    def length(self) -> float:
        """The animal's length, estimated by its box's longer side (0.7-1x the length of an elongated animal at any
        angle; the diameter of a round one): the scale of how far it can move between frames."""
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1], 1.0)

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """(height, width) of the mask's frame, None without a mask."""
        return (int(self.rle["size"][0]), int(self.rle["size"][1])) if self.rle is not None else None

    def mask(self) -> np.ndarray:
        """The decoded HxW bool mask (allocates a full frame)."""
        if self.rle is None:
            raise ValueError(f"instance {self.index} has no mask")
        return decode_rle(self.rle)


def _bytes_counts(rle: dict) -> dict:
    counts = rle["counts"]
    return {"size": [int(s) for s in rle["size"]],
            "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def detection_from_rle(index: int, rle: dict, com: tuple[float, float] | None = None,
                       box: Box | None = None) -> Detection:
    """A Detection from a COCO RLE; box, area and COM are computed from the mask when not given."""
    rle = _bytes_counts(rle)
    area = float(mask_utils.area(rle))
    if box is None:
        x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
        box = (x, y, x + w, y + h)
    if com is None:
        com = center_of_mass(decode_rle(rle)) if area > 0 else ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    return Detection(index=index, box=box, com=(float(com[0]), float(com[1])), area=area, rle=rle)


def detection_from_box(index: int, box: Box, com: tuple[float, float] | None = None) -> Detection:
    """A box-only Detection (area = box area, COM = box centre unless given)."""
    if com is None:
        com = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    area = max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])
    return Detection(index=index, box=box, com=(float(com[0]), float(com[1])), area=area)


def detection_from_instance(inst: InstanceData, position: int, field: str = "instances") -> Detection:
    """A Detection from a decoded ``Instance`` message (``instance_from_proto``).

    `position` is the instance's place in the request (its index in the response). Raises InvalidInput
    naming the field when the instance has neither a mask nor a box, or an empty mask.
    """
    name = f"{field}[{position}]"
    com = inst.com if inst.com is not None and all(np.isfinite(inst.com)) else None
    preset = int(inst.track_id or 0)
    score = float(inst.score) if inst.score is not None and np.isfinite(inst.score) else 1.0
    if preset < 0:
        raise InvalidInput(f"{name}.track_id must be >= 0 (0 = not tracked yet), got {preset}")
    if inst.rle is not None:
        det = detection_from_rle(position, inst.rle, com=com, box=inst.box)
        if det.area <= 0:
            raise InvalidInput(f"{name}.mask is empty (0 pixels); send only instances that were found")
        return dataclasses.replace(det, preset_track=preset, score=score)
    if inst.box is not None:
        if inst.box[2] <= inst.box[0] or inst.box[3] <= inst.box[1]:
            raise InvalidInput(f"{name}.box is empty {inst.box}; an instance needs a mask or a non-empty box")
        det = detection_from_box(position, inst.box, com=com)
        return dataclasses.replace(det, preset_track=preset, score=score)
    raise InvalidInput(f"{name}: needs a mask (or at least a box) to be tracked")
