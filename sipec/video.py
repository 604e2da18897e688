"""Video input: probe a file, and decode its frames in a thread into a bounded queue.

Frames are decoded once and never held whole in memory: at most `queue_size` frames wait between
the decoder and the pipeline (backpressure: the decoder blocks when the pipeline is slower). A file
that does not open, or that ends before its header says (truncated, corrupt), raises `VideoError`
naming the file and the problem; frames decoded before the problem are still delivered first.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sipec.serving.streams import put_until

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".webm")  # the one list of the project
FALLBACK_FPS = 25.0  # a video whose header gives no frame rate is taken as this (PAL, as most lab cameras)


class VideoError(Exception):
    """A video that cannot be read as expected; the message names the file."""


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    frames: int          # from the container header; may be 0 or wrong for damaged files
    fps: float
    width: int
    height: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps if self.fps else 0.0


@dataclass
class Frame:
    index: int
    time_s: float
    image: np.ndarray    # HxWx3 uint8 RGB


def probe(path: str | os.PathLike) -> VideoInfo:
    """Open the file and read its header and first frame; VideoError if it is not a readable video."""
    p = Path(path)
    if not p.is_file():
        raise VideoError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise VideoError(f"{p}: empty file")
    cap = cv2.VideoCapture(str(p))
    try:
        if not cap.isOpened():
            raise VideoError(f"{p}: cannot open as a video (unknown format or corrupt header)")
        ok, first = cap.read()
        if not ok or first is None:
            raise VideoError(f"{p}: opens but no frame can be decoded (corrupt or truncated)")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        return VideoInfo(p, max(frames, 0), fps if fps > 0 else FALLBACK_FPS, first.shape[1], first.shape[0])
    finally:
        cap.release()


def find_videos(inputs: list[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (their video files, sorted) into a list of paths; missing inputs are kept
    so that the caller reports them by name."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in VIDEO_SUFFIXES and q.is_file())
        else:
            out.append(p)
    return out


def video_fingerprint(path: str | os.PathLike, head_bytes: int = 1 << 20) -> dict[str, Any]:
    """What identifies a video file wherever it is mounted: its name, size and the SHA-256 of its first MiB
    (progress.json and summary.json record it, so that a resume never continues another video's results)."""
    import hashlib

    p = Path(path)
    with p.open("rb") as f:
        head = hashlib.sha256(f.read(head_bytes)).hexdigest()
    return {"name": p.name, "bytes": p.stat().st_size, "sha256_first_mib": head}


class FrameReader:
    """Decode frames [start, stop) of a video in a background thread into a bounded queue.

    Iterate to get `Frame`s in order. At the end, `error` is None, or a VideoError if decoding stopped
    early (the frames before it were delivered). `decode_fps` measures the decoder alone.
    """

    _END = object()

    def __init__(self, path: str | os.PathLike, start: int = 0, stop: int | None = None, queue_size: int = 16) -> None:
        self.info = probe(path)
        self.start = max(0, start)
        self.stop = stop
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._halt = threading.Event()
        self.error: VideoError | None = None
        self.decoded = 0
        self.decode_seconds = 0.0
        self._thread = threading.Thread(target=self._run, name=f"decode-{self.info.path.name}", daemon=True)
        self._thread.start()

    @property
    def decode_fps(self) -> float:
        return self.decoded / self.decode_seconds if self.decode_seconds else 0.0

    def _put(self, item: object) -> bool:
        return put_until(self._queue, item, self._halt)

    def _run(self) -> None:
        cap = cv2.VideoCapture(str(self.info.path))
        try:
            index = 0
            if self.start:
                cap.set(cv2.CAP_PROP_POS_FRAMES, self.start)
                index = int(cap.get(cv2.CAP_PROP_POS_FRAMES))
                while index < self.start:  # containers that cannot seek exactly: read forward
                    if not cap.grab():
                        break
                    index += 1
            while self.stop is None or index < self.stop:
                t0 = time.perf_counter()
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    expected = self.info.frames if self.stop is None else min(self.stop, self.info.frames)
                    if self.info.frames and index < expected:
                        self.error = VideoError(f"{self.info.path}: decoding stopped at frame {index} of {expected} "
                                                "(truncated or corrupt file); results up to there are kept")
                    break
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                self.decode_seconds += time.perf_counter() - t0
                self.decoded += 1
                if not self._put(Frame(index, index / self.info.fps, rgb)):
                    return
                index += 1
        except Exception as exc:  # noqa: BLE001 - reported to the consumer, never lost in a thread
            self.error = VideoError(f"{self.info.path}: decoding failed: {exc}")
        finally:
            cap.release()
            self._put(self._END)

    def __iter__(self) -> Iterator[Frame]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            yield item

    def close(self) -> None:
        self._halt.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
