"""Labelled poses from the formats labs already have, as crops-to-be of one animal each.

Readers (chosen by :func:`load_samples` from the path):
- DeepLabCut: a ``CollectedData_*.csv`` / ``.h5`` file, a ``labeled-data/<video>`` folder or a project folder
  (with ``config.yaml``); single- and multi-animal layouts; missing points stay NaN (loss weight 0);
- SLEAP ``.slp`` (sleap-io), frames read from its video (relative to the .slp when relative);
- COCO keypoints (``*.json``): images by ``file_name`` next to the JSON, or, for image entries with a
  ``frame_index``, that frame of their ``video`` (default ``video.mp4``) beside it, as `sipec synth` writes;
  crops from the annotation's bbox.

Every sample keeps only a patch of its frame around the animal (large enough for augmentation), so a
1500-frame 1024x1024 video does not sit in memory. Crops come from the annotation's box when there is one,
otherwise from the box of the labelled keypoints (DLC, SLEAP), padded by :data:`crops.PAD`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from services.posenet.crops import box_square, keypoint_box

PATCH_MARGIN = 1.6    # patch side / crop side: room for rotation, scaling and shifts


@dataclass
class PoseSample:
    """One animal in one image: a patch of the frame, its keypoints and its crop square (frame pixels)."""

    patch: np.ndarray          # uint8 RGB
    origin: np.ndarray         # (2,) frame coordinates of the patch's top-left pixel
    keypoints: np.ndarray      # (K, 2) frame pixels, NaN = not labelled
    center: np.ndarray         # (2,) crop centre, frame pixels
    side: float                # crop side, frame pixels
    source: str                # image path or "video#frame"
    individual: str = ""
    frame_size: tuple[int, int] = (0, 0)   # (height, width)


@dataclass
class PoseData:
    keypoint_names: list[str]
    samples: list[PoseSample]
    format: str


class DataError(ValueError):
    """A labelled-data file that cannot be used; the message names the file."""


def make_sample(image: np.ndarray, keypoints: np.ndarray, source: str, box: np.ndarray | None = None,
                individual: str = "") -> PoseSample | None:
    """Cut the patch around the animal; None when it has no labelled keypoint and no box."""
    kp = np.asarray(keypoints, dtype=np.float64)[:, :2]
    if box is None:
        box = keypoint_box(kp)
        if box is None:
            return None
    center, side = box_square(box)
    half = side * PATCH_MARGIN / 2.0
    h, w = image.shape[:2]
    x0, y0 = int(max(0, np.floor(center[0] - half))), int(max(0, np.floor(center[1] - half)))
    x1, y1 = int(min(w, np.ceil(center[0] + half))), int(min(h, np.ceil(center[1] + half)))
    if x1 <= x0 or y1 <= y0:
        return None
    patch = np.ascontiguousarray(image[y0:y1, x0:x1, :3])
    return PoseSample(patch, np.array([x0, y0], dtype=np.float64), kp, center, side, source, individual, (h, w))


def _read_image(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"{path}: image not found or not readable")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_video_frames(path: Path, wanted: Iterable[int]) -> Iterable[tuple[int, np.ndarray]]:
    """Decode a video once, yielding (index, RGB frame) for the wanted indices in order."""
    wanted = sorted(set(int(i) for i in wanted))
    if not wanted:
        return
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(f"{path}: video not found or not readable")
    try:
        i, j = 0, 0
        while j < len(wanted):
            ok, bgr = cap.read()
            if not ok:
                raise DataError(f"{path}: video ends at frame {i}, labels need frame {wanted[j]}")
            if i == wanted[j]:
                yield i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                j += 1
            i += 1
    finally:
        cap.release()


# DeepLabCut ---------------------------------------------------------------------------------------------
def _dlc_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    root = path / "labeled-data" if (path / "labeled-data").is_dir() else path
    csvs = sorted(root.glob("CollectedData_*.csv")) + sorted(root.glob("*/CollectedData_*.csv"))
    if csvs:
        return csvs
    return sorted(root.glob("CollectedData_*.h5")) + sorted(root.glob("*/CollectedData_*.h5"))


def _read_dlc_h5(path: Path) -> tuple[list[str], list[str] | None, list[str], np.ndarray]:
    import pandas as pd

    df = pd.read_hdf(path)
    levels = list(df.columns.names)
    if isinstance(df.index, pd.MultiIndex):
        names = ["/".join(map(str, ix)) for ix in df.index]
    else:
        names = [str(ix) for ix in df.index]
    multi = "individuals" in levels
    bodyparts = list(dict.fromkeys(df.columns.get_level_values("bodyparts")))
    inds = list(dict.fromkeys(df.columns.get_level_values("individuals"))) if multi else None
    coords = np.full((len(df), len(inds or [""]), len(bodyparts), 2), np.nan)
    for col in df.columns:
        key = dict(zip(levels, col, strict=True))
        if key["coords"] not in ("x", "y"):
            continue
        i = inds.index(key["individuals"]) if inds else 0
        coords[:, i, bodyparts.index(key["bodyparts"]), 0 if key["coords"] == "x" else 1] = df[col].to_numpy(float)
    return bodyparts, inds, names, coords


def load_dlc(path: Path) -> PoseData:
    """DeepLabCut labelled data; image paths in the file are relative to the project folder."""
    from sipec.data.dlc import read_dlc_csv

    files = _dlc_files(path)
    if not files:
        raise DataError(f"{path}: no CollectedData_*.csv or .h5 file found")
    names: list[str] | None = None
    samples: list[PoseSample] = []
    for f in files:
        try:
            if f.suffix == ".h5":
                bodyparts, inds, images, coords = _read_dlc_h5(f)
            else:
                lab = read_dlc_csv(f)
                bodyparts, inds, images, coords = lab.bodyparts, lab.individuals, lab.image_paths, lab.coords
        except (ValueError, KeyError, OSError) as exc:
            raise DataError(f"{f}: {exc}") from exc
        if names is None:
            names = bodyparts
        elif bodyparts != names:
            raise DataError(f"{f}: bodyparts {bodyparts} differ from {names} in {files[0]}")
        project = f.parent.parent.parent if f.parent.parent.name == "labeled-data" else f.parent
        for r, rel in enumerate(images):
            img_path = project / rel
            if not img_path.is_file():
                img_path = f.parent / Path(rel).name
            image = _read_image(img_path)
            for i, ind in enumerate(inds or [""]):
                s = make_sample(image, coords[r, i], str(img_path), individual=ind)
                if s is not None:
                    samples.append(s)
    assert names is not None
    return PoseData(names, samples, "deeplabcut")


# SLEAP --------------------------------------------------------------------------------------------------
def load_slp(path: Path, video: Path | None = None) -> PoseData:
    """SLEAP labels (user instances preferred) with frames from the labelled video."""
    from sipec.data.sleap import read_slp

    try:
        tracks = read_slp(path)
    except (ValueError, OSError, KeyError) as exc:
        raise DataError(f"{path}: {exc}") from exc
    if video is None:
        video = Path(tracks.video_path)
        if not video.is_absolute():
            video = path.parent / video
        if not video.is_file():
            video = path.parent / Path(tracks.video_path).name
    row_of = {int(f): r for r, f in enumerate(tracks.frame_indices)}
    samples: list[PoseSample] = []
    for idx, frame in read_video_frames(video, row_of):
        r = row_of[idx]
        for t, name in enumerate(tracks.track_names):
            xy = tracks.points[r, t].copy()
            s = make_sample(frame, xy, f"{video}#{idx}", individual=name)
            if s is not None:
                samples.append(s)
    return PoseData(list(tracks.node_names), samples, "sleap")


# COCO ---------------------------------------------------------------------------------------------------
def load_coco(path: Path) -> PoseData:
    """COCO keypoints (category 1's keypoint names); boxes from `bbox`, v=0 points are unlabelled."""
    try:
        data = json.loads(path.read_text())
        cats = {int(c["id"]): c for c in data["categories"]}
        images = {int(im["id"]): im for im in data["images"]}
        anns = data["annotations"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: not a COCO keypoints file ({exc})") from exc
    cat = next((c for c in cats.values() if c.get("keypoints")), None)
    if cat is None:
        raise DataError(f"{path}: no category with 'keypoints'")
    names = list(cat["keypoints"])
    by_image: dict[int, list[dict]] = {}
    for a in anns:
        if int(a.get("category_id", cat["id"])) == int(cat["id"]) and a.get("keypoints"):
            by_image.setdefault(int(a["image_id"]), []).append(a)

    def sample(image: np.ndarray, source: str, a: dict) -> PoseSample | None:
        kp = np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3)
        xy = np.where(kp[:, 2:3] > 0, kp[:, :2], np.nan)
        box = None
        if a.get("bbox"):
            x, y, w, h = a["bbox"]
            box = np.array([x, y, x + w, y + h], dtype=np.float64)
        return make_sample(image, xy, source, box=box, individual=str(a.get("track_id", a.get("id", ""))))

    samples: list[PoseSample] = []
    videos: dict[str, dict[int, int]] = {}      # video file -> frame index -> image id
    for image_id, im in images.items():
        if not by_image.get(image_id):
            continue
        if "frame_index" in im:
            videos.setdefault(str(im.get("video") or "video.mp4"), {})[int(im["frame_index"])] = image_id
            continue
        image = _read_image(path.parent / str(im.get("file_name", "")))
        samples += [s for a in by_image[image_id] if (s := sample(image, str(im["file_name"]), a))]
    for name, frames in videos.items():
        video = path.parent / name
        for idx, frame in read_video_frames(video, frames):
            samples += [s for a in by_image[frames[idx]] if (s := sample(frame, f"{video}#{idx}", a))]
    return PoseData(names, samples, "coco")


def load_samples(path: str | os.PathLike) -> PoseData:
    """Read labelled poses from a DLC / SLEAP / COCO path (see the module docstring)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: not found")
    if p.suffix == ".slp":
        data = load_slp(p)
    elif p.suffix == ".json":
        data = load_coco(p)
    elif p.is_dir() and (p / "keypoints.slp").is_file() and not (p / "labeled-data").exists():
        data = load_slp(p / "keypoints.slp")
    else:
        data = load_dlc(p)
    if not data.samples:
        raise DataError(f"{p}: no labelled animal found")
    return data
