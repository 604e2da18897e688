"""The SLEAP two-fly clip (../shared/data/sleap-flies-clip) as multi-animal ground truth.

`clip.slp` labels 13 keypoints and the identity (track "female" / "male") of both flies on all 1500
frames of `clip.mp4` (1024x1024, 25 fps, bright flies on a dark floor). It has no masks. Masks here are
DERIVED, not ground truth: the frame is thresholded (Otsu over sampled frames of the whole clip), with
hysteresis (pixels above 0.55 of the threshold join when connected to pixels above it, which keeps the
male's darker abdomen tip); the components holding a fly's labelled keypoints become that fly; pixels
further than `max_reach` from all of a fly's keypoints are dropped (debris touching a fly); a component
holding both flies is split between them by nearest labelled keypoint. Say "derived masks" wherever
they are used.

>>> clip = FliesClip(Path("../shared/data/sleap-flies-clip"))
>>> clip.identity_names                     # ['female', 'male']
>>> for inst in clip.instances(10):         # both flies in frame 10
...     inst.identity_name, inst.keypoints, inst.mask, inst.box, inst.com
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from sipec.geometry import Box, center_of_mass, encode_rle, mask_box

SLP = "clip.slp"
VIDEO = "clip.mp4"


@dataclass
class FlyInstance:
    """One fly in one frame: labelled keypoints and identity, derived mask."""

    frame: int
    identity: int                 # index into FliesClip.identity_names
    identity_name: str
    keypoints: np.ndarray         # (13, 3): x, y, visible (1 labelled, 0 not; x, y NaN when not labelled)
    mask: np.ndarray | None = field(default=None, repr=False)   # DERIVED HxW bool (None when masks=False)
    box: Box | None = None        # from the derived mask; from the keypoints (padded) when masks=False
    com: tuple[float, float] | None = None

    @property
    def rle(self) -> dict | None:
        return encode_rle(self.mask) if self.mask is not None else None


class FliesClip:
    """Frames, keypoints, identities and derived masks of the SLEAP flies clip."""

    def __init__(self, path: str | os.PathLike, max_reach: float = 45.0, box_pad: float = 12.0,
                 low_ratio: float = 0.55) -> None:
        self.path = Path(path)
        for name in (SLP, VIDEO):
            if not (self.path / name).is_file():
                raise FileNotFoundError(f"{self.path / name} not found (expected the sleap-flies-clip folder)")
        import sleap_io as sio

        labels = sio.load_slp(str(self.path / SLP), open_videos=False)
        self.keypoint_names: list[str] = list(labels.skeletons[0].node_names)
        self.identity_names: list[str] = [t.name for t in labels.tracks]
        # (frames, identities, keypoints, 2) with NaN for unlabelled points; frame order = frame index
        points = np.full((labels.video.shape[0] if labels.video.shape else len(labels), len(self.identity_names),
                          len(self.keypoint_names), 2), np.nan, dtype=np.float64)
        for lf in labels:
            for inst in lf.instances:
                if inst.track is not None:
                    points[lf.frame_idx, self.identity_names.index(inst.track.name)] = inst.numpy()
        self.points = points
        self.fps = 25.0
        self.max_reach = max_reach
        self.box_pad = box_pad
        self.low_ratio = low_ratio
        self._cap: cv2.VideoCapture | None = None
        self._next = 0

    def __len__(self) -> int:
        return self.points.shape[0]

    # frames ---------------------------------------------------------------------------------------
    def _read(self, index: int) -> np.ndarray:
        if self._cap is None or index != self._next:
            if self._cap is None:
                self._cap = cv2.VideoCapture(str(self.path / VIDEO))
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, bgr = self._cap.read()
        if not ok:
            raise IndexError(f"{self.path / VIDEO}: could not read frame {index}")
        self._next = index + 1
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def frame(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} out of range 0..{len(self) - 1}")
        return self._read(index)

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        stop = len(self) if stop is None else min(stop, len(self))
        for i in range(start, stop):
            yield i, self._read(i)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    # labels ---------------------------------------------------------------------------------------
    def keypoints(self, index: int) -> np.ndarray:
        """(identities, 13, 3): x, y, visible."""
        xy = self.points[index]
        vis = (~np.isnan(xy).any(axis=-1)).astype(np.float64)[..., None]
        return np.concatenate([xy, vis], axis=-1)

    @cached_property
    def threshold(self) -> float:
        """Otsu threshold of grey levels pooled over 20 frames spread through the clip."""
        samples = [cv2.cvtColor(self._read(i), cv2.COLOR_RGB2GRAY)[::4, ::4]
                   for i in np.linspace(0, len(self) - 1, 20).astype(int)]
        t, _ = cv2.threshold(np.concatenate(samples).ravel()[:, None], 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        return float(t)

    def instances(self, index: int, masks: bool = True, image: np.ndarray | None = None) -> list[FlyInstance]:
        kps = self.keypoints(index)
        out = [FlyInstance(index, i, name, kps[i]) for i, name in enumerate(self.identity_names)
               if kps[i, :, 2].any()]
        if not masks:
            h, w = 1024, 1024
            for inst in out:
                xy = inst.keypoints[inst.keypoints[:, 2] > 0, :2]
                x1, y1 = xy.min(axis=0) - self.box_pad
                x2, y2 = xy.max(axis=0) + self.box_pad
                inst.box = (max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2))
                inst.com = (float(xy[:, 0].mean()), float(xy[:, 1].mean()))
            return out
        if image is None:
            image = self.frame(index)
        for inst, mask in zip(out, self.derive_masks(image, [o.keypoints for o in out]), strict=True):
            inst.mask = mask
            inst.box = mask_box(mask)
            inst.com = center_of_mass(mask)
        return out

    def derive_masks(self, image: np.ndarray, keypoints: list[np.ndarray]) -> list[np.ndarray]:
        """DERIVED masks for flies with the given keypoints ((13, 3) each) in an RGB frame."""
        h, w = image.shape[:2]
        pts = [k[k[:, 2] > 0, :2] for k in keypoints]
        if not any(len(p) for p in pts):
            return [np.zeros((h, w), bool) for _ in keypoints]
        allp = np.concatenate([p for p in pts if len(p)])
        r = self.max_reach
        x0, y0 = np.maximum(np.floor(allp.min(axis=0) - r).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(allp.max(axis=0) + r).astype(int), [w, h])
        grey = cv2.GaussianBlur(cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY), (3, 3), 0)
        # hysteresis: dimmer pixels (the male's dark abdomen tip) join when connected to bright body pixels
        strong = grey > self.threshold
        n, labels = cv2.connectedComponents((grey > self.low_ratio * self.threshold).astype(np.uint8), connectivity=8)
        keep = np.zeros(n, bool)
        keep[np.unique(labels[strong])] = True
        keep[0] = False
        labels = np.where(keep[labels], labels, 0)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        # distance of every ROI pixel to each fly's nearest labelled keypoint
        dist = np.full((len(keypoints), y1 - y0, x1 - x0), np.inf)
        for i, p in enumerate(pts):
            for x, y in p:
                np.minimum(dist[i], np.hypot(xx - x, yy - y), out=dist[i])
        owner = np.argmin(dist, axis=0)
        near = np.min(dist, axis=0) <= r
        masks = []
        for i, p in enumerate(pts):
            roi = np.zeros((y1 - y0, x1 - x0), bool)
            if len(p):
                ix = np.clip(np.round(p[:, 0]).astype(int) - x0, 0, x1 - x0 - 1)
                iy = np.clip(np.round(p[:, 1]).astype(int) - y0, 0, y1 - y0 - 1)
                comps = {int(c) for c in labels[iy, ix] if c}
                if comps:
                    roi = np.isin(labels, list(comps)) & near & (owner == i)
            full = np.zeros((h, w), bool)
            full[y0:y1, x0:x1] = roi
            masks.append(full)
        return masks

    def __enter__(self) -> FliesClip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
