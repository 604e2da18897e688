"""Mask R-CNN settings: one frozen dataclass, saved in the model's metadata and read back by the service.

Two families of presets:
- the paper's GPU networks (``resnet101``, ``resnet50``): FPN 256 channels, box head 2x1024 FC, mask head
  4x256 convolutions, 512 sampled RoIs per image, 1000/1000 proposals (He et al. 2017, as SIPEC used);
- the CPU networks (``mobilenetv2-0.35``, ``mobilenetv2-0.5``, ``mobilenetv2``): the same architecture with
  narrower heads (FPN 64, box head 2x256, mask head 2x64, 64 RoIs per image), so that it trains on two CPU
  cores in minutes.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

BACKBONES: tuple[str, ...] = ("resnet101", "resnet50", "mobilenetv2", "mobilenetv2-0.5", "mobilenetv2-0.35")
FPN_LEVELS: tuple[int, ...] = (2, 3, 4, 5, 6)   # P2..P6; P6 (max-pool of P5) is used by the RPN only
ROI_LEVELS: tuple[int, ...] = (2, 3, 4, 5)
SIZE_MULTIPLE = 32


@dataclass(frozen=True)
class MaskRCNNConfig:
    """Every size and threshold of the network. Pixel sizes are in model-input pixels."""

    backbone: str = "mobilenetv2-0.35"
    image_height: int = 256
    image_width: int = 320
    class_names: tuple[str, ...] = ("animal",)
    # feature pyramid and region proposal network
    fpn_channels: int = 64
    anchor_sizes: tuple[float, ...] = (16.0, 32.0, 64.0, 128.0, 256.0)   # one per level P2..P6
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)                  # height / width
    rpn_pos_iou: float = 0.7
    rpn_neg_iou: float = 0.3
    rpn_batch_per_image: int = 256
    rpn_pos_fraction: float = 0.5
    rpn_nms_iou: float = 0.7
    pre_nms_train: int = 2000
    post_nms_train: int = 500
    pre_nms_test: int = 1000
    post_nms_test: int = 300
    # RoI heads
    roi_canonical_size: float = 224.0   # an RoI of this size pools from P4 (FPN paper, eq. 1)
    pool_size: int = 7
    mask_pool_size: int = 14
    roi_sampling_ratio: int = 2         # bilinear samples per bin side in RoIAlign
    box_head_units: int = 256
    mask_head_convs: int = 2
    mask_head_channels: int = 64
    rois_per_image: int = 64
    roi_pos_fraction: float = 0.25
    roi_pos_iou: float = 0.5
    # detection (inside the exported graph)
    max_detections: int = 20
    detection_nms_iou: float = 0.5
    detection_min_score: float = 0.05
    default_min_score: float = 0.5      # what the service keeps when a request sets no min_score
    box_std: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2)
    max_gt_instances: int = 16          # ground-truth instances per training image (padded)
    mask_loss_weight: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    # ------------------------------------------------------------------ derived
    @property
    def num_classes(self) -> int:
        """Foreground classes (the network adds background as class 0 internally)."""
        return len(self.class_names)

    @property
    def mask_size(self) -> int:
        """Side of the predicted masks (the mask head upsamples its RoI features twice)."""
        return 2 * self.mask_pool_size

    @property
    def anchors_per_location(self) -> int:
        return len(self.anchor_ratios)

    @property
    def architecture(self) -> str:
        return f"maskrcnn-{self.backbone}-fpn"

    def level_shapes(self) -> list[tuple[int, int]]:
        """(height, width) of P2..P6 for this input size."""
        out = []
        for level in FPN_LEVELS:
            s = 2 ** level
            out.append((-(-self.image_height // s), -(-self.image_width // s)))
        return out

    # ------------------------------------------------------------------ checks and JSON
    def validate(self) -> MaskRCNNConfig:
        """Raise ValueError naming the setting and the problem; returns self."""
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, not {self.backbone!r}")
        for name, value in (("image height", self.image_height), ("image width", self.image_width)):
            if value < 64 or value % SIZE_MULTIPLE:
                raise ValueError(f"{name} must be a multiple of {SIZE_MULTIPLE} and at least 64, not {value}")
        if not self.class_names or len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class names must be distinct and at least one, got {list(self.class_names)}")
        if len(self.anchor_sizes) != len(FPN_LEVELS):
            raise ValueError(f"anchor_sizes needs one size per level P2..P6 ({len(FPN_LEVELS)}), "
                             f"got {len(self.anchor_sizes)}")
        if not 0 < self.rpn_neg_iou <= self.rpn_pos_iou < 1:
            raise ValueError("need 0 < rpn_neg_iou <= rpn_pos_iou < 1")
        if self.pre_nms_test < self.post_nms_test or self.pre_nms_train < self.post_nms_train:
            raise ValueError("pre-NMS proposal counts must be >= post-NMS counts")
        if self.max_detections < 1 or self.rois_per_image < 4 or self.max_gt_instances < 1:
            raise ValueError("max_detections, rois_per_image and max_gt_instances must be positive")
        if not 0 < self.roi_pos_fraction <= 1 or not 0 < self.rpn_pos_fraction <= 1:
            raise ValueError("positive fractions must be in (0, 1]")
        return self

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, tuple):
                out[k] = list(v)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MaskRCNNConfig:
        """Inverse of :meth:`to_json`; unknown keys are ignored (newer writers), lists become tuples."""
        names = {f.name for f in fields(cls)}
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names}
        return cls(**kwargs).validate()

    def with_changes(self, **changes: Any) -> MaskRCNNConfig:
        return replace(self, **changes).validate()


def preset(backbone: str, image_height: int = 256, image_width: int = 320,
           class_names: tuple[str, ...] = ("animal",)) -> MaskRCNNConfig:
    """The paper's sizes for the ResNet backbones, the CPU sizes for the MobileNetV2 ones.

    Anchor sizes scale with the input: the paper's 32..512 at 1024 pixels, 16..256 for the CPU sizes.
    """
    base = MaskRCNNConfig(backbone=backbone, image_height=image_height, image_width=image_width,
                          class_names=tuple(class_names))
    if backbone.startswith("resnet"):
        side = max(image_height, image_width)
        scale = 1.0 if side >= 768 else 0.5
        base = replace(base, fpn_channels=256, box_head_units=1024, mask_head_convs=4, mask_head_channels=256,
                       rois_per_image=512, pre_nms_train=2000, post_nms_train=1000, pre_nms_test=1000,
                       post_nms_test=1000, max_detections=100,
                       anchor_sizes=tuple(32.0 * scale * 2 ** i for i in range(5)))
    return base.validate()


def parse_image_size(text: str) -> tuple[int, int]:
    """'320x256' (WIDTHxHEIGHT) or '320' (square) -> (height, width)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if not m:
        raise ValueError(f"image size {text!r} must look like WIDTHxHEIGHT (e.g. 320x256) or one number")
    width = int(m.group(1))
    height = int(m.group(2)) if m.group(2) else width
    return height, width
