"""The PoseNet network: Simple Baselines (Xiao et al. 2018) — a backbone followed by a deconvolution head
that predicts one heatmap per keypoint at 1/4 of the crop resolution.

Backbones: ``resnet50`` (the paper's; for GPUs), ``efficientnetb0`` (GPUs), ``small`` (a residual CNN of
the same design with few channels, for CPU training and tests). The model takes uint8 crops (B, S, S, 3)
and rescales them in the graph, so the exported SavedModel takes raw pixels. Output ``heatmaps``
(B, S/4, S/4, K), float32. Peak finding with sub-pixel refinement is in :mod:`services.posenet.peaks`
(numpy, shared by evaluation and the service).

The loss is :func:`masked_heatmap_loss`: mean squared error over the heatmaps of labelled keypoints only;
a keypoint that is not labelled has a target filled with -1 (see :mod:`services.posenet.targets`) and
contributes exactly 0 to the loss and to the gradient. Training weighs the pixels near a keypoint more
(``fg_weight``, 1 + 10 x target by default): with plain MSE a randomly initialised network sits for hundreds
of steps on the plateau where every heatmap is zero (measured in docs/benchmarks.md), which CPU training cannot
afford.
"""

from __future__ import annotations

from typing import Any

BACKBONES = ("small", "resnet50", "efficientnetb0")
OUTPUT_STRIDE = 4          # heatmap pixel = 4 crop pixels
INPUT_NAME = "crop"
OUTPUT_NAME = "heatmaps"


SMALL_STRIDES = (16, 32)


def _small_backbone(x: Any, width: int, stride: int = 16) -> Any:
    """A small ResNet: stem conv + 4 stages of one residual block each, BN + ReLU (stride 16); stride 32 adds a
    fifth stage of 8 x width channels (the receptive field about doubles, for larger inputs)."""
    from keras import layers

    def block(x: Any, filters: int, stride: int, name: str) -> Any:
        shortcut = x
        y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_c1")(x)
        y = layers.BatchNormalization(name=f"{name}_bn1")(y)
        y = layers.ReLU(name=f"{name}_r1")(y)
        y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_c2")(y)
        y = layers.BatchNormalization(name=f"{name}_bn2")(y)
        if stride != 1 or shortcut.shape[-1] != filters:
            shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_sc")(shortcut)
            shortcut = layers.BatchNormalization(name=f"{name}_scbn")(shortcut)
        return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([y, shortcut]))

    x = layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    stages = [(1, 1), (2, 2), (4, 2), (8, 2)] + ([(8, 2)] if stride == 32 else [])
    for i, (mult, s) in enumerate(stages):
        x = block(x, width * mult, s, f"stage{i + 1}")
    return x


def build_posenet(num_keypoints: int, input_size: int = 128, backbone: str = "small",
                  weights: str | None = None, head_filters: int | None = None, small_width: int = 32,
                  heatmap_activation: str | None = None, small_stride: int = 16) -> Any:
    """Build the encoder-decoder. ``weights``: None, 'imagenet' (resnet50/efficientnetb0 only) or a
    .weights.h5 file of this same architecture (loaded after building).

    The head is Simple Baselines': (backbone stride / 4) x [4x4 transposed conv stride 2 + BN + ReLU],
    then a 1x1 conv to K heatmaps. ``head_filters`` defaults to 256 (the paper) for the big backbones
    and 4 * small_width for ``small``. ``heatmap_activation`` "sigmoid" keeps the heatmaps in [0, 1] (for the
    cross-entropy loss); None leaves them linear (the MSE loss). ``small_stride`` (16 or 32) is the small
    backbone's output stride; the head always ends at stride 4.
    """
    import keras
    from keras import layers

    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, not {backbone!r}")
    if input_size % 32:
        raise ValueError(f"input size must be a multiple of 32, not {input_size}")
    if num_keypoints < 1:
        raise ValueError("num_keypoints must be at least 1")
    if small_stride not in SMALL_STRIDES:
        raise ValueError(f"small backbone stride must be 16 or 32, not {small_stride}")
    inp = keras.Input((input_size, input_size, 3), dtype="uint8", name=INPUT_NAME)
    x = layers.Lambda(lambda t: keras.ops.cast(t, "float32"), name="to_float")(inp)
    imagenet = weights == "imagenet"
    if backbone == "small":
        if imagenet:
            raise ValueError("--weights imagenet needs backbone resnet50 or efficientnetb0 (small has none)")
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(x)
        feats = _small_backbone(x, small_width, small_stride)
        stride = small_stride
        head_filters = head_filters or 4 * small_width
    elif backbone == "resnet50":
        x = layers.Lambda(keras.applications.resnet50.preprocess_input, name="preprocess")(x)
        base = keras.applications.ResNet50(include_top=False, weights="imagenet" if imagenet else None,
                                           input_shape=(input_size, input_size, 3))
        feats = base(x)
        stride = 32
        head_filters = head_filters or 256
    else:
        base = keras.applications.EfficientNetB0(include_top=False, weights="imagenet" if imagenet else None,
                                                 input_shape=(input_size, input_size, 3))
        feats = base(x)  # EfficientNet rescales 0-255 inputs itself
        stride = 32
        head_filters = head_filters or 256
    y = feats
    n_deconv = {16: 2, 32: 3}[stride]
    for i in range(n_deconv):
        y = layers.Conv2DTranspose(head_filters, 4, strides=2, padding="same", use_bias=False, name=f"deconv{i + 1}")(y)
        y = layers.BatchNormalization(name=f"deconv{i + 1}_bn")(y)
        y = layers.ReLU(name=f"deconv{i + 1}_relu")(y)
    out = layers.Conv2D(num_keypoints, 1, padding="same", dtype="float32", activation=heatmap_activation,
                        name=OUTPUT_NAME)(y)
    model = keras.Model(inp, {OUTPUT_NAME: out}, name=f"posenet_{backbone}")
    if weights not in (None, "imagenet"):
        model.load_weights(weights)
    return model


