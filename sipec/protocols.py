"""The paper's evaluation protocols, shared by every module's `sipec evaluate MODULE`.

- :func:`block_folds`: k folds that never put neighbouring frames on both sides: whole videos per fold when there
  are at least k videos, else contiguous blocks of the frames in time order (the SIPEC paper's cross-validation
  is over recordings; DeepLabCut's shuffles split at random, which lets near-duplicate neighbours leak).
- :func:`ablation_split`: a fixed test block and nested training sets of given sizes for the label-count
  curves (Fig. 2b, 2d, 3d).
- :func:`equal_steps_epochs`: each ablation size trains as many steps as the whole pool would.
- :func:`summarize`: mean, standard deviation and standard error of the mean over folds (the paper's mean +- s.e.m.).
- :func:`peak_point`: the smallest training size whose score is within 95% of the best one.
- :func:`plot_ablation`: the curve as PNG and SVG, with the 95%-of-peak point marked.
- :func:`progress`: a progress bar with ETA on stderr for these long runs (tqdm).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def add_arguments(g: Any, items: str, test_block: str) -> None:
    """--folds, --train-sizes and --plot, as every module's `sipec evaluate` offers them. ``items``: what a
    training size counts ("images", "labelled frames"); ``test_block``: the flag of the test fraction."""
    g.add_argument("--folds", type=int, default=0,
                   help="K-fold cross-validation: K trainings, each tested on one fold of whole videos (with K or "
                        "more) or of contiguous frames; mean +- s.e.m.")
    g.add_argument("--train-sizes", type=parse_sizes, default=[],
                   help=f"label-count ablation, e.g. 5,10,20,40 {items}: one training per size (nested random "
                        f"subsets, as many steps as the whole pool), all tested on the last {test_block} of the "
                        "frames; curve with the 95%%-of-peak point")
    g.add_argument("--plot", type=Path, default=None,
                   help="--train-sizes: the curve as PLOT.png and PLOT.svg (default: beside --json)")


def parse_sizes(text: str) -> list[int]:
    """'5,10,20' -> [5, 10, 20] (argparse type: a bad value is a usage error naming the flag)."""
    import argparse

    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected sizes of at least 1, got {text!r}")
    return sizes


def natural_key(text: str) -> list[Any]:
    """Sort key that orders ``img9`` before ``img10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def block_folds(groups: Sequence[str], k: int) -> list[tuple[list[int], list[int]]]:
    """k (train, test) index splits of items in time order, ``groups[i]`` naming item i's video.

    With at least k videos every fold holds whole videos (balanced by item count, in sorted video order);
    otherwise each fold is a contiguous block of the items in their given order.
    """
    n = len(groups)
    if k < 2 or k > n:
        raise ValueError(f"folds must be between 2 and the number of items ({n}), not {k}")
    videos = sorted(dict.fromkeys(groups), key=natural_key)
    if len(videos) >= k:
        sizes = {v: 0 for v in videos}
        for g in groups:
            sizes[g] += 1
        # contiguous runs of videos with about n / k items each
        cum = np.cumsum([sizes[v] for v in videos])
        fold_of_video = {v: min(k - 1, int((c - sizes[v] / 2) * k // n)) for v, c in zip(videos, cum, strict=True)}
        # every fold must get a video: fall back to one video per fold in order where the counts are lopsided
        if len(set(fold_of_video.values())) < k:
            fold_of_video = {v: min(i * k // len(videos), k - 1) for i, v in enumerate(videos)}
        fold = [fold_of_video[g] for g in groups]
    else:
        edges = np.linspace(0, n, k + 1).round().astype(int)
        fold = list(np.searchsorted(edges, np.arange(n), side="right") - 1)
    out = []
    for f in range(k):
        test = [i for i in range(n) if fold[i] == f]
        out.append(([i for i in range(n) if fold[i] != f], test))
    return out


def ablation_split(n: int, sizes: Sequence[int], test_fraction: float, seed: int) -> tuple[list[int], list[list[int]]]:
    """Test indices (the last ``test_fraction`` of n items in time order) and, per size, that many training
    indices drawn at random from the rest, nested (:func:`ablation_subsets`)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"the test fraction must be in (0, 1), not {test_fraction}")
    n_test = max(1, int(round(n * test_fraction)))
    return list(range(n - n_test, n)), ablation_subsets(list(range(n - n_test)), sizes, seed)


def ablation_subsets(pool: Sequence[int], sizes: Sequence[int], seed: int) -> list[list[int]]:
    """Per size, that many items of ``pool`` drawn at random; nested (each smaller set is part of the larger)."""
    bad = [s for s in sizes if not 1 <= s <= len(pool)]
    if bad:
        raise ValueError(f"training sizes {bad} are not between 1 and the {len(pool)} items left for training")
    order = [pool[i] for i in np.random.default_rng(seed).permutation(len(pool))]
    return [sorted(order[:s]) for s in sizes]


def equal_steps_epochs(epochs: int, pool: int, size: int) -> int:
    """Epochs for a training set of ``size`` items so that it trains for as many steps as ``epochs`` over the
    whole ``pool`` would: a label-count curve then measures labels, not training time."""
    return max(epochs, int(math.ceil(epochs * pool / max(1, size))))


def summarize(rows: Sequence[dict[str, Any]], keys: Iterable[str]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation (ddof 1), standard error of the mean and count of each key over rows; values
    that are missing, None or NaN are left out."""
    out: dict[str, dict[str, float]] = {}
    for key in keys:
        vals = np.array([float(r[key]) for r in rows if r.get(key) is not None], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        n = int(vals.size)
        sd = float(vals.std(ddof=1)) if n > 1 else float("nan")
        out[key] = {"mean": float(vals.mean()) if n else float("nan"), "sd": sd,
                    "sem": sd / math.sqrt(n) if n > 1 else float("nan"), "n": n}
    return out


def peak_point(sizes: Sequence[float], values: Sequence[float], fraction: float = 0.95,
               lower_is_better: bool = False) -> dict[str, Any]:
    """The smallest size whose value reaches ``fraction`` of the best one: value >= fraction x max for scores
    (accuracy, F1, mAP), value <= min / fraction for errors (RMSE). Returns the size, the threshold and the peak."""
    pairs = sorted((s, float(v)) for s, v in zip(sizes, values, strict=True) if np.isfinite(v))
    if not pairs:
        return {"size": None, "threshold": None, "peak": None, "fraction": fraction}
    vals = [v for _, v in pairs]
    if lower_is_better:
        peak = min(vals)
        threshold = peak / fraction
        hit = next(s for s, v in pairs if v <= threshold)
    else:
        peak = max(vals)
        threshold = peak * fraction
        hit = next(s for s, v in pairs if v >= threshold)
    return {"size": hit, "threshold": threshold, "peak": peak, "fraction": fraction}


def plot_ablation(points: Sequence[dict[str, Any]], metric: str, out_stem: Path, title: str,
                  lower_is_better: bool = False, fraction: float = 0.95) -> list[Path]:
    """Plot ``metric`` against training size (mean +- s.e.m. where a size has several runs) in the style of the
    paper's Fig. 2b/2d/3d, marking the 95%-of-peak point; writes ``out_stem``.png and .svg and returns the paths.

    ``points``: one dict per run with ``train_size`` and ``metric``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({int(p["train_size"]) for p in points})
    stats = [summarize([p for p in points if int(p["train_size"]) == s], [metric])[metric] for s in sizes]
    means = [st["mean"] for st in stats]
    sems = [0.0 if not np.isfinite(st["sem"]) else st["sem"] for st in stats]
    peak = peak_point(sizes, means, fraction, lower_is_better)
    fig, ax = plt.subplots(figsize=(4.5, 3.4), dpi=150)
    ax.errorbar(sizes, means, yerr=sems, marker="o", color="black", capsize=3, lw=1.5)
    if peak["size"] is not None:
        ax.axhline(peak["threshold"], ls="--", lw=1, color="grey",
                   label=f"{fraction:.0%} of peak ({'min' if lower_is_better else 'max'} {peak['peak']:.3g})")
        ax.plot([peak["size"]], [means[sizes.index(int(peak["size"]))]], marker="o", ms=10, mfc="none",
                color="tab:red", label=f"reached at {int(peak['size'])}")
        ax.legend(frameon=False, fontsize=8)
    ax.set_xlabel("labelled training images")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_stem.with_suffix(".png"), out_stem.with_suffix(".svg")]
    for p in paths:
        fig.savefig(p)
    plt.close(fig)
    return paths


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar and ETA on stderr (one step per training run)."""
    from tqdm import tqdm

    yield from tqdm(items, desc=desc, total=total, unit="run", dynamic_ncols=True,
                    bar_format="{desc}: {n_fmt}/{total_fmt} runs |{bar}| {elapsed} elapsed, ETA {remaining}")
