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
                          video_shape: tuple[int, int] | None = None, fps: float = 30.0) -> None:
    """keypoints (F, T, K, 3) -> SLEAP predicted instances (score = mean confidence) in an .slp file, or, for a
    .nwb path, an NWB file with ndx-pose PoseEstimation (sleap-io's writer), one series per track and keypoint,
    time-stamped ``frame / fps`` seconds (NWB is indexed by time, not frame number)."""
    import sleap_io as sio

    order = np.argsort(np.asarray(frame_indices, dtype=np.int64), kind="stable")     # NWB time must increase
    keypoints = np.asarray(keypoints)[order]
    frame_indices = [int(frame_indices[i]) for i in order]
    skeleton = sio.Skeleton(nodes=list(node_names), name="sipec")
    tracks = [sio.Track(name=t) for t in track_names]
    video = sio.Video(filename=video_path, open_backend=False)
    n_video_frames = max(frame_indices, default=-1) + 1
    if video_shape is not None:
        video.backend_metadata["shape"] = (n_video_frames, video_shape[0], video_shape[1], 3)
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
        from sleap_io.io import nwb_predictions

        # sleap-io indexes its timestamps by frame number; its default (one per labelled frame) breaks for
        # frames that are not 0..F-1, so pass one timestamp per video frame
        nwb_predictions.write_nwb(labels, str(path), pose_estimation_metadata={
            "video_timestamps": np.arange(n_video_frames, dtype=np.float64) / fps})
        _fix_nwb_rates(Path(path), keypoints, frame_indices, node_names, track_names, fps)
    else:
        sio.save_slp(labels, str(path), verbose=False)


def _fix_nwb_rates(path: Path, keypoints: np.ndarray, frame_indices: list[int], node_names: list[str],
                   track_names: list[str], fps: float) -> None:
    """Correct the sampling rate of evenly spaced series in an NWB file that sleap-io wrote.

    For a series whose frames are evenly spaced, sleap-io 0.9.5 stores ``rate = float(int(1 / period))``
    instead of timestamps: 29.97 fps becomes 29, and even 30 fps often becomes 29 (1 / (31/30 - 30/30) is
    29.99...). Such a series' true rate is ``fps / step`` (step: frames between its samples).
    """
    import h5py

    frames = np.asarray(frame_indices, dtype=np.int64)
    with h5py.File(path, "r+") as f:
        modules = list(f.get("processing", {}).values())
        for t, track in enumerate(track_names):
            for k, node in enumerate(node_names):
                fr = frames[np.isfinite(keypoints[:, t, k, :2]).all(axis=1)]
                steps = np.unique(np.diff(fr))
                if len(steps) != 1 or steps[0] <= 0:
                    continue
                for module in modules:
                    series = module.get(f"track={track}/{node}")
                    if series is not None and "starting_time" in series:
                        series["starting_time"].attrs["rate"] = float(fps / steps[0])
