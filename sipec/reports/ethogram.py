"""Ethograms and bout statistics per individual, from per-frame behaviour labels.

A bout is a maximal run of consecutive frames with the same behaviour. For each individual and
behaviour: number of bouts, total time, mean bout length and latency to the first bout (seconds from
the start of the sequence, i.e. frame 0 of the video, to the start of its first bout of that
behaviour; NaN when it never shows it). Frames labelled -1 (animal not seen) belong to no bout.
The ethogram is one row per individual, time on the x axis, a coloured bar per bout.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

BOUT_COLUMNS: tuple[str, ...] = ("individual", "behaviour", "bouts", "total_s", "mean_bout_s", "latency_s")


@dataclass(frozen=True)
class Bout:
    behaviour: int   # class index
    start: int       # first frame (position in the sequence)
    length: int      # frames


def bouts(labels: Sequence[int] | np.ndarray) -> list[Bout]:
    """Maximal runs of equal labels in a per-frame label sequence (class indices; -1 = unlabelled, skipped)."""
    arr = np.asarray(labels, dtype=np.int64)
    if arr.size == 0:
        return []
    change = np.flatnonzero(np.diff(arr)) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [arr.size]))
    return [Bout(int(arr[s]), int(s), int(e - s)) for s, e in zip(starts, ends, strict=True) if arr[s] >= 0]


def bout_statistics(labels: Mapping[str, Sequence[int] | np.ndarray], behaviours: Sequence[str],
                    fps: float) -> pd.DataFrame:
    """One row per individual and behaviour (BOUT_COLUMNS); `labels` maps individual -> per-frame class indices."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, not {fps}")
    rows = []
    for individual, seq in labels.items():
        found = bouts(seq)
        for k, name in enumerate(behaviours):
            mine = [b for b in found if b.behaviour == k]
            total = sum(b.length for b in mine) / fps
            rows.append((str(individual), name, len(mine), total, total / len(mine) if mine else 0.0,
                         mine[0].start / fps if mine else float("nan")))
    return pd.DataFrame(rows, columns=list(BOUT_COLUMNS))


def write_bout_statistics_csv(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """Write a bout-statistics table (BOUT_COLUMNS), seconds with 3 decimals."""
    from sipec.data.tables import write_table

    write_table(path, table[list(BOUT_COLUMNS)], float_format="%.3f")


def plot_ethogram(labels: Mapping[str, Sequence[int] | np.ndarray], behaviours: Sequence[str], fps: float,
                  path: str | os.PathLike, title: str = "", skip: Sequence[str] = ("none",)) -> Path:
    """Write an ethogram PNG: one row per individual, one coloured bar per bout (behaviours in `skip` blank)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    if fps <= 0:
        raise ValueError(f"fps must be positive, not {fps}")
    names = list(labels)
    fig = Figure(figsize=(11, 1.2 + 0.45 * max(1, len(names))), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colours = _colours(len(behaviours))
    longest = 0
    for row, name in enumerate(names):
        seq = np.asarray(labels[name])
        longest = max(longest, seq.size)
        for k, behaviour in enumerate(behaviours):
            if behaviour in skip:
                continue
            spans = [(b.start / fps, b.length / fps) for b in bouts(seq) if b.behaviour == k]
            if spans:
                ax.broken_barh(spans, (row - 0.4, 0.8), facecolors=colours[k])
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.invert_yaxis()
    ax.set_xlim(0, max(longest, 1) / fps)
    ax.set_xlabel("time (s)")
    if title:
        ax.set_title(title)
    ax.legend(handles=[Patch(color=colours[k], label=b) for k, b in enumerate(behaviours) if b not in skip],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _colours(n: int) -> list[tuple[float, float, float, float]]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]
