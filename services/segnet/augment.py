"""Training augmentation in the graph, on batches: flips, rotation, scale, brightness and contrast.

One random affine warp per image (mirror in x and/or y, rotation, scale, about the image centre) moves the
image (bilinear) and its instance masks (nearest neighbour) together; the boxes are then recomputed from
the warped masks, so an instance pushed partly out of the frame gets the box of what is left, and one
pushed out entirely becomes padding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True
    max_rotation_deg: float = 20.0
    scale_min: float = 0.8
    scale_max: float = 1.2
    brightness: float = 0.15          # +- fraction of the full range
    contrast: float = 0.2             # +- relative change around the image mean


def boxes_from_masks(masks):
    """(y1, x1, y2, x2) pixel boxes (B, G, 4) of masks (B, G, H, W); empty masks give zeros."""
    import tensorflow as tf

    on = masks > 0.5
    rows = tf.reduce_any(on, axis=3)
    cols = tf.reduce_any(on, axis=2)

    def extent(any_):
        n = tf.shape(any_)[-1]
        r = tf.cast(tf.range(n), tf.float32)
        lo = tf.reduce_min(tf.where(any_, r, 1e9), axis=-1)
        hi = tf.reduce_max(tf.where(any_, r + 1.0, -1e9), axis=-1)
        ok = tf.reduce_any(any_, axis=-1)
        return tf.where(ok, lo, 0.0), tf.where(ok, hi, 0.0)

    y1, y2 = extent(rows)
    x1, x2 = extent(cols)
    return tf.stack([y1, x1, y2, x2], axis=-1)


def augment(images, masks, config: AugmentConfig | None = None):
    """Augmented (images (B, H, W, 3) uint8, masks (B, G, H, W) float) of the same shapes."""
    import tensorflow as tf

    config = config or AugmentConfig()
    b = tf.shape(images)[0]
    h = tf.cast(tf.shape(images)[1], tf.float32)
    w = tf.cast(tf.shape(images)[2], tf.float32)
    theta = tf.random.uniform([b], -1.0, 1.0) * config.max_rotation_deg * math.pi / 180.0
    scale = tf.random.uniform([b], config.scale_min, config.scale_max)
    if config.flip:
        fx = tf.where(tf.random.uniform([b]) < 0.5, -1.0, 1.0)
        fy = tf.where(tf.random.uniform([b]) < 0.5, -1.0, 1.0)
    else:
        fx = fy = tf.ones([b])
    # forward map A = scale * R(theta) * diag(fx, fy) about the centre; the warp takes the inverse
    cos, sin = tf.cos(theta), tf.sin(theta)
    a00, a01, a10, a11 = scale * cos * fx, -scale * sin * fy, scale * sin * fx, scale * cos * fy
    det = a00 * a11 - a01 * a10
    i00, i01, i10, i11 = a11 / det, -a01 / det, -a10 / det, a00 / det
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    tx = cx - (i00 * cx + i01 * cy)
    ty = cy - (i10 * cx + i11 * cy)
    zeros = tf.zeros([b])
    transform = tf.stack([i00, i01, tx, i10, i11, ty, zeros, zeros], axis=1)
    size = tf.shape(images)[1:3]
    img = tf.raw_ops.ImageProjectiveTransformV3(images=tf.cast(images, tf.float32), transforms=transform,
                                                output_shape=size, fill_value=0.0, interpolation="BILINEAR",
                                                fill_mode="CONSTANT")
    m = tf.transpose(tf.cast(masks, tf.float32), [0, 2, 3, 1])
    m = tf.raw_ops.ImageProjectiveTransformV3(images=m, transforms=transform, output_shape=size,
                                              fill_value=0.0, interpolation="NEAREST", fill_mode="CONSTANT")
    m = tf.transpose(m, [0, 3, 1, 2])
    mean = tf.reduce_mean(img, axis=[1, 2, 3], keepdims=True)
    k = 1.0 + tf.random.uniform([b, 1, 1, 1], -config.contrast, config.contrast)
    img = (img - mean) * k + mean + tf.random.uniform([b, 1, 1, 1], -config.brightness, config.brightness) * 255.0
    return tf.cast(tf.clip_by_value(tf.round(img), 0.0, 255.0), tf.uint8), m
