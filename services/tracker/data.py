"""Inputs and outputs of the tracker's commands: 3D position tables, ground-truth tracks, tracks JSON.

Ground truth for `sipec evaluate tracker --gt`:
- a COCO instances file with ``track_id`` on every annotation and ``frame_index`` on every image
  (`sipec synth`'s annotations.json); ground-truth objects are the track ids, identities the
  ``identity_name``s;
- the sleap-flies-clip folder (../shared/data/sleap-flies-clip): both flies on every frame with their
  labelled identity (female/male) and masks DERIVED by thresholding (:mod:`sipec.data.flies`), not
  ground-truth masks.

Predictions (the tracks JSON, written by `sipec evaluate tracker --save-pred` and read by ``--pred``) are a
COCO results list -- one object per tracked instance with ``image_id``, ``category_id`` 1, ``bbox``
``[x, y, w, h]``, ``segmentation`` (compressed RLE, counts as str), ``score`` -- plus the tracker's fields
``frame_index``, ``track_id``, ``identity`` (empty when unknown) and ``identity_confidence``. pycocotools
reads it with ``COCO.loadRes``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from services.tracker.detections import Detection, detection_from_box, detection_from_rle
from sipec.data.atomic import write_text_atomic
from sipec.geometry import rle_to_json

POSITION_COLUMNS: tuple[str, ...] = ("x", "y", "z", "u", "v", "area")


# ---------------------------------------------------------------------------------------------
# 3D positions (sipec synth's positions_3d.csv)
# ---------------------------------------------------------------------------------------------


@dataclass
class PositionsData:
    area_uv: np.ndarray                      # (N, 3) mask area, COM u, v (pixels)
    xyz: np.ndarray                          # (N, 3) world position
    image_size: tuple[int, int] | None       # (width, height) from camera.json next to the CSV
    room: tuple[float, float, float] | None  # floor width, floor depth, wall height from camera.json
    dropped: int                             # rows left out (animal hidden: no mask)


def load_positions(path: str | os.PathLike) -> PositionsData:
    """Rows with a visible mask of a positions CSV (frame, identity, x, y, z, u, v, area[, visible]).

    Rows are ordered by frame (then identity), so that contiguous cross-validation folds hold out
    stretches of video. camera.json beside the CSV (as `sipec synth` writes it) gives the image and room
    sizes. ValueError naming the file and the problem otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a CSV file ({exc})") from None
    missing = [c for c in POSITION_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; expected a positions CSV with "
                         f"{', '.join(POSITION_COLUMNS)} (sipec synth's positions_3d.csv)")
    for c in POSITION_COLUMNS:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    order = [c for c in ("frame", "identity") if c in df.columns]
    if order:
        df = df.sort_values(order, kind="stable")
    keep = (df["area"] > 0) & np.isfinite(df[list(POSITION_COLUMNS)]).all(axis=1)
    if "visible" in df.columns:
        keep &= pd.to_numeric(df["visible"], errors="coerce") == 1
    used = df[keep]
    if len(used) == 0:
        raise ValueError(f"{path}: no row has a visible mask (area > 0 with finite x, y, z, u, v)")
    image_size, room = None, None
    camera = path.parent / "camera.json"
    if camera.is_file():
        cam = json.loads(camera.read_text())
        image_size = (int(cam["width"]), int(cam["height"]))
        arena = cam.get("arena") or {}
        if "floor" in arena and "wall_height" in arena:
            room = (float(arena["floor"][0]), float(arena["floor"][1]), float(arena["wall_height"]))
    return PositionsData(used[["area", "u", "v"]].to_numpy(np.float64), used[["x", "y", "z"]].to_numpy(np.float64),
                         image_size, room, int(len(df) - len(used)))


# ---------------------------------------------------------------------------------------------
# Ground-truth tracks
# ---------------------------------------------------------------------------------------------


@dataclass
class GroundTruthFrame:
    frame: int
    objects: list[tuple[int | str, Detection]]       # (ground-truth object id, detection)
    identities: list[str]                             # identity name of each object (same order)


@dataclass
class GroundTruth:
    source: str                                       # what it is, for reports
    frames: list[GroundTruthFrame]
    identity_names: list[str]
    image_size: tuple[int, int]                       # (width, height)
    masks_derived: bool = False
    notes: list[str] = field(default_factory=list)


def load_ground_truth(path: str | os.PathLike, max_frames: int | None = None, start: int = 0) -> GroundTruth:
    """Ground-truth tracks from a COCO annotations file with track ids, or the flies clip folder.

    Only frames with index >= `start`, and of those the first `max_frames` (all when None).
    """
    path = Path(path)
    if start < 0:
        raise ValueError(f"start frame must be >= 0, not {start}")
    if path.is_dir() and (path / "clip.slp").is_file():
        return _flies_ground_truth(path, max_frames, start)
    if path.is_dir() and (path / "annotations.json").is_file():
        path = path / "annotations.json"
    if not path.is_file():
        raise ValueError(f"{path}: not found; give a COCO annotations file with track ids (sipec synth's "
                         "annotations.json) or the sleap-flies-clip folder")
    return _coco_ground_truth(path, max_frames, start)


