"""Per-frame 3D positions CSV (``positions_3d.csv``), one row per animal per frame::

    video          video file name
    frame          0-based frame index
    identity       integer identity
    identity_name  name of the identity
    x, y, z        position of the animal's body centre in metres, in the world frame of the
                   dataset's camera.json (floor plane z=0, z up)
    u, v           centre of mass of the visible mask in pixels (empty when not visible)
    area           visible mask area in pixels (0 when hidden)
    visible        1 when any part of the animal is visible, else 0
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from sipec.data.tables import read_table, to_frame, write_table

POSITION_COLUMNS: tuple[str, ...] = ("video", "frame", "identity", "identity_name", "x", "y", "z",
                                     "u", "v", "area", "visible")
_TYPES = {"video": str, "frame": int, "identity": int, "identity_name": str, "x": float, "y": float,
          "z": float, "u": float, "v": float, "area": int, "visible": int}


def write_positions_csv(path: str | os.PathLike, rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> None:
    write_table(path, to_frame(rows, POSITION_COLUMNS, "3D positions"), float_format="%.4f")


def read_positions_csv(path: str | os.PathLike) -> pd.DataFrame:
    return read_table(path, _TYPES, "3D-position")
