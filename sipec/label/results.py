"""The instances of a `sipec analyze` result (results.parquet), and the sample of them to label."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

RESULTS_FILE = "results.parquet"
_NEEDED = ("frame", "track_id", "x1", "y1", "x2", "y2", "mask_rle", "mask_height", "mask_width")


@dataclass(frozen=True)
class Instance:
    """One mask of one frame: row `index` (0-based, in file order) of the frame's rows."""

    frame: int
    index: int
    track_id: int
    box: tuple[float, float, float, float]   # x1, y1, x2, y2 from the results
    rle: dict | None                          # COCO RLE (counts as str), None when the row has no mask
    identity: str                             # IdNet's identity name, "" when none
    com: tuple[float, float] | None

    @property
    def key(self) -> str:
        return f"{self.frame}:{self.index}"


class Results:
    """results.parquet of one video, grouped by frame."""

    def __init__(self, path: str | os.PathLike) -> None:
        p = Path(path)
        self.path = p / RESULTS_FILE if p.is_dir() else p
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such file (expected the results.parquet of a finished "
                                    "`sipec analyze` run)")
        try:
            table = pq.read_table(self.path)
        except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
            raise ValueError(f"{self.path}: cannot read as Parquet ({exc})") from exc
        missing = [c for c in _NEEDED if c not in table.column_names]
        if missing:
            raise ValueError(f"{self.path}: not a `sipec analyze` results table, missing columns {', '.join(missing)}")
        cols = {c: table.column(c).to_pylist() for c in table.column_names
                if c in (*_NEEDED, "identity", "com_x", "com_y") or c.startswith("p_")}
        self.behaviour_names: list[str] = [c[2:] for c in table.column_names if c.startswith("p_")]
        self.by_frame: dict[int, list[Instance]] = {}
        for i in range(table.num_rows):
            frame = int(cols["frame"][i])
            rle_counts = cols["mask_rle"][i]
            rle = None
            if rle_counts and cols["mask_height"][i] and cols["mask_width"][i]:
                rle = {"size": [int(cols["mask_height"][i]), int(cols["mask_width"][i])], "counts": str(rle_counts)}
            com = None
            if "com_x" in cols and cols["com_x"][i] is not None and cols["com_y"][i] is not None:
                com = (float(cols["com_x"][i]), float(cols["com_y"][i]))
            rows = self.by_frame.setdefault(frame, [])
            track = cols["track_id"][i]
            rows.append(Instance(frame=frame, index=len(rows), track_id=int(track) if track is not None else 0,
                                 box=tuple(float(cols[k][i] or 0.0) for k in ("x1", "y1", "x2", "y2")),  # type: ignore
                                 rle=rle, identity=str(cols.get("identity", [None] * table.num_rows)[i] or ""),
                                 com=com))
        self.frames: list[int] = sorted(self.by_frame)

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_frame.values())

    def instances(self, frame: int) -> list[Instance]:
        return self.by_frame.get(int(frame), [])

    def get(self, key: str) -> Instance | None:
        frame, _, index = key.partition(":")
        try:
            rows = self.by_frame.get(int(frame), [])
            return rows[int(index)] if 0 <= int(index) < len(rows) else None
        except ValueError:
            return None

    def mask_shape(self) -> tuple[int, int] | None:
        for rows in self.by_frame.values():
            for inst in rows:
                if inst.rle is not None:
                    return int(inst.rle["size"][0]), int(inst.rle["size"][1])
        return None

    def tracks(self) -> dict[int, list[int]]:
        """track id -> the frames it is seen in (increasing)."""
        out: dict[int, list[int]] = {}
        for frame in self.frames:
            for inst in self.by_frame[frame]:
                out.setdefault(inst.track_id, []).append(frame)
        return out

    def track_names(self) -> dict[int, str]:
        """track id -> IdNet's most frequent identity for it (or "")."""
        counts: dict[int, dict[str, int]] = {}
        for rows in self.by_frame.values():
            for inst in rows:
                if inst.identity:
                    c = counts.setdefault(inst.track_id, {})
                    c[inst.identity] = c.get(inst.identity, 0) + 1
        return {t: max(c, key=lambda k: (c[k], k)) for t, c in counts.items()}


def sample_instances(results: Results, count: int, mode: str = "regular", seed: int = 0,
                     num_frames: int | None = None) -> list[Instance]:
    """`count` masks to label, all the masks of whole frames, frames in increasing order.

    regular: frames evenly spaced over the frames that have masks; random: frames drawn without replacement with
    `seed`. Deterministic for the same results and arguments, so a restarted session gets the same list.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")
    frames = [f for f in results.frames if any(i.rle is not None for i in results.instances(f))
              and (num_frames is None or f < num_frames)]
    if not frames:
        return []
    total = sum(_n_masks(results, f) for f in frames)
    if mode == "random":
        order = [frames[i] for i in np.random.default_rng(seed).permutation(len(frames))]
        chosen, n = [], 0
        for f in order:
            if n >= count:
                break
            chosen.append(f)
            n += _n_masks(results, f)
    elif mode == "regular":
        k = min(len(frames), max(1, math.ceil(count * len(frames) / total)))
        while True:
            chosen = sorted({frames[int(round(i))] for i in np.linspace(0, len(frames) - 1, k)})
            if sum(_n_masks(results, f) for f in chosen) >= count or k >= len(frames):
                break
            k += 1
    else:
        raise ValueError(f"sample must be regular or random, not {mode!r}")
    out = [i for f in sorted(chosen) for i in results.instances(f) if i.rle is not None]
    return out[:count]


def _n_masks(results: Results, frame: int) -> int:
    return sum(1 for i in results.instances(frame) if i.rle is not None)
