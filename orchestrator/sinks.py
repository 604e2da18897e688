"""What `sipec analyze` writes for each video, from the completed frames.

- `ResultsSink`: the per-instance results table (Parquet and CSV) through the checkpointed
  `ResultsWriter` (resumable);
- `render_annotated_video`: an H.264 MP4 with masks, track ids / identities, keypoints and behaviour drawn;
- `write_pose_files`: pose in DeepLabCut's H5 (and CSV) analysis layout, SLEAP .slp and NWB (sleap-io);
all built from the results table, so a resumed run writes the same files as an uninterrupted one.
"""

from __future__ import annotations

import colorsys
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa

from orchestrator.pipeline import FrameState
from orchestrator.results import ResultsWriter
from sipec.geometry import decode_rle


def results_schema(keypoint_names: list[str], behaviour_names: list[str]) -> pa.Schema:
    f32 = pa.float32()
    fields = [("video", pa.string()), ("frame", pa.int64()), ("time_s", pa.float64()), ("track_id", pa.int32()),
              ("identity", pa.string()), ("identity_confidence", f32), ("score", f32),
              ("x1", f32), ("y1", f32), ("x2", f32), ("y2", f32), ("com_x", f32), ("com_y", f32),
              ("mask_height", pa.int32()), ("mask_width", pa.int32()), ("mask_rle", pa.string())]
    for k in keypoint_names:
        fields += [(f"kp_{k}_x", f32), (f"kp_{k}_y", f32), (f"kp_{k}_conf", f32)]
    if behaviour_names:
        fields += [("behaviour", pa.string()), ("behaviour_confidence", f32)]
        fields += [(f"p_{b}", f32) for b in behaviour_names]
        # the pair channel: BehaveNet on the crop of this animal and an interacting partner (tracker pairs)
        fields += [("social_behaviour", pa.string()), ("social_confidence", f32), ("social_partner", pa.int32())]
    fields += [("x3d", f32), ("y3d", f32), ("z3d", f32)]
    return pa.schema(fields)


def frame_rows(video: str, state: FrameState, keypoint_names: list[str],
               behaviour_names: list[str]) -> list[dict[str, Any]]:
    rows = []
    for a in state.animals:
        inst = a.instance
        rle = inst.rle or {}
        counts = rle.get("counts", b"")
        row: dict[str, Any] = {
            "video": video, "frame": state.frame.index, "time_s": state.frame.time_s,
            "track_id": a.track_id, "identity": a.identity or None,
            "identity_confidence": a.identity_confidence if a.identity else None, "score": inst.score,
            "x1": inst.box[0], "y1": inst.box[1], "x2": inst.box[2], "y2": inst.box[3],
            "com_x": inst.com[0], "com_y": inst.com[1],
            "mask_height": int(rle["size"][0]) if rle else None, "mask_width": int(rle["size"][1]) if rle else None,
            "mask_rle": counts.decode("ascii") if isinstance(counts, bytes) else counts,
        }
        if a.keypoints is not None:
            for kp in a.keypoints:
                if kp.name in keypoint_names:
                    row[f"kp_{kp.name}_x"], row[f"kp_{kp.name}_y"] = kp.x, kp.y
                    row[f"kp_{kp.name}_conf"] = kp.confidence
        if behaviour_names and a.behaviours is not None:
            values = dict(zip(a.behaviours.names, a.behaviours.values, strict=False))
            for b in behaviour_names:
                row[f"p_{b}"] = values.get(b)
            best = max(values, key=values.get) if values else None
            row["behaviour"], row["behaviour_confidence"] = best, values.get(best) if best else None
        if behaviour_names and a.track_id:
            social = _social(a.track_id, state.pair_behaviours)
            if social is not None:
                row["social_behaviour"], row["social_confidence"], row["social_partner"] = social
        if a.position is not None:
            row["x3d"], row["y3d"], row["z3d"] = a.position
        rows.append(row)
    return rows


def _social(track_id: int, pair_behaviours: dict[str, Any],
            background: tuple[str, ...] = ("none",)) -> tuple[str, float, int] | None:
    """(behaviour, confidence, partner track) of the most confident non-background pair behaviour that
    `track_id` takes part in this frame, or None."""
    best: tuple[str, float, int] | None = None
    for subject, probs in pair_behaviours.items():
        a, _, b = subject.partition("+")
        if str(track_id) not in (a, b) or not probs.names:
            continue
        values = dict(zip(probs.names, probs.values, strict=False))
        name = max(values, key=values.get)
        if name in background:
            continue
        partner = int(b) if a == str(track_id) else int(a)
        if best is None or values[name] > best[1]:
            best = (name, float(values[name]), partner)
    return best


class ResultsSink:
    def __init__(self, folder: Path, video: str, keypoint_names: list[str], behaviour_names: list[str],
                 resume: bool, chunk_frames: int = 200, meta: dict[str, Any] | None = None) -> None:
        self.video = video
        self.keypoint_names = keypoint_names
        self.behaviour_names = behaviour_names
        self.writer = ResultsWriter(folder, results_schema(keypoint_names, behaviour_names), chunk_frames,
                                    resume=resume, meta=meta)

    def add(self, state: FrameState) -> None:
        self.writer.add_frame(state.frame.index, frame_rows(self.video, state, self.keypoint_names,
                                                            self.behaviour_names))


