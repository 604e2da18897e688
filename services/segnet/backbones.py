"""Backbones of the feature pyramid: keras.applications networks cut at strides 4, 8, 16 and 32.

- ``resnet101``, ``resnet50``: the paper's backbones (He et al. 2016), ``caffe`` input normalisation as
  keras.applications' ImageNet weights expect;
- ``mobilenetv2``, ``mobilenetv2-0.5``, ``mobilenetv2-0.35``: MobileNetV2 (Sandler et al. 2018) at width
  1.0 / 0.5 / 0.35, inputs scaled to [-1, 1]; the small ones train on a CPU.

Every backbone maps each of its layers to a stage 1..5 (stride 2..32), so that training can unfreeze
"heads", "5+", "4+", "3+" or "all" as in Mask R-CNN's (and SIPEC's) staged transfer learning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

_RESNET_OUTPUTS = {
    "resnet50": ("conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
    "resnet101": ("conv2_block3_out", "conv3_block4_out", "conv4_block23_out", "conv5_block3_out"),
}
_MOBILENET_OUTPUTS = ("block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu", "out_relu")
_MOBILENET_ALPHA = {"mobilenetv2": 1.0, "mobilenetv2-0.5": 0.5, "mobilenetv2-0.35": 0.35}
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)

TRAINABLE_CHOICES: tuple[str, ...] = ("heads", "5+", "4+", "3+", "all")


@dataclass
class Backbone:
    """A backbone network (float RGB 0..255 in, C2..C5 out) and how to treat it."""

    name: str
    model: Any                     # keras.Model: (B, H, W, 3) float -> [C2, C3, C4, C5]
    family: str                    # "resnet" or "mobilenet"

    def preprocess(self, images: Any) -> Any:
        """uint8 or float RGB 0..255 -> the network's input normalisation (TF ops, in the graph)."""
        import tensorflow as tf

        x = tf.cast(images, tf.float32)
        if self.family == "resnet":
            return x[..., ::-1] - tf.constant(_CAFFE_MEAN_BGR)
        return x / 127.5 - 1.0

    def stage_of(self, layer_name: str) -> int:
        """Stage 1..5 of a backbone layer (stage k ends at stride 2**k)."""
        if self.family == "resnet":
            m = re.match(r"conv(\d)_", layer_name)
            return int(m.group(1)) if m else 1
        m = re.match(r"block_(\d+)_", layer_name)
        if not m:
            return 5 if layer_name.startswith(("Conv_1", "out_relu")) else 1
        block = int(m.group(1))
        return 2 if block <= 2 else 3 if block <= 5 else 4 if block <= 12 else 5

    def set_trainable(self, which: str) -> None:
        """Freeze the backbone up to a stage: "heads" (all frozen), "5+", "4+", "3+" or "all"."""
        if which not in TRAINABLE_CHOICES:
            raise ValueError(f"trainable layers must be one of {', '.join(TRAINABLE_CHOICES)}, not {which!r}")
        first = {"heads": 99, "5+": 5, "4+": 4, "3+": 3, "all": 0}[which]
        self.model.trainable = True
        for layer in self.model.layers:
            layer.trainable = self.stage_of(layer.name) >= first


def build_backbone(name: str, height: int, width: int, weights: str | None = None) -> Backbone:
    """The named backbone for (height, width) inputs; ``weights`` is None, "imagenet" or a .weights.h5
    file of the same keras.applications network (without its top)."""
    import keras

    imagenet = "imagenet" if weights == "imagenet" else None
    shape = (height, width, 3)
    if name in _RESNET_OUTPUTS:
        cls = keras.applications.ResNet50 if name == "resnet50" else keras.applications.ResNet101
        base = cls(input_shape=shape, include_top=False, weights=imagenet)
        outputs, family = _RESNET_OUTPUTS[name], "resnet"
    elif name in _MOBILENET_ALPHA:
        alpha = _MOBILENET_ALPHA[name]
        if imagenet and (height, width) != (224, 224):
            # keras.applications only ships square ImageNet weights; convolution weights do not depend on
            # the input size, so load them at 224 and copy them over
            ref = keras.applications.MobileNetV2(input_shape=(224, 224, 3), alpha=alpha, include_top=False,
                                                 weights="imagenet")
            base = keras.applications.MobileNetV2(input_shape=shape, alpha=alpha, include_top=False, weights=None)
            base.set_weights(ref.get_weights())
        else:
            base = keras.applications.MobileNetV2(input_shape=shape, alpha=alpha, include_top=False,
                                                  weights=imagenet)
        outputs, family = _MOBILENET_OUTPUTS, "mobilenet"
    else:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join([*_RESNET_OUTPUTS, *_MOBILENET_ALPHA])}")
    if weights not in (None, "imagenet"):
        base.load_weights(weights)
    if weights is None:
        # keras.applications' batch-norm momentum (0.999, or 0.99) keeps the random initial statistics for
        # thousands of steps; a short training from scratch needs statistics that follow the data
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9
    model = keras.Model(base.input, [base.get_layer(n).output for n in outputs], name=f"backbone_{family}")
    return Backbone(name=name, model=model, family=family)
