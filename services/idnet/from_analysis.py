"""`sipec train idnet --from-analysis OUT/VIDEO --animals N`: IdNet trained on a tracked video, no hand labels.

Reads a `sipec analyze` result (results.parquet with track ids and masks, summary.json naming the video), cuts the
tracks into fragments (services.idnet.fragments), labels them by accumulation from the longest global fragment
(services.idnet.accumulate) with IdNet's frame network, and finally trains IdNet (with its recurrent network for
T > 0) on every labelled fragment. Identities are named animal_1..animal_N in the order of the first global
fragment's tracks; `sipec label` remains the way to give them lab names and to correct them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from services.idnet.accumulate import Accumulation, accumulate
from services.idnet.data import CropSet, _Builder
from services.idnet.fragments import Fragments, find_fragments
from services.idnet.masking import MaskSettings
from sipec.geometry import decode_rle

log = logging.getLogger("sipec.idnet")

COLUMNS = ["frame", "track_id", "x1", "y1", "x2", "y2", "com_x", "com_y", "mask_height", "mask_width", "mask_rle"]


@dataclass(frozen=True)
class FragmentSettings:
    animals: int
    margin: float = 0.1            # boxes widened by this x their longer side must not meet to count as apart
    min_frames: int = 3            # shortest individual fragment used
    max_crops: int = 200           # most crops per fragment (a contiguous block at its middle)
    rounds: int = 4                # accumulation rounds after the first global fragment
    min_certainty: float = 0.5     # a new fragment's mean probability of its identity, at least

    def validate(self) -> None:
        if self.animals < 2:
            raise ValueError(f"--animals must be 2 or more, not {self.animals}")
        if not 0.0 <= self.margin <= 1.0:
            raise ValueError(f"--apart-margin must be in [0, 1], not {self.margin}")
        for flag, value, least in (("--min-fragment-frames", self.min_frames, 1),
                                   ("--max-crops-per-fragment", self.max_crops, 1), ("--rounds", self.rounds, 0)):
            if value < least:
                raise ValueError(f"{flag} must be >= {least}, not {value}")
        if not 0.0 < self.min_certainty <= 1.0:
            raise ValueError(f"--min-certainty must be in (0, 1], not {self.min_certainty}")


def read_analysis(folder: str | Path) -> tuple[Path, dict[str, np.ndarray]]:
    """(video path, columns of results.parquet). ValueError naming the folder and what is missing."""
    import pyarrow.parquet as pq

    folder = Path(folder)
    results, summary = folder / "results.parquet", folder / "summary.json"
    if not results.is_file() or not summary.is_file():
        raise ValueError(f"{folder}: not a finished `sipec analyze` result (needs results.parquet and summary.json)")
    try:
        video = Path(json.loads(summary.read_text())["video"])
    except (ValueError, KeyError) as exc:
        raise ValueError(f"{summary}: no video named ({exc})") from None
    if not video.is_file():
        raise ValueError(f"{summary}: the analysed video {video} is not found (run from where `sipec analyze` ran)")
    names = pq.read_schema(results).names
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise ValueError(f"{results}: columns {missing} missing; analyse with segnet and tracker")
    table = pq.read_table(results, columns=COLUMNS).to_pydict()
    cols = {k: np.asarray(v) for k, v in table.items() if k != "mask_rle"}
    cols["mask_rle"] = np.asarray(table["mask_rle"], dtype=object)
    cols["track_id"] = np.asarray([t or 0 for t in table["track_id"]], np.int64)
    return video, cols


def crop_px_for(cols: dict[str, np.ndarray]) -> int:
    """A crop side that holds the video's animals: 1.1 x the median longer box side of the tracked rows, rounded up
    to a multiple of 8 (at least 16)."""
    tracked = cols["track_id"] > 0
    side = np.maximum(cols["x2"] - cols["x1"], cols["y2"] - cols["y1"])[tracked]
    if not len(side):
        return 96
    return max(16, int(np.ceil(1.1 * float(np.median(side)) / 8.0) * 8))


def mask_of(cols: dict[str, np.ndarray], row: int) -> np.ndarray | None:
    """The full-frame mask of a result row (None without one)."""
    if not cols["mask_rle"][row]:
        return None
    return decode_rle({"size": [int(cols["mask_height"][row]), int(cols["mask_width"][row])],
                       "counts": cols["mask_rle"][row]})


def fragments_of(cols: dict[str, np.ndarray], s: FragmentSettings) -> Fragments:
    boxes = np.stack([cols[k].astype(np.float64) for k in ("x1", "y1", "x2", "y2")], axis=1)
    return find_fragments(cols["frame"], cols["track_id"], boxes, s.animals, s.margin, s.min_frames,
                          masks=lambda r: mask_of(cols, r))


def explain_no_global(folder: Path, frags: Fragments, animals: int) -> str:
    a, b = frags.longest_core
    where = f"; the longest such stretch is frames {a}-{b}" if frags.most_apart else ""
    return (f"--from-analysis {folder}: nowhere are all {animals} animals tracked apart (at most "
            f"{frags.most_apart} at once{where}). Analyse with `--animals {animals}` and a SegNet that finds "
            "every animal, or pass the number of animals the video really shows")


def load_crops(video: Path, cols: dict[str, np.ndarray], frags: Fragments, settings: MaskSettings,
               max_crops: int) -> CropSet:
    """Crops (with their masks) of the fragments in global fragments; CropSet.track = fragment id, identity -1."""
    wanted: set[int] = {f for g in frags.globals for f in g.fragments}
    rows = []
    for f in sorted(wanted):
        r = frags.fragments[f].rows
        if len(r) > max_crops:
            a = (len(r) - max_crops) // 2
            r = r[a:a + max_crops]
        rows.append(r)
    rows_all = np.concatenate(rows)
    by_frame: dict[int, list[int]] = {}
    for r in rows_all:
        by_frame.setdefault(int(cols["frame"][r]), []).append(int(r))
    from sipec.data.frames import read_frames

    b = _Builder(settings)
    for f, image in read_frames(video, by_frame, what="the analysis"):
        for r in by_frame[f]:
            mask = mask_of(cols, r)
            if mask is not None and mask.shape != image.shape[:2]:
                mask = None
            b.add(image, (float(cols["com_x"][r]), float(cols["com_y"][r])), mask, -1,
                  int(frags.fragment_of_row[r]), f, 0)
    return b.build([], [str(video)], "")


def label_fragments(data: CropSet, frags: Fragments, frame: np.ndarray, s: FragmentSettings, fit: Any,
                    predict: Any) -> Accumulation:
    """Accumulation with `fit(data subset) -> model` and `predict(model, data subset) -> probabilities`."""
    state: dict[str, Any] = {}

    def train(labels: dict[int, int]) -> None:
        state["model"] = fit(with_labels(data, labels, s.animals))

    def predict_fragments(ids: list[int]) -> dict[int, np.ndarray]:
        rows = np.flatnonzero(np.isin(data.track, ids))
        probs = predict(state["model"], data.subset(rows))
        return {f: probs[data.track[rows] == f].mean(axis=0) for f in ids if np.any(data.track[rows] == f)}

    return accumulate(frags, frame, s.animals, train, predict_fragments, s.rounds, s.min_certainty)


def identity_names(animals: int) -> list[str]:
    return [f"animal_{k + 1}" for k in range(animals)]


def with_labels(data: CropSet, labels: dict[int, int], animals: int) -> CropSet:
    """The crops of the labelled fragments, each labelled with its fragment's identity."""
    rows = np.flatnonzero(np.isin(data.track, list(labels)))
    sub = data.subset(rows)
    identity = np.array([labels[int(t)] for t in sub.track], np.int64)
    return replace(sub, identity=identity, identity_names=identity_names(animals), source="fragments")
