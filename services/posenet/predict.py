"""Crops -> keypoints through a model backend: the one inference path of evaluation and the service.

The SavedModel returns heatmaps; peak finding and sub-pixel refinement run here (numpy, see
:mod:`services.posenet.peaks`), then keypoints are mapped back to frame pixels.
"""

from __future__ import annotations

import numpy as np

from services.posenet.model import INPUT_NAME, OUTPUT_NAME
from services.posenet.peaks import decode_heatmaps
from sipec.serving.backends import ModelBackend


def estimate_crops(backend: ModelBackend, crops: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, int]:
    """Crops (B, S, S, 3) uint8 -> keypoints (B, K, 3) (x, y in crop pixels, confidence), model version."""
    out, version = [], 0
    for i in range(0, len(crops), batch_size):
        pred = backend.predict({INPUT_NAME: np.ascontiguousarray(crops[i:i + batch_size], dtype=np.uint8)},
                               output_filter=[OUTPUT_NAME])
        hm = np.asarray(pred.outputs[OUTPUT_NAME])
        out.append(decode_heatmaps(hm, crops.shape[1] // hm.shape[1]))
        version = pred.model_version
    return np.concatenate(out) if out else np.zeros((0, 0, 3)), version


def to_frame(keypoints: np.ndarray, frame_to_crop: np.ndarray) -> np.ndarray:
    """Keypoints (B, K, 3) in crop pixels -> frame pixels, by inverting each 2x3 frame->crop matrix."""
    out = keypoints.copy()
    for b, m in enumerate(frame_to_crop):
        a = np.linalg.inv(m[:, :2])
        out[b, :, :2] = (keypoints[b, :, :2] - m[:, 2]) @ a.T
    return out
