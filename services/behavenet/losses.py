"""Multi-class focal loss (Lin et al. 2017), as SIPEC's BehaveNet uses it against the dominant 'none' class.

For one-hot targets y and predicted probabilities p over C classes::

    FL(y, p) = - sum_c alpha_c * (1 - p_c) ** gamma * y_c * log(p_c)

Well-classified frames (p of the true class near 1, typically the plentiful 'none' frames) are
down-weighted by (1 - p) ** gamma, so training concentrates on the rare, hard behaviours. SIPEC uses
gamma = 3 and alpha = 0.5 (one alpha for every class, which scales the loss; a list gives one per
class). With gamma = 0 and alpha = 1 it is the categorical cross-entropy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

EPSILON = 1e-7


@keras.saving.register_keras_serializable(package="sipec")
class FocalLoss(keras.losses.Loss):
    """Categorical focal loss on probabilities (softmax outputs) and one-hot targets; mean over the batch."""

    def __init__(self, gamma: float = 3.0, alpha: float | Sequence[float] = 0.5, name: str = "focal_loss",
                 **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        if gamma < 0:
            raise ValueError(f"focal loss gamma must be >= 0, not {gamma}")
        self.gamma = float(gamma)
        self.alpha = [float(a) for a in alpha] if isinstance(alpha, Sequence) else float(alpha)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        ops = keras.ops
        y_true = ops.cast(y_true, y_pred.dtype)
        p = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
        alpha = ops.convert_to_tensor(self.alpha, dtype=p.dtype)
        weight = alpha * ops.power(1.0 - p, self.gamma)
        return ops.sum(-weight * y_true * ops.log(p), axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "gamma": self.gamma, "alpha": self.alpha}
