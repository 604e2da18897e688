"""Labelled poses from the formats labs already have, cut into crops-to-be of one animal each.

Reading is two steps, so that the crop size can be chosen from the training labels before any pixel is read:

1. :func:`load_labels` parses the labels only (:class:`LabelSet`: one :class:`LabelledAnimal` per animal per
   image, no pixels). Formats, chosen from the path:

   - DeepLabCut: a ``CollectedData_*.csv`` / ``.h5`` file, a ``labeled-data/<video>`` folder or a project folder
     (with ``config.yaml``); single- and multi-animal layouts; missing points stay NaN (loss weight 0);
   - SLEAP ``.slp`` (sleap-io), frames read from its video (relative to the .slp when relative); points marked
     not visible count as unlabelled, as SLEAP trains them;
   - COCO keypoints (``*.json``): images by ``file_name`` next to the JSON, or, for image entries with a
     ``frame_index``, that frame of their ``video`` (default ``video.mp4``) beside it, as `sipec synth` writes;
     boxes from ``bbox``, masks from ``segmentation``;
   - a `sipec synth` folder: its ``annotations.json`` (COCO, with masks);
   - the SLEAP flies clip folder (``clip.slp`` + ``clip.mp4``, :class:`sipec.data.flies.FliesClip`): keypoints and
     identities from the .slp, masks DERIVED by thresholding (not ground truth).

2. :func:`cut_samples` reads the frames once, in order, and keeps for each animal only a patch around its crop
   square (large enough for augmentation), so a 1500-frame 1024x1024 video does not sit in memory.

Crop geometry (:class:`CropSpec`): every crop of a model has the same side in frame pixels (so the network
sees animals at one scale, as in the pipeline, which cuts fixed-size crops around SegNet's centres of mass);
the centre comes from the annotation's box (``box``), the centre of mass of its mask (``mask``: COCO
segmentation or the flies' derived masks), the box of the labelled keypoints (``keypoints``; this uses the
labels themselves: an ideal detector), or the whole image is the crop (``frame``: padded to a square).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from services.posenet.crops import PAD, keypoint_box

CENTERS = ("box", "mask", "keypoints", "frame")
PATCH_MARGIN = 1.6    # default patch side / crop side: room for rotation, scaling and shifts


class DataError(ValueError):
    """A labelled-data file that cannot be used; the message names the file."""


@dataclass(frozen=True)
class CropSpec:
    """Where crops are centred and how large they are (frame pixels; ignored for ``frame``)."""

    center: str = "box"
    side: float = 0.0

    def to_json(self) -> dict:
        return {"center": self.center, "side_px": self.side}

    @classmethod
    def from_json(cls, d: dict) -> CropSpec:
        return cls(str(d.get("center", "box")), float(d.get("side_px", 0.0)))


@dataclass
class LabelledAnimal:
    """The labels of one animal in one image (no pixels)."""

    source: str                       # image path or "video#frame"
    keypoints: np.ndarray             # (K, 2) frame pixels (pixel centres at integers), NaN = not labelled
    individual: str = ""
    box: np.ndarray | None = None     # annotation box (x1, y1, x2, y2), when the format has one
    rle: dict | None = field(default=None, repr=False)   # annotation mask (COCO RLE), when the format has one

    def size(self) -> float:
        """Longer side of the annotation box, else of the labelled keypoints' box (0 if none)."""
        box = self.box if self.box is not None else keypoint_box(self.keypoints)
        return 0.0 if box is None else float(max(box[2] - box[0], box[3] - box[1]))


ImageReader = Callable[[list[str]], Iterator[tuple[str, np.ndarray]]]
MaskCenters = Callable[[str, np.ndarray, list[LabelledAnimal]], list[np.ndarray | None]]


@dataclass
class LabelSet:
    """Parsed labels and how to read their images."""

    keypoint_names: list[str]
    animals: list[LabelledAnimal]
    format: str
    path: str
    images: ImageReader                  # sources -> (source, RGB image), in any order
    mask_centers: MaskCenters | None = None   # where masks are derived from the pixels (flies clip)
    has_masks: bool = False


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


# crop geometry -------------------------------------------------------------------------------------------
def auto_side(animals: Iterable[LabelledAnimal], pad: float = PAD, percentile: float = 95.0) -> float:
    """Crop side for a set of animals: ``pad`` x the ``percentile`` of their sizes, rounded up to 8 pixels."""
    sizes = np.array([a.size() for a in animals], dtype=np.float64)
    sizes = sizes[sizes > 0]
    if sizes.size == 0:
        raise DataError("no animal with a box or two labelled keypoints: cannot choose a crop size; "
                        "pass --crop-side")
    return float(8 * np.ceil(pad * np.percentile(sizes, percentile) / 8))


