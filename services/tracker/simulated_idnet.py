"""SIMULATED IdNet output, for measuring identity smoothing before a trained IdNet exists.

This is not IdNet: it is the true identity corrupted at a stated per-frame accuracy, labelled
"simulated" wherever it is reported. Each animal's errors come in bursts (a two-state Markov chain:
right / wrong, mean wrong-burst length `burst` frames, long-run accuracy `accuracy`), as a real
classifier's errors are correlated in time (a pose it does not recognise lasts several frames). During a
wrong burst the top class is one other identity, drawn at random when the burst starts. The output is
calibrated: the top class gets probability `accuracy`, the others share the rest.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


class SimulatedIdNet:
    def __init__(self, identity_names: Sequence[str], accuracy: float, burst: float = 5.0, seed: int = 0) -> None:
        if not 0.0 < accuracy <= 1.0:
            raise ValueError(f"simulated IdNet accuracy must be in (0, 1], not {accuracy}")
        if burst < 1.0:
            raise ValueError(f"mean error burst must be at least 1 frame, not {burst}")
        if len(identity_names) < 2:
            raise ValueError("a simulated IdNet needs at least two identities")
        self.names = list(identity_names)
        self.accuracy = accuracy
        self.p_recover = 1.0 / burst                                   # wrong -> right
        # stationary P(wrong) = p_fail / (p_fail + p_recover) = 1 - accuracy
        self.p_fail = min(1.0, (1.0 - accuracy) * self.p_recover / accuracy) if accuracy < 1 else 0.0
        self.rng = np.random.default_rng(seed)
        self._wrong: dict[Hashable, int | None] = {}                  # animal -> confused identity or None

    def probabilities(self, animal: Hashable, true_identity: str) -> np.ndarray:
        """This frame's simulated probability vector for `animal`, whose true identity is `true_identity`."""
        k = self.names.index(true_identity)
        n = len(self.names)
        state = self._wrong.get(animal)
        if state is None and animal not in self._wrong:                # first frame: stationary start
            state = self._confusion(k) if self.rng.random() < 1.0 - self.accuracy else None
        elif state is None:
            state = self._confusion(k) if self.rng.random() < self.p_fail else None
        elif self.rng.random() < self.p_recover:
            state = None
        self._wrong[animal] = state
        top = k if state is None else state
        p = np.full(n, (1.0 - self.accuracy) / (n - 1))
        p[top] = self.accuracy
        return p

    def _confusion(self, k: int) -> int:
        others = [i for i in range(len(self.names)) if i != k]
        return int(self.rng.choice(others))
