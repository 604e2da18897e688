"""Which instance continues which track: true mask IoU, then a one-to-one assignment.

`sipec.geometry.region_iou_matrix` compares instances with the last appearance of each candidate track: the
true mask IoU (pycocotools, on the RLEs) where both have a mask, box IoU otherwise. Two assignments:

- `greedy_assignment` (the SIPEC paper): every instance goes to the track it overlaps most, done
  one-to-one -- all (instance, track) pairs in decreasing IoU, a pair taken when neither is taken yet
  and its IoU reaches `min_iou`; ties go to the track seen most recently;
- `hungarian_assignment`: the assignment of maximum total IoU (scipy's linear_sum_assignment), pairs
  below `min_iou` dropped.

`distance_assignment` is the optional second stage (TrackerOptions.max_distance): what IoU left unmatched,
matched by centre-of-mass distance.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def greedy_assignment(iou: np.ndarray, min_iou: float, recency: np.ndarray | None = None) -> list[tuple[int, int]]:
    """One-to-one greedy matching by decreasing IoU; (row, column) pairs with IoU >= min_iou.

    `recency` (one value per column, smaller = seen more recently) breaks ties between tracks.
    """
    n, m = iou.shape
    if n == 0 or m == 0:
        return []
    rec = np.zeros(m) if recency is None else np.asarray(recency, dtype=np.float64)
    rows, cols = np.nonzero(iou >= min_iou)
    if rows.size == 0:
        return []
    # sort by IoU descending, then by recency (recent first), then by row and column for determinism
    order = np.lexsort((cols, rows, rec[cols], -iou[rows, cols]))
    used_r: set[int] = set()
    used_c: set[int] = set()
    pairs = []
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r in used_r or c in used_c or iou[r, c] <= 0.0:
            continue
        used_r.add(r)
        used_c.add(c)
        pairs.append((r, c))
    return sorted(pairs)


def hungarian_assignment(iou: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """Maximum-total-IoU matching; pairs with IoU below `min_iou` (or 0) are dropped."""
    from scipy.optimize import linear_sum_assignment

    if iou.size == 0:
        return []
    rows, cols = linear_sum_assignment(-iou)
    return sorted((int(r), int(c)) for r, c in zip(rows, cols, strict=True)
                  if iou[r, c] >= min_iou and iou[r, c] > 0.0)


def distance_assignment(points: Sequence[tuple[float, float]], refs: Sequence[tuple[float, float]],
                        gates: float | Sequence[float]) -> list[tuple[int, int]]:
    """Centre matching: (row, column) pairs of minimum total distance (Hungarian) whose distance is at most the
    column's gate (one gate for all columns, or one per column; `math.inf`: no gate)."""
    from scipy.optimize import linear_sum_assignment

    if not len(points) or not len(refs):
        return []
    a = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(refs, dtype=np.float64).reshape(-1, 2)
    gate = np.broadcast_to(np.asarray(gates, dtype=np.float64), (len(b),))
    dist = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
    ok = dist <= gate[None, :]
    if not ok.any():
        return []
    # a forbidden pair costs more than any set of allowed ones: the most allowed pairs, then the least distance
    big = 1e6 * (float(dist[ok].max()) + 1.0) * (min(dist.shape) + 1)
    rows, cols = linear_sum_assignment(np.where(ok, dist, big))
    return sorted((int(r), int(c)) for r, c in zip(rows, cols, strict=True) if ok[r, c])


def assign(iou: np.ndarray, method: str, min_iou: float, recency: np.ndarray | None = None) -> list[tuple[int, int]]:
    """`greedy_assignment` or `hungarian_assignment` by name."""
    if method == "greedy":
        return greedy_assignment(iou, min_iou, recency)
    if method == "hungarian":
        return hungarian_assignment(iou, min_iou)
    raise ValueError(f"unknown matching method {method!r}: use 'greedy' or 'hungarian'")