INPUT_MIN, INPUT_MAX = 128, 256   # automatic input side: never below the old default, at most what a CPU trains
SPACING_CELLS = 4.0               # ... wanted: the closest keypoints this many heatmap cells apart


def keypoint_spacing(animals: Iterable[LabelledAnimal], percentile: float = 10.0) -> float:
    """The ``percentile`` (over animals) of the distance between an animal's two closest labelled keypoints, in
    frame pixels; 0 when no animal has two."""
    from scipy.spatial.distance import pdist

    closest = []
    for a in animals:
        d = pdist(a.keypoints[np.isfinite(a.keypoints).all(axis=1)])
        if d.size and d.min() > 0:
            closest.append(d.min())
    return float(np.percentile(closest, percentile)) if closest else 0.0


def auto_input_size(animals: Iterable[LabelledAnimal], side: float, stride: int) -> tuple[int, str]:
    """The network input side for crops of ``side`` frame pixels, and why: as large as needed to keep the closest
    keypoints (10th percentile of the animals) SPACING_CELLS heatmap cells apart, never above the crop's own
    resolution, rounded up to 32, between INPUT_MIN and INPUT_MAX."""
    spacing = keypoint_spacing(animals)
    need = side * SPACING_CELLS * stride / spacing if spacing > 0 else side
    size = int(min(INPUT_MAX, max(INPUT_MIN, 32 * np.ceil(min(side, need) / 32))))
    why = f"crop {side:g} px"
    if spacing > 0:
        why += (f"; closest keypoints {spacing:.1f} px apart (10th percentile): {SPACING_CELLS:g} heatmap cells "
                f"between them need {need:.0f} px" + (f", no more than the crop's own {side:g}" if need > side else ""))
    return size, f"{why}; rounded up to 32 within {INPUT_MIN}..{INPUT_MAX}: scale {size / side:.2f}"


def crop_center(animal: LabelledAnimal, spec: CropSpec, image_shape: tuple[int, ...],
                mask_center: np.ndarray | None = None) -> np.ndarray | None:
    """Centre of the animal's crop, per ``spec.center``; None when it has none (e.g. no labelled keypoint)."""
    h, w = image_shape[:2]
    if spec.center == "frame":
        return np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    if spec.center == "mask":
        return mask_center
    box = animal.box if (spec.center == "box" and animal.box is not None) else keypoint_box(animal.keypoints)
    return None if box is None else np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])


def make_sample(image: np.ndarray, animal: LabelledAnimal, center: np.ndarray, side: float,
                margin: float = PATCH_MARGIN) -> PoseSample | None:
    """Cut the patch around the crop square (``margin`` x its side, clipped to the image)."""
    half = side * margin / 2.0
    h, w = image.shape[:2]
    x0, y0 = int(max(0, np.floor(center[0] - half))), int(max(0, np.floor(center[1] - half)))
    x1, y1 = int(min(w, np.ceil(center[0] + half))), int(min(h, np.ceil(center[1] + half)))
    if x1 <= x0 or y1 <= y0:
        return None
    patch = np.ascontiguousarray(image[y0:y1, x0:x1, :3])
    return PoseSample(patch, np.array([x0, y0], dtype=np.float64), np.asarray(animal.keypoints, np.float64),
                      np.asarray(center, np.float64), float(side), animal.source, animal.individual, (h, w))


