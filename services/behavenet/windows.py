"""Temporal windows [t-n, t+n] over one subject's frames, with edge padding.

A subject's sequence is the frames it has crops for, in order (frames where it is hidden are not in
it). The window of position t holds positions t-n .. t+n, clamped to the sequence: before the first
frame the first one repeats, after the last the last one repeats. Training and the streaming service
use the same rule, so a model sees at serving time exactly the windows it was trained on.
"""

from __future__ import annotations

import numpy as np


def window_size(n: int) -> int:
    """2n+1, the number of frames of a window of half-width n."""
    if n < 0:
        raise ValueError(f"window half-width n must be >= 0, not {n}")
    return 2 * n + 1


def window_indices(length: int, n: int) -> np.ndarray:
    """(length, 2n+1) int array: for each position t, the positions of its window, edge-padded."""
    window_size(n)
    if length <= 0:
        return np.zeros((0, 2 * n + 1), dtype=np.int64)
    offsets = np.arange(-n, n + 1)
    return np.clip(np.arange(length)[:, None] + offsets[None, :], 0, length - 1)


def windows(features: np.ndarray, n: int) -> np.ndarray:
    """(T, 2n+1, F) windows of a (T, F) feature sequence, edge-padded."""
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must be (T, F), got shape {features.shape}")
    return features[window_indices(len(features), n)]


def sequence_window_indices(starts: np.ndarray, lengths: np.ndarray, n: int) -> np.ndarray:
    """Window indices into one flat array holding several sequences back to back.

    Sequence k occupies rows ``starts[k] .. starts[k] + lengths[k] - 1``; windows never cross from one
    sequence into the next. Returns (sum(lengths), 2n+1) row indices.
    """
    parts = [window_indices(int(length), n) + int(start) for start, length in zip(starts, lengths, strict=True)]
    return np.concatenate(parts) if parts else np.zeros((0, 2 * n + 1), dtype=np.int64)
