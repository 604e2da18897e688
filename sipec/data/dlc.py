"""DeepLabCut ``CollectedData`` CSV, single-animal and multi-animal (maDLC) layouts.

Single-animal (three header rows)::

    scorer,S,S,S,S,...
    bodyparts,snout,snout,leftear,leftear,...
    coords,x,y,x,y,...
    labeled-data/session/img0000.png,21.5,265.4,...

Multi-animal adds an ``individuals`` row after ``scorer``::

    scorer,S,S,...
    individuals,animal_0,animal_0,...
    bodyparts,snout,snout,...
    coords,x,y,...

Missing (unlabelled or occluded) points are empty cells, read back as NaN. The reader also accepts
the newer layout with three index columns (``labeled-data,session,img.png``), which it joins with
``/``. Coordinates are pixels with the origin at the top-left corner of the image.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass

import numpy as np

from sipec.data.atomic import write_text_atomic


@dataclass
class DlcLabels:
    """Keypoints of one CollectedData file.

    ``coords`` has shape (images, individuals, bodyparts, 2) with NaN for missing points;
    ``individuals`` is None for a single-animal file (then the individuals axis has length 1).
    """

    scorer: str
    bodyparts: list[str]
    individuals: list[str] | None
    image_paths: list[str]
    coords: np.ndarray


def write_dlc_csv(path: str | os.PathLike, labels: DlcLabels, decimals: int = 3) -> None:
    """Write atomically; the multi-animal layout when ``labels.individuals`` is not None."""
    coords = np.asarray(labels.coords, dtype=np.float64)
    n_ind = 1 if labels.individuals is None else len(labels.individuals)
    expected = (len(labels.image_paths), n_ind, len(labels.bodyparts), 2)
    if coords.shape != expected:
        raise ValueError(f"coords shape {coords.shape} does not match (images, individuals, bodyparts, 2) "
                         f"= {expected}")
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    n_cols = n_ind * len(labels.bodyparts) * 2
    out.writerow(["scorer", *([labels.scorer] * n_cols)])
    if labels.individuals is not None:
        out.writerow(["individuals", *[ind for ind in labels.individuals for _ in range(2 * len(labels.bodyparts))]])
    out.writerow(["bodyparts", *([bp for bp in labels.bodyparts for _ in range(2)] * n_ind)])
    out.writerow(["coords", *(["x", "y"] * (n_cols // 2))])
    flat = coords.reshape(len(labels.image_paths), n_cols)
    for name, row in zip(labels.image_paths, flat, strict=True):
        out.writerow([name, *["" if not np.isfinite(v) else f"{v:.{decimals}f}" for v in row]])
    write_text_atomic(path, buf.getvalue())


def read_dlc_csv(path: str | os.PathLike) -> DlcLabels:
    """Read either layout; errors name the file and what is wrong with it.

    Parsed with the csv module rather than pandas: pandas takes a first data row whose coordinates
    are all missing for an index-names row and drops it.
    """
    with open(path, encoding="utf-8", newline="") as fh:
        rows = [row for row in csv.reader(fh) if row]
    if len(rows) < 3 or rows[0][:1] != ["scorer"]:
        raise ValueError(f"{path}: not a DeepLabCut CollectedData CSV (first cell must be 'scorer')")
    multi = rows[1][:1] == ["individuals"]
    n_header = 4 if multi else 3
    expected = ["scorer", "individuals", "bodyparts", "coords"] if multi else ["scorer", "bodyparts", "coords"]
    if [r[0] for r in rows[:n_header]] != expected:
        raise ValueError(f"{path}: header rows must start with {', '.join(expected)}")
    n_index = 1
    while n_index < len(rows[0]) and rows[0][n_index] == "":
        n_index += 1
    header = [r[n_index:] for r in rows[:n_header]]
    n_cols = len(header[0])
    if any(len(h) != n_cols for h in header):
        raise ValueError(f"{path}: header rows have different lengths")
    scorer = header[0][0] if n_cols else ""
    ind_level = header[1] if multi else [""] * n_cols
    bp_level, coord_level = header[n_header - 2], header[n_header - 1]
    individuals = list(dict.fromkeys(ind_level)) if multi else None
    bodyparts = list(dict.fromkeys(bp_level))
    inds = individuals if individuals is not None else [""]
    ind_pos = {name: i for i, name in enumerate(inds)}
    bp_pos = {name: i for i, name in enumerate(bodyparts)}
    data = rows[n_header:]
    coords = np.full((len(data), len(inds), len(bodyparts), 2), np.nan)
    image_paths = []
    for r, row in enumerate(data):
        image_paths.append("/".join(row[:n_index]))
        values = row[n_index:]
        if len(values) > n_cols:
            raise ValueError(f"{path}: line {n_header + r + 1} has {len(values)} values, the header {n_cols}")
        for col, text in enumerate(values):
            c = coord_level[col]
            if text == "" or c not in ("x", "y"):
                continue  # missing point, or e.g. a 'likelihood' column of machine-labelled files
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{path}: line {n_header + r + 1}: {text!r} is not a number") from None
            coords[r, ind_pos[ind_level[col]], bp_pos[bp_level[col]], 0 if c == "x" else 1] = value
    return DlcLabels(scorer=scorer, bodyparts=bodyparts, individuals=individuals,
                     image_paths=image_paths, coords=coords)


def frame_image_path(video_stem: str, frame: int) -> str:
    """The DLC-style row name of frame `frame` of a video: labeled-data/<stem>/img000123.png."""
    return f"labeled-data/{video_stem}/img{frame:06d}.png"
