"""Mask R-CNN training targets and losses (RPN, box/class head, mask head), batched with padded ground truth.

Ground truth per batch: boxes (B, G, 4) normalised [y1, x1, y2, x2], classes (B, G) int32 (1..C, 0 = padding),
masks (B, G, S, S) float {0, 1}. Sampling is random (fixed sizes, so everything stays batched).
"""

from __future__ import annotations

import tensorflow as tf

from services.segnet.model import MaskRCNN, box_iou, encode_boxes


def _sample(mask: tf.Tensor, count: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Up to `count` random True positions of `mask` (B, N): indices (B, count) and validity (B, count)."""
    priority = tf.where(mask, tf.random.uniform(tf.shape(mask)), -1.0)
    values, idx = tf.math.top_k(priority, k=count)
    return idx, values >= 0.0


def rpn_targets(anchors: tf.Tensor, gt_boxes: tf.Tensor, gt_valid: tf.Tensor, batch: int,
                pos_iou: float = 0.7, neg_iou: float = 0.3) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Anchor labels (B, A): 1 positive, 0 negative, -1 ignored; matched gt box (B, A, 4); positive mask.

    Positives: IoU >= pos_iou or the best anchor of a ground-truth box; negatives: IoU < neg_iou.
    At most `batch` anchors per image are labelled, half of them positive at most.
    """
    iou = box_iou(tf.broadcast_to(anchors[None], [tf.shape(gt_boxes)[0], tf.shape(anchors)[0], 4]), gt_boxes)
    iou = tf.where(gt_valid[:, None, :], iou, -1.0)                                # (B, A, G)
    best = tf.reduce_max(iou, axis=2)
    arg = tf.argmax(iou, axis=2, output_type=tf.int32)
    best_per_gt = tf.reduce_max(iou, axis=1, keepdims=True)                         # (B, 1, G)
    is_best = tf.reduce_any((iou >= best_per_gt - 1e-6) & (iou > 0.0) & gt_valid[:, None, :], axis=2)
    pos = (best >= pos_iou) | is_best
    neg = (best < neg_iou) & (best >= 0.0) & ~pos
    neg = neg | ((best < 0.0) & ~pos)   # images without animals: every anchor is background
    pos_idx, pos_ok = _sample(pos, batch // 2)
    n_pos = tf.reduce_sum(tf.cast(pos_ok, tf.int32), axis=1)
    neg_idx, neg_ok = _sample(neg, batch)
    neg_ok = neg_ok & (tf.range(batch)[None, :] < (batch - n_pos)[:, None])
    b = tf.shape(pos)[0]
    a = tf.shape(pos)[1]
    labels = tf.fill([b, a], -1.0)
    bidx = tf.repeat(tf.range(b)[:, None], batch // 2, axis=1)
    labels = tf.tensor_scatter_nd_update(
        labels, tf.stack([bidx, pos_idx], -1)[pos_ok], tf.ones(tf.reduce_sum(tf.cast(pos_ok, tf.int32))))
    bidx_n = tf.repeat(tf.range(b)[:, None], batch, axis=1)
    labels = tf.tensor_scatter_nd_update(
        labels, tf.stack([bidx_n, neg_idx], -1)[neg_ok], tf.zeros(tf.reduce_sum(tf.cast(neg_ok, tf.int32))))
    matched = tf.gather(gt_boxes, arg, batch_dims=1)
    return labels, matched, labels > 0.5


def sample_rois(proposals: tf.Tensor, gt_boxes: tf.Tensor, gt_classes: tf.Tensor, count: int,
                fg_fraction: float, fg_iou: float = 0.5) -> dict[str, tf.Tensor]:
    """Sample `count` RoIs per image from proposals + ground truth: boxes, class targets, matched gt index."""
    gt_valid = gt_classes > 0
    cand = tf.concat([proposals, tf.where(gt_valid[..., None], gt_boxes, 0.0)], axis=1)
    cand_ok = tf.concat([tf.ones(tf.shape(proposals)[:2], tf.bool), gt_valid], 1)
    area = (cand[..., 2] - cand[..., 0]) * (cand[..., 3] - cand[..., 1])
    cand_ok = cand_ok & (area > 0)
    iou = tf.where(gt_valid[:, None, :], box_iou(cand, gt_boxes), -1.0)
    best = tf.reduce_max(iou, 2)
    arg = tf.argmax(iou, 2, output_type=tf.int32)
    n_fg = int(round(count * fg_fraction))
    fg_idx, fg_ok = _sample(cand_ok & (best >= fg_iou), n_fg)
    bg_idx, bg_ok = _sample(cand_ok & (best < fg_iou), count - n_fg)
    idx = tf.concat([fg_idx, bg_idx], 1)
    rois = tf.gather(cand, idx, batch_dims=1)
    match = tf.gather(arg, idx, batch_dims=1)
    fg = tf.concat([fg_ok, tf.zeros_like(bg_ok)], 1)
    valid = tf.concat([fg_ok, bg_ok], 1)
    cls = tf.where(fg, tf.gather(gt_classes, match, batch_dims=1), 0)
    return {"rois": tf.stop_gradient(rois), "classes": cls, "match": match, "fg": fg, "valid": valid}


def _smooth_l1(x: tf.Tensor) -> tf.Tensor:
    ax = tf.abs(x)
    return tf.reduce_sum(tf.where(ax < 1.0, 0.5 * x * x, ax - 0.5), axis=-1)


def mask_targets(gt_masks: tf.Tensor, rois: tf.Tensor, match: tf.Tensor, size: int) -> tf.Tensor:
    """Ground-truth masks of the matched instances cropped to the RoIs and resized: (B, N, size, size)."""
    b, g = tf.shape(gt_masks)[0], tf.shape(gt_masks)[1]
    n = tf.shape(rois)[1]
    flat = tf.reshape(gt_masks, tf.concat([[b * g], tf.shape(gt_masks)[2:], [1]], 0))
    idx = tf.reshape(tf.range(b)[:, None] * g + match, [-1])
    crops = tf.image.crop_and_resize(flat, tf.reshape(rois, [-1, 4]), idx, [size, size])
    return tf.reshape(tf.cast(crops[..., 0] >= 0.5, tf.float32), [b, n, size, size])


def compute_losses(model: MaskRCNN, images: tf.Tensor, gt_boxes: tf.Tensor, gt_classes: tf.Tensor,
                   gt_masks: tf.Tensor, training: bool = True) -> dict[str, tf.Tensor]:
    """The five Mask R-CNN losses and their sum ("loss")."""
    c = model.config
    feats = model.features(images, training=training)
    logits, deltas = model.rpn(feats)
    gt_valid = gt_classes > 0
    labels, matched, pos = rpn_targets(model.anchors, gt_boxes, gt_valid, c.rpn_batch)
    sampled = labels >= 0.0
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.maximum(labels, 0.0), logits=logits)
    n_sampled = tf.maximum(tf.reduce_sum(tf.cast(sampled, tf.float32)), 1.0)
    rpn_class = tf.reduce_sum(tf.where(sampled, bce, 0.0)) / n_sampled
    rpn_t = encode_boxes(matched, model.anchors[None])
    n_pos = tf.maximum(tf.reduce_sum(tf.cast(pos, tf.float32)), 1.0)
    rpn_box = tf.reduce_sum(tf.where(pos, _smooth_l1(deltas - rpn_t), 0.0)) / n_pos

    props = model.proposals(logits, deltas, c.rpn_post_nms_train)
    s = sample_rois(props, gt_boxes, gt_classes, c.roi_batch, c.roi_fg_fraction)
    cls_logits, box_deltas = model.box_head(feats, s["rois"], training=training)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=s["classes"], logits=cls_logits)
    n_valid = tf.maximum(tf.reduce_sum(tf.cast(s["valid"], tf.float32)), 1.0)
    roi_class = tf.reduce_sum(tf.where(s["valid"], ce, 0.0)) / n_valid
    pred = tf.gather(box_deltas, s["classes"], batch_dims=2)                      # (B, N, 4)
    target = encode_boxes(tf.gather(gt_boxes, s["match"], batch_dims=1), s["rois"])
    n_fg = tf.maximum(tf.reduce_sum(tf.cast(s["fg"], tf.float32)), 1.0)
    roi_box = tf.reduce_sum(tf.where(s["fg"], _smooth_l1(pred - target), 0.0)) / n_fg

    m_logits = model.mask_head(feats, s["rois"])                                  # (B, N, M, M, C)
    m_logits = tf.gather(tf.transpose(m_logits, [0, 1, 4, 2, 3]), tf.maximum(s["classes"] - 1, 0), batch_dims=2)
    m_target = mask_targets(gt_masks, s["rois"], s["match"], c.mask_size)
    m_bce = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=m_target, logits=m_logits), [2, 3])
    mask = tf.reduce_sum(tf.where(s["fg"], m_bce, 0.0)) / n_fg
    out = {"rpn_class": rpn_class, "rpn_box": rpn_box, "roi_class": roi_class, "roi_box": roi_box, "mask": mask}
    out["loss"] = tf.add_n(list(out.values()))
    return out
