"""IdNet networks: shapes of the frame and recurrent networks, masking order, export + LocalBackend."""

from __future__ import annotations

import numpy as np
import pytest

from services.idnet.masking import MaskSettings, prepare_sequence
from services.idnet.model import NetworkConfig, build_frame_network, build_recurrent_head, build_recurrent_network


@pytest.fixture(scope="module")
def nets():
    cfg = NetworkConfig(backbone="densenet-small", input_size=32, t=2, num_identities=3, gru_units=8)
    frame, features = build_frame_network(cfg)
    head = build_recurrent_head(cfg, int(features.output.shape[-1]))
    recurrent = build_recurrent_network(cfg, features, head)
    return cfg, frame, features, head, recurrent


def test_frame_network_shapes(nets) -> None:
    cfg, frame, features, _, _ = nets
    x = np.random.default_rng(0).integers(0, 255, (4, 1, 32, 32, 3), dtype=np.uint8)
    p = np.asarray(frame(x, training=False))
    assert p.shape == (4, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    names = [layer.name for layer in frame.layers]
    assert "dropout" in names and frame.get_layer("dropout").rate == 0.5
    assert any("block" in layer.name for layer in features.layers[-1].layers)  # dense blocks


def test_recurrent_network_shapes(nets) -> None:
    cfg, _, features, head, recurrent = nets
    x = np.random.default_rng(1).integers(0, 255, (2, cfg.sequence_length, 32, 32, 3), dtype=np.uint8)
    p = np.asarray(recurrent(x, training=False))
    assert p.shape == (2, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    grus = [layer for layer in head.layers if layer.name.startswith("bigru")]
    assert len(grus) == 3
    assert head.get_layer("dropout").rate == 0.2
    assert head.get_layer("leaky1").negative_slope == pytest.approx(0.3)
    assert not features.trainable


def test_densenet121_config_builds() -> None:
    cfg = NetworkConfig(backbone="densenet121", input_size=32, t=0, num_identities=2)
    frame, features = build_frame_network(cfg)
    assert int(features.output.shape[-1]) == 1024  # DenseNet-121's feature width
    assert frame.output.shape[-1] == 2


def test_masks_dilate_more_further_in_time() -> None:
    settings = MaskSettings(input_size=32, crop_px=32, base_px=1, step_px=2)
    crops = [np.full((32, 32, 3), 200, np.uint8) for _ in range(5)]
    mask = np.zeros((32, 32), bool)
    mask[14:18, 14:18] = True
    seq = prepare_sequence(crops, [mask] * 5, settings)
    kept = [(seq[i, :, :, 0] > 0).sum() for i in range(5)]
    assert kept[2] < kept[1] < kept[0]
    assert kept[2] < kept[3] < kept[4]
    assert kept[1] == kept[3] and kept[0] == kept[4]
    unmasked = prepare_sequence(crops, None, settings)
    assert (unmasked > 0).all()
    with pytest.raises(ValueError, match="odd number"):
        prepare_sequence(crops[:4], None, settings)


def test_export_and_local_backend(nets, tmp_path) -> None:
    from services.idnet.export import export_idnet
    from sipec.serving.backends import LocalBackend

    cfg, frame, _, _, recurrent = nets
    settings = MaskSettings(input_size=32, crop_px=48)
    names = ["a", "b", "c"]
    export_idnet(recurrent, tmp_path, "idnet", cfg, names, settings)
    frame_cfg = NetworkConfig(backbone=cfg.backbone, input_size=32, t=0, num_identities=3)
    export_idnet(frame, tmp_path, "idnet-frame", frame_cfg, names, settings)
    x = np.random.default_rng(2).integers(0, 255, (3, cfg.sequence_length, 32, 32, 3), dtype=np.uint8)
    expected = np.asarray(recurrent(x, training=False))
    backend = LocalBackend(tmp_path, "idnet", start=False)
    try:
        backend.manager.start()
        meta = backend.metadata()
        assert meta.info["class_names"] == names and meta.info["t"] == 2
        out = backend.predict({"crops": x}).outputs["probabilities"]
        np.testing.assert_allclose(out, expected, atol=1e-4)
    finally:
        backend.close()
    fb = LocalBackend(tmp_path, "idnet-frame")
    try:
        assert fb.metadata().info["input"]["sequence_length"] == 1
        assert fb.predict({"crops": x[:, :1]}).outputs["probabilities"].shape == (3, 3)
    finally:
        fb.close()


def test_until_converged_trains_past_a_fixed_schedule_and_stops_once_fit() -> None:
    """The accumulation's networks train until fit (#17: 10 epochs left the zebrafish network at 77% of its own
    training crops): a separable toy set stops as soon as every crop is fitted, well before max_epochs."""
    from services.idnet.data import CropSet
    from services.idnet.train import TrainParams, fit_idnet

    rng = np.random.default_rng(0)
    n = 48
    identity = np.arange(n) % 2
    crops = np.zeros((n, 32, 32, 3), np.uint8)
    crops[identity == 0, 8:24, 4:28] = 200                      # a bright bar ...
    crops[identity == 1, 4:28, 12:20] = 200                     # ... lying or standing
    crops = np.clip(crops + rng.integers(0, 30, crops.shape), 0, 255).astype(np.uint8)
    data = CropSet(["a", "b"], crops, np.ones((n, 32, 32), bool), np.zeros(n, bool), identity,
                   np.zeros(n, int), np.arange(n), np.zeros(n, int), ["v"], "toy")
    cfg = NetworkConfig(backbone="densenet-small", input_size=32, t=0, num_identities=2)
    settings = MaskSettings(input_size=32, crop_px=32, base_px=0, step_px=0)
    trained = fit_idnet(data, cfg, settings, TrainParams(epochs=1, lr=1e-3, k=1.0, until_converged=True,
                                                        max_epochs=40, augment=False))
    epochs = len(trained.history["frame_loss"])
    assert 1 < epochs < 40 and trained.history["frame_accuracy"][-1] >= 0.995
