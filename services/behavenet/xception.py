"""Xception (Chollet 2017) built so that SIPEC's variants are configurations of one graph.

The graph is layer for layer the one of ``keras.applications.Xception(include_top=False,
pooling="avg")``: same layer types, same order in ``model.layers``, same output shapes and, at width 1
with 8 middle-flow blocks, the same parameters. Three settings change it:

- ``width`` multiplies every filter count (rounded to a multiple of 8, at least 8);
- ``middle_blocks`` is the number of middle-flow blocks (8 in Xception);
- ``drop_first`` = 17 is SIPEC's mouse variant ("without the first 17 layers", for small crops).
  ``keras.applications.Xception(...).layers[0:17]`` are: the InputLayer, entry-flow block 1
  (block1_conv1 stride 2 + BN + ReLU, block1_conv2 + BN + ReLU), entry-flow block 2 (two separable
  convolutions with BN, the stride-2 max pool, its 1x1 stride-2 shortcut convolution + BN, the add)
  and block 3's leading ReLU (``block3_sepconv1_act``). Dropping them, the 3-channel image goes
  straight into ``block3_sepconv1`` and block 3's 1x1 stride-2 shortcut convolution. The network then
  downsamples by 8 instead of 32 (a 64x64 crop ends in an 8x8 map instead of 2x2) and still ends in
  ``2048 * width`` features. With ImageNet weights every kept layer gets its weights except those two
  first convolutions, whose input depth changes from 128 to 3 (they start random).

Layer names follow Keras (``block3_sepconv1``...; the exit flow is block13 and block14 whatever the
number of middle blocks); the shortcut layers, which Keras leaves unnamed, are ``block{k}_shortcut``,
``block{k}_shortcut_bn`` and ``block{k}_add``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

MOUSE_DROPPED_LAYERS = 17
# layers of keras.applications.Xception(include_top=False, pooling="avg") before the ones kept by the mouse variant
DROPPED_LAYER_NAMES: tuple[str, ...] = (
    "input", "block1_conv1", "block1_conv1_bn", "block1_conv1_act", "block1_conv2", "block1_conv2_bn",
    "block1_conv2_act", "block2_sepconv1", "block2_sepconv1_bn", "block2_sepconv2_act", "block2_sepconv2",
    "block2_sepconv2_bn", "block2_shortcut", "block2_pool", "block2_shortcut_bn", "block2_add",
    "block3_sepconv1_act")


@dataclass(frozen=True)
class XceptionConfig:
    """One configuration of the Xception feature network."""

    width: float = 1.0
    middle_blocks: int = 8
    drop_first: int = 0   # 0: the whole network; 17: SIPEC's mouse variant

    def validate(self) -> None:
        if not 0.05 <= self.width <= 4.0:
            raise ValueError(f"xception width must be 0.05 to 4, not {self.width}")
        if not 0 <= self.middle_blocks <= 16:
            raise ValueError(f"xception middle_blocks must be 0 to 16, not {self.middle_blocks}")
        if self.drop_first not in (0, MOUSE_DROPPED_LAYERS):
            raise ValueError(f"xception drop_first must be 0 or {MOUSE_DROPPED_LAYERS}, not {self.drop_first}")

    def filters(self, n: int) -> int:
        return max(8, int(round(n * self.width / 8.0)) * 8)

    @property
    def feature_size(self) -> int:
        return self.filters(2048)

    @property
    def downsampling(self) -> int:
        return 8 if self.drop_first else 32

    def min_input(self) -> int:
        """Smallest input side the network takes (keras.applications asks 71, for its ImageNet weights)."""
        return 32

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# The backbones `sipec train behavenet --backbone` offers.
BACKBONES: dict[str, XceptionConfig] = {
    "xception": XceptionConfig(1.0, 8, 0),
    "xception-mouse": XceptionConfig(1.0, 8, MOUSE_DROPPED_LAYERS),
    "xception-small": XceptionConfig(0.25, 2, 0),
    "xception-small-mouse": XceptionConfig(0.25, 2, MOUSE_DROPPED_LAYERS),
}


def build_xception(input_shape: tuple[int, int, int], config: XceptionConfig, name: str = "xception") -> Any:
    """The Xception trunk as a Keras model: float image in [-1, 1] -> ``config.feature_size`` features (avg pool)."""
    import keras
    from keras import layers

    config.validate()
    f = config.filters
    inputs = keras.Input(input_shape, name="input")
    x = inputs
    if not config.drop_first:
        x = layers.Conv2D(f(32), 3, strides=2, use_bias=False, name="block1_conv1")(x)
        x = layers.BatchNormalization(name="block1_conv1_bn")(x)
        x = layers.Activation("relu", name="block1_conv1_act")(x)
        x = layers.Conv2D(f(64), 3, use_bias=False, name="block1_conv2")(x)
        x = layers.BatchNormalization(name="block1_conv2_bn")(x)
        x = layers.Activation("relu", name="block1_conv2_act")(x)
        x = _entry_block(x, 2, f(128), first_relu=False)
    x = _entry_block(x, 3, f(256), first_relu=not config.drop_first)
    x = _entry_block(x, 4, f(728))
    for i in range(config.middle_blocks):
        residual = x
        prefix = f"block{i + 5}"
        for j in (1, 2, 3):
            x = layers.Activation("relu", name=f"{prefix}_sepconv{j}_act")(x)
            x = layers.SeparableConv2D(f(728), 3, padding="same", use_bias=False, name=f"{prefix}_sepconv{j}")(x)
            x = layers.BatchNormalization(name=f"{prefix}_sepconv{j}_bn")(x)
        x = layers.add([x, residual], name=f"{prefix}_add")
    k = 13  # the exit flow keeps Xception's names (block13, block14) whatever the number of middle blocks
    residual = layers.Conv2D(f(1024), 1, strides=2, padding="same", use_bias=False, name=f"block{k}_shortcut")(x)
    residual = layers.BatchNormalization(name=f"block{k}_shortcut_bn")(residual)
    for j, n in ((1, 728), (2, 1024)):
        x = layers.Activation("relu", name=f"block{k}_sepconv{j}_act")(x)
        x = layers.SeparableConv2D(f(n), 3, padding="same", use_bias=False, name=f"block{k}_sepconv{j}")(x)
        x = layers.BatchNormalization(name=f"block{k}_sepconv{j}_bn")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"block{k}_pool")(x)
    x = layers.add([x, residual], name=f"block{k}_add")
    k += 1
    for j, n in ((1, 1536), (2, 2048)):
        x = layers.SeparableConv2D(f(n), 3, padding="same", use_bias=False, name=f"block{k}_sepconv{j}")(x)
        x = layers.BatchNormalization(name=f"block{k}_sepconv{j}_bn")(x)
        x = layers.Activation("relu", name=f"block{k}_sepconv{j}_act")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, x, name=name)


def _entry_block(x: Any, block: int, filters: int, first_relu: bool = True) -> Any:
    """Entry-flow block: [ReLU] SepConv BN ReLU SepConv BN MaxPool(stride 2) + 1x1 stride-2 shortcut."""
    from keras import layers

    residual = layers.Conv2D(filters, 1, strides=2, padding="same", use_bias=False, name=f"block{block}_shortcut")(x)
    residual = layers.BatchNormalization(name=f"block{block}_shortcut_bn")(residual)
    if first_relu:
        x = layers.Activation("relu", name=f"block{block}_sepconv1_act")(x)
    x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, name=f"block{block}_sepconv1")(x)
    x = layers.BatchNormalization(name=f"block{block}_sepconv1_bn")(x)
    x = layers.Activation("relu", name=f"block{block}_sepconv2_act")(x)
    x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, name=f"block{block}_sepconv2")(x)
    x = layers.BatchNormalization(name=f"block{block}_sepconv2_bn")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"block{block}_pool")(x)
    return layers.add([x, residual], name=f"block{block}_add")


def load_imagenet_weights(model: Any, config: XceptionConfig, input_shape: tuple[int, int, int]) -> list[str]:
    """Copy keras.applications.Xception's ImageNet weights into `model` (downloads once, into KERAS_HOME).

    Needs width 1 and 8 middle blocks. Layers are matched by position (the mouse variant is the Keras
    network minus its first 17 layers); a layer whose weight shapes differ keeps its initialisation.
    Returns the names of the layers left as they were.
    """
    import keras

    if config.width != 1.0 or config.middle_blocks != 8:
        raise ValueError("ImageNet weights exist only for the full-width Xception with 8 middle blocks "
                         f"(got width {config.width}, {config.middle_blocks} middle blocks)")
    side = max(71, input_shape[0], input_shape[1])
    reference = keras.applications.Xception(include_top=False, weights="imagenet", input_shape=(side, side, 3),
                                            pooling="avg")
    skipped = []
    # both start with an InputLayer; the mouse variant's first kept layer is Keras' layer 17
    for ours, theirs in zip(model.layers[1:], reference.layers[max(1, config.drop_first):], strict=True):
        if type(ours) is not type(theirs):
            raise RuntimeError(f"layer {ours.name} ({type(ours).__name__}) does not match Keras' {theirs.name} "
                               f"({type(theirs).__name__})")
        w = theirs.get_weights()
        if w and [a.shape for a in w] == [a.shape for a in ours.get_weights()]:
            ours.set_weights(w)
        elif w:
            skipped.append(ours.name)
    return skipped
