"""Frames of the video by index, exact (decoded in order, never seeked), with the masks drawn, as JPEG."""

from __future__ import annotations

import colorsys
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence

import cv2
import numpy as np

from sipec.geometry import decode_rle
from sipec.label.results import Instance

CACHE_FRAMES = 96   # decoded frames kept: stepping back up to this many frames needs no new decoding


class FrameSource:
    """Random access to the frames of one video. Frames are read forward from an open capture; the frames just
    before a requested one are kept, and going back further re-opens the file and reads from the start."""

    def __init__(self, path: str | os.PathLike, cache_frames: int = CACHE_FRAMES) -> None:
        self.path = str(path)
        self.cache_frames = cache_frames
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cap: cv2.VideoCapture | None = None
        self._next = 0
        self._lock = threading.Lock()
        self._closed = False

    def _open(self) -> None:
        if self._cap is not None:
            self._cap.release()
        self._cap = cv2.VideoCapture(self.path)
        if not self._cap.isOpened():
            raise ValueError(f"{self.path}: cannot open the video")
        self._next = 0

    def _keep(self, index: int, bgr: np.ndarray) -> None:
        self._cache[index] = bgr
        self._cache.move_to_end(index)
        while len(self._cache) > self.cache_frames:
            self._cache.popitem(last=False)

    def frame(self, index: int) -> np.ndarray:
        """BGR frame `index`; ValueError naming the file when the video ends before it."""
        index = int(index)
        with self._lock:
            if self._closed:
                raise ValueError(f"{self.path}: closed")
            if index in self._cache:
                self._cache.move_to_end(index)
                return self._cache[index]
            if self._cap is None or index < self._next:
                self._open()
            assert self._cap is not None
            while self._next <= index:
                if self._next < index - self.cache_frames:
                    ok = self._cap.grab()
                else:
                    ok, bgr = self._cap.read()
                    if ok:
                        self._keep(self._next, bgr)
                if not ok:
                    raise ValueError(f"{self.path}: ends before frame {index} (at frame {self._next})")
                self._next += 1
            return self._cache[index]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._cache.clear()
            if self._cap is not None:
                self._cap.release()
                self._cap = None


def colour(key: int) -> tuple[int, int, int]:
    """A distinct BGR colour per track."""
    r, g, b = colorsys.hsv_to_rgb((key * 0.618033988749895) % 1.0, 0.75, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


HIGHLIGHT = (0, 255, 255)   # BGR yellow


MIN_WIDTH = 640     # smaller videos are enlarged (whole pixels) before drawing, so outlines and text stay sharp


def draw(image: np.ndarray, instances: Sequence[Instance], highlight: set[str] | None = None,
         labels: dict[str, str] | None = None, highlight_tracks: set[int] | None = None) -> np.ndarray:
    """The frame (BGR) with every mask outlined in its track's colour; highlighted masks (by key or track) filled
    and outlined thick in yellow; `labels` text (by key) at the top left of each mask's box. A frame narrower than
    MIN_WIDTH is enlarged by a whole factor first."""
    highlight = highlight or set()
    highlight_tracks = highlight_tracks or set()
    labels = labels or {}
    h, w = image.shape[:2]
    k = max(1, math.ceil(MIN_WIDTH / max(w, 1)))
    img = cv2.resize(image, (w * k, h * k), interpolation=cv2.INTER_NEAREST) if k > 1 else image.copy()
    overlay = img.copy()
    contours_by_key = {}
    for inst in instances:
        if inst.rle is None:
            continue
        mask = decode_rle(inst.rle)
        if mask.shape != (h, w):
            continue
        if k > 1:
            mask = cv2.resize(mask.astype(np.uint8), (w * k, h * k), interpolation=cv2.INTER_NEAREST).astype(bool)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        contours_by_key[inst.key] = contours
        if inst.key in highlight or inst.track_id in highlight_tracks:
            overlay[mask] = HIGHLIGHT
    img = cv2.addWeighted(overlay, 0.4, img, 0.6, 0)
    thick = max(1, round(max(img.shape[:2]) / 320))
    for inst in instances:
        on = inst.key in highlight or inst.track_id in highlight_tracks
        if inst.key in contours_by_key:
            cv2.drawContours(img, contours_by_key[inst.key], -1, HIGHLIGHT if on else colour(inst.track_id),
                              2 * thick if on else thick)
        else:
            x1, y1, x2, y2 = (int(round(v * k)) for v in inst.box)
            cv2.rectangle(img, (x1, y1), (x2, y2), HIGHLIGHT if on else colour(inst.track_id), thick)
        text = labels.get(inst.key)
        if text:
            scale = max(0.5, img.shape[1] / 1100)
            org = (int(inst.box[0] * k), max(12, int(inst.box[1] * k) - 4))
            for c, w in (((0, 0, 0), 3), ((255, 255, 255), 1)):
                cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, c, w, cv2.LINE_AA)
    return img


def jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("cannot encode the frame as JPEG")
    return buf.tobytes()
