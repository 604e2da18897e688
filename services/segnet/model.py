"""Mask R-CNN (He et al. 2017) for SegNet, in Keras 3 on the TensorFlow backend.

Design note: our own implementation, not a library's.
- keras-hub 0.32.0 (checked with `pip download --no-deps keras-hub`) ships RetinaNet but no Mask R-CNN or
  Faster R-CNN for Keras 3. keras-cv is superseded by keras-hub and its Mask R-CNN never left the
  experimental branch.
- The TF Model Garden (tf-models-official) has a Mask R-CNN, but it pins a TensorFlow version (it would
  pull another TF than our 2.21), brings its own config system and trainer, and exports
  through its own modules; none of it speaks our ModelRepository / sipec.json contract.
- Our own is ~500 lines that we understand and test piece by piece: ResNet-50/101 (paper, GPU) or
  MobileNetV2 (CPU) backbone via keras.applications + FPN (P2-P6), RPN with 3 anchors per location,
  proposals by NMS, RoIAlign (one bilinear sample at each bin centre, i.e. sampling_ratio=1, over
  FPN levels chosen by the paper's k = 4 + log2(sqrt(wh)/224) rule), class-specific box head, class,
  and a 4-conv + deconv mask head (M x M masks). The whole post-processing (box decoding, per-class NMS by
  `tf.image.combined_non_max_suppression`, the mask head on kept boxes) is in the exported graph, so
  TF Serving answers final detections.

Conventions: boxes inside the graph are [y1, x1, y2, x2] normalised to [0, 1] of the (square) input;
the exported `boxes` output is [x1, y1, x2, y2] in input pixels. Class 0 is background inside the
network; exported `classes` index `class_names` (0-based).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

BOX_STD = (0.1, 0.1, 0.2, 0.2)
BACKBONES = ("mobilenetv2", "resnet50", "resnet101")
# feature maps at strides 4, 8, 16, 32 of each keras.applications backbone
_BACKBONE_LAYERS = {
    "mobilenetv2": ("block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu", "out_relu"),
    "resnet50": ("conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
    "resnet101": ("conv2_block3_out", "conv3_block4_out", "conv4_block23_out", "conv5_block3_out"),
}
STRIDES = (4, 8, 16, 32, 64)   # P2..P6


@dataclass
class MaskRCNNConfig:
    """Sizes of one Mask R-CNN. The defaults are the CPU configuration; `paper_config` gives the GPU one."""

    num_classes: int = 1                 # without background
    image_size: int = 256                # square input, a multiple of 64
    backbone: str = "mobilenetv2"
    alpha: float = 0.35                  # MobileNetV2 width
    fpn_channels: int = 64
    anchor_sizes: tuple[int, ...] = (16, 32, 64, 128, 256)   # one per FPN level P2..P6
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_pre_nms: int = 1000
    rpn_post_nms_train: int = 256
    rpn_post_nms_infer: int = 100
    rpn_nms_iou: float = 0.7
    rpn_batch: int = 128                 # sampled anchors per image
    roi_batch: int = 64                  # sampled RoIs per image
    roi_fg_fraction: float = 0.25
    box_head_dim: int = 256
    mask_head_channels: int = 64
    pool_size: int = 7
    mask_pool_size: int = 14             # mask head output is 2 * this
    max_detections: int = 20
    detection_nms_iou: float = 0.5
    detection_min_score: float = 0.05
    max_instances: int = 8               # padded ground-truth instances per image (training)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mask_size(self) -> int:
        return 2 * self.mask_pool_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MaskRCNNConfig:
        d = dict(d)
        for k in ("anchor_sizes", "anchor_ratios"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def paper_config(num_classes: int = 1, backbone: str = "resnet101", image_size: int = 1024) -> MaskRCNNConfig:
    """The paper's GPU configuration (ResNet-101/50 + FPN, 256 FPN channels, 1024-d box head, 28x28 masks)."""
    s = image_size / 1024
    return MaskRCNNConfig(num_classes=num_classes, image_size=image_size, backbone=backbone, fpn_channels=256,
                          anchor_sizes=tuple(max(8, int(a * s)) for a in (32, 64, 128, 256, 512)),
                          rpn_pre_nms=6000, rpn_post_nms_train=2000, rpn_post_nms_infer=1000, rpn_batch=256,
                          roi_batch=200, box_head_dim=1024, mask_head_channels=256, max_detections=100,
                          max_instances=32)


