"""Predicted keypoints in the files other tools read: DeepLabCut's CSV / H5 (with likelihood) and SLEAP .slp.

DeepLabCut machine-labelled layout: columns (scorer, [individuals,] bodyparts, coords) with coords
x, y, likelihood, one row per image; written with pandas, so DLC's own ``pd.read_hdf`` / ``read_csv(header=
[0, 1, 2])`` read it back. SLEAP: predicted instances with per-point scores through sleap-io (.slp, or NWB).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def dlc_dataframe(keypoints: np.ndarray, bodyparts: list[str], index: list[str], individuals: list[str] | None,
                  scorer: str = "sipec-posenet"):
    """keypoints (N, I, K, 3) x, y, likelihood -> DLC DataFrame (N rows)."""
    import pandas as pd

    kp = np.asarray(keypoints, dtype=np.float64)
    n, n_ind, k, _ = kp.shape
    if individuals is None:
        if n_ind != 1:
            raise ValueError("single-animal layout needs one individual")
        cols = pd.MultiIndex.from_product([[scorer], bodyparts, ["x", "y", "likelihood"]],
                                          names=["scorer", "bodyparts", "coords"])
    else:
        cols = pd.MultiIndex.from_product([[scorer], individuals, bodyparts, ["x", "y", "likelihood"]],
                                          names=["scorer", "individuals", "bodyparts", "coords"])
    return pd.DataFrame(kp.reshape(n, n_ind * k * 3), index=index, columns=cols)


def write_dlc(path: str | os.PathLike, keypoints: np.ndarray, bodyparts: list[str], index: list[str],
              individuals: list[str] | None = None) -> None:
    """Write .h5 (key 'df_with_missing', as DLC does) or .csv, by the suffix."""
    df = dlc_dataframe(keypoints, bodyparts, index, individuals)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix == ".h5":
        df.to_hdf(p, key="df_with_missing", mode="w", format="table")
    else:
        df.to_csv(p)


def write_predictions_slp(path: str | os.PathLike, keypoints: np.ndarray, frame_indices: list[int],
                          node_names: list[str], track_names: list[str], video_path: str,
                          video_shape: tuple[int, int] | None = None) -> None:
    """keypoints (F, T, K, 3) -> SLEAP predicted instances (score = mean confidence) in an .slp file, or, for a
    .nwb path, an NWB file with ndx-pose PoseEstimation (sleap-io's writer; sleap-io 0.9.5 needs the frames to be
    0..F-1 there, it raises IndexError for other frame indices)."""
    import sleap_io as sio

    skeleton = sio.Skeleton(nodes=list(node_names), name="sipec")
    tracks = [sio.Track(name=t) for t in track_names]
    video = sio.Video(filename=video_path, open_backend=False)
    if video_shape is not None:
        video.backend_metadata["shape"] = (max(frame_indices, default=-1) + 1, video_shape[0], video_shape[1], 3)
    frames = []
    for r, f in enumerate(frame_indices):
        insts = []
        for t, track in enumerate(tracks):
            kp = keypoints[r, t]
            if not np.isfinite(kp[:, :2]).any():
                continue
            insts.append(sio.PredictedInstance.from_numpy(
                kp[:, :2], skeleton=skeleton, point_scores=np.nan_to_num(kp[:, 2]),
                score=float(np.nanmean(kp[:, 2])), track=track))
        frames.append(sio.LabeledFrame(video=video, frame_idx=int(f), instances=insts))
    labels = sio.Labels(labeled_frames=frames, videos=[video], skeletons=[skeleton], tracks=tracks)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if Path(path).suffix == ".nwb":
        sio.save_nwb(labels, str(path))
    else:
        sio.save_slp(labels, str(path), verbose=False)
