"""Labelled crops for IdNet: read once from a video, kept in memory as one `CropSet`.

Sources (`load_source` picks by what the path holds):
- a `sipec synth` folder (summary.json): every visible animal, its mask and identity;
- an identity CSV (sipec/data/labels.py format: video, frame, track_id, identity, identity_name, x1..y2), or a
  folder holding identities.csv: crops centred on the box centre, no masks;
- a SLEAP folder (clip.slp + clip.mp4, read by sipec.data.flies.FliesClip): identities from the SLEAP tracks,
  boxes from the keypoints; with ``masks=True`` the DERIVED (thresholded) masks of FliesClip, not ground truth.

Each frame is decoded once; each labelled instance becomes one S x S crop (cut ``crop_px`` source pixels around
its centre, resized) plus its mask cut the same way. Sequences of 2T+1 crops are index arrays into the set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from services.idnet.masking import MaskSettings, prepare_sequence, resize_image, resize_mask
from sipec.data.frames import read_frames
from sipec.geometry import crop_around


@dataclass
class CropSet:
    """Unmasked S x S crops of labelled instances, their masks and labels (row i = one instance in one frame)."""

    identity_names: list[str]
    crops: np.ndarray                  # (N, S, S, 3) uint8
    masks: np.ndarray                  # (N, S, S) bool (all True where has_mask is False)
    has_mask: np.ndarray               # (N,) bool
    identity: np.ndarray               # (N,) int
    track: np.ndarray                  # (N,) int
    frame: np.ndarray                  # (N,) int
    video: np.ndarray                  # (N,) int, index into `videos`
    videos: list[str] = field(default_factory=list)
    source: str = ""                   # what kind of labels (for the training summary)

    def __len__(self) -> int:
        return len(self.identity)

    def subset(self, rows: np.ndarray) -> CropSet:
        rows = np.asarray(rows)
        return CropSet(self.identity_names, self.crops[rows], self.masks[rows], self.has_mask[rows],
                       self.identity[rows], self.track[rows], self.frame[rows], self.video[rows],
                       list(self.videos), self.source)

    def sequence_indices(self, t: int) -> np.ndarray:
        """(N, 2T+1) rows of the same video and track at frame-T..frame+T; a missing frame repeats the nearest
        present one towards the centre."""
        lookup = {(int(v), int(k), int(f)): i for i, (v, k, f) in
                  enumerate(zip(self.video, self.track, self.frame, strict=True))}
        out = np.empty((len(self), 2 * t + 1), np.int64)
        for i, (v, k, f) in enumerate(zip(self.video, self.track, self.frame, strict=True)):
            out[i, t] = i
            for side in (-1, 1):
                prev = i
                for d in range(1, t + 1):
                    prev = lookup.get((int(v), int(k), int(f) + side * d), prev)
                    out[i, t + side * d] = prev
        return out

    def sequence(self, indices: Sequence[int], settings: MaskSettings) -> np.ndarray:
        """The network input (2T+1, S, S, 3) of one row of `sequence_indices`, masked by the shared function."""
        masks = [self.masks[j] if self.has_mask[j] else None for j in indices]
        return prepare_sequence([self.crops[j] for j in indices], masks, settings)

    def masked_at_offset(self, offset: int, settings: MaskSettings, rows: np.ndarray | None = None) -> np.ndarray:
        """All crops masked as a crop `offset` frames from the centre is (for precomputing frozen features)."""
        rows = np.arange(len(self)) if rows is None else rows
        out = np.empty((len(rows), *self.crops.shape[1:]), np.uint8)
        for n, j in enumerate(rows):
            seq = prepare_sequence([self.crops[j]], [self.masks[j]] if self.has_mask[j] else None,
                                   _with_offset(settings, offset))
            out[n] = seq[0]
        return out


def _with_offset(settings: MaskSettings, offset: int) -> MaskSettings:
    """Settings whose centre dilation equals the dilation at `offset` (one-crop sequences use offset 0)."""
    return MaskSettings(settings.input_size, settings.crop_px, settings.dilation(offset), 0, settings.align)


class _Builder:
    def __init__(self, settings: MaskSettings) -> None:
        self.s = settings
        self.rows: dict[str, list] = {k: [] for k in ("crops", "masks", "has_mask", "identity", "track", "frame",
                                                       "video")}

    def add(self, image: np.ndarray, center: tuple[float, float], mask: np.ndarray | None, identity: int,
            track: int, frame: int, video: int) -> None:
        size = self.s.input_size
        self.rows["crops"].append(resize_image(crop_around(image, center, self.s.crop_px), size))
        if mask is None:
            self.rows["masks"].append(np.ones((size, size), bool))
        else:
            self.rows["masks"].append(resize_mask(crop_around(mask.astype(np.uint8), center, self.s.crop_px), size))
        self.rows["has_mask"].append(mask is not None)
        for k, v in (("identity", identity), ("track", track), ("frame", frame), ("video", video)):
            self.rows[k].append(v)

    def build(self, names: list[str], videos: list[str], source: str) -> CropSet:
        if not self.rows["crops"]:
            raise ValueError(f"{', '.join(videos)}: no labelled instances")
        r = self.rows
        return CropSet(names, np.stack(r["crops"]), np.stack(r["masks"]), np.array(r["has_mask"], bool),
                       np.array(r["identity"], np.int64), np.array(r["track"], np.int64),
                       np.array(r["frame"], np.int64), np.array(r["video"], np.int64), videos, source)


def load_synth(path: Path, settings: MaskSettings, max_frames: int | None = None, masks: bool = True) -> CropSet:
    """Every visible animal of a `sipec synth` folder, with its ground-truth mask."""
    from sipec.synth.reader import SynthDataset

    ds = SynthDataset(path)
    b = _Builder(settings)
    stop = min(len(ds), max_frames) if max_frames else len(ds)
    for i, image in ds.frames(0, stop):
        for inst in ds.instances(i):
            b.add(image, inst.com, inst.mask if masks else None, inst.identity, inst.track_id, i, 0)
    return b.build(list(ds.identity_names), [str(path)], "sipec synth (ground-truth masks)" if masks
                   else "sipec synth (no masks)")


def load_identity_csv(csv: Path, settings: MaskSettings, max_frames: int | None = None) -> CropSet:
    """Boxes and identities from an identity CSV; crops centred on the box centres, no masks."""
    from sipec.data.labels import read_identity_csv

    df = read_identity_csv(csv)
    if max_frames:
        df = df[df.frame < max_frames]
    names_by_id = dict(zip(df.identity.astype(int), df.identity_name.astype(str), strict=False))
    names = [names_by_id.get(i, f"identity_{i}") for i in range(max(names_by_id) + 1)]
    b = _Builder(settings)
    videos = sorted(df.video.astype(str).unique())
    for v, video in enumerate(videos):
        rows = df[df.video == video]
        by_frame = {f: g for f, g in rows.groupby("frame")}
        path = csv.parent / video
        if not path.is_file():
            raise ValueError(f"{csv}: video {video!r} not found next to the CSV ({path})")
        for f, image in read_frames(path, by_frame):
            for r in by_frame[f].itertuples():
                b.add(image, ((r.x1 + r.x2) / 2, (r.y1 + r.y2) / 2), None, int(r.identity), int(r.track_id), f, v)
    return b.build(names, [str(csv.parent / v) for v in videos], f"identity CSV {csv.name} (boxes)")


def load_sleap_clip(path: Path, settings: MaskSettings, max_frames: int | None = None,
                    masks: bool = True) -> CropSet:
    """SLEAP tracks (clip.slp + clip.mp4): identity = SLEAP track; centre from the DERIVED mask or keypoints."""
    from sipec.data.flies import FliesClip

    clip = FliesClip(path)
    b = _Builder(settings)
    try:
        stop = min(len(clip), max_frames) if max_frames else len(clip)
        for i, image in clip.frames(0, stop):
            for inst in clip.instances(i, masks=masks, image=image):
                if inst.com is None:
                    continue
                b.add(image, inst.com, inst.mask if masks else None, inst.identity, inst.identity + 1, i, 0)
    finally:
        clip.close()
    return b.build(list(clip.identity_names), [str(path)],
                   "SLEAP tracks" + (" (DERIVED threshold masks)" if masks else " (boxes from keypoints)"))


def load_source(path: str | Path, settings: MaskSettings, max_frames: int | None = None,
                masks: bool = True) -> CropSet:
    """Load one labelled source; ValueError naming the path when it is none of the known kinds."""
    p = Path(path)
    if p.is_dir() and (p / "summary.json").is_file():
        return load_synth(p, settings, max_frames, masks)
    if p.is_dir() and list(p.glob("*.slp")):
        return load_sleap_clip(p, settings, max_frames, masks)
    if p.is_dir() and (p / "identities.csv").is_file():
        return load_identity_csv(p / "identities.csv", settings, max_frames)
    if p.is_file() and p.suffix.lower() == ".csv":
        return load_identity_csv(p, settings, max_frames)
    raise ValueError(f"{p}: not a sipec synth folder, an identity CSV (or folder with identities.csv), "
                     "or a SLEAP folder (clip.slp + clip.mp4)")


def concat(sets: Sequence[CropSet]) -> CropSet:
    """One CropSet of several sources (same identity names required); video indices renumbered."""
    first = sets[0]
    for s in sets[1:]:
        if s.identity_names != first.identity_names:
            raise ValueError(f"identity names differ between sources: {first.identity_names} vs {s.identity_names}")
    videos: list[str] = []
    vids = []
    for s in sets:
        vids.append(s.video + len(videos))
        videos += s.videos
    return CropSet(first.identity_names, np.concatenate([s.crops for s in sets]),
                   np.concatenate([s.masks for s in sets]), np.concatenate([s.has_mask for s in sets]),
                   np.concatenate([s.identity for s in sets]), np.concatenate([s.track for s in sets]),
                   np.concatenate([s.frame for s in sets]), np.concatenate(vids), videos,
                   "; ".join(sorted({s.source for s in sets})))


def time_split(data: CropSet, train_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the first `train_fraction` of each video's frames, and rows of the rest (held out)."""
    train = np.zeros(len(data), bool)
    for v in np.unique(data.video):
        rows = data.video == v
        cut = data.frame[rows].min() + train_fraction * (data.frame[rows].max() + 1 - data.frame[rows].min())
        train[rows & (data.frame < cut)] = True
    return np.flatnonzero(train), np.flatnonzero(~train)
