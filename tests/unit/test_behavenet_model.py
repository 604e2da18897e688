"""BehaveNet networks: Xception variants (full = keras.applications, mouse without the first 17 layers,
small), the heads, and the focal loss."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.behavenet.xception import (
    BACKBONES,
    DROPPED_LAYER_NAMES,
    XceptionConfig,
    build_xception,
    load_imagenet_weights,
)


@pytest.fixture(scope="module")
def full_pair():
    import keras

    ours = build_xception((71, 71, 3), XceptionConfig())
    theirs = keras.applications.Xception(include_top=False, weights=None, input_shape=(71, 71, 3), pooling="avg")
    return ours, theirs


def test_full_config_is_keras_xception_layer_for_layer(full_pair):
    ours, theirs = full_pair
    assert len(ours.layers) == len(theirs.layers) == 133
    assert ours.count_params() == theirs.count_params()
    for a, b in zip(ours.layers, theirs.layers, strict=True):
        assert type(a) is type(b), (a.name, b.name)
        assert tuple(a.output.shape) == tuple(b.output.shape), (a.name, b.name)
        assert [w.shape for w in a.get_weights()] == [w.shape for w in b.get_weights()], a.name
    named = [b.name for b in theirs.layers if not b.name.startswith(("conv2d", "batch_normalization", "add"))]
    assert {n for n in named if not n.startswith("input_layer")} - {"avg_pool", "global_average_pooling2d"} <= {
        a.name for a in ours.layers}


def test_mouse_variant_drops_exactly_the_first_17_layers(full_pair):
    ours, theirs = full_pair
    assert tuple(a.name for a in ours.layers[:17]) == DROPPED_LAYER_NAMES
    mouse = build_xception((64, 64, 3), BACKBONES["xception-mouse"])
    # its layers after the new input are the full network's layers 17.. (names and types)
    assert [a.name for a in mouse.layers[1:]] == [a.name for a in ours.layers[17:]]
    assert [type(a) for a in mouse.layers[1:]] == [type(b) for b in theirs.layers[17:]]
    assert tuple(mouse.input.shape) == (None, 64, 64, 3) and tuple(mouse.output.shape) == (None, 2048)
    # downsampling by 8 instead of 32: a 64x64 crop ends in an 8x8 map (the full network: 2x2 from 71x71)
    assert tuple(mouse.get_layer("block14_sepconv2_act").output.shape) == (None, 8, 8, 2048)
    assert tuple(ours.get_layer("block14_sepconv2_act").output.shape) == (None, 3, 3, 2048)
    # the 3-channel image goes straight into block 3's separable conv and its shortcut
    assert mouse.get_layer("block3_sepconv1").get_weights()[0].shape == (3, 3, 3, 1)
    assert mouse.get_layer("block3_shortcut").get_weights()[0].shape == (1, 1, 3, 256)


def test_small_configs_and_their_limits():
    small = build_xception((64, 64, 3), BACKBONES["xception-small"])
    assert tuple(small.output.shape) == (None, 512)
    blocks = {layer.name.split("_")[0] for layer in small.layers if layer.name.startswith("block")}
    assert blocks == {f"block{k}" for k in (3, 4, 5, 6, 13, 14)} | {"block1", "block2"}  # 2 middle blocks
    assert small.get_layer("block4_sepconv1").filters == 184                              # 728 * 0.25 -> 184
    assert XceptionConfig(width=0.125, middle_blocks=0).feature_size == 256
    with pytest.raises(ValueError, match="drop_first must be 0 or 17"):
        XceptionConfig(drop_first=5).validate()
    with pytest.raises(ValueError, match="ImageNet weights exist only for the full-width"):
        load_imagenet_weights(small, BACKBONES["xception-small"], (64, 64, 3))  # refused before any download


def test_feature_frame_and_temporal_networks():
    import keras

    from services.behavenet.model import TemporalConfig, feature_network, frame_classifier, temporal_network

    keras.utils.set_random_seed(0)
    feats = feature_network(48, BACKBONES["xception-small-mouse"])
    frame = frame_classifier(feats, 6)
    crops = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    f = np.asarray(feats(crops, training=False))
    p = np.asarray(frame(crops, training=False))
    assert f.shape == (3, 512) and p.shape == (3, 6)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    assert feats.input.dtype == "uint8"
    cfg = TemporalConfig(n=4)
    temporal = temporal_network(512, 6, cfg)
    assert tuple(temporal.input.shape) == (None, 9, 512)
    q = np.asarray(temporal(np.random.default_rng(1).normal(size=(2, 9, 512)).astype(np.float32), training=False))
    assert q.shape == (2, 6)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-5)
    kinds = {type(layer).__name__ for layer in temporal.layers}
    assert {"Conv1D", "BatchNormalization", "SpatialDropout1D", "Activation"} <= kinds
    assert [layer.dilation_rate[0] for layer in temporal.layers if layer.name.endswith("_conv")] == [1, 2, 4]
    with pytest.raises(ValueError, match="below this backbone's minimum"):
        feature_network(16, BACKBONES["xception-small"])


def test_focal_loss_matches_a_hand_computed_value():
    from services.behavenet.losses import FocalLoss

    y = np.array([[0.0, 1.0, 0.0]], np.float32)
    p = np.array([[0.2, 0.7, 0.1]], np.float32)
    expected = 0.5 * (1 - 0.7) ** 3 * -math.log(0.7)            # = 0.004815...
    assert float(FocalLoss(gamma=3.0, alpha=0.5)(y, p)) == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(0.0048151, rel=1e-4)
    # a batch is averaged; a confident right answer costs almost nothing, a wrong one a lot
    y2 = np.array([[1, 0, 0], [0, 0, 1]], np.float32)
    p2 = np.array([[0.95, 0.03, 0.02], [0.6, 0.3, 0.1]], np.float32)
    by_hand = [0.5 * 0.05 ** 3 * -math.log(0.95), 0.5 * 0.9 ** 3 * -math.log(0.1)]
    assert float(FocalLoss()(y2, p2)) == pytest.approx(np.mean(by_hand), rel=1e-5)
    # per-class alpha
    assert float(FocalLoss(alpha=[0.1, 0.2, 0.7])(y, p)) == pytest.approx(0.2 * 0.3 ** 3 * -math.log(0.7), rel=1e-5)


def test_focal_loss_is_cross_entropy_at_gamma_zero():
    import keras

    from services.behavenet.losses import FocalLoss

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(16, 6))
    p = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
    y = np.eye(6, dtype=np.float32)[rng.integers(0, 6, 16)]
    ce = float(keras.losses.CategoricalCrossentropy()(y, p))
    assert float(FocalLoss(gamma=0.0, alpha=1.0)(y, p)) == pytest.approx(ce, rel=1e-5)
    assert float(FocalLoss(gamma=0.0, alpha=0.5)(y, p)) == pytest.approx(0.5 * ce, rel=1e-5)
    assert float(FocalLoss(gamma=3.0, alpha=1.0)(y, p)) < ce
    restored = FocalLoss.from_config(FocalLoss(gamma=3.0, alpha=0.5).get_config())
    assert (restored.gamma, restored.alpha) == (3.0, 0.5)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        FocalLoss(gamma=-1)