def cut_samples(labels: LabelSet, spec: CropSpec, indices: list[int] | None = None,
                margin: float = PATCH_MARGIN) -> list[PoseSample]:
    """Read the images of the chosen animals (default all) and cut one sample each, in ``indices`` order.

    An animal without a crop centre (``mask`` centre asked where it has no mask, no labelled keypoint) raises
    :class:`DataError` naming it, so that a test set is never silently smaller.
    """
    if spec.center not in CENTERS:
        raise DataError(f"crop centre must be one of {', '.join(CENTERS)}, not {spec.center!r}")
    if spec.center == "mask" and not labels.has_masks:
        raise DataError(f"{labels.path}: --crop-center mask needs masks (COCO segmentation, a sipec synth "
                        f"folder or the flies clip folder); {labels.format} labels have none")
    if spec.center != "frame" and spec.side <= 0:
        raise DataError(f"crop side must be > 0 pixels, got {spec.side}")
    chosen = list(range(len(labels.animals))) if indices is None else list(indices)
    by_source: dict[str, list[int]] = {}
    for i in chosen:
        by_source.setdefault(labels.animals[i].source, []).append(i)
    out: dict[int, PoseSample] = {}
    for source, image in labels.images(list(by_source)):
        idx = by_source[source]
        animals = [labels.animals[i] for i in idx]
        mask_centers: list[np.ndarray | None] = [None] * len(idx)
        if spec.center == "mask":
            mask_centers = _mask_centers(labels, source, image, animals)
        for i, animal, mc in zip(idx, animals, mask_centers, strict=True):
            center = crop_center(animal, spec, image.shape, mc)
            if center is None:
                what = "no mask" if spec.center == "mask" else "no labelled keypoint"
                raise DataError(f"{labels.path}: {source} {animal.individual}: {what} to centre the crop on "
                                f"(--crop-center {spec.center})")
            side = float(max(image.shape[:2])) if spec.center == "frame" else spec.side
            s = make_sample(image, animal, center, side, margin)
            if s is None:
                raise DataError(f"{labels.path}: {source}: the crop centred at {center.round(1).tolist()} lies "
                                f"outside the {image.shape[1]}x{image.shape[0]} image")
            out[i] = s
    missing = [labels.animals[i].source for i in chosen if i not in out]
    if missing:
        raise DataError(f"{labels.path}: images not read: {', '.join(missing[:3])}")
    return [out[i] for i in chosen]


def _mask_centers(labels: LabelSet, source: str, image: np.ndarray, animals: list[LabelledAnimal]
                  ) -> list[np.ndarray | None]:
    if labels.mask_centers is not None:
        return labels.mask_centers(source, image, animals)
    from sipec.geometry import center_of_mass, decode_rle

    out: list[np.ndarray | None] = []
    for a in animals:
        com = center_of_mass(decode_rle(a.rle)) if a.rle is not None else None
        # sipec.geometry puts pixel centres at +0.5; keypoints (DLC/SLEAP/COCO) at integers
        out.append(None if com is None else np.array(com) - 0.5)
    return out


