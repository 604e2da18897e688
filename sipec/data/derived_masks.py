"""Instance masks DERIVED from a video with no labels: background subtraction or an intensity threshold.

A start for SegNet when a lab has videos but no hand-drawn masks, as the SIPEC paper suggests for the
single-animal case and as idtracker.ai segments every frame:

- ``background`` (default): the background is the per-pixel median of frames spread over the whole video;
  foreground is where a frame differs from it by at least ``difference`` levels in one of its colour channels
  (a grey animal on a beige floor differs in colour more than in brightness). Without a given level it is
  Otsu's threshold of the differences in sampled frames, and at least six noise deviations above their median,
  so it adapts to the animals' contrast: dark on light, light on dark or in colour. ``grow`` (below
  ``difference``, off by default) grows each blob into pixels that differ by at least that much (hysteresis,
  as Canny's edges): fuller masks of animals with low-contrast parts, but on real videos also their
  reflections in the tank wall and their shadows (zebrafish: 222 of 300 frames kept at half the level, 265
  without; openfield mouse: 244 against 286). Animals that never move in the whole video become background:
  use ``threshold`` for them.
- ``threshold``: foreground is the grey levels in ``intensity`` (inclusive), as idtracker.ai's
  ``intensity_ths``.

The foreground is opened with a 3x3 square, split into 8-connected blobs, and each blob's holes are filled.
Blobs outside the ``area`` range are dropped; without a given range it is a quarter to four times the median
area of the ``animals`` largest blobs per frame. Every frame is then checked: it is kept only when exactly
``animals`` blobs remain (two animals touching make one blob; an animal lost makes one fewer), and the frames
left out are counted by reason. Masks made this way are not ground truth: call them "derived" wherever they
are used.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from sipec.data.frames import read_frames
from sipec.geometry import mask_box

METHODS = ("background", "threshold")
BACKGROUND_FRAMES = 50      # frames whose median is the background
NOISE_FLOOR_PX = 20         # blobs smaller than this never count as animals when the area range is estimated
_OPEN = np.ones((3, 3), np.uint8)


@dataclass(frozen=True)
class DeriveSettings:
    """How masks are derived. ``None`` fields are estimated from the video (:func:`derive`)."""

    method: str = "background"
    animals: int = 1
    intensity: tuple[int, int] | None = None     # threshold: grey levels that are animal (inclusive)
    difference: float | None = None              # background: |frame - background| that seeds an animal
    grow: float | None = None                    # background: ... that a blob grows into (None: no growth)
    area: tuple[int, int] | None = None          # blob area in pixels (inclusive)
    background_frames: int = BACKGROUND_FRAMES

    def validate(self) -> None:
        """ValueError naming the setting when one is out of range."""
        if self.method not in METHODS:
            raise ValueError(f"method: must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.animals < 1:
            raise ValueError(f"animals: must be at least 1, not {self.animals}")
        if self.method == "threshold" and self.intensity is None:
            raise ValueError("intensity: the threshold method needs a range LO:HI (grey levels 0-255 that "
                             "are animal, e.g. 0:155 for dark animals on a light ground)")
        if self.intensity is not None and not 0 <= self.intensity[0] <= self.intensity[1] <= 255:
            raise ValueError(f"intensity: must be LO:HI with 0 <= LO <= HI <= 255, not {self.intensity}")
        for name in ("difference", "grow"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 255:
                raise ValueError(f"{name}: must be in (0, 255], not {value}")
            if value is not None and self.method != "background":
                raise ValueError(f"{name}: only with the background method")
        if self.intensity is not None and self.method != "threshold":
            raise ValueError("intensity: only with the threshold method")
        if self.grow is not None and self.difference is not None and self.grow >= self.difference:
            raise ValueError(f"grow: must be below the difference level ({self.difference:g}), not {self.grow:g}")
        if self.area is not None and not 1 <= self.area[0] <= self.area[1]:
            raise ValueError(f"area: must be MIN:MAX with 1 <= MIN <= MAX, not {self.area}")
        if self.background_frames < 3:
            raise ValueError(f"background_frames: must be at least 3, not {self.background_frames}")


@dataclass
class Derivation:
    """What :func:`derive` found: the settings it used (estimates filled in) and the frames it left out."""

    video: Path
    settings: DeriveSettings
    frames_read: int = 0
    kept: list[int] = field(default_factory=list)
    left_out: dict[int, str] = field(default_factory=dict)     # frame index -> reason
    frame_size: tuple[int, int] = (0, 0)                       # (height, width)
    animal_length_px: float = 0.0    # median longer box side of the animals in the sampled frames that pass

    def reasons(self) -> dict[str, int]:
        return dict(sorted(Counter(self.left_out.values()).items(), key=lambda kv: -kv[1]))

    def describe(self) -> str:
        s = self.settings
        grown = f", grown into >= {s.grow:.0f}" if s.grow is not None else ""
        how = (f"background subtraction (median of {s.background_frames} frames, colour difference >= "
               f"{s.difference:.0f}{grown})" if s.method == "background"
               else f"intensity {s.intensity[0]}..{s.intensity[1]}")
        area = f"{s.area[0]}..{s.area[1]}" if s.area else "any"
        line = (f"{self.video}: masks DERIVED by {how}, blob area {area} px, {s.animals} "
                f"{'animal' if s.animals == 1 else 'animals'}: {len(self.kept)} of {self.frames_read} frames kept")
        if self.left_out:
            line += "; left out: " + ", ".join(f"{n} with {r}" for r, n in self.reasons().items())
        return line

    def summary(self) -> dict[str, Any]:
        s = self.settings
        return {"video": str(self.video), "method": s.method, "animals": s.animals,
                "intensity": list(s.intensity) if s.intensity else None, "difference": s.difference, "grow": s.grow,
                "area": list(s.area) if s.area else None, "background_frames": s.background_frames,
                "animal_length_px": self.animal_length_px, "frames_read": self.frames_read,
                "frames_kept": len(self.kept), "left_out": self.reasons()}


def frame_count(video: Path) -> int:
    """Frames in `video` by its header; ValueError naming the file when it does not open or says none."""
    cap = cv2.VideoCapture(str(video))
    try:
        if not cap.isOpened():
            raise ValueError(f"{video}: cannot open the video")
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()
    if n <= 0:
        raise ValueError(f"{video}: the video reports no frames")
    return n


def spread(count: int, n: int) -> list[int]:
    """At most `n` frame indices spread evenly over `count` frames (first and last included)."""
    if count <= 0 or n <= 0:
        return []
    return sorted({int(round(x)) for x in np.linspace(0, count - 1, min(n, count))})


def _grey(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def median_background(frames: Sequence[np.ndarray]) -> np.ndarray:
    """Per-pixel, per-channel median (HxWx3 float32) of RGB `frames`."""
    return np.median(np.stack(frames), axis=0).astype(np.float32)


def difference(rgb: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The largest |frame - background| over the three channels (float32 HxW): a grey animal on a beige floor
    differs in colour more than in brightness."""
    return np.abs(rgb.astype(np.float32) - background).max(axis=2)


