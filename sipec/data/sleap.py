"""SLEAP ``.slp`` labels through sleap-io, as dense arrays.

:class:`PoseTracks` is the array view the project uses: ``points`` (frames, tracks, nodes, 2) in
pixels with NaN where a point is missing, ``visible`` (frames, tracks, nodes) bool. A point can
have coordinates and ``visible=False`` (known position, occluded). Tracks are named (for
`sipec synth`, by identity name) and an instance's track is its slot on the tracks axis.

The video is stored by the path given (relative paths are kept relative, so a folder can move).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sipec.data.atomic import atomic_path


@dataclass
class PoseTracks:
    node_names: list[str]
    track_names: list[str]
    frame_indices: np.ndarray  # (F,) int, video frame of each row
    points: np.ndarray  # (F, T, K, 2) float, NaN = missing
    visible: np.ndarray  # (F, T, K) bool
    video_path: str = ""
    edges: list[tuple[int, int]] = field(default_factory=list)  # 0-based node pairs
    video_shape: tuple[int, int] | None = None  # (height, width) when known


def write_slp(path: str | os.PathLike, data: PoseTracks) -> None:
    """Write user-labelled instances (one per track with any finite point) atomically."""
    import sleap_io as sio

    n_frames, n_tracks, n_nodes, _ = data.points.shape
    if data.visible.shape != (n_frames, n_tracks, n_nodes):
        raise ValueError(f"visible shape {data.visible.shape} does not match points {data.points.shape}")
    if len(data.track_names) != n_tracks or len(data.node_names) != n_nodes:
        raise ValueError("track_names / node_names do not match the points array")
    skeleton = sio.Skeleton(nodes=list(data.node_names), edges=[(int(a), int(b)) for a, b in data.edges],
                            name="sipec")
    tracks = [sio.Track(name=name) for name in data.track_names]
    video = sio.Video(filename=data.video_path, open_backend=False)
    if data.video_shape is not None:
        video.backend_metadata["shape"] = (n_frames, data.video_shape[0], data.video_shape[1], 3)
    frames = []
    for row, frame_idx in enumerate(data.frame_indices):
        instances = []
        for t in range(n_tracks):
            xy = data.points[row, t]
            finite = np.isfinite(xy).all(axis=1)
            if not finite.any():
                continue
            pts = np.column_stack([xy, data.visible[row, t] & finite])
            instances.append(sio.Instance.from_numpy(pts, skeleton=skeleton, track=tracks[t]))
        if instances:
            frames.append(sio.LabeledFrame(video=video, frame_idx=int(frame_idx), instances=instances))
    labels = sio.Labels(labeled_frames=frames, videos=[video], skeletons=[skeleton], tracks=tracks)
    with atomic_path(path) as tmp:
        sio.save_slp(labels, str(tmp), verbose=False)


def read_slp(path: str | os.PathLike, video_index: int = 0) -> PoseTracks:
    """Labelled frames of one video of an .slp file as arrays.

    User instances are preferred; a predicted instance fills a track only where no user instance
    does. Untracked instances get extra slots named ``untracked_<i>``.
    """
    labels = _load_labels(path)
    if not 0 <= video_index < len(labels.videos):
        raise ValueError(f"{path}: no video {video_index} (the file has {len(labels.videos)})")
    return _video_tracks(labels, labels.videos[video_index])


def read_slp_videos(path: str | os.PathLike) -> list[PoseTracks]:
    """`read_slp` of every video of an .slp file, in the file's order (a project labelled on several videos)."""
    labels = _load_labels(path)
    return [_video_tracks(labels, video) for video in labels.videos]


def _load_labels(path: str | os.PathLike) -> Any:
    import sleap_io as sio

    labels = sio.load_slp(str(path), open_videos=False)
    if not labels.videos:
        raise ValueError(f"{path}: no videos in the labels file")
    if len(labels.skeletons) != 1:
        raise ValueError(f"{path}: expected one skeleton, found {len(labels.skeletons)}")
    return labels


def _video_tracks(labels: Any, video: Any) -> PoseTracks:
    import sleap_io as sio

    skeleton = labels.skeletons[0]
    node_names = [n.name for n in skeleton.nodes]
    track_names = [t.name for t in labels.tracks]
    slot = {id(t): i for i, t in enumerate(labels.tracks)}
    lfs = sorted((lf for lf in labels.labeled_frames if lf.video is video), key=lambda lf: lf.frame_idx)
    per_frame: list[dict[int, tuple[np.ndarray, np.ndarray]]] = []
    n_untracked = 0
    for lf in lfs:
        row: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        untracked = 0
        ordered = sorted(lf.instances, key=lambda inst: isinstance(inst, sio.PredictedInstance))
        for inst in ordered:
            xy = np.array(inst.points["xy"], dtype=np.float64)
            vis = np.array(inst.points["visible"], dtype=bool) & np.isfinite(xy).all(axis=1)
            if inst.track is not None and id(inst.track) in slot:
                key = slot[id(inst.track)]
                if key in row:
                    continue
            else:
                key = len(track_names) + untracked
                untracked += 1
            row[key] = (xy, vis)
        n_untracked = max(n_untracked, untracked)
        per_frame.append(row)
    track_names = track_names + [f"untracked_{i}" for i in range(n_untracked)]
    points = np.full((len(lfs), len(track_names), len(node_names), 2), np.nan)
    visible = np.zeros((len(lfs), len(track_names), len(node_names)), dtype=bool)
    for r, row in enumerate(per_frame):
        for key, (xy, vis) in row.items():
            points[r, key] = xy
            visible[r, key] = vis
    edges = [(node_names.index(e.source.name), node_names.index(e.destination.name)) for e in skeleton.edges]
    return PoseTracks(node_names=node_names, track_names=track_names,
                      frame_indices=np.array([lf.frame_idx for lf in lfs], dtype=np.int64),
                      points=points, visible=visible, video_path=str(video.filename), edges=edges)
