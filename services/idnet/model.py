"""IdNet's networks, as in the SIPEC paper.

- Frame network: a DenseNet per crop (keras.applications.DenseNet121 for GPUs, or ``densenet-small``: the same
  dense-block / transition design with fewer blocks and a smaller growth rate, written here because Keras 3 does
  not expose a configurable DenseNet) -> global average pooling -> dropout 0.5 -> softmax over identities.
- Recurrent network: the frozen frame features of the 2T+1 crops -> batch norm -> 3 bidirectional GRU layers with
  leaky ReLU (0.3) -> dropout 0.2 -> softmax.

Every exported network takes uint8 crops shaped (B, 2T+1, S, S, 3) (T=0: one crop) and rescales them in the graph.
Masking (dilated more the further in time) is done before the network by `services.idnet.masking`, the one
function used by training, evaluation and the service.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BACKBONES = ("densenet121", "densenet-small")
INPUT_NAME = "crops"
OUTPUT_NAME = "probabilities"
BN_MOMENTUM = 0.9   # moving statistics settle within the few hundred steps of small CPU trainings


@dataclass(frozen=True)
class NetworkConfig:
    """The network's shape: backbone, crop side S, temporal context T, identity count."""

    backbone: str = "densenet-small"
    input_size: int = 64
    t: int = 0
    num_identities: int = 2
    gru_units: int = 64

    @property
    def sequence_length(self) -> int:
        return 2 * self.t + 1

    def validate(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, not {self.backbone!r}")
        if not 16 <= self.input_size <= 1024:
            raise ValueError(f"input_size must be 16 to 1024 pixels, not {self.input_size}")
        if not 0 <= self.t <= 32:
            raise ValueError(f"t must be 0 to 32, not {self.t}")
        if self.num_identities < 2:
            raise ValueError(f"at least 2 identities are needed, not {self.num_identities}")


def _dense_block(x: Any, blocks: int, growth: int, name: str) -> Any:
    from keras import layers

    for i in range(blocks):
        y = layers.BatchNormalization(epsilon=1.001e-5, momentum=BN_MOMENTUM, name=f"{name}_{i}_bn0")(x)
        y = layers.Activation("relu", name=f"{name}_{i}_relu0")(y)
        y = layers.Conv2D(4 * growth, 1, use_bias=False, name=f"{name}_{i}_conv1")(y)
        y = layers.BatchNormalization(epsilon=1.001e-5, momentum=BN_MOMENTUM, name=f"{name}_{i}_bn1")(y)
        y = layers.Activation("relu", name=f"{name}_{i}_relu1")(y)
        y = layers.Conv2D(growth, 3, padding="same", use_bias=False, name=f"{name}_{i}_conv2")(y)
        x = layers.Concatenate(name=f"{name}_{i}_concat")([x, y])
    return x


def _transition(x: Any, reduction: float, name: str) -> Any:
    from keras import layers

    x = layers.BatchNormalization(epsilon=1.001e-5, momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    x = layers.Activation("relu", name=f"{name}_relu")(x)
    x = layers.Conv2D(int(x.shape[-1] * reduction), 1, use_bias=False, name=f"{name}_conv")(x)
    return layers.AveragePooling2D(2, strides=2, name=f"{name}_pool")(x)


def small_densenet(input_size: int, blocks: tuple[int, ...] = (2, 3, 4), growth: int = 16,
                   stem: int = 32, name: str = "densenet_small") -> Any:
    """DenseNet-BC (bottleneck dense layers, 0.5-compression transitions) sized for CPUs.

    Input float (B, S, S, 3) already rescaled to DenseNet's input range; output the pooled features.
    """
    import keras
    from keras import layers

    inp = keras.Input((input_size, input_size, 3), name="image")
    x = layers.Conv2D(stem, 3, strides=1, padding="same", use_bias=False, name="stem_conv")(inp)
    x = layers.BatchNormalization(epsilon=1.001e-5, momentum=BN_MOMENTUM, name="stem_bn")(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    x = layers.MaxPooling2D(2, name="stem_pool")(x)
    for b, n in enumerate(blocks):
        x = _dense_block(x, n, growth, name=f"block{b + 1}")
        if b < len(blocks) - 1:
            x = _transition(x, 0.5, name=f"transition{b + 1}")
    x = layers.BatchNormalization(epsilon=1.001e-5, momentum=BN_MOMENTUM, name="final_bn")(x)
    x = layers.Activation("relu", name="final_relu")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inp, x, name=name)


def build_feature_network(config: NetworkConfig, weights: str | None = None) -> Any:
    """uint8 crop (B, S, S, 3) -> DenseNet features (B, F). `weights`: None, 'imagenet' or a .weights.h5 file."""
    import keras
    from keras import layers

    config.validate()
    inp = keras.Input((config.input_size, config.input_size, 3), dtype="uint8", name="crop")
    x = layers.Rescaling(1.0, name="to_float")(inp)
    if config.backbone == "densenet121":
        x = keras.applications.densenet.preprocess_input(x)
        base = keras.applications.DenseNet121(include_top=False, pooling="avg",
                                              weights="imagenet" if weights == "imagenet" else None,
                                              input_shape=(config.input_size, config.input_size, 3))
    else:
        # DenseNet's ImageNet normalisation, in the graph
        x = layers.Normalization(mean=[0.485 * 255, 0.456 * 255, 0.406 * 255],
                                 variance=[(0.229 * 255) ** 2, (0.224 * 255) ** 2, (0.225 * 255) ** 2],
                                 name="normalize")(x)
        if weights == "imagenet":
            raise ValueError("--weights imagenet needs --backbone densenet121 (densenet-small has no pretrained "
                             "weights)")
        base = small_densenet(config.input_size)
    if weights not in (None, "imagenet"):
        base.load_weights(weights)
    feats = base(x)
    return keras.Model(inp, feats, name="idnet_features")


def build_frame_network(config: NetworkConfig, features: Any | None = None, weights: str | None = None) -> Any:
    """The frame network: uint8 crops (B, 1, S, S, 3) -> DenseNet -> dropout 0.5 -> softmax (B, N).

    Returns (model, features); the feature network is shared with the recurrent network.
    """
    import keras
    from keras import layers

    features = features or build_feature_network(config, weights)
    inp = keras.Input((1, config.input_size, config.input_size, 3), dtype="uint8", name=INPUT_NAME)
    x = layers.Reshape((config.input_size, config.input_size, 3), name="single_crop")(inp)
    x = features(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    out = layers.Dense(config.num_identities, activation="softmax", name=OUTPUT_NAME)(x)
    return keras.Model(inp, out, name="idnet_frame"), features


def build_recurrent_head(config: NetworkConfig, feature_dim: int) -> Any:
    """Features (B, 2T+1, F) -> batch norm -> 3 x bidirectional GRU (leaky ReLU 0.3) -> dropout 0.2 -> softmax."""
    import keras
    from keras import layers

    inp = keras.Input((config.sequence_length, feature_dim), name="features")
    x = layers.BatchNormalization(name="bn")(inp)
    for i in range(3):
        last = i == 2
        x = layers.Bidirectional(layers.GRU(config.gru_units, return_sequences=not last), name=f"bigru{i + 1}")(x)
        x = layers.LeakyReLU(negative_slope=0.3, name=f"leaky{i + 1}")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    out = layers.Dense(config.num_identities, activation="softmax", name=OUTPUT_NAME)(x)
    return keras.Model(inp, out, name="idnet_recurrent_head")


def build_recurrent_network(config: NetworkConfig, features: Any, head: Any) -> Any:
    """uint8 crops (B, 2T+1, S, S, 3) -> frozen DenseNet per crop -> recurrent head -> (B, N)."""
    import keras
    from keras import layers

    features.trainable = False
    s = config.input_size
    inp = keras.Input((config.sequence_length, s, s, 3), dtype="uint8", name=INPUT_NAME)
    x = layers.TimeDistributed(features, name="frame_features")(inp)
    out = head(x)
    return keras.Model(inp, out, name="idnet")
