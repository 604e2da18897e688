"""Mask R-CNN (He et al. 2017) in Keras 3 on TensorFlow: backbone + FPN, RPN, RoIAlign, box, class and
mask heads, with the whole detection post-processing (box decoding, per-class NMS, mask head on the kept
boxes) inside the graph, so that TensorFlow Serving returns final detections.

Design note: our own implementation, not a library's
----------------------------------------------------
Checked with ``pip download --no-deps`` (November 2026):
- keras-hub 0.32.0 (Keras 3) has object detectors (RetinaNet, D-FINE) and SAM, but no Mask R-CNN or any
  other instance-segmentation network;
- tf-models-official 2.20.0 (TF Model Garden) has Mask R-CNN, but pins ``tensorflow~=2.20.0`` and
  ``tensorflow-text~=2.20.0`` (we run TF 2.21), is written for tf-keras (Keras 2, not Keras 3), brings its
  own config system and trainer, and pulls in tensorflow-datasets, tensorflow-hub and the
  model-optimization toolkit;
- keras-cv's Mask R-CNN never left its experimental branch and keras-cv is superseded by keras-hub;
  matterport's Mask_RCNN (what SIPEC used) is TF 1 / Keras 2 code.
So the network is written here, in five small modules (:mod:`.boxes`, :mod:`.roi_align`, :mod:`.targets`,
:mod:`.backbones`, this one), with keras.applications backbones (ResNet-101/50 as in the paper,
MobileNetV2 for CPUs) and only standard TensorFlow ops (``crop_and_resize``,
``combined_non_max_suppression``, ``top_k``), so that the SavedModel loads in the stock
``tensorflow/serving`` image. It has what the paper's network has: FPN P2-P6, an RPN with 3 anchor ratios
per level, proposal NMS, level-assigned RoIAlign (half-pixel aligned, 2x2 samples per bin), a box/class
head (2 FC), a mask head (convolutions + deconvolution, 28x28 per class), in-graph target assignment
and sampling, and staged transfer learning (:mod:`.train`).

Exported serving signature (``serving_default``)
-----------------------------------------------
input ``image``: uint8 (B, H, W, 3) RGB at the model's input size (letterboxed by the service);
outputs, D = ``max_detections``, zero past ``num_detections``: ``boxes`` (B, D, 4) float32 x1, y1, x2, y2
in input pixels; ``scores`` (B, D); ``classes`` (B, D) int32 (0-based index into ``class_names``);
``masks`` (B, D, M, M) float32 probabilities of the detected class over each box; ``num_detections`` (B,).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from services.segnet.backbones import Backbone, build_backbone
from services.segnet.boxes import clip_boxes, decode_boxes, generate_anchors, yxyx_to_xyxy
from services.segnet.config import ROI_LEVELS, MaskRCNNConfig
from services.segnet.roi_align import multilevel_roi_align
from services.segnet.targets import mask_targets, rpn_targets, sample_rois

LOSS_NAMES: tuple[str, ...] = ("rpn_class", "rpn_box", "class", "box", "mask")


def _smooth_l1(x: tf.Tensor, beta: float = 1.0) -> tf.Tensor:
    ax = tf.abs(x)
    return tf.where(ax < beta, 0.5 * ax * ax / beta, ax - 0.5 * beta)


def _weighted_mean(values: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(values * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


class MaskRCNN(keras.Model):
    """The network. ``model(images)`` / :meth:`detect` give final detections; :meth:`compute_losses` the
    training losses of a batch ``{"image", "gt_boxes", "gt_classes", "gt_masks"}`` (:mod:`.train`)."""

    def __init__(self, config: MaskRCNNConfig, weights: str | None = None, **kwargs: Any) -> None:
        super().__init__(name="maskrcnn", **kwargs)
        self.config = config.validate()
        c = config
        self.backbone: Backbone = build_backbone(c.backbone, c.image_height, c.image_width, weights)
        self.backbone_model = self.backbone.model
        ch = c.fpn_channels
        small = keras.initializers.RandomNormal(stddev=0.01)
        tiny = keras.initializers.RandomNormal(stddev=0.001)
        self.fpn_lateral = [keras.layers.Conv2D(ch, 1, name=f"fpn_lateral_c{lv}") for lv in ROI_LEVELS]
        self.fpn_output = [keras.layers.Conv2D(ch, 3, padding="same", name=f"fpn_p{lv}") for lv in ROI_LEVELS]
        self.rpn_conv = keras.layers.Conv2D(ch, 3, padding="same", activation="relu", kernel_initializer=small,
                                            name="rpn_conv")
        a = c.anchors_per_location
        self.rpn_class = keras.layers.Conv2D(a, 1, kernel_initializer=small, name="rpn_class")
        self.rpn_box = keras.layers.Conv2D(4 * a, 1, kernel_initializer=small, name="rpn_box")
        self.box_fc1 = keras.layers.Dense(c.box_head_units, activation="relu", name="box_fc1")
        self.box_fc2 = keras.layers.Dense(c.box_head_units, activation="relu", name="box_fc2")
        self.class_logits = keras.layers.Dense(c.num_classes + 1, kernel_initializer=small, name="class_logits")
        self.box_deltas = keras.layers.Dense(4 * c.num_classes, kernel_initializer=tiny, name="box_deltas")
        self.mask_convs = [keras.layers.Conv2D(c.mask_head_channels, 3, padding="same", activation="relu",
                                               kernel_initializer="he_normal", name=f"mask_conv{i + 1}")
                           for i in range(c.mask_head_convs)]
        self.mask_up = keras.layers.Conv2DTranspose(c.mask_head_channels, 2, strides=2, activation="relu",
                                                    kernel_initializer="he_normal", name="mask_deconv")
        self.mask_logits = keras.layers.Conv2D(c.num_classes, 1, name="mask_logits")
        self.anchors = generate_anchors(c)                        # (A, 4) numpy, fixed for the input size

    # ------------------------------------------------------------------ network parts
    def pyramid(self, images: tf.Tensor, training: bool = False) -> list[tf.Tensor]:
        """P2..P6 from uint8 images."""
        c2, c3, c4, c5 = self.backbone_model(self.backbone.preprocess(images), training=training)
        laterals = [conv(x) for conv, x in zip(self.fpn_lateral, (c2, c3, c4, c5), strict=True)]
        merged = [laterals[3]]
        for lat in reversed(laterals[:3]):
            up = tf.image.resize(merged[0], tf.shape(lat)[1:3], method="nearest")
            merged.insert(0, lat + up)
        outs = [conv(x) for conv, x in zip(self.fpn_output, merged, strict=True)]
        outs.append(tf.nn.max_pool2d(outs[-1], 1, 2, "SAME"))     # P6 for the RPN
        return outs

    def rpn(self, pyramid: list[tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        """Objectness logits (B, A) and box deltas (B, A, 4) for every anchor, in anchor order."""
        logits, deltas = [], []
        for p in pyramid:
            x = self.rpn_conv(p)
            b = tf.shape(x)[0]
            logits.append(tf.reshape(self.rpn_class(x), [b, -1]))
            deltas.append(tf.reshape(self.rpn_box(x), [b, -1, 4]))
        return tf.concat(logits, axis=1), tf.concat(deltas, axis=1)

    def proposals(self, logits: tf.Tensor, deltas: tf.Tensor, pre_nms: int, post_nms: int
                  ) -> tuple[tf.Tensor, tf.Tensor]:
        """Top ``post_nms`` boxes (B, N, 4) after NMS of the top ``pre_nms`` anchors, and their validity."""
        c = self.config
        top = tf.math.top_k(logits, k=min(pre_nms, int(self.anchors.shape[0])), sorted=False)
        anchors = tf.gather(tf.constant(self.anchors), top.indices)
        boxes = decode_boxes(tf.gather(deltas, top.indices, batch_dims=1), anchors, c.box_std)
        boxes = clip_boxes(boxes, c.image_height, c.image_width)
        nms = tf.image.combined_non_max_suppression(
            boxes[:, :, None, :], tf.sigmoid(top.values)[:, :, None], max_output_size_per_class=post_nms,
            max_total_size=post_nms, iou_threshold=c.rpn_nms_iou, score_threshold=float("-inf"),
            pad_per_class=False, clip_boxes=False)
        valid = tf.range(post_nms)[None, :] < nms.valid_detections[:, None]
        return nms.nmsed_boxes, valid

    def _roi_features(self, pyramid: list[tf.Tensor], rois: tf.Tensor, size: int) -> tf.Tensor:
        c = self.config
        return multilevel_roi_align(pyramid[:len(ROI_LEVELS)], rois, size, c.roi_sampling_ratio,
                                    c.roi_canonical_size)

    def box_head(self, pyramid: list[tf.Tensor], rois: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Class logits (B, R, C + 1) and per-class box deltas (B, R, C, 4) of (B, R, 4) RoIs."""
        c = self.config
        x = self._roi_features(pyramid, rois, c.pool_size)
        shape = tf.shape(x)
        x = tf.reshape(x, [shape[0], shape[1], c.pool_size * c.pool_size * c.fpn_channels])
        x = self.box_fc2(self.box_fc1(x))
        deltas = tf.reshape(self.box_deltas(x), [shape[0], shape[1], c.num_classes, 4])
        return self.class_logits(x), deltas

    def mask_head(self, pyramid: list[tf.Tensor], rois: tf.Tensor) -> tf.Tensor:
        """Mask logits (B, R, M, M, C) of (B, R, 4) RoIs."""
        c = self.config
        x = self._roi_features(pyramid, rois, c.mask_pool_size)
        b, r = tf.shape(x)[0], tf.shape(x)[1]
        x = tf.reshape(x, [b * r, c.mask_pool_size, c.mask_pool_size, c.fpn_channels])
        for conv in self.mask_convs:
            x = conv(x)
        x = self.mask_logits(self.mask_up(x))
        return tf.reshape(x, [b, r, c.mask_size, c.mask_size, c.num_classes])

    # ------------------------------------------------------------------ inference
    def detect(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """Final detections of uint8 (B, H, W, 3) images; see the module docstring for the outputs."""
        c = self.config
        pyramid = self.pyramid(images, training=False)
        logits, deltas = self.rpn(pyramid)
        rois, valid = self.proposals(logits, deltas, c.pre_nms_test, c.post_nms_test)
        class_logits, box_deltas = self.box_head(pyramid, rois)
        probs = tf.nn.softmax(class_logits, axis=-1)[..., 1:] * tf.cast(valid, tf.float32)[..., None]
        boxes = clip_boxes(decode_boxes(box_deltas, rois[:, :, None, :], c.box_std), c.image_height, c.image_width)
        nms = tf.image.combined_non_max_suppression(
            boxes, probs, max_output_size_per_class=c.max_detections, max_total_size=c.max_detections,
            iou_threshold=c.detection_nms_iou, score_threshold=c.detection_min_score, pad_per_class=False,
            clip_boxes=False)
        det_boxes = nms.nmsed_boxes
        classes = tf.cast(nms.nmsed_classes, tf.int32)
        mask_logits = self.mask_head(pyramid, det_boxes)                      # (B, D, M, M, C)
        mask_logits = tf.gather(tf.transpose(mask_logits, [0, 1, 4, 2, 3]), classes, batch_dims=2)
        count = nms.valid_detections
        keep = tf.cast(tf.range(c.max_detections)[None, :] < count[:, None], tf.float32)
        return {
            "boxes": yxyx_to_xyxy(det_boxes) * keep[..., None],
            "scores": nms.nmsed_scores * keep,
            "classes": classes * tf.cast(keep, tf.int32),
            "masks": tf.sigmoid(mask_logits) * keep[..., None, None],
            "num_detections": tf.cast(count, tf.int32),
        }

    def call(self, images: tf.Tensor, training: bool = False) -> dict[str, tf.Tensor]:
        return self.detect(images)

    # ------------------------------------------------------------------ training
    def compute_losses(self, batch: dict[str, tf.Tensor], training: bool = True) -> dict[str, tf.Tensor]:
        """The five Mask R-CNN losses for one batch of images with padded ground truth."""
        c = self.config
        gt_boxes = tf.cast(batch["gt_boxes"], tf.float32)
        gt_classes = tf.cast(batch["gt_classes"], tf.int32)
        pyramid = self.pyramid(batch["image"], training=training)
        logits, deltas = self.rpn(pyramid)
        anchors = tf.constant(self.anchors)
        t = rpn_targets(anchors, gt_boxes, gt_classes, c.rpn_pos_iou, c.rpn_neg_iou, c.rpn_batch_per_image,
                        c.rpn_pos_fraction, c.box_std)
        rpn_class = _weighted_mean(
            tf.nn.sigmoid_cross_entropy_with_logits(labels=t.labels, logits=logits), t.weights)
        rpn_box = _weighted_mean(tf.reduce_sum(_smooth_l1(deltas - t.deltas), axis=-1), t.box_weights)

        rois, valid = self.proposals(tf.stop_gradient(logits), tf.stop_gradient(deltas), c.pre_nms_train,
                                     c.post_nms_train)
        rois = tf.stop_gradient(rois)
        s = sample_rois(rois, valid, gt_boxes, gt_classes, c.rois_per_image, c.roi_pos_fraction, c.roi_pos_iou,
                        c.box_std)
        class_logits, box_deltas = self.box_head(pyramid, s.rois)
        class_loss = _weighted_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=s.classes, logits=class_logits), s.weights)
        target_class = tf.maximum(s.classes - 1, 0)
        pred_deltas = tf.gather(box_deltas, target_class, batch_dims=2)
        box_loss = _weighted_mean(tf.reduce_sum(_smooth_l1(pred_deltas - s.deltas), axis=-1), s.pos_weights)

        npos = max(1, int(round(c.rois_per_image * c.roi_pos_fraction)))
        pos_rois = s.rois[:, :npos]
        mask_logits = self.mask_head(pyramid, pos_rois)                          # (B, P, M, M, C)
        mask_logits = tf.gather(tf.transpose(mask_logits, [0, 1, 4, 2, 3]), target_class[:, :npos], batch_dims=2)
        targets = mask_targets(batch["gt_masks"], pos_rois, s.matched[:, :npos], c.mask_size)
        per_roi = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=mask_logits),
                                 axis=[2, 3])
        mask_loss = _weighted_mean(per_roi, s.pos_weights[:, :npos]) * c.mask_loss_weight
        return {"rpn_class": rpn_class, "rpn_box": rpn_box, "class": class_loss, "box": box_loss,
                "mask": mask_loss}

    # ------------------------------------------------------------------ helpers
    def build_for_input(self) -> MaskRCNN:
        """Create every variable by running one blank image through the detection graph."""
        c = self.config
        self(tf.zeros([1, c.image_height, c.image_width, 3], tf.uint8))   # through __call__: marks it built
        return self

    def set_trainable_layers(self, which: str) -> None:
        """"heads": only FPN, RPN and heads train; "5+", "4+", "3+": also those backbone stages; "all"."""
        self.backbone.set_trainable(which)


def build_model(config: MaskRCNNConfig, weights: str | None = None) -> MaskRCNN:
    """A built Mask R-CNN (every variable created)."""
    return MaskRCNN(config, weights=weights).build_for_input()


def count_parameters(model: MaskRCNN) -> int:
    return int(sum(np.prod(v.shape) for v in model.weights))