def difference_levels(frames: Sequence[np.ndarray], background: np.ndarray) -> tuple[float, float]:
    """(Otsu's threshold of :func:`difference` over `frames` (RGB), the noise floor): the floor is six noise
    deviations (from the median absolute deviation) above the median difference."""
    diffs = np.concatenate([difference(f, background).ravel() for f in frames])
    med = float(np.median(diffs))
    floor = med + 6.0 * 1.4826 * float(np.median(np.abs(diffs - med)))
    otsu, _ = cv2.threshold(np.clip(diffs, 0, 255).astype(np.uint8)[None, :], 0, 255,
                            cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(otsu), float(max(floor, 1.0))


def foreground(rgb: np.ndarray, settings: DeriveSettings, background: np.ndarray | None) -> np.ndarray:
    """uint8 0/1 foreground of one RGB frame, opened with a 3x3 square."""
    if settings.method == "background":
        diff = difference(rgb, background)
        fg = diff >= settings.difference
        if settings.grow is not None:          # the blobs of the fainter level that hold a pixel of fg
            n, labels = cv2.connectedComponents((diff >= settings.grow).astype(np.uint8), connectivity=8)
            seeded = np.zeros(n, bool)
            seeded[np.unique(labels[fg])] = True
            seeded[0] = False
            fg = seeded[labels]
    else:
        grey = _grey(rgb)
        lo, hi = settings.intensity
        fg = (grey >= lo) & (grey <= hi)
    return cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, _OPEN)


