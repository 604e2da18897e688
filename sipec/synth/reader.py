"""Reading a `sipec synth` folder: frames from video.mp4 and the ground truth of every module.

>>> ds = SynthDataset("out/")
>>> ds.identity_names, ds.behaviours, ds.keypoint_names
>>> for index, image in ds.frames():          # decoded RGB frames, in order
...     for inst in ds.instances(index):       # the animals visible in that frame
...         inst.mask, inst.box, inst.keypoints, inst.identity, inst.behaviour
>>> ds.frame(123)                             # random access
>>> ds.behaviour_labels                        # DataFrame: every animal in every frame
>>> ds.positions_3d                            # DataFrame: x, y, z (m) and mask COM u, v
>>> ds.camera.project(points)                  # the true camera

Only a complete folder (one with ``summary.json``) opens.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sipec.data.coco import VISIBLE, CocoInstances, annotation_keypoints, read_coco_instances
from sipec.data.labels import read_behaviour_csv, read_identity_csv
from sipec.data.positions import read_positions_csv
from sipec.geometry import Box, decode_rle
from sipec.synth.camera import PinholeCamera
from sipec.synth.writers import ANNOTATIONS, BEHAVIOUR, CAMERA, FORMAT, IDENTITIES, POSITIONS, SUMMARY, VIDEO


@dataclass(frozen=True)
class SynthInstance:
    """One visible animal in one frame."""

    frame: int
    track_id: int
    identity: int
    identity_name: str
    box: Box  # (x1, y1, x2, y2), x2/y2 exclusive
    rle: dict = field(repr=False)  # COCO RLE of the visible mask (counts as str)
    area: int
    com: tuple[float, float]  # centre of mass of the visible mask (x, y)
    keypoints: np.ndarray  # (K, 3): x, y, visible (1 visible, 0 occluded or outside; x, y NaN when outside)
    behaviour: str
    partner: int  # identity of the social partner, -1 if none
    position_3d: tuple[float, float, float]  # body centre, metres, world frame of `camera`
    occluded_fraction: float  # 1 - visible area / area of the whole animal

    @property
    def mask(self) -> np.ndarray:
        """HxW bool visible mask (decoded on each access)."""
        return decode_rle(self.rle)


class SynthDataset:
    """A `sipec synth` output folder."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        summary_path = self.path / SUMMARY
        if not summary_path.is_file():
            raise FileNotFoundError(f"{self.path}: no {SUMMARY}; not a sipec synth folder, or its generation "
                                    "did not finish")
        self.summary: dict = json.loads(summary_path.read_text(encoding="utf-8"))
        if self.summary.get("format") != FORMAT:
            raise ValueError(f"{summary_path}: format is {self.summary.get('format')!r}, expected {FORMAT!r}")
        self.video_path = self.path / VIDEO
        self.num_frames: int = int(self.summary["frames"])
        self.fps: float = float(self.summary["fps"])
        self.width, self.height = (int(v) for v in self.summary["size"])
        self.identity_names: list[str] = [i["name"] for i in self.summary["identities"]]
        self.behaviours: list[str] = list(self.summary["behaviours"])
        self.keypoint_names: list[str] = list(self.summary["keypoint_names"])
        self.skeleton: list[tuple[int, int]] = [(int(a), int(b)) for a, b in self.summary["skeleton"]]
        self.camera_json: dict = json.loads((self.path / CAMERA).read_text(encoding="utf-8"))
        self.camera = PinholeCamera.from_json(self.camera_json)
        self._capture = None
        self._next_index = 0

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        return (f"SynthDataset({str(self.path)!r}, frames={self.num_frames}, animals={len(self.identity_names)}, "
                f"size={self.width}x{self.height}, camera={self.summary['camera_mode']})")

    # ------------------------------------------------------------------ labels
    @cached_property
    def coco(self) -> CocoInstances:
        return read_coco_instances(self.path / ANNOTATIONS)

    @cached_property
    def _image_ids(self) -> dict[int, int]:
        return {int(img["frame_index"]): int(img["id"]) for img in self.coco.images}

    def instances(self, frame: int) -> list[SynthInstance]:
        """The visible animals of frame `frame` (hidden ones have no instance), ordered by identity."""
        if not 0 <= frame < self.num_frames:
            raise IndexError(f"frame {frame} outside 0..{self.num_frames - 1}")
        out = []
        for ann in self.coco.annotations_for(self._image_ids[frame]):
            kp = annotation_keypoints(ann)
            kp[:, 2] = (kp[:, 2] == VISIBLE).astype(np.float64)
            x, y, w, h = ann["bbox"]
            out.append(SynthInstance(
                frame=frame, track_id=int(ann["track_id"]), identity=int(ann["identity"]),
                identity_name=str(ann["identity_name"]), box=(x, y, x + w, y + h), rle=ann["segmentation"],
                area=int(ann["area"]), com=(float(ann["com"][0]), float(ann["com"][1])), keypoints=kp,
                behaviour=str(ann["behaviour"]), partner=int(ann["partner"]),
                position_3d=tuple(float(v) for v in ann["position_3d"]),  # type: ignore[arg-type]
                occluded_fraction=float(ann["occluded_fraction"])))
        return sorted(out, key=lambda inst: inst.identity)

    @cached_property
    def behaviour_labels(self) -> pd.DataFrame:
        """video, frame, identity, identity_name, behaviour, partner, partner_name: every animal, every frame."""
        return read_behaviour_csv(self.path / BEHAVIOUR, self.behaviours)

    @cached_property
    def identity_labels(self) -> pd.DataFrame:
        """video, frame, track_id, identity, identity_name, x1, y1, x2, y2: every visible instance."""
        return read_identity_csv(self.path / IDENTITIES)

    @cached_property
    def positions_3d(self) -> pd.DataFrame:
        """video, frame, identity, identity_name, x, y, z, u, v, area, visible: every animal, every frame."""
        return read_positions_csv(self.path / POSITIONS)

    def behaviour_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(frames, animals) behaviour class indices and partner identities (-1 for none)."""
        df = self.behaviour_labels
        n = len(self.identity_names)
        labels = np.full((self.num_frames, n), -1, dtype=np.int64)
        partners = np.full((self.num_frames, n), -1, dtype=np.int64)
        index = {b: i for i, b in enumerate(self.behaviours)}
        frames, ids = df["frame"].to_numpy(), df["identity"].to_numpy()
        labels[frames, ids] = [index[b] for b in df["behaviour"]]
        partners[frames, ids] = df["partner"].to_numpy()
        return labels, partners

    # ------------------------------------------------------------------ frames
    def _open(self) -> Any:  # a cv2.VideoCapture
        import cv2

        if self._capture is None:
            self._capture = cv2.VideoCapture(str(self.video_path))
            if not self._capture.isOpened():
                self._capture = None
                raise OSError(f"{self.video_path}: cannot open the video")
            self._next_index = 0
        return self._capture

    def frame(self, index: int) -> np.ndarray:
        """Decoded HxWx3 uint8 RGB frame `index` (sequential reads are fastest)."""
        import cv2

        if not 0 <= index < self.num_frames:
            raise IndexError(f"frame {index} outside 0..{self.num_frames - 1}")
        cap = self._open()
        if index != self._next_index:
            cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, bgr = cap.read()
        if not ok:
            raise OSError(f"{self.video_path}: cannot decode frame {index}")
        self._next_index = index + 1
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(index, RGB frame) for frames start..stop-1, decoded in order."""
        stop = self.num_frames if stop is None else min(stop, self.num_frames)
        for index in range(start, stop):
            yield index, self.frame(index)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def __enter__(self) -> SynthDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
