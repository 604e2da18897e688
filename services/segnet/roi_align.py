"""RoIAlign over a feature pyramid (He et al. 2017, with Detectron2's half-pixel alignment).

Each RoI pools from one level, ``k = floor(4 + log2(sqrt(h * w) / canonical))`` clipped to P2..P5
(FPN paper, eq. 1). Each output bin averages ``sampling_ratio ** 2`` bilinear samples taken at the
centres of a regular grid inside the bin; bilinear sampling is ``tf.image.crop_and_resize`` with the box
shifted so that its sample points fall on those centres.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.segnet.config import ROI_LEVELS


def roi_levels(boxes, canonical_size: float, levels: Sequence[int] = ROI_LEVELS):
    """Pyramid level (int32) of each (y1, x1, y2, x2) box, by the FPN rule."""
    import tensorflow as tf

    h = tf.maximum(boxes[..., 2] - boxes[..., 0], 1e-6)
    w = tf.maximum(boxes[..., 3] - boxes[..., 1], 1e-6)
    k = tf.floor(4.0 + tf.math.log(tf.sqrt(h * w) / canonical_size) / tf.math.log(2.0))
    return tf.cast(tf.clip_by_value(k, float(min(levels)), float(max(levels))), tf.int32)


def crop_aligned(feature, boxes, box_indices, stride: int, output_size: int, sampling_ratio: int):
    """RoIAlign of ``boxes`` (N, 4, image pixels) on one feature map (B, H, W, C): (N, out, out, C).

    ``box_indices`` (N,) says which image of the batch each box belongs to. As in Detectron2, a sample up
    to one cell outside the map reads the border value (the map is padded by edge replication); further
    out it reads 0.
    """
    import tensorflow as tf

    n = output_size * sampling_ratio
    padded = tf.pad(feature, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    shape = tf.shape(padded)
    fh = tf.cast(shape[1], tf.float32)
    fw = tf.cast(shape[2], tf.float32)
    b = boxes / float(stride)
    bh = b[:, 2] - b[:, 0]
    bw = b[:, 3] - b[:, 1]
    # sample i of n sits at y1 + (i + 0.5) * h / n in continuous coordinates, i.e. at index - 0.5, plus 1 for
    # the padding row
    y1 = b[:, 0] + 0.5 * bh / n + 0.5
    x1 = b[:, 1] + 0.5 * bw / n + 0.5
    y2 = b[:, 0] + bh - 0.5 * bh / n + 0.5
    x2 = b[:, 1] + bw - 0.5 * bw / n + 0.5
    norm = tf.stack([y1 / (fh - 1.0), x1 / (fw - 1.0), y2 / (fh - 1.0), x2 / (fw - 1.0)], axis=1)
    crops = tf.image.crop_and_resize(padded, norm, box_indices, [n, n], method="bilinear")
    if sampling_ratio > 1:
        crops = tf.nn.avg_pool2d(crops, sampling_ratio, sampling_ratio, "VALID")
    return crops


def multilevel_roi_align(features: Sequence, boxes, output_size: int, sampling_ratio: int,
                         canonical_size: float, levels: Sequence[int] = ROI_LEVELS):
    """RoIAlign of (B, R, 4) boxes over the pyramid ``features`` (one per level in ``levels``).

    Returns (B, R, output_size, output_size, C). RoIs are grouped by level, pooled, and put back
    in their order, so each RoI is pooled once.
    """
    import tensorflow as tf

    batch = tf.shape(boxes)[0]
    rois = tf.shape(boxes)[1]
    flat = tf.reshape(boxes, [-1, 4])
    image_index = tf.repeat(tf.range(batch), rois)
    level = tf.reshape(roi_levels(boxes, canonical_size, levels), [-1])
    pooled, order = [], []
    for feature, lv in zip(features, levels, strict=True):
        ix = tf.cast(tf.where(tf.equal(level, lv))[:, 0], tf.int32)
        pooled.append(crop_aligned(feature, tf.gather(flat, ix), tf.gather(image_index, ix), 2 ** lv,
                                   output_size, sampling_ratio))
        order.append(ix)
    pooled = tf.concat(pooled, axis=0)
    back = tf.math.invert_permutation(tf.concat(order, axis=0))
    out = tf.gather(pooled, back)
    channels = features[0].shape[-1]
    return tf.reshape(out, [batch, rois, output_size, output_size, channels])
