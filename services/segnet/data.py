"""SegNet training data: COCO instances (image folder or `sipec synth` videos), letterboxed to the model size.

Frames are scaled to fit a square of `size` pixels (longer side = size) and padded at the bottom/right, so a
box maps back to the frame by dividing by `scale`. Masks are kept at model resolution, one per instance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from sipec.data.coco import CocoInstances, annotation_mask, read_coco_instances

if TYPE_CHECKING:
    import tensorflow as tf


@dataclass
class SegData:
    """Letterboxed frames and their instances: images (N,S,S,3) uint8, masks (N,G,S,S) bool, classes (N,G)."""

    images: np.ndarray
    masks: np.ndarray
    classes: np.ndarray
    class_names: list[str]
    sources: list[str] = field(default_factory=list)   # "file#frame" per image, for reports

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: np.ndarray | list[int]) -> SegData:
        idx = np.asarray(idx, dtype=int)
        return SegData(self.images[idx], self.masks[idx], self.classes[idx], self.class_names,
                       [self.sources[i] for i in idx] if self.sources else [])

    @staticmethod
    def concat(parts: list[SegData]) -> SegData:
        if not parts:
            raise ValueError("no data")
        g = max(p.masks.shape[1] for p in parts)
        return SegData(np.concatenate([p.images for p in parts]),
                       np.concatenate([_pad_instances(p.masks, g) for p in parts]),
                       np.concatenate([_pad_instances(p.classes, g) for p in parts]),
                       parts[0].class_names, sum((p.sources for p in parts), []))


def _pad_instances(a: np.ndarray, g: int) -> np.ndarray:
    pad = [(0, 0)] * a.ndim
    pad[1] = (0, g - a.shape[1])
    return np.pad(a, pad)


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Scale `image` (H,W,3 uint8) to fit size x size, pad bottom/right with zeros; returns (image, scale)."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    out = np.zeros((size, size, 3), np.uint8)
    out[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return out, scale


def letterbox_mask(mask: np.ndarray, size: int) -> np.ndarray:
    h, w = mask.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    out = np.zeros((size, size), bool)
    out[:nh, :nw] = cv2.resize(mask.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST) > 0
    return out


def _category_index(coco: CocoInstances) -> tuple[list[str], dict[int, int]]:
    cats = sorted(coco.categories, key=lambda c: int(c["id"]))
    return [str(c["name"]) for c in cats], {int(c["id"]): i + 1 for i, c in enumerate(cats)}


def _frames_from_video(video: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise ValueError(f"{video}: cannot open video")
    out: dict[int, np.ndarray] = {}
    i = 0
    last = max(wanted) if wanted else -1
    while i <= last:
        ok, frame = cap.read()
        if not ok:
            break
        if i in wanted:
            out[i] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        i += 1
    cap.release()
    missing = sorted(wanted - out.keys())
    if missing:
        raise ValueError(f"{video}: frames {missing[:5]} not in the video ({i} frames read)")
    return out


def load_coco(annotations: Path, size: int, images_dir: Path | None = None, video: Path | None = None,
              max_instances: int = 8, limit: int | None = None) -> SegData:
    """Letterboxed frames of a COCO instances file, read from `images_dir` (by file_name) or `video`
    (by each image's frame_index). ValueError names the file and the problem."""
    coco = read_coco_instances(annotations)
    names, cat_index = _category_index(coco)
    entries = coco.images[:limit] if limit else coco.images
    if video is not None:
        if any("frame_index" not in e for e in entries):
            raise ValueError(f"{annotations}: images need a frame_index to be read from {video}")
        frames = _frames_from_video(video, {int(e["frame_index"]) for e in entries})
    n = len(entries)
    images = np.zeros((n, size, size, 3), np.uint8)
    masks = np.zeros((n, max_instances, size, size), bool)
    classes = np.zeros((n, max_instances), np.int32)
    sources = []
    for i, entry in enumerate(entries):
        if video is not None:
            frame = frames[int(entry["frame_index"])]
            sources.append(f"{video}#{entry['frame_index']}")
        else:
            assert images_dir is not None
            path = images_dir / str(entry["file_name"])
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f"{path}: missing or not an image (file_name of image {entry['id']} "
                                 f"in {annotations})")
            frame = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            sources.append(str(path))
        images[i], _ = letterbox(frame, size)
        h, w = frame.shape[:2]
        anns = [a for a in coco.annotations_for(int(entry["id"])) if not a.get("iscrowd", 0)]
        for j, ann in enumerate(anns[:max_instances]):
            masks[i, j] = letterbox_mask(annotation_mask(ann, h, w), size)
            classes[i, j] = cat_index.get(int(ann["category_id"]), 0)
            if classes[i, j] == 0:
                raise ValueError(f"{annotations}: annotation {ann.get('id')} has unknown category "
                                 f"{ann['category_id']}")
    return SegData(images, masks, classes, names, sources)


def load_synth(folder: Path, size: int, max_instances: int = 8, limit: int | None = None) -> SegData:
    """A `sipec synth` folder: annotations.json + video.mp4."""
    ann, video = folder / "annotations.json", folder / "video.mp4"
    for p in (ann, video):
        if not p.is_file():
            raise ValueError(f"{p}: not found; --synth expects a `sipec synth` output folder")
    return load_coco(ann, size, video=video, max_instances=max_instances, limit=limit)


