"""VIA 3 (VGG Image Annotator) temporal segments -> per-frame behaviour labels.

SIPEC's behaviour labels were drawn as temporal segments in VIA 3's video annotator. A VIA 3 project
JSON holds ``file`` (fid -> fname), ``view`` (vid -> fid_list), ``attribute`` (aid -> aname, options)
and ``metadata`` entries; a temporal segment is a metadata entry with ``z = [start_s, end_s]``, no
spatial region (``xy = []``) and ``av = {aid: value}``, the value being an option id of the attribute
(or free text). Frame i (time i / fps) gets a segment's value when ``start <= i / fps < end``; frames
in no segment get the background class (``none``). Two segments of different values over one frame
are refused, naming both.

The result has the behaviour-CSV columns (:mod:`sipec.data.labels`): one labelled animal per video.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sipec.data.labels import BEHAVIOUR_COLUMNS, NO_PARTNER


@dataclass(frozen=True)
class ViaSegment:
    """One temporal segment of a VIA 3 project."""

    metadata_id: str
    video: str       # file name of the video
    start_s: float
    end_s: float
    attribute: str   # attribute name
    value: str       # option name (or the free text)


def read_via_segments(path: str | os.PathLike) -> list[ViaSegment]:
    """Every temporal segment of a VIA 3 project file, ordered by video and start time."""
    path = Path(path)
    try:
        project = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(project, dict) or "metadata" not in project or "file" not in project:
        raise ValueError(f"{path}: not a VIA 3 project (expected 'file', 'view', 'attribute' and 'metadata')")
    files = {str(fid): str(f.get("fname", fid)) for fid, f in project["file"].items()}
    views = {str(vid): [str(x) for x in v.get("fid_list", [])] for vid, v in project.get("view", {}).items()}
    attributes = project.get("attribute", {})
    out = []
    for mid, meta in project["metadata"].items():
        z = meta.get("z", [])
        if len(z) != 2 or meta.get("xy"):
            continue  # a spatial region or a single time point, not a temporal segment
        start, end = float(z[0]), float(z[1])
        if not (math.isfinite(start) and math.isfinite(end)) or end < start:
            raise ValueError(f"{path}: metadata {mid}: z = {z} is not a time segment [start, end] in seconds")
        vid = str(meta.get("vid", ""))
        fids = views.get(vid, [vid])
        if not fids or fids[0] not in files:
            raise ValueError(f"{path}: metadata {mid}: view {vid!r} names no file in 'file'")
        for aid, raw in (meta.get("av") or {}).items():
            attr = attributes.get(str(aid), {})
            options = attr.get("options") or {}
            value = str(options.get(str(raw), raw)).strip()
            if value:
                out.append(ViaSegment(str(mid), files[fids[0]], start, end, str(attr.get("aname", aid)), value))
    return sorted(out, key=lambda s: (s.video, s.start_s, s.end_s, s.metadata_id))


def via_frame_labels(path: str | os.PathLike, fps: float, num_frames: int | Mapping[str, int] | None = None,
                     attribute: str | None = None, default: str = "none", identity: int = 0,
                     identity_name: str = "animal_0") -> pd.DataFrame:
    """Per-frame behaviour labels (behaviour-CSV columns) from a VIA 3 project's temporal segments.

    `num_frames` (one number, or one per video file name) sets each video's length; by default it
    ends with the last segment. `attribute` picks the attribute when segments use several.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, not {fps}")
    segments = read_via_segments(path)
    names = sorted({s.attribute for s in segments})
    if attribute is None and len(names) > 1:
        raise ValueError(f"{path}: temporal segments use several attributes ({', '.join(names)}); choose one")
    if attribute is not None:
        if attribute not in names:
            raise ValueError(f"{path}: no temporal segment uses attribute {attribute!r} "
                             f"(attributes used: {', '.join(names) or 'none'})")
        segments = [s for s in segments if s.attribute == attribute]
    videos = sorted({s.video for s in segments} | (set(num_frames) if isinstance(num_frames, Mapping) else set()))
    rows = []
    for video in videos:
        segs = [s for s in segments if s.video == video]
        if isinstance(num_frames, Mapping):
            n = int(num_frames.get(video, 0)) or _frames_to_cover(segs, fps)
        else:
            n = int(num_frames) if num_frames is not None else _frames_to_cover(segs, fps)
        labels = np.full(n, None, dtype=object)
        owner: list[ViaSegment | None] = [None] * n
        times = np.arange(n) / fps
        for seg in segs:
            for i in np.flatnonzero((times >= seg.start_s - 1e-9) & (times < seg.end_s - 1e-9)):
                prev = owner[i]
                if prev is not None and prev.value != seg.value:
                    raise ValueError(
                        f"{path}: video {video}: frame {i} ({times[i]:.3f} s) is in segment {prev.metadata_id} "
                        f"({prev.value}, {prev.start_s:g}-{prev.end_s:g} s) and in segment {seg.metadata_id} "
                        f"({seg.value}, {seg.start_s:g}-{seg.end_s:g} s); segments of different behaviours "
                        "must not overlap")
                owner[i] = seg
                labels[i] = seg.value
        for i in range(n):
            rows.append((video, i, identity, identity_name, labels[i] if labels[i] is not None else default,
                         NO_PARTNER, ""))
    return pd.DataFrame(rows, columns=list(BEHAVIOUR_COLUMNS))


def _frames_to_cover(segments: list[ViaSegment], fps: float) -> int:
    return int(math.ceil(max((s.end_s for s in segments), default=0.0) * fps - 1e-9))