def masked_heatmap_loss(y_true: Any, y_pred: Any, fg_weight: float = 0.0) -> Any:
    """MSE over the heatmaps of labelled keypoints; a target heatmap filled with -1 marks an unlabelled
    keypoint and is ignored (weight 0: no loss, no gradient). Normalised by the number of labelled
    keypoints (at least 1) and the heatmap area, per batch.

    ``fg_weight`` > 0 weighs each pixel by ``1 + fg_weight * target`` (the Gaussian's own value), so that the
    few pixels around a keypoint count more than the wide background; 0 is plain Simple Baselines MSE."""
    import keras.ops as K

    y_true = K.cast(y_true, "float32")
    y_pred = K.cast(y_pred, "float32")
    weight = K.cast(y_true[:, :1, :1, :] >= 0.0, "float32")             # (B,1,1,K)
    target = K.maximum(y_true, 0.0)
    sq = K.square(y_pred - target) * weight
    if fg_weight:
        sq = sq * (1.0 + fg_weight * target)
    per_kp = K.mean(sq, axis=(1, 2))                                        # (B,K)
    return K.sum(per_kp) / K.maximum(K.sum(weight), 1.0)


def masked_heatmap_bce(y_true: Any, y_pred: Any, fg_weight: float = 0.0) -> Any:
    """The paper's loss: pixel-wise binary cross-entropy between sigmoid heatmaps and the Gaussian targets, over
    the heatmaps of labelled keypoints only (a target filled with -1: weight 0), normalised as
    :func:`masked_heatmap_loss`, with the same optional foreground weighting."""
    import keras.ops as K

    y_true = K.cast(y_true, "float32")
    y_pred = K.clip(K.cast(y_pred, "float32"), 1e-6, 1.0 - 1e-6)
    weight = K.cast(y_true[:, :1, :1, :] >= 0.0, "float32")
    target = K.maximum(y_true, 0.0)
    ce = -(target * K.log(y_pred) + (1.0 - target) * K.log(1.0 - y_pred)) * weight
    if fg_weight:
        ce = ce * (1.0 + fg_weight * target)
    per_kp = K.mean(ce, axis=(1, 2))
    return K.sum(per_kp) / K.maximum(K.sum(weight), 1.0)


LOSSES = ("mse", "bce")


def heatmap_loss(fg_weight: float = 0.0, kind: str = "mse") -> Any:
    """The masked heatmap loss for ``model.compile``: "mse" (:func:`masked_heatmap_loss`, Simple Baselines) or
    "bce" (:func:`masked_heatmap_bce`, the SIPEC paper's cross-entropy), with ``fg_weight`` bound."""
    if kind not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {kind!r}")
    base = masked_heatmap_bce if kind == "bce" else masked_heatmap_loss
    if not fg_weight and kind == "mse":
        return masked_heatmap_loss

    def loss(y_true: Any, y_pred: Any) -> Any:
        return base(y_true, y_pred, fg_weight)

    return loss


def export_posenet(model: Any, repo: Any, name: str, metadata: dict[str, Any], version: int | None = None) -> Any:
    """Export through ModelRepository.export: input ``crop`` uint8 (B,S,S,3) -> output ``heatmaps``."""
    import tensorflow as tf

    from sipec.serving.repository import ModelRepository

    size = int(model.inputs[0].shape[1])
    spec = tf.TensorSpec([None, size, size, 3], tf.uint8, name=INPUT_NAME)

    def serve(crop: Any) -> dict[str, Any]:
        out = model(crop, training=False)
        return {OUTPUT_NAME: out[OUTPUT_NAME]}

    return ModelRepository(repo).export(model, name, metadata, version=version, serve_fn=serve,
                                        input_signature=[spec])