# ---------------------------------------------------------------------------------------------------
# anchors and box coding

def generate_anchors(config: MaskRCNNConfig) -> np.ndarray:
    """All anchors, (A, 4) normalised [y1, x1, y2, x2], level by level, row-major, ratios innermost."""
    out = []
    size = config.image_size
    for stride, base in zip(STRIDES, config.anchor_sizes, strict=True):
        n = math.ceil(size / stride)
        centres = (np.arange(n) + 0.5) * stride
        cy, cx = np.meshgrid(centres, centres, indexing="ij")
        per = []
        for r in config.anchor_ratios:      # r = height / width
            h, w = base * math.sqrt(r), base / math.sqrt(r)
            per.append(np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=-1))
        out.append(np.stack(per, axis=2).reshape(-1, 4))
    return (np.concatenate(out, axis=0) / size).astype(np.float32)


def encode_boxes(boxes: tf.Tensor, anchors: tf.Tensor) -> tf.Tensor:
    """Deltas (dy, dx, dh, dw) / BOX_STD taking `anchors` to `boxes` (same shape [..., 4])."""
    ah, aw = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
    ay, ax = anchors[..., 0] + 0.5 * ah, anchors[..., 1] + 0.5 * aw
    bh, bw = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    by, bx = boxes[..., 0] + 0.5 * bh, boxes[..., 1] + 0.5 * bw
    ah, aw = tf.maximum(ah, 1e-6), tf.maximum(aw, 1e-6)
    d = tf.stack([(by - ay) / ah, (bx - ax) / aw, tf.math.log(tf.maximum(bh, 1e-6) / ah),
                  tf.math.log(tf.maximum(bw, 1e-6) / aw)], axis=-1)
    return d / tf.constant(BOX_STD)


def decode_boxes(deltas: tf.Tensor, anchors: tf.Tensor) -> tf.Tensor:
    """Inverse of `encode_boxes`; dh/dw are clipped to avoid overflow."""
    d = deltas * tf.constant(BOX_STD)
    ah, aw = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
    ay, ax = anchors[..., 0] + 0.5 * ah, anchors[..., 1] + 0.5 * aw
    clip = math.log(1000.0 / 16)
    h, w = ah * tf.exp(tf.minimum(d[..., 2], clip)), aw * tf.exp(tf.minimum(d[..., 3], clip))
    y, x = ay + d[..., 0] * ah, ax + d[..., 1] * aw
    return tf.stack([y - 0.5 * h, x - 0.5 * w, y + 0.5 * h, x + 0.5 * w], axis=-1)


