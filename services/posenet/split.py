"""Train/test splits by image (all animals of one image fall on the same side).

``random``: DeepLabCut's way — shuffle the labelled images with a seed, keep ``1 - test_fraction`` for
training (DLC's TrainingFraction 0.95 is ``--test-fraction 0.05``). ``last``: the last ``test_fraction`` of
the images in their order (video frames in time: no near-duplicate neighbours across the split).
``fold:i/n``: the i-th of n folds of a seeded shuffle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def split_samples(samples: Sequence[Any], test_fraction: float, seed: int, mode: str = "random"
                  ) -> tuple[list[int], list[int]]:
    """Indices of training and test samples (anything with a ``source``: labelled animals or cut samples)."""
    sources = list(dict.fromkeys(s.source for s in samples))
    n = len(sources)
    if mode.startswith("fold:"):
        i, k = (int(v) for v in mode[5:].split("/"))
        if not 0 <= i < k:
            raise ValueError(f"split {mode!r}: need fold:i/n with 0 <= i < n")
        order = np.random.default_rng(seed).permutation(n)
        test_src = {sources[j] for j in np.array_split(order, k)[i]}
    elif mode in ("random", "last"):
        if not 0.0 <= test_fraction < 1.0:
            raise ValueError(f"test fraction must be in [0, 1), not {test_fraction}")
        n_test = int(round(n * test_fraction))
        if test_fraction > 0:
            n_test = max(1, n_test)
        order = np.random.default_rng(seed).permutation(n) if mode == "random" else np.arange(n)
        test_src = {sources[j] for j in order[n - n_test:]} if n_test else set()
    else:
        raise ValueError(f"split must be random, last or fold:i/n, not {mode!r}")
    train = [i for i, s in enumerate(samples) if s.source not in test_src]
    test = [i for i, s in enumerate(samples) if s.source in test_src]
    return train, test