def _coco_ground_truth(path: Path, max_frames: int | None, start: int = 0) -> GroundTruth:
    from sipec.data.coco import read_coco_instances

    coco = read_coco_instances(path)
    if not coco.images:
        raise ValueError(f"{path}: no images")
    frames_of = {int(im["id"]): int(im.get("frame_index", i)) for i, im in enumerate(coco.images)}
    sizes = {(int(im["width"]), int(im["height"])) for im in coco.images}
    if len(sizes) != 1:
        raise ValueError(f"{path}: images of different sizes {sorted(sizes)}; one video at a time")
    by_frame: dict[int, GroundTruthFrame] = {f: GroundTruthFrame(f, [], []) for f in sorted(frames_of.values())}
    names: set[str] = set()
    for ann in coco.annotations:
        if "track_id" not in ann:
            raise ValueError(f"{path}: annotation {ann.get('id')} has no track_id; tracking ground truth needs one "
                             "on every annotation")
        f = frames_of.get(int(ann["image_id"]))
        if f is None:
            raise ValueError(f"{path}: annotation {ann.get('id')} refers to unknown image_id {ann['image_id']}")
        seg = ann.get("segmentation")
        if isinstance(seg, dict) and "counts" in seg:
            det = detection_from_rle(len(by_frame[f].objects), seg, com=tuple(ann["com"]) if ann.get("com") else None)
        else:
            x, y, w, h = (float(v) for v in ann["bbox"])
            det = detection_from_box(len(by_frame[f].objects), (x, y, x + w, y + h))
        name = str(ann.get("identity_name", ann["track_id"]))
        names.add(name)
        by_frame[f].objects.append((int(ann["track_id"]), det))
        by_frame[f].identities.append(name)
    frames = [f for f in by_frame.values() if f.frame >= start]
    if not frames:
        raise ValueError(f"{path}: no frame from index {start} on (the last is {max(by_frame)})")
    frames = frames[:max_frames] if max_frames else frames
    return GroundTruth(f"{path} (COCO masks with track ids)", frames, sorted(names), sizes.pop())


def _flies_ground_truth(path: Path, max_frames: int | None, start: int = 0) -> GroundTruth:
    from sipec.data.flies import FliesClip

    clip = FliesClip(path)
    frames = []
    if start >= len(clip):
        clip.close()
        raise ValueError(f"{path}: no frame from index {start} on (the clip has {len(clip)})")
    stop = min(len(clip), start + max_frames) if max_frames else len(clip)
    w, h = 0, 0
    try:
        for i, image in clip.frames(start, stop):
            objs, ids = [], []
            for inst in clip.instances(i, image=image):
                if inst.mask is None or not inst.mask.any():
                    continue
                objs.append((inst.identity_name, detection_from_rle(len(objs), inst.rle, com=inst.com)))
                ids.append(inst.identity_name)
            frames.append(GroundTruthFrame(i, objs, ids))
            h, w = image.shape[:2]
    finally:
        clip.close()
    return GroundTruth(f"{path} (SLEAP identities, masks DERIVED by thresholding)", frames,
                       list(clip.identity_names), (w, h), masks_derived=True,
                       notes=["masks are derived from the frames by thresholding (sipec.data.flies), not ground truth"])


# ---------------------------------------------------------------------------------------------
# Tracks JSON (COCO results + track fields)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackedInstance:
    frame: int
    track_id: int
    detection: Detection
    identity: str = ""
    identity_confidence: float = 0.0


def write_tracks_json(path: str | os.PathLike, tracked: Iterable[TrackedInstance]) -> None:
    rows = []
    for t in tracked:
        x1, y1, x2, y2 = t.detection.box
        row = {"image_id": t.frame + 1, "frame_index": t.frame, "category_id": 1,
               "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)], "score": 1.0,
               "track_id": t.track_id, "identity": t.identity,
               "identity_confidence": round(float(t.identity_confidence), 4)}
        if t.detection.rle is not None:
            row["segmentation"] = rle_to_json(t.detection.rle)
        rows.append(row)
    write_text_atomic(path, json.dumps(rows, separators=(",", ":")))


def read_tracks_json(path: str | os.PathLike) -> list[TrackedInstance]:
    """The tracks JSON; ValueError naming the file, the entry and the problem otherwise."""
    path = Path(path)
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of tracked instances (COCO results with track_id)")
    out = []
    for k, row in enumerate(rows):
        try:
            frame = int(row["frame_index"]) if "frame_index" in row else int(row["image_id"]) - 1
            track = int(row["track_id"])
            seg = row.get("segmentation")
            if isinstance(seg, dict):
                det = detection_from_rle(0, seg)
            else:
                x, y, w, h = (float(v) for v in row["bbox"])
                det = detection_from_box(0, (x, y, x + w, y + h))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: entry {k} is not a tracked instance (needs frame_index or image_id, track_id, "
                             f"and segmentation or bbox): {exc!r}") from None
        out.append(TrackedInstance(frame, track, det, str(row.get("identity") or ""),
                                   float(row.get("identity_confidence") or 0.0)))
    return out