def _colour(key: int) -> tuple[int, int, int]:
    h = (key * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_frame(image: np.ndarray, rows: list[dict[str, Any]], keypoint_names: list[str], index: int) -> np.ndarray:
    """The frame with masks, labels, keypoints and behaviour of its result rows drawn (RGB)."""
    img = image.copy()
    overlay = img.copy()
    for r in rows:
        colour = _colour(int(r["track_id"] or 0) or 97)
        if r.get("mask_rle"):
            mask = decode_rle({"size": [r["mask_height"], r["mask_width"]], "counts": r["mask_rle"]})
            if mask.shape == img.shape[:2]:
                overlay[mask] = colour
                contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                cv2.drawContours(img, contours, -1, colour, 1)
    img = cv2.addWeighted(overlay, 0.35, img, 0.65, 0)
    for r in rows:
        colour = _colour(int(r["track_id"] or 0) or 97)
        for k in keypoint_names:
            x, y = r.get(f"kp_{k}_x"), r.get(f"kp_{k}_y")
            if x is not None and y is not None and math.isfinite(x) and math.isfinite(y):
                cv2.circle(img, (int(round(x)), int(round(y))), 3, (255, 255, 255), -1)
                cv2.circle(img, (int(round(x)), int(round(y))), 2, colour, -1)
        label = r.get("identity") or (f"track {r['track_id']}" if r["track_id"] else "")
        if r.get("social_behaviour"):
            label += f" {r['social_behaviour']} w/ {r['social_partner']}"
        elif r.get("behaviour"):
            label += f" {r['behaviour']}"
        x1, y1 = int(r["x1"]), int(r["y1"])
        for colour_, width in (((0, 0, 0), 3), (colour, 1)):
            cv2.putText(img, label, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour_, width, cv2.LINE_AA)
    cv2.putText(img, f"frame {index}", (8, img.shape[0] - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                cv2.LINE_AA)
    return img


def render_annotated_video(video: Path, table: pa.Table, path: Path, keypoint_names: list[str],
                           behaviour_names: list[str], fps: float, frames: int | None = None) -> None:
    """Decode the video again and draw its results table onto it, into an H.264 MP4 written atomically.

    Rendering from the table (not from frames held during analysis) keeps memory flat and makes a resumed
    run's video identical to an uninterrupted one's. `frames`: how many frames were analysed (all of them are
    drawn, with or without animals); by default up to the last frame with a result.
    """
    from sipec.synth.video import Mp4Writer
    from sipec.video import FrameReader

    by_frame: dict[int, list[dict[str, Any]]] = {}
    for row in table.to_pylist():
        by_frame.setdefault(int(row["frame"]), []).append(row)
    stop = frames if frames is not None else (max(by_frame) + 1 if by_frame else 0)
    with FrameReader(video, stop=stop) as reader:
        w = reader.info.width - reader.info.width % 2
        h = reader.info.height - reader.info.height % 2
        writer = Mp4Writer(path, w, h, fps, crf=23)
        try:
            for frame in reader:
                img = draw_frame(frame.image, by_frame.get(frame.index, []), keypoint_names, frame.index)
                writer.write(np.ascontiguousarray(img[:h, :w]))
        except BaseException:
            writer.abort()
            raise
        writer.close()


def write_pose_files(table: pa.Table, keypoint_names: list[str], folder: Path, video_path: str,
                     fps: float = 30.0, video_shape: tuple[int, int] | None = None,
                     scorer: str = "sipec") -> list[Path]:
    """DeepLabCut H5 + CSV (analysis layout: x, y, likelihood per individual and bodypart), SLEAP .slp and NWB.

    Individuals are the identities when IdNet ran, else `track_<id>`; instances without a track (no tracker, or
    beyond a known number of animals) are `untracked_<k>`, k counting them within their frame.
    """
    import pandas as pd

    from sipec.data.atomic import atomic_path
    from sipec.data.pose_outputs import write_predictions_slp

    df = table.select(["frame", "track_id", "identity",
                       *[f"kp_{k}_{c}" for k in keypoint_names for c in ("x", "y", "conf")]]).to_pandas()
    if df.empty:
        return []
    loose = (df["track_id"] == 0) & df["identity"].isna()
    df["who"] = np.where(df["identity"].notna(), df["identity"], "track_" + df["track_id"].astype(str))
    df.loc[loose, "who"] = "untracked_" + df[loose].groupby("frame").cumcount().astype(str)
    individuals = sorted(df["who"].unique())
    frames = np.arange(int(df["frame"].min()), int(df["frame"].max()) + 1)
    arr = np.full((len(frames), len(individuals), len(keypoint_names), 3), np.nan)
    fi = df["frame"].to_numpy() - frames[0]
    wi = np.searchsorted(individuals, df["who"].to_numpy())
    for k, name in enumerate(keypoint_names):
        for c, suffix in enumerate(("x", "y", "conf")):
            arr[fi, wi, k, c] = df[f"kp_{name}_{suffix}"].to_numpy(dtype=np.float64)
    columns = pd.MultiIndex.from_product([[scorer], individuals, keypoint_names, ["x", "y", "likelihood"]],
                                         names=["scorer", "individuals", "bodyparts", "coords"])
    dlc = pd.DataFrame(arr.reshape(len(frames), -1), index=frames, columns=columns)
    out = []
    h5 = folder / "pose_dlc.h5"
    with atomic_path(h5) as tmp:
        dlc.to_hdf(tmp, key="df_with_missing", mode="w")
    out.append(h5)
    csv = folder / "pose_dlc.csv"
    with atomic_path(csv) as tmp:
        dlc.to_csv(tmp)
    out.append(csv)
    # SLEAP predicted instances (per-point scores = PoseNet confidences) in .slp, and the same as ndx-pose NWB
    # with one timestamp per video frame (frame / fps), so any first frame works (a resumed or cut video)
    for name in ("pose.slp", "pose.nwb"):
        with atomic_path(folder / name) as tmp:
            write_predictions_slp(tmp, arr, [int(f) for f in frames], list(keypoint_names), individuals, video_path,
                                  video_shape=video_shape, fps=fps)
        out.append(folder / name)
    return out