def box_iou(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """IoU of [..., N, 4] with [..., M, 4] -> [..., N, M]."""
    a, b = a[..., :, None, :], b[..., None, :, :]
    ih = tf.maximum(0.0, tf.minimum(a[..., 2], b[..., 2]) - tf.maximum(a[..., 0], b[..., 0]))
    iw = tf.maximum(0.0, tf.minimum(a[..., 3], b[..., 3]) - tf.maximum(a[..., 1], b[..., 1]))
    inter = ih * iw
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / tf.maximum(area_a + area_b - inter, 1e-9)


# ---------------------------------------------------------------------------------------------------
# RoIAlign

def roi_align(features: list[tf.Tensor], boxes: tf.Tensor, pool: int, image_size: int) -> tf.Tensor:
    """RoIAlign over FPN levels P2..P5: boxes (B, N, 4) normalised -> (B, N, pool, pool, C).

    Each box goes to level k = clip(4 + log2(sqrt(h w) / 224), 2, 5) (the FPN paper's rule) and is sampled
    at the centre of each of its pool x pool bins by bilinear interpolation (sampling ratio 1).
    """
    b, n = tf.shape(boxes)[0], tf.shape(boxes)[1]
    flat = tf.reshape(boxes, [-1, 4])
    idx = tf.repeat(tf.range(b), n)
    h, w = flat[:, 2] - flat[:, 0], flat[:, 3] - flat[:, 1]
    size = tf.sqrt(tf.maximum(h * w, 1e-12)) * float(image_size)
    level = tf.clip_by_value(tf.floor(4.0 + tf.math.log(size / 224.0) / math.log(2.0)), 2.0, 5.0)
    out = None
    for i, feat in enumerate(features[:4]):
        crops = tf.image.crop_and_resize(feat, bin_centre_boxes(flat, tf.shape(feat)[1:3], pool), idx,
                                         [pool, pool])
        sel = tf.cast(tf.equal(level, float(i + 2)), crops.dtype)[:, None, None, None]
        out = crops * sel if out is None else out + crops * sel
    return tf.reshape(out, tf.concat([[b, n, pool, pool], tf.shape(out)[-1:]], 0))


def bin_centre_boxes(boxes: tf.Tensor, feat_hw: tf.Tensor, pool: int) -> tf.Tensor:
    """Boxes for `tf.image.crop_and_resize` whose sample points are the bin centres of `boxes`.

    A normalised coordinate c maps to continuous feature coordinate c*H - 0.5 (pixel centres at integers);
    crop_and_resize samples y1'*(H-1) + i*(y2'-y1')*(H-1)/(pool-1).
    """
    fh, fw = tf.cast(feat_hw[0], tf.float32), tf.cast(feat_hw[1], tf.float32)

    def axis(lo: tf.Tensor, hi: tf.Tensor, n: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        step = (hi - lo) * n / pool
        first = lo * n - 0.5 + 0.5 * step
        last = lo * n - 0.5 + (pool - 0.5) * step
        denom = tf.maximum(n - 1.0, 1.0)
        return first / denom, last / denom

    y1, y2 = axis(boxes[:, 0], boxes[:, 2], fh)
    x1, x2 = axis(boxes[:, 1], boxes[:, 3], fw)
    return tf.stack([y1, x1, y2, x2], axis=-1)


# ---------------------------------------------------------------------------------------------------
# the network

def build_backbone(config: MaskRCNNConfig, weights: str | None = None) -> keras.Model:
    """keras.applications backbone returning C2..C5 (strides 4..32)."""
    shape = (config.image_size, config.image_size, 3)
    if config.backbone == "mobilenetv2":
        base = keras.applications.MobileNetV2(input_shape=shape, alpha=config.alpha, include_top=False,
                                              weights=weights)
    elif config.backbone == "resnet50":
        base = keras.applications.ResNet50(input_shape=shape, include_top=False, weights=weights)
    elif config.backbone == "resnet101":
        base = keras.applications.ResNet101(input_shape=shape, include_top=False, weights=weights)
    else:
        raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {config.backbone!r}")
    if weights is None:
        # keras.applications' BatchNormalization momentum 0.999 keeps the random initial statistics for
        # thousands of steps; a short CPU training from scratch needs moving statistics that follow the data
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9
    outs = [base.get_layer(name).output for name in _BACKBONE_LAYERS[config.backbone]]
    return keras.Model(base.input, outs, name=f"backbone_{config.backbone}")


def preprocess(images: tf.Tensor, backbone: str) -> tf.Tensor:
    """uint8 (or 0-255 float) RGB -> the backbone's expected input."""
    x = tf.cast(images, tf.float32)
    if backbone == "mobilenetv2":
        return x / 127.5 - 1.0
    # keras.applications ResNet: caffe mode (BGR, ImageNet mean subtracted)
    return x[..., ::-1] - tf.constant([103.939, 116.779, 123.68])


class MaskRCNN(keras.Model):
    """Mask R-CNN: backbone + FPN, RPN, RoIAlign, box/class head, mask head, NMS.

    `call(images)` runs inference and returns the final detections (see `detect`);
    `forward_train` gives what `losses.py` needs.
    """

    def __init__(self, config: MaskRCNNConfig, backbone_weights: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=kwargs.pop("name", "mask_rcnn"), **kwargs)
        self.config = config
        c = config
        self.backbone = build_backbone(c, backbone_weights)
        L = keras.layers
        self.lateral = [L.Conv2D(c.fpn_channels, 1, name=f"fpn_c{i + 2}p{i + 2}") for i in range(4)]
        self.smooth = [L.Conv2D(c.fpn_channels, 3, padding="same", name=f"fpn_p{i + 2}") for i in range(4)]
        self.upsample = L.UpSampling2D(2)
        self.p6_pool = L.MaxPooling2D(1, strides=2)
        na = len(c.anchor_ratios)
        self.rpn_conv = L.Conv2D(c.fpn_channels, 3, padding="same", activation="relu", name="rpn_conv")
        self.rpn_class = L.Conv2D(na, 1, name="rpn_class")
        self.rpn_box = L.Conv2D(4 * na, 1, name="rpn_box",
                                kernel_initializer=keras.initializers.RandomNormal(stddev=0.001))
        self.box_fc1 = L.Dense(c.box_head_dim, activation="relu", name="box_fc1")
        self.box_fc2 = L.Dense(c.box_head_dim, activation="relu", name="box_fc2")
        self.class_logits = L.Dense(c.num_classes + 1, name="class_logits")
        self.box_deltas = L.Dense(4 * (c.num_classes + 1), name="box_deltas",
                                  kernel_initializer=keras.initializers.RandomNormal(stddev=0.001))
        self.mask_convs = [L.Conv2D(c.mask_head_channels, 3, padding="same", activation="relu",
                                    name=f"mask_conv{i + 1}") for i in range(4)]
        self.mask_deconv = L.Conv2DTranspose(c.mask_head_channels, 2, strides=2, activation="relu",
                                             name="mask_deconv")
        self.mask_logits = L.Conv2D(c.num_classes, 1, name="mask_logits")
        self.anchors = tf.constant(generate_anchors(c))

    # --- parts -------------------------------------------------------------------------------------
    def features(self, images: tf.Tensor, training: bool = False) -> list[tf.Tensor]:
        """FPN levels P2..P6 of uint8 images (B, S, S, 3)."""
        cs = self.backbone(preprocess(images, self.config.backbone), training=training)
        lat = [layer(x) for layer, x in zip(self.lateral, cs, strict=True)]
        p = [None] * 4
        p[3] = lat[3]
        for i in (2, 1, 0):
            p[i] = lat[i] + self.upsample(p[i + 1])
        ps = [layer(x) for layer, x in zip(self.smooth, p, strict=True)]
        return ps + [self.p6_pool(ps[3])]

    def rpn(self, feats: list[tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        """Objectness logits (B, A) and deltas (B, A, 4) over all anchors."""
        logits, deltas = [], []
        for f in feats:
            h = self.rpn_conv(f)
            b = tf.shape(h)[0]
            logits.append(tf.reshape(self.rpn_class(h), [b, -1]))
            deltas.append(tf.reshape(self.rpn_box(h), [b, -1, 4]))
        return tf.concat(logits, 1), tf.concat(deltas, 1)

    def proposals(self, logits: tf.Tensor, deltas: tf.Tensor, count: int) -> tf.Tensor:
        """Top proposals after NMS: (B, count, 4) normalised, padded with zero boxes; no gradient."""
        logits, deltas = tf.stop_gradient(logits), tf.stop_gradient(deltas)
        k = min(self.config.rpn_pre_nms, int(self.anchors.shape[0]))
        scores, idx = tf.math.top_k(logits, k=k)
        boxes = decode_boxes(tf.gather(deltas, idx, batch_dims=1), tf.gather(self.anchors, idx))
        boxes = tf.clip_by_value(boxes, 0.0, 1.0)
        nms = tf.image.combined_non_max_suppression(
            boxes[:, :, None, :], tf.sigmoid(scores)[:, :, None], max_output_size_per_class=count,
            max_total_size=count, iou_threshold=self.config.rpn_nms_iou, score_threshold=0.0, clip_boxes=True)
        return tf.stop_gradient(nms.nmsed_boxes)

    def box_head(self, feats: list[tf.Tensor], rois: tf.Tensor, training: bool = False
                 ) -> tuple[tf.Tensor, tf.Tensor]:
        """Class logits (B, N, C+1) and class-specific deltas (B, N, C+1, 4) of RoIs (B, N, 4)."""
        c = self.config
        x = roi_align(feats, rois, c.pool_size, c.image_size)
        b, n = tf.shape(x)[0], tf.shape(x)[1]
        x = tf.reshape(x, [b, n, c.pool_size * c.pool_size * c.fpn_channels])
        x = self.box_fc2(self.box_fc1(x))
        return self.class_logits(x), tf.reshape(self.box_deltas(x), [b, n, c.num_classes + 1, 4])

    def mask_head(self, feats: list[tf.Tensor], rois: tf.Tensor) -> tf.Tensor:
        """Mask logits (B, N, M, M, C) of RoIs (B, N, 4)."""
        c = self.config
        x = roi_align(feats, rois, c.mask_pool_size, c.image_size)
        b, n = tf.shape(x)[0], tf.shape(x)[1]
        x = tf.reshape(x, [-1, c.mask_pool_size, c.mask_pool_size, c.fpn_channels])
        for conv in self.mask_convs:
            x = conv(x)
        x = self.mask_logits(self.mask_deconv(x))
        return tf.reshape(x, [b, n, c.mask_size, c.mask_size, c.num_classes])

    # --- inference ---------------------------------------------------------------------------------
    def detect(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """Final detections of uint8 images (B, S, S, 3), D = max_detections:

        boxes (B, D, 4) [x1, y1, x2, y2] input pixels; scores (B, D); classes (B, D) int32 into class_names;
        masks (B, D, M, M) float probabilities over each box; num_detections (B,) int32.
        """
        c = self.config
        feats = self.features(images, training=False)
        logits, deltas = self.rpn(feats)
        rois = self.proposals(logits, deltas, c.rpn_post_nms_infer)
        cls_logits, box_deltas = self.box_head(feats, rois)
        probs = tf.nn.softmax(cls_logits, axis=-1)[..., 1:]                           # (B, N, C)
        boxes = decode_boxes(box_deltas[:, :, 1:, :], rois[:, :, None, :])           # (B, N, C, 4)
        boxes = tf.clip_by_value(boxes, 0.0, 1.0)
        nms = tf.image.combined_non_max_suppression(
            boxes, probs, max_output_size_per_class=c.max_detections, max_total_size=c.max_detections,
            iou_threshold=c.detection_nms_iou, score_threshold=c.detection_min_score, clip_boxes=True,
            pad_per_class=False)
        det_boxes = nms.nmsed_boxes
        classes = tf.cast(nms.nmsed_classes, tf.int32)
        mask_logits = self.mask_head(feats, det_boxes)                                # (B, D, M, M, C)
        masks = tf.gather(tf.transpose(mask_logits, [0, 1, 4, 2, 3]), classes, batch_dims=2)
        s = float(c.image_size)
        pixel = tf.stack([det_boxes[..., 1], det_boxes[..., 0], det_boxes[..., 3], det_boxes[..., 2]], -1) * s
        return {"boxes": pixel, "scores": nms.nmsed_scores, "classes": classes, "masks": tf.sigmoid(masks),
                "num_detections": tf.cast(nms.valid_detections, tf.int32)}

    def call(self, images: tf.Tensor, training: bool = False) -> dict[str, tf.Tensor]:
        return self.detect(images)

    def serving_signature(self) -> list[tf.TensorSpec]:
        s = self.config.image_size
        return [tf.TensorSpec([None, s, s, 3], tf.uint8, name="image")]


def build_model(config: MaskRCNNConfig, backbone_weights: str | None = None) -> MaskRCNN:
    """A built MaskRCNN (weights created by one dummy forward pass)."""
    model = MaskRCNN(config, backbone_weights)
    model(tf.zeros([1, config.image_size, config.image_size, 3], tf.uint8))
    return model