# image access --------------------------------------------------------------------------------------------
def read_image(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"{path}: image not found or not readable")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_video_frames(path: Path, wanted: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Decode a video once, yielding (index, RGB frame) for the wanted indices in order; DataError names the file."""
    from sipec.data.frames import read_frames

    try:
        yield from read_frames(path, wanted)
    except ValueError as exc:
        raise DataError(str(exc)) from exc


def video_source(video: Path, frame: int) -> str:
    """The source name of a video frame: ``<video>#<frame>``."""
    return f"{video}#{frame}"


def _file_images(paths: dict[str, Path]) -> ImageReader:
    def images(sources: list[str]) -> Iterator[tuple[str, np.ndarray]]:
        for s in sources:
            yield s, read_image(paths[s])
    return images


def _video_images(video_of: dict[str, tuple[Path, int]]) -> ImageReader:
    def images(sources: list[str]) -> Iterator[tuple[str, np.ndarray]]:
        by_video: dict[Path, dict[int, str]] = {}
        for s in sources:
            video, frame = video_of[s]
            by_video.setdefault(video, {})[frame] = s
        for video, frames in by_video.items():
            for idx, image in read_video_frames(video, frames):
                yield frames[idx], image
    return images


# DeepLabCut ---------------------------------------------------------------------------------------------
def _dlc_files(path: Path) -> list[Path]:
    """The CollectedData files of a DeepLabCut path, CSV preferred over H5: the file itself; else those in the
    folder (a Lightning Pose project keeps one ``CollectedData.csv`` at its root, DeepLabCut one
    ``CollectedData_<scorer>.csv`` per ``labeled-data/<video>`` folder); else in its ``labeled-data/*`` or ``*``
    folders."""
    if path.is_file():
        return [path]
    roots = [path, path / "labeled-data"] if (path / "labeled-data").is_dir() else [path]
    for root in roots:
        for pattern in ("CollectedData*.csv", "*/CollectedData*.csv", "CollectedData*.h5", "*/CollectedData*.h5"):
            found = sorted(root.glob(pattern))
            if found:
                return found
    return []


def read_dlc_h5(path: Path) -> tuple[list[str], list[str] | None, list[str], np.ndarray]:
    """(bodyparts, individuals or None, image paths, coords (N, I, K, 2)) of a DeepLabCut CollectedData .h5."""
    import pandas as pd

    df = pd.read_hdf(path)
    levels = list(df.columns.names)
    if "bodyparts" not in levels or "coords" not in levels:
        raise DataError(f"{path}: columns {levels} are not DeepLabCut's (scorer, [individuals,] bodyparts, coords)")
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


def load_dlc(path: Path) -> LabelSet:
    """DeepLabCut labelled data; image paths in the file are relative to the project folder."""
    from sipec.data.dlc import read_dlc_csv

    files = _dlc_files(path)
    if not files:
        raise DataError(f"{path}: no DeepLabCut labels found (CollectedData*.csv or .h5 in it, in its labeled-data/* "
                        "folders or its subfolders)")
    names: list[str] | None = None
    animals: list[LabelledAnimal] = []
    paths: dict[str, Path] = {}
    for f in files:
        try:
            if f.suffix == ".h5":
                bodyparts, inds, images, coords = read_dlc_h5(f)
            else:
                lab = read_dlc_csv(f)
                bodyparts, inds, images, coords = lab.bodyparts, lab.individuals, lab.image_paths, lab.coords
        except (ValueError, KeyError, OSError, ImportError) as exc:
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
            if not img_path.is_file():
                raise DataError(f"{f}: row {r + 1}: image {rel} not found (looked in {project} and {f.parent})")
            paths[str(img_path)] = img_path
            for i, ind in enumerate(inds or [""]):
                if np.isfinite(coords[r, i]).all(axis=1).any():
                    animals.append(LabelledAnimal(str(img_path), coords[r, i].copy(), ind))
    assert names is not None
    return LabelSet(names, animals, "deeplabcut", str(path), _file_images(paths))


# SLEAP --------------------------------------------------------------------------------------------------
def load_slp(path: Path, video: Path | None = None) -> LabelSet:
    """SLEAP labels (user instances preferred) with frames from the labelled videos: every video of the file
    (`video` replaces the stored path of a single-video file)."""
    from sipec.data.sleap import read_slp_videos

    try:
        per_video = read_slp_videos(path)
    except (ValueError, OSError, KeyError) as exc:
        raise DataError(f"{path}: {exc}") from exc
    if video is not None and len(per_video) > 1:
        raise DataError(f"{path}: {len(per_video)} videos; a video path can replace the stored one of a single-video "
                        "file only")
    animals: list[LabelledAnimal] = []
    video_of: dict[str, tuple[Path, int]] = {}
    for tracks in per_video:
        source_video = video
        if source_video is None:
            stored = Path(tracks.video_path.replace("\\", "/"))
            source_video = stored if stored.is_absolute() else path.parent / stored
            if not source_video.is_file():
                source_video = path.parent / stored.name
        for r, frame in enumerate(tracks.frame_indices):
            source = video_source(source_video, int(frame))
            video_of[source] = (source_video, int(frame))
            for t, name in enumerate(tracks.track_names):
                xy = np.where(tracks.visible[r, t][:, None], tracks.points[r, t], np.nan)
                if np.isfinite(xy).all(axis=1).any():
                    animals.append(LabelledAnimal(source, xy, name))
    return LabelSet(list(per_video[0].node_names), animals, "sleap", str(path), _video_images(video_of))


def load_flies(folder: Path) -> LabelSet:
    """The SLEAP flies clip (:class:`sipec.data.flies.FliesClip`): labels from clip.slp, DERIVED masks."""
    from sipec.data.flies import FliesClip

    clip = FliesClip(folder)
    video = clip.path / "clip.mp4"
    animals: list[LabelledAnimal] = []
    for f in range(len(clip)):
        for t, name in enumerate(clip.identity_names):
            xy = clip.points[f, t]
            if np.isfinite(xy).all(axis=1).any():
                animals.append(LabelledAnimal(video_source(video, f), xy.copy(), name))

    def images(sources: list[str]) -> Iterator[tuple[str, np.ndarray]]:
        wanted = {int(s.rsplit("#", 1)[1]): s for s in sources}
        for idx, image in read_video_frames(video, wanted):
            yield wanted[idx], image

    def mask_centers(source: str, image: np.ndarray, which: list[LabelledAnimal]) -> list[np.ndarray | None]:
        insts = {i.identity_name: i for i in clip.instances(int(source.rsplit("#", 1)[1]), image=image)}
        out: list[np.ndarray | None] = []
        for a in which:
            inst = insts.get(a.individual)
            out.append(None if inst is None or inst.com is None else np.array(inst.com) - 0.5)
        return out

    return LabelSet(list(clip.keypoint_names), animals, "sleap-flies-clip (derived masks)", str(folder), images,
                    mask_centers=mask_centers, has_masks=True)


# COCO ---------------------------------------------------------------------------------------------------
def load_coco(path: Path) -> LabelSet:
    """COCO keypoints (the first category with keypoint names); v=0 points are unlabelled."""
    try:
        data = json.loads(path.read_text())
        cats = {int(c["id"]): c for c in data["categories"]}
        images = {int(im["id"]): im for im in data["images"]}
        anns = data["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a COCO keypoints file ({exc})") from exc
    cat = next((c for c in cats.values() if c.get("keypoints")), None)
    if cat is None:
        raise DataError(f"{path}: no category with 'keypoints'")
    names = list(cat["keypoints"])
    animals: list[LabelledAnimal] = []
    files: dict[str, Path] = {}
    video_of: dict[str, tuple[Path, int]] = {}
    source_of: dict[int, str] = {}
    has_masks = False
    for image_id, im in sorted(images.items(), key=lambda kv: (str(kv[1].get("video", "")),
                                                               int(kv[1].get("frame_index", 0)), kv[0])):
        if "frame_index" in im:
            video = path.parent / str(im.get("video") or "video.mp4")
            source_of[image_id] = video_source(video, int(im["frame_index"]))
            video_of[source_of[image_id]] = (video, int(im["frame_index"]))
        else:
            source_of[image_id] = str(path.parent / str(im.get("file_name", "")))
            files[source_of[image_id]] = Path(source_of[image_id])
    for a in anns:
        if int(a.get("category_id", cat["id"])) != int(cat["id"]) or not a.get("keypoints"):
            continue
        if int(a["image_id"]) not in source_of:
            raise DataError(f"{path}: annotation {a.get('id')} refers to unknown image {a['image_id']}")
        kp = np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3)
        if len(kp) != len(names):
            raise DataError(f"{path}: annotation {a.get('id')} has {len(kp)} keypoints, category "
                            f"{cat['name']!r} names {len(names)}")
        xy = np.where(kp[:, 2:3] > 0, kp[:, :2], np.nan)
        box = None
        if a.get("bbox"):
            x, y, w, h = (float(v) for v in a["bbox"])
            box = np.array([x, y, x + w, y + h])
        rle = _coco_rle(a)
        has_masks = has_masks or rle is not None
        animals.append(LabelledAnimal(source_of[int(a["image_id"])], xy, str(a.get("track_id", a.get("id", ""))),
                                      box, rle))
    order = {s: i for i, s in enumerate(source_of.values())}
    animals.sort(key=lambda an: order[an.source])
    file_images, vid_images = _file_images(files), _video_images(video_of)

    def read(sources: list[str]) -> Iterator[tuple[str, np.ndarray]]:
        yield from file_images([s for s in sources if s in files])
        yield from vid_images([s for s in sources if s in video_of])

    return LabelSet(names, animals, "coco", str(path), read, has_masks=has_masks)


