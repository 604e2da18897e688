"""Anchors, box encoding and box IoU for the Mask R-CNN graph.

Inside the network boxes are ``(y1, x1, y2, x2)`` in model-input pixels (TensorFlow's image-op order),
continuous coordinates where pixel ``i`` covers ``[i, i + 1)``. The exported outputs are converted to
the project's ``(x1, y1, x2, y2)`` at the very end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from services.segnet.config import MaskRCNNConfig

# The largest height/width change a decoded delta may ask for (Detectron's clip: log(1000 / 16)).
MAX_LOG_SCALE = math.log(1000.0 / 16.0)


def level_anchors(height: int, width: int, stride: int, size: float, ratios: Sequence[float]) -> np.ndarray:
    """Anchors of one pyramid level, shape (height * width * len(ratios), 4), order (y, x, ratio).

    Centres sit at ``(i + 0.5) * stride``; an anchor of ratio ``r`` (height / width) has the area
    ``size ** 2``.
    """
    r = np.asarray(ratios, dtype=np.float64)
    hs = size * np.sqrt(r)
    ws = size / np.sqrt(r)
    cy = (np.arange(height, dtype=np.float64) + 0.5) * stride
    cx = (np.arange(width, dtype=np.float64) + 0.5) * stride
    cy, cx = np.meshgrid(cy, cx, indexing="ij")
    cy = cy[:, :, None]
    cx = cx[:, :, None]
    out = np.stack([cy - hs / 2, cx - ws / 2, cy + hs / 2, cx + ws / 2], axis=-1)
    return out.reshape(-1, 4).astype(np.float32)


def generate_anchors(config: MaskRCNNConfig) -> np.ndarray:
    """Every anchor of P2..P6, concatenated in level order: (A, 4) float32, (y1, x1, y2, x2)."""
    from services.segnet.config import FPN_LEVELS

    parts = [level_anchors(h, w, 2 ** level, size, config.anchor_ratios)
             for level, (h, w), size in zip(FPN_LEVELS, config.level_shapes(), config.anchor_sizes, strict=True)]
    return np.concatenate(parts, axis=0)


def encode_boxes(boxes, anchors, std: Sequence[float]):
    """Regression targets (dy, dx, dh, dw) / std that turn ``anchors`` into ``boxes`` (TF, broadcasting)."""
    import tensorflow as tf

    boxes = tf.convert_to_tensor(boxes, tf.float32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    ah = anchors[..., 2] - anchors[..., 0]
    aw = anchors[..., 3] - anchors[..., 1]
    ay = anchors[..., 0] + 0.5 * ah
    ax = anchors[..., 1] + 0.5 * aw
    bh = tf.maximum(boxes[..., 2] - boxes[..., 0], 1e-3)
    bw = tf.maximum(boxes[..., 3] - boxes[..., 1], 1e-3)
    by = boxes[..., 0] + 0.5 * bh
    bx = boxes[..., 1] + 0.5 * bw
    ah = tf.maximum(ah, 1e-3)
    aw = tf.maximum(aw, 1e-3)
    deltas = tf.stack([(by - ay) / ah, (bx - ax) / aw, tf.math.log(bh / ah), tf.math.log(bw / aw)], axis=-1)
    return deltas / tf.constant(std, tf.float32)


def decode_boxes(deltas, anchors, std: Sequence[float]):
    """Inverse of :func:`encode_boxes` (TF, broadcasting); height/width changes are clipped."""
    import tensorflow as tf

    deltas = tf.convert_to_tensor(deltas, tf.float32) * tf.constant(std, tf.float32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    ah = anchors[..., 2] - anchors[..., 0]
    aw = anchors[..., 3] - anchors[..., 1]
    ay = anchors[..., 0] + 0.5 * ah
    ax = anchors[..., 1] + 0.5 * aw
    cy = ay + deltas[..., 0] * ah
    cx = ax + deltas[..., 1] * aw
    h = ah * tf.exp(tf.minimum(deltas[..., 2], MAX_LOG_SCALE))
    w = aw * tf.exp(tf.minimum(deltas[..., 3], MAX_LOG_SCALE))
    return tf.stack([cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h, cx + 0.5 * w], axis=-1)


def clip_boxes(boxes, height: int, width: int):
    """Boxes clipped to the image ``[0, height] x [0, width]``."""
    import tensorflow as tf

    limits = tf.constant([height, width, height, width], tf.float32)
    return tf.clip_by_value(boxes, 0.0, limits)


def box_iou(a, b):
    """IoU of every box of ``a`` (..., N, 4) with every box of ``b`` (..., M, 4): (..., N, M)."""
    import tensorflow as tf

    a = tf.convert_to_tensor(a, tf.float32)[..., :, None, :]
    b = tf.convert_to_tensor(b, tf.float32)[..., None, :, :]
    ih = tf.maximum(tf.minimum(a[..., 2], b[..., 2]) - tf.maximum(a[..., 0], b[..., 0]), 0.0)
    iw = tf.maximum(tf.minimum(a[..., 3], b[..., 3]) - tf.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = ih * iw
    area_a = tf.maximum(a[..., 2] - a[..., 0], 0.0) * tf.maximum(a[..., 3] - a[..., 1], 0.0)
    area_b = tf.maximum(b[..., 2] - b[..., 0], 0.0) * tf.maximum(b[..., 3] - b[..., 1], 0.0)
    union = area_a + area_b - inter
    return tf.where(union > 0, inter / tf.maximum(union, 1e-9), tf.zeros_like(inter))


def yxyx_to_xyxy(boxes):
    """(y1, x1, y2, x2) -> (x1, y1, x2, y2) on the last axis (TF)."""
    import tensorflow as tf

    return tf.gather(boxes, [1, 0, 3, 2], axis=-1)