def blobs(fg: np.ndarray, area: tuple[int, int] | None) -> list[np.ndarray]:
    """Boolean frame-size masks of the 8-connected blobs of `fg` with area in `area` (holes filled), largest first."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    out = []
    for k in np.argsort(-stats[1:, cv2.CC_STAT_AREA], kind="stable") + 1:
        a = int(stats[k, cv2.CC_STAT_AREA])
        if area is not None and not area[0] <= a <= area[1]:
            continue
        x, y, w, h = (int(stats[k, i]) for i in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH,
                                                  cv2.CC_STAT_HEIGHT))
        mask = np.zeros(fg.shape, bool)
        mask[y:y + h, x:x + w] = ndimage.binary_fill_holes(labels[y:y + h, x:x + w] == k)
        out.append(mask)
    return out


def estimate_area(areas_per_frame: Sequence[Sequence[int]], animals: int) -> tuple[int, int]:
    """A quarter to four times the median area of the `animals` largest blobs per frame."""
    top = [a for areas in areas_per_frame for a in sorted(areas, reverse=True)[:animals] if a >= NOISE_FLOOR_PX]
    if not top:
        raise ValueError("no foreground blobs found to estimate the animals' area from")
    med = float(np.median(top))
    return max(1, int(med / 4)), int(np.ceil(med * 4))


def derive(video: Path, indices: Sequence[int], settings: DeriveSettings,
           count: int | None = None) -> tuple[Derivation, Iterator[tuple[int, np.ndarray, list[np.ndarray]]]]:
    """Settings estimated from the video (difference, area) and an iterator of (index, RGB frame, masks) over the
    kept frames of `indices`. The Derivation's ``kept`` and ``left_out`` fill in as the iterator runs.

    ValueError names the video when it does not open, ends early, or no settings can be estimated.
    """
    settings.validate()
    video = Path(video)
    count = frame_count(video) if count is None else count
    indices = sorted({int(i) for i in indices})
    # one pass for every estimate: frames spread over the whole video
    sample = [rgb for _, rgb in read_frames(video, spread(count, settings.background_frames), what="the estimates")]
    background = median_background(sample) if settings.method == "background" else None
    estimated = settings
    if settings.method == "background" and settings.difference is None:
        otsu, floor = difference_levels([sample[i] for i in spread(len(sample), 10)], background)
        estimated = replace(estimated, difference=round(max(otsu, floor), 1))
    if estimated.grow is not None and estimated.grow >= estimated.difference:
        raise ValueError(f"grow: must be below the difference level ({estimated.difference:g} here), "
                         f"not {estimated.grow:g}")
    sample = [sample[i] for i in spread(len(sample), 30)]
    fgs = [foreground(rgb, estimated, background) for rgb in sample]
    if estimated.area is None:
        areas = [[int(a) for a in cv2.connectedComponentsWithStats(fg, connectivity=8)[2][1:, cv2.CC_STAT_AREA]]
                 for fg in fgs]
        try:
            estimated = replace(estimated, area=estimate_area(areas, settings.animals))
        except ValueError as exc:
            raise ValueError(f"{video}: {exc} ({settings.method} method); give the area (and intensity or "
                             "difference) by hand") from exc
    lengths = []
    for fg in fgs:
        masks = blobs(fg, estimated.area)
        if len(masks) == estimated.animals:
            lengths += [max(b[2] - b[0], b[3] - b[1]) for b in (mask_box(m) for m in masks) if b is not None]
    record = Derivation(video, estimated, frame_size=tuple(sample[0].shape[:2]) if sample else (0, 0),
                        animal_length_px=float(np.median(lengths)) if lengths else 0.0)

    def run() -> Iterator[tuple[int, np.ndarray, list[np.ndarray]]]:
        for i, rgb in read_frames(video, indices, what="the frames to derive masks from"):
            record.frames_read += 1
            masks = blobs(foreground(rgb, estimated, background), estimated.area)
            if len(masks) != estimated.animals:
                record.left_out[i] = (f"{len(masks)} blobs" if len(masks) != 1 else "1 blob")
                continue
            record.kept.append(i)
            yield i, rgb, masks

    return record, run()


def parse_range(text: str, what: str, example: str = "0:155") -> tuple[int, int]:
    """'LO:HI' -> (LO, HI) integers; ValueError "`what`: ..." with the expected form."""
    try:
        lo, hi = (int(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"{what}: expected LO:HI (e.g. {example}), got {text!r}") from None
    return lo, hi
