"""Training targets of Mask R-CNN, computed inside the graph with static shapes.

- :func:`rpn_targets`: anchors labelled positive (IoU >= 0.7 with a ground-truth box, or the best anchor
  of a box), negative (IoU < 0.3) or ignored, then sampled (256 per image, at most half positive).
- :func:`sample_rois`: proposals plus the ground-truth boxes, labelled by IoU >= 0.5, sampled to a
  fixed number per image: the first ``num_pos`` slots are positives, the rest negatives; empty slots
  carry weight 0.
- :func:`mask_targets`: the ground-truth masks cropped and resized to M x M at the positive RoIs.

Ground truth arrives padded: ``gt_classes`` 0 marks padding (classes are 1..C).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.segnet.boxes import box_iou, encode_boxes


def _sample_flags(candidates, k: int):
    """Of the True entries of (B, N) ``candidates``, keep a uniform random subset of at most ``k``."""
    import tensorflow as tf

    noise = tf.random.uniform(tf.shape(candidates), 0.0, 1.0)
    key = tf.where(candidates, noise, -1.0)
    n = candidates.shape[-1]
    k = min(int(k), int(n)) if n is not None else int(k)
    kth = tf.math.top_k(key, k=k).values[..., -1:]
    return candidates & (key >= kth) & (key >= 0.0)


def _sample_flags_dynamic(candidates, budget, k_max: int):
    """Like :func:`_sample_flags` with a per-image budget (B,) <= ``k_max``."""
    import tensorflow as tf

    noise = tf.random.uniform(tf.shape(candidates), 0.0, 1.0)
    key = tf.where(candidates, noise, -1.0)
    top = tf.math.top_k(key, k=k_max).values                     # (B, k_max), descending
    index = tf.clip_by_value(budget - 1, 0, k_max - 1)
    kth = tf.gather(top, index[:, None], batch_dims=1)           # (B, 1)
    keep = candidates & (key >= kth) & (key >= 0.0)
    return keep & (budget[:, None] > 0)


def _top_k_padded(key, k: int):
    """top_k of (B, N) along N, padded with value -1 / index 0 when N < k (static N)."""
    import tensorflow as tf

    n = key.shape[-1]
    if n is not None and n < k:
        key = tf.pad(key, [[0, 0], [0, k - n]], constant_values=-1.0)
    top = tf.math.top_k(key, k=k)
    index = top.indices if n is None or n >= k else tf.where(top.indices < n, top.indices, 0)
    return top.values, index


@dataclass
class RpnTargets:
    labels: Any        # (B, A) float: 1 positive, 0 negative
    weights: Any       # (B, A) float: 1 for the sampled anchors, 0 otherwise
    deltas: Any        # (B, A, 4) regression targets (valid where positive and sampled)
    box_weights: Any   # (B, A) float: 1 for sampled positives


def rpn_targets(anchors, gt_boxes, gt_classes, pos_iou: float, neg_iou: float, batch_per_image: int,
                pos_fraction: float, std) -> RpnTargets:
    """Labels and regression targets of every anchor, sampled as in Faster R-CNN."""
    import tensorflow as tf

    valid_gt = gt_classes > 0                                       # (B, G)
    iou = box_iou(anchors[None], gt_boxes)                          # (B, A, G)
    iou = tf.where(valid_gt[:, None, :], iou, -1.0)
    max_iou = tf.reduce_max(iou, axis=2)
    matched = tf.argmax(iou, axis=2, output_type=tf.int32)
    # the best anchor(s) of every ground-truth box are positive even below pos_iou
    best_per_gt = tf.reduce_max(iou, axis=1, keepdims=True)         # (B, 1, G)
    is_best = tf.reduce_any((iou >= best_per_gt - 1e-6) & (iou > 0.0) & valid_gt[:, None, :], axis=2)
    positive = (max_iou >= pos_iou) | is_best
    negative = (max_iou < neg_iou) & (max_iou >= 0.0) & ~positive
    has_gt = tf.reduce_any(valid_gt, axis=1, keepdims=True)
    negative = negative | (~has_gt & tf.ones_like(negative))        # images without animals: all negative
    max_pos = int(batch_per_image * pos_fraction)
    pos = _sample_flags(positive, max_pos)
    num_pos = tf.reduce_sum(tf.cast(pos, tf.int32), axis=1)
    neg = _sample_flags_dynamic(negative, batch_per_image - num_pos, batch_per_image)
    target_boxes = tf.gather(gt_boxes, matched, batch_dims=1)
    deltas = encode_boxes(target_boxes, anchors[None], std)
    return RpnTargets(labels=tf.cast(pos, tf.float32), weights=tf.cast(pos | neg, tf.float32),
                      deltas=deltas, box_weights=tf.cast(pos, tf.float32))


@dataclass
class RoiSample:
    rois: Any            # (B, R, 4) sampled boxes; positives in the first `num_pos` slots
    classes: Any         # (B, R) int32 target class (0 background)
    weights: Any         # (B, R) float: 1 for a real sample, 0 for an empty slot
    deltas: Any          # (B, R, 4) regression targets towards the matched ground-truth box
    matched: Any         # (B, R) int32 index of the matched ground-truth box
    pos_weights: Any     # (B, R) float: 1 for positive samples


def sample_rois(proposals, proposal_valid, gt_boxes, gt_classes, rois_per_image: int, pos_fraction: float,
                pos_iou: float, std) -> RoiSample:
    """Sample RoIs for the box and mask heads from proposals plus the ground-truth boxes."""
    import tensorflow as tf

    valid_gt = gt_classes > 0
    boxes = tf.concat([proposals, gt_boxes], axis=1)                         # (B, N + G, 4)
    valid = tf.concat([proposal_valid, valid_gt], axis=1)
    iou = box_iou(boxes, gt_boxes)                                           # (B, N + G, G)
    iou = tf.where(valid_gt[:, None, :], iou, -1.0)
    max_iou = tf.reduce_max(iou, axis=2)
    matched = tf.argmax(iou, axis=2, output_type=tf.int32)
    positive = valid & (max_iou >= pos_iou)
    negative = valid & (max_iou < pos_iou)
    num_pos_slots = max(1, int(round(rois_per_image * pos_fraction)))
    num_neg_slots = rois_per_image - num_pos_slots
    noise = tf.random.uniform(tf.shape(max_iou), 0.0, 1.0)
    pos_values, pos_index = _top_k_padded(tf.where(positive, noise, -1.0), num_pos_slots)
    neg_values, neg_index = _top_k_padded(tf.where(negative, noise, -1.0), num_neg_slots)
    index = tf.concat([pos_index, neg_index], axis=1)                        # (B, R)
    ok = tf.concat([pos_values >= 0.0, neg_values >= 0.0], axis=1)
    is_pos = tf.concat([pos_values >= 0.0, tf.zeros_like(neg_values, tf.bool)], axis=1)
    rois = tf.stop_gradient(tf.gather(boxes, index, batch_dims=1))
    matched = tf.gather(matched, index, batch_dims=1)
    matched_classes = tf.gather(gt_classes, matched, batch_dims=1)
    classes = tf.where(is_pos, matched_classes, 0)
    target_boxes = tf.gather(gt_boxes, matched, batch_dims=1)
    deltas = encode_boxes(target_boxes, rois, std)
    return RoiSample(rois=rois, classes=tf.cast(classes, tf.int32), weights=tf.cast(ok, tf.float32),
                     deltas=deltas, matched=matched, pos_weights=tf.cast(is_pos, tf.float32))


def mask_targets(gt_masks, rois, matched, mask_size: int):
    """M x M targets (B, R, M, M) in {0, 1}: ground-truth mask ``matched`` cropped at each RoI.

    ``gt_masks`` is (B, G, H, W) in model-input pixels; the crop samples the mask at the centres of an
    M x M grid over the box (the same alignment as RoIAlign), thresholded at 0.5.
    """
    import tensorflow as tf

    from services.segnet.roi_align import crop_aligned

    shape = tf.shape(gt_masks)
    b, g = shape[0], shape[1]
    r = tf.shape(rois)[1]
    images = tf.reshape(tf.cast(gt_masks, tf.float32), [b * g, shape[2], shape[3], 1])
    index = tf.reshape(matched + tf.range(b)[:, None] * g, [-1])
    crops = crop_aligned(images, tf.reshape(rois, [-1, 4]), index, 1, mask_size, 1)
    crops = tf.reshape(crops, [b, r, mask_size, mask_size])
    return tf.cast(crops >= 0.5, tf.float32)
