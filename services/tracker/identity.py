"""Identity along tracks: IdNet probabilities smoothed over a window, then one identity per animal per frame.

Each track keeps the probability vectors of its last `window` frames (a bounded deque). The smoothed
vector is their mean. In each frame the tracks present are assigned identities by the Hungarian method
on the cost -log(smoothed probability), so no identity is used twice in a frame and the assignment is the
jointly most likely one; the confidence is the assigned identity's smoothed probability. With more tracks
than identities, the least likely tracks get none.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from sipec.serving.errors import InvalidInput

_EPS = 1e-9


@dataclass(frozen=True)
class IdentityAssignment:
    identity: int          # index into the identity names
    confidence: float      # smoothed probability of that identity


def check_probabilities(values: np.ndarray, n: int, field: str) -> np.ndarray:
    """A probability vector of length n: finite, >= 0, positive sum; returned normalised to sum 1."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size != n:
        raise InvalidInput(f"{field}.values: {v.size} values, expected {n} (one per identity name)")
    if not np.all(np.isfinite(v)) or np.any(v < 0):
        raise InvalidInput(f"{field}.values must be finite and >= 0")
    total = float(v.sum())
    if total <= 0:
        raise InvalidInput(f"{field}.values sum to 0; expected probabilities")
    return v / total


class IdentitySmoother:
    """Per-track windows of identity probabilities (bounded: `window` frames per track)."""

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"identity window must be at least 1, not {window}")
        self.window = window
        self._history: dict[int, deque[tuple[int, np.ndarray]]] = {}

    def add(self, track_id: int, frame: int, probs: np.ndarray) -> None:
        hist = self._history.setdefault(track_id, deque(maxlen=self.window))
        hist.append((frame, np.asarray(probs, dtype=np.float64)))

    def drop(self, track_id: int) -> None:
        self._history.pop(track_id, None)

    def smoothed(self, track_id: int, frame: int) -> np.ndarray | None:
        """Mean of the track's probabilities within the last `window` frames up to `frame`; None if none."""
        vecs = [p for f, p in self._history.get(track_id, ()) if frame - f < self.window]
        if not vecs:
            return None
        return np.mean(vecs, axis=0)

    def __len__(self) -> int:
        return len(self._history)


def assign_identities(smoothed: Mapping[int, np.ndarray]) -> dict[int, IdentityAssignment]:
    """Identities for the tracks of one frame: Hungarian on -log p, each identity used at most once."""
    from scipy.optimize import linear_sum_assignment

    keys = sorted(smoothed)
    if not keys:
        return {}
    probs = np.stack([smoothed[k] for k in keys])
    rows, cols = linear_sum_assignment(-np.log(probs + _EPS))
    return {keys[r]: IdentityAssignment(int(c), float(probs[r, c])) for r, c in zip(rows, cols, strict=True)}

