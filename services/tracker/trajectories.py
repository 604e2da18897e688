"""Tracks against a peer's trajectories (points per animal per frame), e.g. idtracker.ai's trajectories.csv.

A peer's output is no ground truth, but on real video without labels it is the reference labs compare with. Each
frame, reference animals and tracked instances are matched by centre distance (at most `max_px` pixels): CLEAR
MOT (misses, false positives, identity switches, MOTA) and IDF1 with `MotAccumulator.update_points`, plus what a
lab reads first -- how many tracks the video got for how many animals, and in how many frames every animal is
tracked.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sipec.mot import MotAccumulator

Point = tuple[float, float]


def load_trajectories(path: str | os.PathLike) -> dict[int, list[tuple[str, Point]]]:
    """idtracker.ai's trajectories.csv (time, x1, y1, ..., xN, yN; a row per frame; empty where an animal was not
    placed) -> {frame: [(animal id "1".."N", (x, y))]}. ValueError names the file and the problem."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc}") from None
    if not rows or not rows[0] or rows[0][0].strip().lower() != "time" or len(rows[0]) < 3 or len(rows[0]) % 2 != 1:
        raise ValueError(f"{path}: expected idtracker.ai's trajectories.csv header 'time,x1,y1,...,xN,yN'")
    animals = (len(rows[0]) - 1) // 2
    out: dict[int, list[tuple[str, Point]]] = {}
    for frame, row in enumerate(rows[1:]):
        if len(row) != len(rows[0]):
            raise ValueError(f"{path}: line {frame + 2} has {len(row)} fields, the header {len(rows[0])}")
        points = []
        for k in range(animals):
            x, y = row[1 + 2 * k].strip(), row[2 + 2 * k].strip()
            if x and y and x.lower() != "nan" and y.lower() != "nan":
                try:
                    points.append((str(k + 1), (float(x), float(y))))
                except ValueError:
                    raise ValueError(f"{path}: line {frame + 2}: animal {k + 1}: not a number: {x!r}, {y!r}") from None
        out[frame] = points
    return out


def score_against_trajectories(reference: Mapping[int, Sequence[tuple[str, Point]]],
                               tracks: Mapping[int, Sequence[tuple[int, Point]]], max_px: float) -> dict[str, Any]:
    """Score `tracks` ({frame: [(track id, centre)]}, track id 0 = untracked, left out) against `reference` over
    every frame the reference has."""
    if not max_px > 0:
        raise ValueError(f"the matching distance must be > 0 pixels, not {max_px}")
    acc = MotAccumulator()
    animals = len({a for pts in reference.values() for a, _ in pts})
    all_tracked = 0
    used: set[int] = set()
    for frame in sorted(reference):
        hyp = [(t, p) for t, p in tracks.get(frame, ()) if t]
        used.update(t for t, _ in hyp)
        acc.update_points(list(reference[frame]), hyp, max_px)
        all_tracked += int(len({t for t, _ in hyp}) >= animals)
    r = acc.result()
    matched = r.gt_detections - r.misses
    return {"frames": r.frames, "animals": animals, "tracks": len(used), "frames_with_all_animals": all_tracked,
            "idf1": r.idf1, "idp": r.idp, "idr": r.idr,
            # of the reference detections tracked (within max_px), the share under the animal's one best id
            "identity_accuracy": r.idr * r.gt_detections / matched if matched else 0.0,
            "id_switches": r.id_switches, "mota": r.mota,
            "misses": r.misses, "false_positives": r.false_positives, "max_px": max_px,
            "reference_detections": r.gt_detections, "tracked_detections": r.hyp_detections}


def tracks_from_results(path: str | os.PathLike, by: str = "track") -> dict[int, list[tuple[int, Point]]]:
    """{frame: [(id, centre of mass)]} of a `sipec analyze` result (its folder or results.parquet); the id is the
    track id (`by` "track") or the identity IdNet gave (`by` "identity": names numbered in sorted order from 1, 0
    where none)."""
    import pyarrow.parquet as pq

    path = _results_path(path)
    column = {"track": "track_id", "identity": "identity"}[by]
    table = pq.read_table(path, columns=["frame", column, "com_x", "com_y"]).to_pydict()
    numbers = {name: k + 1 for k, name in enumerate(sorted({v for v in table[column] if v}))} if by == "identity" \
        else None
    out: dict[int, list[tuple[int, Point]]] = {}
    for f, t, x, y in zip(table["frame"], table[column], table["com_x"], table["com_y"], strict=True):
        if x is not None and y is not None and not (math.isnan(x) or math.isnan(y)):
            key = (numbers.get(t, 0) if t else 0) if numbers is not None else int(t or 0)
            out.setdefault(int(f), []).append((key, (float(x), float(y))))
    return out


def has_identities(path: str | os.PathLike) -> bool:
    """Whether a `sipec analyze` result gives identities (IdNet ran)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = _results_path(path)
    if "identity" not in pq.read_schema(path).names:
        return False
    column = pq.read_table(path, columns=["identity"]).column("identity")
    return bool(len(column) and pc.sum(pc.is_valid(column)).as_py())


def _results_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / "results.parquet"
    if not path.is_file():
        raise ValueError(f"{path}: not found; give a `sipec analyze` result folder or its results.parquet")
    return path
