"""SegNet training and evaluation data: frames letterboxed to the model's input size, with their instances.

Sources: a COCO instances file whose images are files in a folder or frames of a video (image entries with
``frame_index`` and a video ``file_name``, as `sipec synth` writes them), a `sipec synth` folder, a video with
no labels whose masks are DERIVED by background subtraction or a threshold (:mod:`sipec.data.derived_masks`),
and the SLEAP flies clip with masks DERIVED by thresholding (:mod:`sipec.data.flies`).

A frame is scaled to fit the input (height x width) keeping its aspect ratio and padded at the bottom and
right, so a box in input pixels maps back to the frame by dividing by ``scale``. Masks are kept at input
resolution for training, and as COCO RLE at frame resolution for evaluation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from sipec.data.coco import CocoInstances, annotation_mask, read_coco_instances
from sipec.geometry import encode_rle
from sipec.video import VIDEO_SUFFIXES


@dataclass
class SegData:
    """Letterboxed frames and their instances.

    ``images`` (N, H, W, 3) uint8; ``masks`` (N, G, H, W) bool and ``classes`` (N, G) int32 (1..C, 0 =
    padding) at input resolution; ``gt`` per image the frame-resolution ground truth as (class, RLE)
    pairs (every instance, also beyond G); ``scales`` and ``frame_sizes`` (height, width) per image.
    """

    images: np.ndarray
    masks: np.ndarray
    classes: np.ndarray
    class_names: list[str]
    scales: np.ndarray
    frame_sizes: np.ndarray
    gt: list[list[tuple[int, dict]]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)   # "file#frame" per image, for reports

    def __len__(self) -> int:
        return len(self.images)

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    def subset(self, idx: Iterable[int]) -> SegData:
        idx = np.asarray(list(idx), dtype=int)
        return SegData(self.images[idx], self.masks[idx], self.classes[idx], self.class_names, self.scales[idx],
                       self.frame_sizes[idx], [self.gt[i] for i in idx] if self.gt else [],
                       [self.sources[i] for i in idx] if self.sources else [])

    @staticmethod
    def concat(parts: list[SegData]) -> SegData:
        if not parts:
            raise ValueError("no data")
        g = max(p.masks.shape[1] for p in parts)
        return SegData(np.concatenate([p.images for p in parts]),
                       np.concatenate([_pad_instances(p.masks, g) for p in parts]),
                       np.concatenate([_pad_instances(p.classes, g) for p in parts]),
                       parts[0].class_names, np.concatenate([p.scales for p in parts]),
                       np.concatenate([p.frame_sizes for p in parts]),
                       sum((p.gt for p in parts), []), sum((p.sources for p in parts), []))


def _pad_instances(a: np.ndarray, g: int) -> np.ndarray:
    pad = [(0, 0)] * a.ndim
    pad[1] = (0, g - a.shape[1])
    return np.pad(a, pad)


def letterbox_scale(height: int, width: int, input_height: int, input_width: int) -> float:
    """The factor that fits a height x width frame into the input keeping the aspect ratio."""
    return min(input_height / height, input_width / width)


def letterbox(image: np.ndarray, input_height: int, input_width: int) -> tuple[np.ndarray, float]:
    """Scale `image` (H, W, 3 uint8) to fit the input, pad bottom/right with zeros; returns (image, scale)."""
    h, w = image.shape[:2]
    scale = letterbox_scale(h, w, input_height, input_width)
    nh, nw = min(input_height, max(1, round(h * scale))), min(input_width, max(1, round(w * scale)))
    out = np.zeros((input_height, input_width, 3), np.uint8)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out[:nh, :nw] = image if (nh, nw) == (h, w) else cv2.resize(image, (nw, nh), interpolation=interp)
    return out, scale


def letterbox_mask(mask: np.ndarray, input_height: int, input_width: int) -> np.ndarray:
    """The same scaling for an HxW mask (area-weighted, threshold 0.5)."""
    h, w = mask.shape
    scale = letterbox_scale(h, w, input_height, input_width)
    nh, nw = min(input_height, max(1, round(h * scale))), min(input_width, max(1, round(w * scale)))
    out = np.zeros((input_height, input_width), bool)
    m = mask.astype(np.float32)
    out[:nh, :nw] = cv2.resize(m, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR) >= 0.5
    return out


class _Builder:
    """Collects letterboxed frames and instances, then packs them into a SegData."""

    def __init__(self, input_size: tuple[int, int], max_instances: int, class_names: list[str]) -> None:
        self.h, self.w = input_size
        self.max_instances = max_instances
        self.class_names = class_names
        self.images: list[np.ndarray] = []
        self.masks: list[list[np.ndarray]] = []
        self.classes: list[list[int]] = []
        self.scales: list[float] = []
        self.sizes: list[tuple[int, int]] = []
        self.gt: list[list[tuple[int, dict]]] = []
        self.sources: list[str] = []

    def add(self, frame: np.ndarray, instances: list[tuple[int, np.ndarray]], source: str) -> None:
        """`instances`: (class 1..C, frame-resolution HxW mask) pairs; empty masks are skipped."""
        image, scale = letterbox(frame, self.h, self.w)
        kept = [(c, m) for c, m in instances if m.any()]
        self.images.append(image)
        self.scales.append(scale)
        self.sizes.append(frame.shape[:2])
        self.gt.append([(c, encode_rle(m)) for c, m in kept])
        small = [(c, letterbox_mask(m, self.h, self.w)) for c, m in kept]
        small = [(c, m) for c, m in small if m.any()][:self.max_instances]
        self.masks.append([m for _, m in small])
        self.classes.append([c for c, _ in small])
        self.sources.append(source)

    def build(self) -> SegData:
        n = len(self.images)
        g = max([len(c) for c in self.classes] + [1])
        masks = np.zeros((n, g, self.h, self.w), bool)
        classes = np.zeros((n, g), np.int32)
        for i, (ms, cs) in enumerate(zip(self.masks, self.classes, strict=True)):
            for j, (m, c) in enumerate(zip(ms, cs, strict=True)):
                masks[i, j], classes[i, j] = m, c
        images = np.stack(self.images) if n else np.zeros((0, self.h, self.w, 3), np.uint8)
        return SegData(images, masks, classes, list(self.class_names), np.asarray(self.scales, np.float64),
                       np.asarray(self.sizes, np.int64).reshape(n, 2), self.gt, self.sources)


def _category_index(coco: CocoInstances) -> tuple[list[str], dict[int, int]]:
    cats = sorted(coco.categories, key=lambda c: int(c["id"]))
    return [str(c["name"]) for c in cats], {int(c["id"]): i + 1 for i, c in enumerate(cats)}


def read_video_frames(video: Path, wanted: Iterable[int]) -> dict[int, np.ndarray]:
    """RGB frames of `video` by index (decoded in order); ValueError names the video and the missing frame."""
    from sipec.data.frames import read_frames

    return dict(read_frames(video, wanted, what="the annotations"))


def _select(entries: list, frames: slice | None, limit: int | None, step: int = 1) -> list:
    """``entries[frames][::step][:limit]``."""
    if step < 1:
        raise ValueError(f"step must be at least 1, not {step}")
    if frames is not None:
        entries = entries[frames]
    entries = entries[::step]
    return entries[:limit] if limit else entries


def load_coco(annotations: Path, images_dir: Path, input_size: tuple[int, int], max_instances: int = 16,
              limit: int | None = None, frames: slice | None = None, step: int = 1) -> SegData:
    """Letterboxed frames of a COCO instances file.

    Each image is the file ``images_dir / file_name``, or, when ``file_name`` is a video and the entry has a
    ``frame_index``, that frame of the video. ``frames`` selects image entries (in file order), then every
    ``step``-th, then at most ``limit``. ValueError names the file and the problem.
    """
    coco = read_coco_instances(annotations)
    names, cat_index = _category_index(coco)
    if not names:
        raise ValueError(f"{annotations}: no categories")
    entries = _select(list(coco.images), frames, limit, step)
    videos: dict[str, set[int]] = {}
    for e in entries:
        if str(e.get("file_name", "")).lower().endswith(VIDEO_SUFFIXES):
            if "frame_index" not in e:
                raise ValueError(f"{annotations}: image {e.get('id')} names the video {e['file_name']} "
                                 "but has no frame_index")
            videos.setdefault(str(e["file_name"]), set()).add(int(e["frame_index"]))
    decoded = {name: read_video_frames(images_dir / name, wanted) for name, wanted in videos.items()}
    builder = _Builder(input_size, max_instances, names)
    for entry in entries:
        name = str(entry.get("file_name", ""))
        if name in decoded:
            frame = decoded[name][int(entry["frame_index"])]
            source = f"{images_dir / name}#{entry['frame_index']}"
        else:
            path = images_dir / name
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f"{path}: missing or not an image (file_name of image {entry.get('id')} "
                                 f"in {annotations})")
            frame = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            source = str(path)
        h, w = frame.shape[:2]
        instances = []
        for ann in coco.annotations_for(int(entry["id"])):
            if ann.get("iscrowd", 0):
                continue
            cls = cat_index.get(int(ann["category_id"]))
            if cls is None:
                raise ValueError(f"{annotations}: annotation {ann.get('id')} has unknown category "
                                 f"{ann['category_id']}")
            if "segmentation" not in ann:
                raise ValueError(f"{annotations}: annotation {ann.get('id')} has no segmentation (SegNet needs masks)")
            mask = annotation_mask(ann, h, w)
            if mask.shape != (h, w):
                raise ValueError(f"{annotations}: annotation {ann.get('id')} mask is {mask.shape[1]}x{mask.shape[0]}, "
                                 f"its image is {w}x{h}")
            instances.append((cls, mask))
        builder.add(frame, instances, source)
    return builder.build()


def load_synth(folder: Path, input_size: tuple[int, int], max_instances: int = 16, limit: int | None = None,
               frames: slice | None = None, step: int = 1) -> SegData:
    """A `sipec synth` folder: annotations.json + video.mp4."""
    ann, video = folder / "annotations.json", folder / "video.mp4"
    for p in (ann, video):
        if not p.is_file():
            raise ValueError(f"{p}: not found; --synth expects a `sipec synth` output folder")
    return load_coco(ann, folder, input_size, max_instances, limit, frames, step)


def load_flies(folder: Path, input_size: tuple[int, int], step: int = 1, frames: slice | None = None,
               limit: int | None = None) -> SegData:
    """The SLEAP flies clip with its DERIVED (thresholded) masks, one class "fly".

    ``frames`` selects frame indices of the clip (e.g. ``slice(1050, None)``), then every ``step``-th.
    """
    from sipec.data.flies import FliesClip

    try:
        clip = FliesClip(folder)
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from exc
    indices = _select(list(range(len(clip))), frames, limit, step)
    builder = _Builder(input_size, 2 * len(clip.identity_names), ["fly"])
    if indices:
        wanted = set(indices)
        with clip:
            for i, image in clip.frames(min(indices), max(indices) + 1):
                if i not in wanted:
                    continue
                insts = clip.instances(i, masks=True, image=image)
                builder.add(image, [(1, inst.mask) for inst in insts if inst.mask is not None],
                            f"{folder}#{i} (derived masks)")
    return builder.build()


def video_indices(count: int, frames: slice | None, step: int, limit: int) -> list[int]:
    """Frame indices of a video with `count` frames: ``range(count)[frames][::step]``, then at most `limit` of
    them spread evenly (neighbouring frames are nearly alike, so the first `limit` would teach little)."""
    from sipec.data.derived_masks import spread

    chosen = _select(list(range(count)), frames, None, step)
    return [chosen[i] for i in spread(len(chosen), limit)]


def load_derived(frames: Iterable[tuple[int, np.ndarray, list[np.ndarray]]], video: Path,
                 input_size: tuple[int, int], max_instances: int = 16, class_name: str = "animal") -> SegData:
    """Letterboxed frames of `video` with their DERIVED masks ((index, RGB frame, masks) from
    :func:`sipec.data.derived_masks.derive`), one class."""
    builder = _Builder(input_size, max_instances, [class_name])
    for i, rgb, masks in frames:
        builder.add(rgb, [(1, m) for m in masks], f"{video}#{i} (derived masks)")
    return builder.build()


def parse_frames(text: str | None) -> slice | None:
    """'START:STOP' (either may be empty) -> slice; None or '' -> None. ValueError with the expected form."""
    if not text:
        return None
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start, stop = (int(p) if p.strip() else None for p in parts)
    except ValueError as exc:
        raise ValueError(f"frames {text!r} must look like START:STOP, e.g. 0:280 or 280:") from exc
    return slice(start, stop)
