"""Position density maps per individual (SIPEC Fig. 1a): where each animal spent its time.

`density_maps` bins each individual's centres of mass into a 2D histogram over the frame, smooths it
with a Gaussian, normalises it to a probability per bin, and (with `out_dir`) writes one PNG per
individual with matplotlib's Agg backend (no display needed). The orchestrator calls it with the COMs of
each identity (or track).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np


def density_map(points: np.ndarray, size: tuple[int, int], bin_px: float = 8.0, sigma_bins: float = 1.5) -> np.ndarray:
    """(rows, cols) probability map of (N, 2) x, y points over a frame of `size` (width, height)."""
    w, h = size
    if w <= 0 or h <= 0 or bin_px <= 0:
        raise ValueError(f"frame size {size} and bin size {bin_px} must be positive")
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    nx, ny = max(1, int(np.ceil(w / bin_px))), max(1, int(np.ceil(h / bin_px)))
    hist, _, _ = np.histogram2d(pts[:, 1], pts[:, 0], bins=(ny, nx), range=((0, h), (0, w)))
    if sigma_bins > 0:
        hist = cv2.GaussianBlur(hist, (0, 0), sigmaX=sigma_bins, sigmaY=sigma_bins, borderType=cv2.BORDER_CONSTANT)
    total = hist.sum()
    return hist / total if total > 0 else hist


def _file_name(name: str) -> str:
    return "density_" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "unnamed") + ".png"


def density_maps(points_by_individual: Mapping[str, np.ndarray], size: tuple[int, int],
                 out_dir: str | os.PathLike | None = None, bin_px: float = 8.0, sigma_bins: float = 1.5,
                 background: np.ndarray | None = None) -> dict[str, tuple[np.ndarray, Path | None]]:
    """A density map per individual, and with `out_dir` a PNG each (``density_<name>.png``).

    `background` (an HxWx3 RGB frame) is drawn under the map when given. Returns name -> (map, png path).
    """
    out: dict[str, tuple[np.ndarray, Path | None]] = {}
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    for name in sorted(points_by_individual):
        pts = np.asarray(points_by_individual[name], dtype=np.float64).reshape(-1, 2)
        dmap = density_map(pts, size, bin_px, sigma_bins)
        path = None
        if out_dir is not None:
            path = Path(out_dir) / _file_name(name)
            _write_png(path, dmap, size, name, len(pts), background)
        out[name] = (dmap, path)
    return out


def _write_png(path: Path, dmap: np.ndarray, size: tuple[int, int], name: str, n: int,
               background: np.ndarray | None) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    w, h = size
    fig = Figure(figsize=(6.4, 6.0 * h / w + 0.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if background is not None:
        ax.imshow(background, extent=(0, w, h, 0))
    shown = np.ma.masked_where(dmap <= 0.02 * dmap.max(), dmap)   # leave places it (almost) never went blank
    im = ax.imshow(shown, extent=(0, w, h, 0), cmap="inferno", alpha=0.8 if background is not None else 1.0,
                   interpolation="bilinear")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_title(f"{name}: position density ({n} frames)")
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of time per bin")
    tmp = path.with_name(f".{path.name}.partial.png")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