def _coco_rle(ann: dict) -> dict | None:
    seg = ann.get("segmentation")
    if isinstance(seg, dict) and isinstance(seg.get("counts"), str | bytes):
        return seg
    return None


def load_labels(path: str | os.PathLike) -> LabelSet:
    """Parse labelled poses from a DLC / SLEAP / COCO / synth / flies-clip path (see the module docstring)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: not found")
    if p.suffix == ".slp":
        labels = load_slp(p)
    elif p.suffix == ".json":
        labels = load_coco(p)
    elif p.is_dir() and (p / "clip.slp").is_file() and (p / "clip.mp4").is_file():
        labels = load_flies(p)
    elif p.is_dir() and (p / "annotations.json").is_file() and (p / "summary.json").is_file():
        labels = load_coco(p / "annotations.json")
    elif p.suffix in (".csv", ".h5") or p.is_dir():
        labels = load_dlc(p)
    else:
        raise DataError(f"{p}: not a labelled-data path (DeepLabCut CSV/H5 or folder, SLEAP .slp, COCO .json, "
                        "a sipec synth folder or the flies clip folder)")
    if not labels.animals:
        raise DataError(f"{p}: no labelled animal found")
    return labels


def load_samples(path: str | os.PathLike, spec: CropSpec | None = None) -> PoseData:
    """Labels and crops of every animal (side chosen automatically when ``spec.side`` is 0)."""
    labels = load_labels(path)
    spec = spec or CropSpec()
    if spec.center != "frame" and spec.side <= 0:
        spec = CropSpec(spec.center, auto_side(labels.animals))
    return PoseData(labels.keypoint_names, cut_samples(labels, spec), labels.format)
