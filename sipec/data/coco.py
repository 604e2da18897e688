"""COCO instances JSON: masks as RLE, boxes, keypoints, plus track and identity ids.

The file is a standard COCO "instances" file that pycocotools reads (``COCO(path)``), with a few
extra fields that COCO tools ignore:

- ``images[i]``: ``id``, ``width``, ``height``, ``file_name`` and, for frames of a video,
  ``frame_index`` (0-based) and ``video``;
- ``annotations[j]``: ``id``, ``image_id``, ``category_id``, ``segmentation`` (compressed RLE with
  ``counts`` as str), ``bbox`` ``[x, y, w, h]``, ``area`` (mask pixels), ``iscrowd`` 0, and
  optionally ``keypoints`` ``[x1, y1, v1, ...]`` with ``num_keypoints``; ``track_id``,
  ``identity`` (int), ``identity_name`` and any other extra fields a writer adds;
- ``categories[k]``: ``id``, ``name``, ``supercategory`` and, for keypoint data, ``keypoints``
  (names) and ``skeleton`` (1-based pairs, as in COCO).

Keypoint visibility follows COCO: v=2 labelled and visible, v=1 labelled but occluded, v=0 not
labelled (then x=y=0).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from sipec.data.atomic import write_text_atomic
from sipec.geometry import decode_rle, encode_rle, mask_box, rle_to_json

VISIBLE = 2
OCCLUDED = 1
UNLABELLED = 0


def make_category(category_id: int, name: str, keypoint_names: Sequence[str] | None = None,
                  skeleton: Sequence[tuple[int, int]] | None = None, supercategory: str = "animal") -> dict:
    """A category entry; `skeleton` pairs are 0-based indices into `keypoint_names` (stored 1-based)."""
    cat: dict[str, Any] = {"id": int(category_id), "name": name, "supercategory": supercategory}
    if keypoint_names is not None:
        cat["keypoints"] = list(keypoint_names)
        cat["skeleton"] = [[int(a) + 1, int(b) + 1] for a, b in (skeleton or [])]
    return cat


def image_entry(image_id: int, width: int, height: int, file_name: str, **extra: Any) -> dict:
    return {"id": int(image_id), "width": int(width), "height": int(height), "file_name": file_name, **extra}


def instance_annotation(mask: np.ndarray, *, ann_id: int, image_id: int, category_id: int = 1,
                        keypoints: np.ndarray | None = None, rle: dict | None = None, **extra: Any) -> dict:
    """Annotation for one instance mask (HxW bool); `keypoints` is (K, 3) x, y, v (COCO v).

    Pass `rle` when the mask is already encoded, to avoid encoding twice.
    """
    rle = rle if rle is not None else encode_rle(mask)
    box = mask_box(mask)
    if box is None:
        raise ValueError(f"annotation {ann_id}: empty mask")
    x1, y1, x2, y2 = box
    ann: dict[str, Any] = {
        "id": int(ann_id), "image_id": int(image_id), "category_id": int(category_id),
        "segmentation": rle_to_json(rle), "area": int(np.count_nonzero(mask)),
        "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0,
    }
    if keypoints is not None:
        ann["keypoints"] = keypoints_to_coco(keypoints)
        ann["num_keypoints"] = int(np.count_nonzero(np.asarray(keypoints)[:, 2] > 0))
    ann.update(extra)
    return ann


def keypoints_to_coco(keypoints: np.ndarray) -> list[float]:
    """(K, 3) x, y, v -> flat COCO list; v=0 points are written as 0, 0, 0; coordinates rounded to 0.01."""
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)
    out: list[float] = []
    for x, y, v in kp:
        vi = int(v)
        if vi == UNLABELLED or not (np.isfinite(x) and np.isfinite(y)):
            out.extend([0, 0, 0])
        else:
            out.extend([round(float(x), 2), round(float(y), 2), vi])
    return out


def annotation_keypoints(ann: dict) -> np.ndarray:
    """(K, 3) float array x, y, v from an annotation; unlabelled points get NaN coordinates."""
    kp = np.asarray(ann.get("keypoints", []), dtype=np.float64).reshape(-1, 3)
    kp[kp[:, 2] == UNLABELLED, :2] = np.nan
    return kp


def annotation_mask(ann: dict, height: int | None = None, width: int | None = None) -> np.ndarray:
    """HxW bool mask of an annotation: compressed RLE, uncompressed RLE or polygons (needs h, w)."""
    seg = ann["segmentation"]
    if isinstance(seg, dict):
        if isinstance(seg.get("counts"), list):
            h, w = seg["size"]
            return mask_utils.decode(mask_utils.frPyObjects(seg, h, w)).astype(bool)
        return decode_rle(seg)
    if height is None or width is None:
        raise ValueError(f"annotation {ann.get('id')}: polygon segmentation needs the image height and width")
    rles = mask_utils.frPyObjects(seg, height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


@dataclass
class CocoInstances:
    """The content of a COCO instances file, with lookups by image."""

    images: list[dict] = field(default_factory=list)
    annotations: list[dict] = field(default_factory=list)
    categories: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    _by_image: dict[int, list[dict]] | None = field(default=None, init=False, repr=False, compare=False)

    def annotations_for(self, image_id: int) -> list[dict]:
        if self._by_image is None:
            by_image: dict[int, list[dict]] = {int(img["id"]): [] for img in self.images}
            for ann in self.annotations:
                by_image.setdefault(int(ann["image_id"]), []).append(ann)
            self._by_image = by_image
        return self._by_image.get(int(image_id), [])

    def image_by_frame(self) -> dict[int, dict]:
        """Image entries keyed by their ``frame_index`` (video frames only)."""
        return {int(img["frame_index"]): img for img in self.images if "frame_index" in img}

    def keypoint_names(self, category_id: int = 1) -> list[str]:
        for cat in self.categories:
            if int(cat["id"]) == category_id:
                return list(cat.get("keypoints", []))
        return []

    def to_dict(self) -> dict:
        return {"info": self.info, "images": self.images, "annotations": self.annotations,
                "categories": self.categories}


def write_coco_instances(path: str | os.PathLike, data: CocoInstances) -> None:
    """Write atomically as compact JSON."""
    write_text_atomic(path, json.dumps(data.to_dict(), separators=(",", ":")))


def read_coco_instances(path: str | os.PathLike) -> CocoInstances:
    """Read and check a COCO instances file; errors name the file and the problem."""
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(raw.get(key), list):
            raise ValueError(f"{path}: missing list {key!r}; not a COCO instances file")
    for ann in raw["annotations"]:
        missing = [k for k in ("id", "image_id", "category_id", "bbox") if k not in ann]
        if missing:
            raise ValueError(f"{path}: annotation {ann.get('id', '?')} lacks {', '.join(missing)}")
    return CocoInstances(images=raw["images"], annotations=raw["annotations"],
                         categories=raw["categories"], info=raw.get("info", {}))