# ---------------------------------------------------------------------------------------------------
# augmentation (in the graph, on batches)

def boxes_from_masks(masks: tf.Tensor) -> tf.Tensor:
    """Normalised [y1, x1, y2, x2] boxes of masks (B, G, S, S); empty masks give zeros."""
    import tensorflow as tf

    s = tf.cast(tf.shape(masks)[-1], tf.float32)
    rows, cols = tf.reduce_any(masks > 0.5, axis=3), tf.reduce_any(masks > 0.5, axis=2)
    r = tf.cast(tf.range(tf.shape(masks)[-1]), tf.float32)

    def extent(any_: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        lo = tf.reduce_min(tf.where(any_, r, 1e9), axis=-1)
        hi = tf.reduce_max(tf.where(any_, r + 1.0, -1e9), axis=-1)
        ok = tf.reduce_any(any_, axis=-1)
        return tf.where(ok, lo, 0.0), tf.where(ok, hi, 0.0)

    y1, y2 = extent(rows)
    x1, x2 = extent(cols)
    return tf.stack([y1, x1, y2, x2], axis=-1) / s


def augment(images: tf.Tensor, masks: tf.Tensor, max_rotation_deg: float = 20.0,
            scale_range: tuple[float, float] = (0.8, 1.2), brightness: float = 0.2, contrast: float = 0.2,
            ) -> tuple[tf.Tensor, tf.Tensor]:
    """Random flips, rotation, scale (one affine warp per image; masks warped with nearest neighbour),
    brightness and contrast. images (B,S,S,3) uint8, masks (B,G,S,S) float -> same shapes."""
    import tensorflow as tf

    b, s = tf.shape(images)[0], tf.cast(tf.shape(images)[1], tf.float32)
    theta = tf.random.uniform([b], -1.0, 1.0) * max_rotation_deg * np.pi / 180
    scale = tf.random.uniform([b], *scale_range)
    fx = tf.where(tf.random.uniform([b]) < 0.5, -1.0, 1.0)
    fy = tf.where(tf.random.uniform([b]) < 0.5, -1.0, 1.0)
    # forward map A = scale * R(theta) * diag(fx, fy) about the centre; the warp needs the inverse
    cos, sin = tf.cos(theta), tf.sin(theta)
    a00, a01, a10, a11 = scale * cos * fx, -scale * sin * fy, scale * sin * fx, scale * cos * fy
    det = a00 * a11 - a01 * a10
    i00, i01, i10, i11 = a11 / det, -a01 / det, -a10 / det, a00 / det
    c = (s - 1) / 2
    tx, ty = c - (i00 * c + i01 * c), c - (i10 * c + i11 * c)
    zeros = tf.zeros([b])
    transform = tf.stack([i00, i01, tx, i10, i11, ty, zeros, zeros], axis=1)
    size = tf.shape(images)[1:3]
    img = tf.raw_ops.ImageProjectiveTransformV3(images=tf.cast(images, tf.float32), transforms=transform,
                                                output_shape=size, fill_value=0.0, interpolation="BILINEAR",
                                                fill_mode="CONSTANT")
    m = tf.transpose(masks, [0, 2, 3, 1])
    m = tf.raw_ops.ImageProjectiveTransformV3(images=m, transforms=transform, output_shape=size,
                                              fill_value=0.0, interpolation="NEAREST", fill_mode="CONSTANT")
    m = tf.transpose(m, [0, 3, 1, 2])
    m = tf.ensure_shape(m, masks.shape) if masks.shape.rank else m
    mean = tf.reduce_mean(img, axis=[1, 2, 3], keepdims=True)
    k = 1.0 + tf.random.uniform([b, 1, 1, 1], -contrast, contrast)
    img = (img - mean) * k + mean + tf.random.uniform([b, 1, 1, 1], -brightness, brightness) * 255.0
    return tf.cast(tf.clip_by_value(tf.round(img), 0.0, 255.0), tf.uint8), m


def load_flies(folder: Path, size: int, max_instances: int = 2, limit: int | None = None,
               step: int = 1) -> SegData:
    """The SLEAP flies clip with its DERIVED (thresholded) masks, every `step`-th frame, one class "fly"."""
    from sipec.data.flies import FliesClip

    try:
        clip = FliesClip(folder)
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from exc
    frames = list(range(0, len(clip), step))[:limit]
    n = len(frames)
    images = np.zeros((n, size, size, 3), np.uint8)
    masks = np.zeros((n, max_instances, size, size), bool)
    classes = np.zeros((n, max_instances), np.int32)
    wanted = set(frames)
    row = 0
    for i, frame in clip.frames():
        if i not in wanted:
            continue
        images[row], _ = letterbox(frame, size)
        insts = [inst for inst in clip.instances(i, masks=True, image=frame)
                 if inst.mask is not None and inst.mask.any()]
        for j, inst in enumerate(insts[:max_instances]):
            masks[row, j] = letterbox_mask(inst.mask, size)
            classes[row, j] = 1
        row += 1
        if row == n:
            break
    return SegData(images[:row], masks[:row], classes[:row], ["fly"],
                   [f"{folder}#{i}" for i in frames[:row]])
