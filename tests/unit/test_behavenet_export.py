"""BehaveNet export: three SavedModels with one version and run id; the local backend answers as Keras does."""

from __future__ import annotations

import numpy as np
import pytest

from services.behavenet.crops import CropSettings
from services.behavenet.model import TemporalConfig


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import keras

    from services.behavenet.model import feature_network, frame_classifier, temporal_network
    from services.behavenet.train import TrainedBehaveNet, TrainSettings, export_behavenet
    from services.behavenet.xception import BACKBONES

    keras.utils.set_random_seed(1)
    settings = TrainSettings(backbone="xception-small", crops=CropSettings(input_size=40, crop_px=80),
                             temporal=TemporalConfig(n=3))
    features = feature_network(40, BACKBONES["xception-small"])
    frame = frame_classifier(features, 4)
    temporal = temporal_network(512, 4, settings.temporal)
    trained = TrainedBehaveNet(features, frame, temporal, ["none", "walking", "rearing", "social_grooming"],
                               settings, {"frame": {}, "temporal": {}}, {"videos": ["x"]}, "run123", 1.0)
    repo = tmp_path_factory.mktemp("behavenet-export")
    written = export_behavenet(trained, repo, "bn", training={"note": "untrained, export test"})
    return trained, repo, written


def test_three_models_one_version_and_run(exported):
    trained, repo, written = exported
    assert {role: (mv.name, mv.version) for role, mv in written.items()} == {
        "features": ("bn-features", 1), "frame": ("bn-frame", 1), "temporal": ("bn", 1)}
    metas = {role: mv.metadata() for role, mv in written.items()}
    assert {m["run_id"] for m in metas.values()} == {"run123"}
    for m in metas.values():
        assert m["module"] == "behavenet" and m["class_names"] == trained.behaviours
        assert m["window"] == {"n": 3, "size": 7} and m["feature_size"] == 512
        assert m["crops"] == {"input_size": 40, "crop_px": 80, "pair_crop_px": 192, "dilation_px": 8}
        # the networks' input; the service's (temporal model's): the crop side callers cut in source pixels
        assert m["input"] == {"height": 80 if m["role"] == "temporal" else 40, "width": m["input"]["height"],
                              "channels": 3}
        assert m["models"] == {"temporal": "bn", "features": "bn-features", "frame": "bn-frame"}
    assert metas["temporal"]["role"] == "temporal" and "temporal conv net (n=3)" in metas["temporal"]["architecture"]


def test_local_backend_equals_keras(exported):
    from sipec.serving.backends import LocalBackend

    trained, repo, _ = exported
    crops = np.random.default_rng(0).integers(0, 256, (9, 40, 40, 3), dtype=np.uint8)
    backends = {n: LocalBackend(repo, n, poll_s=0) for n in ("bn-features", "bn-frame", "bn")}
    try:
        meta = backends["bn-features"].metadata()
        assert meta.inputs["crop"].dtype == "uint8" and meta.inputs["crop"].shape == (None, 40, 40, 3)
        assert backends["bn"].metadata().inputs["features"].shape == (None, 7, 512)
        feats = backends["bn-features"].predict({"crop": crops}).outputs["features"]
        np.testing.assert_allclose(feats, np.asarray(trained.features(crops, training=False)), rtol=1e-4, atol=1e-5)
        frame = backends["bn-frame"].predict({"crop": crops}).outputs["probabilities"]
        np.testing.assert_allclose(frame, np.asarray(trained.frame(crops, training=False)), rtol=1e-4, atol=1e-5)
        windows = np.stack([feats[i:i + 7] for i in range(3)]).astype(np.float32)
        probs = backends["bn"].predict({"features": windows}).outputs["probabilities"]
        np.testing.assert_allclose(probs, np.asarray(trained.temporal(windows, training=False)), rtol=1e-4,
                                   atol=1e-5)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    finally:
        for b in backends.values():
            b.close()
