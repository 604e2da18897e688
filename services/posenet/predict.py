"""Crops -> keypoints through a model backend: the one inference path of evaluation and the service.

The SavedModel returns heatmaps; peak finding and sub-pixel refinement run here (numpy, see
:mod:`services.posenet.peaks`), then keypoints are mapped back to frame pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from services.posenet.model import INPUT_NAME, OUTPUT_NAME
from services.posenet.peaks import decode_heatmaps
from sipec.serving.backends import ModelBackend, Prediction
from sipec.serving.batching import DEFAULT_BATCH_SIZE, predict_fixed


def estimate_crops(backend: ModelBackend, crops: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE,
                   predict: Callable[..., Prediction] | None = None) -> tuple[np.ndarray, int]:
    """Crops (B, S, S, 3) uint8 -> keypoints (B, K, 3) (x, y in crop pixels, confidence), model version.

    The model runs in calls of exactly `batch_size` crops (`sipec.serving.batching`), so evaluation and the
    service give a crop the same keypoints. `predict(inputs, output_filter)`: the service's own fixed-size call."""
    if not len(crops):
        return np.zeros((0, 0, 3)), 0
    inputs = {INPUT_NAME: np.ascontiguousarray(crops, dtype=np.uint8)}
    pred = predict(inputs, [OUTPUT_NAME]) if predict is not None else \
        predict_fixed(backend, inputs, batch_size, [OUTPUT_NAME])
    hm = np.asarray(pred.outputs[OUTPUT_NAME])
    return decode_heatmaps(hm, crops.shape[1] // hm.shape[1]), pred.model_version


def to_frame(keypoints: np.ndarray, frame_to_crop: np.ndarray) -> np.ndarray:
    """Keypoints (B, K, 3) in crop pixels -> frame pixels, by inverting each 2x3 frame->crop matrix."""
    out = keypoints.copy()
    for b, m in enumerate(frame_to_crop):
        a = np.linalg.inv(m[:, :2])
        out[b, :, :2] = (keypoints[b, :, :2] - m[:, 2]) @ a.T
    return out
