"""Identity-label CSV and behaviour-label CSV: the files `sipec train idnet` and
`sipec train behavenet` read.

Identity CSV, one row per labelled instance (an animal visible in a frame)::

    video          video file name, relative to the CSV's folder (e.g. video.mp4)
    frame          0-based frame index
    track_id       id of the instance's track (stable along the video)
    identity       integer identity (0-based class index)
    identity_name  name of the identity (e.g. animal_0)
    x1, y1, x2, y2 box of the instance's visible mask in pixels, x2/y2 exclusive

Behaviour CSV, one row per animal per frame::

    video, frame, identity, identity_name  as above
    behaviour      behaviour name (one of the dataset's behaviour list)
    partner        identity of the interaction partner, -1 when the behaviour is not social
    partner_name   name of the partner, empty when none
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sipec.data.tables import read_table, to_frame, write_table

IDENTITY_COLUMNS: tuple[str, ...] = ("video", "frame", "track_id", "identity", "identity_name",
                                     "x1", "y1", "x2", "y2")
BEHAVIOUR_COLUMNS: tuple[str, ...] = ("video", "frame", "identity", "identity_name", "behaviour",
                                      "partner", "partner_name")
NO_PARTNER = -1

_IDENTITY_TYPES = {"video": str, "frame": int, "track_id": int, "identity": int, "identity_name": str,
                   "x1": float, "y1": float, "x2": float, "y2": float}
_BEHAVIOUR_TYPES = {"video": str, "frame": int, "identity": int, "identity_name": str, "behaviour": str,
                    "partner": int, "partner_name": str}


def write_identity_csv(path: str | os.PathLike, rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> None:
    write_table(path, to_frame(rows, IDENTITY_COLUMNS, "identity labels"), float_format="%.1f")


def read_identity_csv(path: str | os.PathLike) -> pd.DataFrame:
    df = read_table(path, _IDENTITY_TYPES, "identity-label")
    bad = df[(df.x2 <= df.x1) | (df.y2 <= df.y1)]
    if len(bad):
        raise ValueError(f"{path}: row {int(bad.index[0]) + 2} has an empty box (x2<=x1 or y2<=y1)")
    return df


def write_behaviour_csv(path: str | os.PathLike, rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> None:
    write_table(path, to_frame(rows, BEHAVIOUR_COLUMNS, "behaviour labels"))


def read_behaviour_csv(path: str | os.PathLike, behaviours: Sequence[str] | None = None) -> pd.DataFrame:
    """Read and check; with `behaviours`, every label must be one of them."""
    df = read_table(path, _BEHAVIOUR_TYPES, "behaviour-label")
    if behaviours is not None:
        unknown = sorted(set(df["behaviour"]) - set(behaviours))
        if unknown:
            raise ValueError(f"{path}: unknown behaviours {', '.join(unknown)}; expected {', '.join(behaviours)}")
    return df


@dataclass
class BehaviourSequence:
    """Per-frame labels of one animal in one video, as arrays ordered by frame."""

    video: str
    identity: int
    frames: np.ndarray  # (T,) int
    labels: np.ndarray  # (T,) int index into the behaviour list
    partners: np.ndarray  # (T,) int identity of the partner, -1 if none


def behaviour_sequences(df: pd.DataFrame, behaviours: Sequence[str]) -> list[BehaviourSequence]:
    """Split a behaviour table into one sequence per (video, identity), labels as class indices."""
    index = {name: i for i, name in enumerate(behaviours)}
    out = []
    for (video, identity), group in df.sort_values("frame").groupby(["video", "identity"], sort=True):
        out.append(BehaviourSequence(
            video=str(video), identity=int(identity), frames=group["frame"].to_numpy(np.int64),
            labels=np.array([index[b] for b in group["behaviour"]], dtype=np.int64),
            partners=group["partner"].to_numpy(np.int64)))
    return out
