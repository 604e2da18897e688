"""Read chosen frames of a video file, in order, as RGB arrays (OpenCV).

No seeking: OpenCV's frame seeking in H.264 files can land on a nearby keyframe, so frames before the first
wanted one are grabbed (demuxed and decoded, not converted) and skipped; the indices are exact."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import cv2
import numpy as np


def read_frames(video: str | os.PathLike, wanted: Iterable[int],
                what: str = "the labels") -> Iterator[tuple[int, np.ndarray]]:
    """(index, RGB frame) for each index in `wanted`, in increasing order. ValueError naming the file when it does
    not open or ends before the last wanted frame (`what` says who asked for that frame)."""
    frames = sorted(set(int(f) for f in wanted))
    if not frames:
        return
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise ValueError(f"{video}: cannot open the video")
    try:
        want = set(frames)
        for i in range(frames[-1] + 1):
            if i not in want:
                ok = cap.grab()
            else:
                ok, bgr = cap.read()
                if ok:
                    yield i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            if not ok:
                raise ValueError(f"{video}: ends at frame {i}, but {what} name frame {frames[-1]}")
    finally:
        cap.release()
