"""BehaveNet's networks (SIPEC, Marks et al. 2022).

1. Feature network: uint8 crop (S, S, 3) -> Xception features (F), rescaled to [-1, 1] in the graph.
   Configurations in :mod:`services.behavenet.xception` (full, mouse variant without the first 17
   layers, small ones for CPUs).
2. Frame classifier: feature network -> batch norm -> dropout 0.25 -> dense softmax, as SIPEC's
   ``pretrained_recognition`` for Xception. Trained frame by frame, then frozen. It is also the
   frame-only baseline BehaveNet is compared with.
3. Temporal network over the frozen features of a window [t-n, t+n] (2n+1 frames, non-causal):
   batch norm, then blocks of 1D convolution (kernel 3, dilations 1, 2, 4) + batch norm + ReLU +
   spatial dropout, a 1x1 convolution to 8 channels per frame, flatten, dense 64 and 32 with leaky
   ReLU, dense softmax: SIPEC's ``recurrent_model_tcn`` with kernel 3 instead of 2 (symmetric around
   the centre frame) and an 8-channel instead of 1-channel bottleneck (more robust to a dead unit).

Both stages train with the focal loss (gamma 3, alpha 0.5); see :mod:`services.behavenet.losses`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from services.behavenet.xception import XceptionConfig, build_xception, load_imagenet_weights

CROP_INPUT = "crop"             # feature and frame models: uint8 (B, S, S, 3)
FEATURES_INPUT = "features"     # temporal model: float32 (B, 2n+1, F)
FEATURES_OUTPUT = "features"
PROBABILITIES_OUTPUT = "probabilities"


@dataclass(frozen=True)
class TemporalConfig:
    """The temporal convolution network's settings."""

    n: int = 10                        # window [t-n, t+n]
    filters: int = 64
    kernel_size: int = 3
    dilations: tuple[int, ...] = (1, 2, 4)
    dropout: float = 0.25
    bottleneck: int = 8

    def validate(self) -> None:
        if not 0 <= self.n <= 100:
            raise ValueError(f"window half-width n must be 0 to 100, not {self.n}")
        if self.filters < 1 or self.kernel_size < 1 or self.bottleneck < 1:
            raise ValueError("temporal filters, kernel_size and bottleneck must be positive")
        if not self.dilations or any(d < 1 for d in self.dilations):
            raise ValueError(f"temporal dilations must be positive, got {self.dilations}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")

    @property
    def window(self) -> int:
        return 2 * self.n + 1

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "dilations": list(self.dilations), "window": self.window}


def feature_network(input_size: int, backbone: XceptionConfig, weights: str | None = None) -> Any:
    """uint8 crop (B, S, S, 3) -> features (B, F). `weights`: None, 'imagenet' or a .weights.h5 of this network."""
    import keras

    if input_size < backbone.min_input():
        raise ValueError(f"input size {input_size} is below this backbone's minimum of {backbone.min_input()} pixels")
    crop = keras.Input((input_size, input_size, 3), dtype="uint8", name=CROP_INPUT)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(keras.ops.cast(crop, "float32"))
    trunk = build_xception((input_size, input_size, 3), backbone)
    if weights == "imagenet":
        load_imagenet_weights(trunk, backbone, (input_size, input_size, 3))
    features = trunk(x)
    model = keras.Model(crop, features, name="behavenet_features")
    if weights not in (None, "imagenet"):
        model.load_weights(weights)
    return model


def frame_classifier(features: Any, num_classes: int, dropout: float = 0.25) -> Any:
    """Frame-only classifier on top of a feature network (shares its layers)."""
    import keras

    x = keras.layers.BatchNormalization(name="frame_bn")(features.output)
    x = keras.layers.Dropout(dropout, name="frame_dropout")(x)
    probs = keras.layers.Dense(num_classes, activation="softmax", name="frame_probabilities")(x)
    return keras.Model(features.input, probs, name="behavenet_frame")


def temporal_network(feature_size: int, num_classes: int, config: TemporalConfig) -> Any:
    """Features of 2n+1 frames (B, 2n+1, F) -> behaviour probabilities of the centre frame (B, C)."""
    import keras
    from keras import layers

    config.validate()
    feats = keras.Input((config.window, feature_size), dtype="float32", name=FEATURES_INPUT)
    x = layers.BatchNormalization(name="input_bn")(feats)
    for i, d in enumerate(config.dilations):
        x = layers.Conv1D(config.filters, config.kernel_size, padding="same", dilation_rate=d,
                          kernel_initializer="he_normal", name=f"tcn{i}_conv")(x)
        x = layers.BatchNormalization(name=f"tcn{i}_bn")(x)
        x = layers.Activation("relu", name=f"tcn{i}_relu")(x)
        x = layers.SpatialDropout1D(config.dropout, name=f"tcn{i}_dropout")(x)
    x = layers.Conv1D(config.bottleneck, 1, activation="relu", kernel_initializer="he_normal", name="bottleneck")(x)
    x = layers.Flatten(name="flatten")(x)
    for units in (64, 32):
        x = layers.Dense(units, name=f"dense{units}")(x)
        x = layers.LeakyReLU(negative_slope=0.3, name=f"dense{units}_act")(x)
    probs = layers.Dense(num_classes, activation="softmax", name="temporal_probabilities")(x)
    return keras.Model(feats, probs, name="behavenet_temporal")
